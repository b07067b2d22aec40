//! sessiond-apps: the session apps (built-in and HTTP) and the commerce data they read.
//!
//! # Layout
//! - [`builtin`]: the six built-in apps (declarations and transformers).
//! - [`commerce`]: sales channels, customers, admins, delivery areas, campaigns, identity keys.
//! - [`http`]: the transformer that calls a remote app over HTTP (VTEX's wire format).

pub mod builtin;
pub mod commerce;
pub mod http;

pub use commerce::CommerceData;
