//! sessiond-apps: the built-in session apps and the account's commerce data they read.
//!
//! # Layout
//! - [`builtin`]: the declarations (inputs, outputs, runOnCreate) of VTEX's built-in apps.
//! - [`commerce`]: sales channels, customers, admins, delivery areas, campaigns, identity keys.

pub mod builtin;
pub mod commerce;

pub use commerce::CommerceData;
