//! sessiond: a self-hostable session manager speaking the VTEX Session Manager API.
//!
//! # Layout
//! One request goes one way: [`http`] → [`service`] → [`repo`] → the store.
//! - [`http`]: the HTTP layer: routes per resource (sessions, segments), parsing and the one
//!   place each limit is checked (`http::request`), the `Set-Cookie` lines (`http::cookies`),
//!   the `{"type","message"}` error answers (`http::error`).
//! - [`service`]: the session rules: load → plan the edit → run the cycle → compare-and-swap
//!   save, with retry on conflict; identity rotation; no HTTP in it.
//! - [`repo`]: the repository of session versions, the one caller of the store and of the
//!   session cache.
//! - [`snapshot`]: sessions shared by `Arc` with their answer parts computed once, and the
//!   cache of recently used ones.
//! - [`tenancy`]: which account a request belongs to, and its installed apps.
//! - [`token`]: ES256 session tokens (`vtex_session`) and the signing keys.
//! - [`config`]: the TOML configuration, `SESSIOND_*` variables and flags → [`config::Settings`].
//! - [`clock`]: the time requests are served at; [`prehashed`]: the hasher of maps keyed by
//!   random ids and digests.
//! - [`telemetry`]: log lines (text or JSON), the request id of each request's log lines,
//!   the Prometheus metrics.
//! - [`app`]: building and running the server ([`app::Application`]); [`cli`]: the `sessiond`
//!   command line.

pub mod app;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod fuzz;
pub mod http;
pub mod prehashed;
pub mod repo;
pub mod service;
pub mod snapshot;
pub mod telemetry;
pub mod tenancy;
pub mod token;

pub use app::Application;
