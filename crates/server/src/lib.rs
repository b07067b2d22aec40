//! sessiond: a self-hostable session manager speaking the VTEX Session Manager API.
//!
//! # Layout
//! - [`config`]: the TOML configuration, `SESSIOND_*` variables and flags → [`config::Settings`].
//! - [`tenancy`]: which account a request belongs to, and its installed apps.
//! - [`token`]: ES256 session tokens (`vtex_session`) and the signing keys.
//! - [`request`]: cookies, query string and body of a request → session changes.
//! - [`service`]: load → apply → compare-and-swap save, with retry on conflict.
//! - [`repo`]: the repository of session versions, the one caller of the store and of the
//!   session cache.
//! - [`snapshot`]: sessions shared by `Arc` with their answer parts computed once, and the
//!   cache of recently used ones.
//! - [`routes`]: the HTTP handlers; [`error`]: the `{"type","message"}` error answers;
//!   [`cookies`]: the `Set-Cookie` lines, kept with each session version.
//! - [`prehashed`]: the hasher of maps keyed by random ids and digests.
//! - [`app`]: building and running the server ([`app::Application`]).
//! - [`cli`]: the `sessiond` command line; [`clock`]: the time requests are served at.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cookies;
pub mod error;
pub mod prehashed;
pub mod repo;
pub mod request;
pub mod routes;
pub mod service;
pub mod snapshot;
pub mod tenancy;
pub mod token;

pub use app::Application;
