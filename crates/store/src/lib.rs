//! sessiond-store: where sessions live.
//!
//! # Layout
//! - [`SessionStore`]: the one storage trait: get, compare-and-swap put (of one record or of
//!   several, all or none), delete, expiry.
//! - [`memory`]: a process-local backend (tests, throw-away demos).
//! - [`embedded`]: the durable default, on disk, with group commit.
//! - [`redis_store`]: a shared backend (Redis, one node or a cluster) for many processes.
//! - [`conformance`]: the test suite every backend must pass.
//!
//! Time is passed in (`now_ms`) rather than read inside the store, so expiry is the same
//! decision everywhere and can be tested without waiting.

pub mod conformance;
pub mod embedded;
pub mod memory;
pub mod redis_store;

/// The metrics the stores record themselves, in the process's default Prometheus registry
/// (the server exports it).
pub mod metrics {
    use std::sync::LazyLock;

    use prometheus::{Histogram, HistogramOpts};

    /// Writes committed together by one fsync (embedded store).
    pub const COMMIT_BATCH: &str = "sessiond_store_commit_batch_size";
    /// Time of one group commit's durable write, its fsync included (embedded store), seconds.
    pub const FSYNC_DURATION: &str = "sessiond_store_fsync_duration_seconds";

    /// The embedded store's group-commit histograms: writes per batch, and commit time.
    pub struct Commits {
        /// Writes per batch.
        pub batch: Histogram,
        /// Seconds per commit.
        pub fsync: Histogram,
    }

    /// The group-commit histograms, registered on first use.
    pub fn commits() -> &'static Commits {
        static COMMITS: LazyLock<Commits> = LazyLock::new(|| {
            let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
                let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                    .expect("a valid histogram");
                // Registered once (this is its only place); a failure leaves it unexported.
                let _ = prometheus::register(Box::new(h.clone()));
                h
            };
            Commits {
                batch: histogram(
                    COMMIT_BATCH,
                    "Writes committed together by one fsync (embedded store).",
                    vec![
                        1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
                        1024.0,
                    ],
                ),
                fsync: histogram(
                    FSYNC_DURATION,
                    "Time of one group commit's durable write, fsync included (embedded store).",
                    vec![
                        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                        0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                ),
            }
        });
        &COMMITS
    }
}

use async_trait::async_trait;
use sessiond_core::record::RecordError;
use sessiond_core::{Record, Session, SessionId};

pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use memory::MemoryStore;
pub use redis_store::RedisStore;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stored version is not the expected one: another writer saved first.
    #[error("the session was changed by another request")]
    Conflict,
    /// The backend could not be reached or failed.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be decoded.
    #[error("stored session is corrupt: {0}")]
    Corrupt(String),
}

impl From<RecordError> for StoreError {
    fn from(e: RecordError) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Writes `puts` one by one with [`SessionStore::put_record`]; when one fails, removes the new
/// records (`expected` `None`) written before it: all or none as long as only the last record
/// replaces a stored version. The default of [`SessionStore::put_records`], and what a backend
/// that writes several records at once falls back to when it cannot.
pub async fn put_in_order<S: SessionStore + ?Sized>(
    store: &S,
    puts: &[(&Record, Option<u64>)],
) -> Result<(), StoreError> {
    for (i, (record, expected)) in puts.iter().enumerate() {
        if let Err(e) = store.put_record(record, *expected).await {
            let created = puts[..i].iter().filter(|(_, expected)| expected.is_none());
            for (written, _) in created {
                store.delete(written.id()).await?;
            }
            return Err(e);
        }
    }
    Ok(())
}

/// What a shared backend says changed behind this process's back (see [`SessionStore::watch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Session `id` was written or removed (by any process, this one included).
    Session(SessionId),
    /// The backend can no longer tell: anything may change unseen until [`Change::Resumed`].
    Lost,
    /// The backend tells again, from now on (what changed meanwhile is unknown).
    Resumed,
}

/// Where [`Change`]s are told; called from the backend's own task, so it must not block.
pub type OnChange = std::sync::Arc<dyn Fn(Change) + Send + Sync>;

/// Session storage with optimistic concurrency.
///
/// Backends keep [`Record`]s (a session with its answers ready, see
/// [`sessiond_core::record`]) and must pass [`conformance`]. The contract fits a single-node
/// engine as well as Redis (a `WATCH`/Lua compare-and-swap on `version`, `PEXPIREAT` on
/// `expires_at`).
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The record of session `id`, unless it is missing or expired at `now_ms`.
    async fn get_record(&self, id: SessionId, now_ms: u64) -> Result<Option<Record>, StoreError>;

    /// Saves `record` if the stored version equals `expected`; `None` means no record with
    /// this id may exist. Otherwise fails with [`StoreError::Conflict`] and changes nothing.
    /// When it returns `Ok`, the write is durable as far as the backend promises.
    async fn put_record(&self, record: &Record, expected: Option<u64>) -> Result<(), StoreError>;

    /// Saves records of sessions as one change: each on the condition
    /// [`SessionStore::put_record`] puts on it, and all of them, or none when any condition
    /// fails ([`StoreError::Conflict`]). A session replaced by a new one (log-in, log-out) is
    /// saved this way: the new session and the old one ended.
    ///
    /// The default writes them in order and, when one fails, removes the new ones (`expected`
    /// `None`) it wrote before: all or none as long as only the last record replaces a stored
    /// version. Backends that can write several keys at once override it.
    async fn put_records(&self, puts: &[(&Record, Option<u64>)]) -> Result<(), StoreError> {
        put_in_order(self, puts).await
    }

    /// The session with this id, unless it is missing or expired at `now_ms`.
    async fn get(&self, id: SessionId, now_ms: u64) -> Result<Option<Session>, StoreError> {
        match self.get_record(id, now_ms).await? {
            Some(record) => Ok(Some(record.decode()?)),
            None => Ok(None),
        }
    }

    /// Saves `session` (see [`SessionStore::put_record`]).
    async fn put(&self, session: &Session, expected: Option<u64>) -> Result<(), StoreError> {
        self.put_record(&Record::encode(session, None), expected)
            .await
    }

    /// Removes the session; returns whether it existed.
    async fn delete(&self, id: SessionId) -> Result<bool, StoreError>;

    /// Removes every session expired at `now_ms`; returns how many.
    async fn purge_expired(&self, now_ms: u64) -> Result<usize, StoreError>;

    /// Whether the backend removes sessions at their deadline by itself, so that nobody needs
    /// to call [`SessionStore::purge_expired`] (Redis, with a `PXAT` on every write).
    fn expires_by_itself(&self) -> bool {
        false
    }

    /// A value every process on a shared backend must agree on (the session signing key): the
    /// one stored under `name` by whichever process came first, or `value`, stored now when
    /// there was none (atomically: two processes starting together agree). `None` when the
    /// backend is not shared: each process keeps its own.
    async fn agree(&self, _name: &str, _value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }

    /// The setting `name` every process on the store shares (the apps installed at run time),
    /// as stored; `None` when it was never set.
    async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores `value` as the setting `name` if it still holds `expected` (`None`: it was never
    /// set); otherwise fails with [`StoreError::Conflict`] and changes nothing. When it returns
    /// `Ok`, the write is as durable as a session's.
    async fn put_setting(
        &self,
        name: &str,
        value: &[u8],
        expected: Option<&[u8]>,
    ) -> Result<(), StoreError>;

    /// Starts telling `on_change` of every session written or removed, by any process, if the
    /// backend can (Redis: `CLIENT TRACKING` in broadcast mode, on a connection of its own,
    /// checked a few times a second): `true` then, and [`Change::Resumed`] is told once it is
    /// in place. Whenever it cannot be sure to see every change (its connection is lost or
    /// slow) it tells [`Change::Lost`], then [`Change::Resumed`] when it is back.
    async fn watch(&self, _on_change: OnChange) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Whether this process is the only writer of the stored data, so that a process-local
    /// cache of what it read and wrote stays correct (false for shared backends such as Redis).
    fn exclusive(&self) -> bool {
        false
    }

    /// Whether the backend answers (for readiness probes).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
