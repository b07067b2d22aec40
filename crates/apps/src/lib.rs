//! sessiond-apps: the session apps (built-in and HTTP) and the commerce data they read.
//!
//! # Layout
//! - [`builtin`]: the six built-in apps (declarations and transformers).
//! - [`commerce`]: sales channels, customers, admins, delivery areas, campaigns.
//! - [`identity`]: identity providers: verifying identity tokens (HS256, a public key, JWKS),
//!   and signing demo tokens.
//! - [`http`]: the transformer that calls a remote app over HTTP (VTEX's wire format).

pub mod builtin;
pub mod commerce;
pub mod http;
pub mod identity;
pub mod jwt;

pub use commerce::CommerceData;
