//! sessiond-core: the pure domain of the session manager. No I/O, no HTTP, no runtime.
//!
//! # Layout
//! - [`session`]: [`Session`], its namespaced [`Value`]s, [`Changes`] and the Δ they produce.
//! - [`items`]: the `?items=` filter of answers (and redaction of secret values).
//! - [`segment`]: the shareable [`Segment`] and its deterministic token.
//! - [`app`]: session app declarations and the index of which app watches which key.

pub mod app;
pub mod items;
pub mod segment;
pub mod session;

pub use app::{AppIndex, AppSpec, AppSpecError, KeyPattern};
pub use items::Items;
pub use segment::Segment;
pub use session::{Changes, Delta, Key, Namespace, Namespaces, Session, SessionId, Value};
