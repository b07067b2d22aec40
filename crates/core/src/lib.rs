//! sessiond-core: the pure domain of the session manager. No I/O, no HTTP, no runtime.
//!
//! # Layout
//! - [`session`]: [`Session`], its namespaced [`Value`]s, [`Changes`] and the Δ they produce.
//! - [`map`]: [`map::SortedMap`], the compact map of namespaces and values.
//! - [`items`]: the `?items=` filter of answers (and redaction of secret values).
//! - [`segment`]: the shareable [`Segment`] and its deterministic token.
//! - [`record`]: the stored form of a session ([`Record`]), answers ready to send.
//! - [`app`]: session app declarations and the index of which app watches which key.
//! - [`cycle`]: the create/transform fixed point over the [`Transformer`] trait.
//! - [`trace`]: what a cycle did, for the operator.

pub mod app;
pub mod cycle;
pub mod items;
pub mod map;
pub mod record;
pub mod segment;
pub mod session;
pub mod trace;

pub use app::{AppIndex, AppSpec, AppSpecError, Condition, KeyPattern, Test};
pub use cycle::{AppError, Apps, Call, Rejection, Transformer};
pub use items::Items;
pub use record::Record;
pub use segment::Segment;
pub use session::{Changes, Delta, Key, Namespace, Namespaces, Session, SessionId, Value};
pub use trace::Trace;
