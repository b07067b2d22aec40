//! The repository of session versions: the one caller of the [`SessionStore`] and of the
//! [`SessionCache`]. It stands in front of the store like a caching store would: a load comes
//! from the cache or, through it, from the store; a save goes to the store and, once it is
//! acknowledged, into the cache; a save that loses its compare-and-swap drops the cached copy,
//! so the retry reads the store. The cache is used when the store is this process's alone
//! ([`SessionStore::exclusive`]), and with a shared store only while the store tells every
//! session another process changes ([`Repository::watch`]); else every load reads the store.
//!
//! Every store call is bounded by `store_timeout`: past it the call fails as
//! [`StoreError::Unavailable`].

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter};
use sessiond_core::{Record, SessionId};
pub use sessiond_store::metrics as store_metrics;
pub use sessiond_store::redis_store::redacted as redacted_url;
use sessiond_store::{Change, EmbeddedOptions, EmbeddedStore, MemoryStore, OnChange, RedisStore};
pub use sessiond_store::{SessionStore, StoreError};

use crate::snapshot::Snapshot;
use cache::{SessionCache, Witness};

mod cache;

/// Which backend holds the sessions. Shown (`Debug`, `Display`) without a URL's password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreSpec {
    /// The durable on-disk store in the data directory.
    Embedded,
    /// Process memory (lost on exit).
    Memory,
    /// A Redis node or cluster.
    Redis(String),
}

impl std::fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreSpec::Embedded => f.write_str("embedded"),
            StoreSpec::Memory => f.write_str("memory"),
            StoreSpec::Redis(url) => f.write_str(&redacted_url(url)),
        }
    }
}

impl std::fmt::Debug for StoreSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl StoreSpec {
    /// `embedded`, `memory` or a Redis URL; else why not (without the URL's password).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "embedded" => Ok(StoreSpec::Embedded),
            "memory" => Ok(StoreSpec::Memory),
            url if ["redis://", "rediss://", "redis+cluster://", "rediss+cluster://"]
                .iter()
                .any(|scheme| url.starts_with(scheme)) =>
            {
                Ok(StoreSpec::Redis(url.to_owned()))
            }
            other => Err(format!(
                "store `{}` is not one of `embedded`, `memory`, `redis://[:PASSWORD@]HOST:PORT[/DB]` (`rediss://` for TLS), `redis+cluster://HOST:PORT[,HOST:PORT…]`",
                redacted_url(other)
            )),
        }
    }
}

/// Opens the store `spec` names (the embedded one in `data_dir`); connecting to Redis is
/// bounded by `timeout`, like every later call.
pub async fn open_store(
    spec: &StoreSpec,
    data_dir: &Path,
    timeout: Duration,
) -> Result<Arc<dyn SessionStore>, StoreError> {
    Ok(match spec {
        StoreSpec::Embedded => Arc::new(EmbeddedStore::open(data_dir, EmbeddedOptions::default())?),
        StoreSpec::Memory => Arc::new(MemoryStore::new()),
        StoreSpec::Redis(url) => Arc::new(RedisStore::open(url, timeout).await?),
    })
}

/// Stored sessions, as snapshots, behind an optional cache.
pub struct Repository {
    store: Arc<dyn SessionStore>,
    /// Recently used sessions (none when `cache_sessions` is 0).
    cache: Option<Arc<SessionCache>>,
    /// Whether the cache may be used: always when the store is this process's alone; with a
    /// shared store, only while the store tells every change made by other processes
    /// ([`Repository::watch`]).
    live: Arc<AtomicBool>,
    timeout: Duration,
    metrics: Metrics,
}

/// The repository's metrics: cache hits and misses, the time of each kind of store call.
struct Metrics {
    hits: IntCounter,
    misses: IntCounter,
    get: Histogram,
    put: Histogram,
    put_two: Histogram,
    ping: Histogram,
    agree: Histogram,
    setting: Histogram,
    put_setting: Histogram,
    watch: Histogram,
    purge: Histogram,
}

impl Metrics {
    fn new() -> Self {
        let m = crate::telemetry::metrics();
        let call = |operation: &str| m.store_duration.with_label_values(&[operation]);
        Metrics {
            hits: m.cache_hits.clone(),
            misses: m.cache_misses.clone(),
            get: call("get"),
            put: call("put"),
            put_two: call("put_successor"),
            ping: call("ping"),
            agree: call("agree"),
            setting: call("setting"),
            put_setting: call("put_setting"),
            watch: call("watch"),
            purge: call("purge"),
        }
    }
}

impl Repository {
    /// A repository over `store`, keeping up to `cache_sessions` recently used sessions in
    /// memory when the store is this process's alone (or, see [`Repository::watch`], while a
    /// shared store tells what other processes change), bounding each store call by `timeout`.
    pub fn new(store: Arc<dyn SessionStore>, timeout: Duration, cache_sessions: usize) -> Self {
        Repository {
            live: Arc::new(AtomicBool::new(store.exclusive())),
            store,
            cache: SessionCache::new(cache_sessions).map(Arc::new),
            timeout,
            metrics: Metrics::new(),
        }
    }

    /// With a shared store that can tell what other processes change (Redis), uses the cache
    /// while it does: a change told drops that session's copy; while the store cannot tell
    /// (its watching connection is lost or slow) the cache is emptied and left unused.
    pub async fn watch(&self) -> Result<(), StoreError> {
        let (Some(cache), false) = (&self.cache, self.store.exclusive()) else {
            return Ok(());
        };
        let (cache, live) = (cache.clone(), self.live.clone());
        let on_change: OnChange = Arc::new(move |change| match change {
            Change::Session(id) => cache.invalidate(&id),
            Change::Lost => {
                live.store(false, Ordering::Release);
                cache.clear();
            }
            Change::Resumed => {
                cache.clear();
                live.store(true, Ordering::Release);
            }
        });
        self.timed(&self.metrics.watch, self.store.watch(on_change))
            .await
            .map(drop)
    }

    /// The cache, while it may be used.
    fn cache(&self) -> Option<&SessionCache> {
        self.cache
            .as_deref()
            .filter(|_| self.live.load(Ordering::Acquire))
    }

    /// The live (unexpired at `now`, ms) session `id`: from the cache, else from the store
    /// (then cached, unless a save of it overtook this read).
    pub async fn load(&self, id: SessionId, now: u64) -> Result<Option<Arc<Snapshot>>, StoreError> {
        if let Some(cache) = self.cache() {
            if let Some(snapshot) = cache.get(&id, now) {
                self.metrics.hits.inc();
                return Ok(Some(snapshot));
            }
            self.metrics.misses.inc();
        }
        self.read(id, now).await
    }

    /// The base of an edit of session `id`, and whether it is fresh: like [`Repository::load`],
    /// but a cached copy that a shared store said changed is taken too (`false`). An edit of a
    /// stale base is saved with compare-and-swap on its version, which fails if the session was
    /// indeed changed; nothing else derived from it may be answered.
    pub async fn load_base(
        &self,
        id: SessionId,
        now: u64,
    ) -> Result<Option<(Arc<Snapshot>, bool)>, StoreError> {
        if let Some(cache) = self.cache() {
            if let Some(base) = cache.base(&id, now) {
                self.metrics.hits.inc();
                return Ok(Some(base));
            }
            self.metrics.misses.inc();
        }
        Ok(self.read(id, now).await?.map(|snapshot| (snapshot, true)))
    }

    /// Session `id` read from the store (and cached, unless a save of it overtook this read).
    async fn read(&self, id: SessionId, now: u64) -> Result<Option<Arc<Snapshot>>, StoreError> {
        let stamp = self.cache().map(|c| c.stamp(&id));
        let Some(record) = self
            .timed(&self.metrics.get, self.store.get_record(id, now))
            .await?
        else {
            return Ok(None);
        };
        let Some((cache, stamp)) = self.cache().zip(stamp) else {
            return Ok(Some(Arc::new(Snapshot::read(record))));
        };
        let snapshot = Arc::new(Snapshot::read(cache.compact(record, None)));
        cache.insert_read(snapshot.clone(), stamp);
        Ok(Some(snapshot))
    }

    /// Saves `record` if the stored version of its session is `expected` (`None`: there is
    /// none; see [`SessionStore::put_record`]), and caches it. `previous` is the snapshot it
    /// was derived from: its segment cookie line carries over while it holds.
    pub async fn save(
        &self,
        record: Record,
        expected: Option<u64>,
        previous: Option<&Snapshot>,
    ) -> Result<Arc<Snapshot>, StoreError> {
        let witness = self.witness(&record);
        match self
            .timed(&self.metrics.put, self.store.put_record(&record, expected))
            .await
        {
            Ok(()) => Ok(self.cached(record, previous, witness)),
            Err(e) => {
                self.forget(&record.id());
                Err(e)
            }
        }
    }

    /// Saves a session under a new id (`record`, derived from `previous`) and the end of its
    /// old id (`ended`, if the old one is still at version `expected`, or not stored with
    /// `None`) in one store write: both or neither. Caches both.
    pub async fn save_successor(
        &self,
        record: Record,
        ended: Record,
        expected: Option<u64>,
        previous: &Snapshot,
    ) -> Result<Arc<Snapshot>, StoreError> {
        let witnesses = (self.witness(&record), self.witness(&ended));
        let saved = self
            .timed(
                &self.metrics.put_two,
                self.store
                    .put_records(&[(&record, None), (&ended, expected)]),
            )
            .await;
        match saved {
            Ok(()) => {
                let snapshot = self.cached(record, Some(previous), witnesses.0);
                self.cached(ended, None, witnesses.1);
                Ok(snapshot)
            }
            Err(e) => {
                self.forget(&ended.id());
                Err(e)
            }
        }
    }

    /// Session `id` as stored, else the one `derive` makes, which is not saved: kept in the
    /// cache as the session's current version where only this process writes the store,
    /// unless a save of it came meanwhile (elsewhere another process may save it at any
    /// time, and only the store can tell).
    pub async fn load_or_derive<E: From<StoreError>>(
        &self,
        id: SessionId,
        now: u64,
        derive: impl std::future::Future<Output = Result<Snapshot, E>>,
    ) -> Result<Arc<Snapshot>, E> {
        // Taken before the store is read: a save after it keeps the derived copy out.
        let stamp = self.cache().map(|c| c.stamp(&id));
        if let Some(stored) = self.load(id, now).await? {
            return Ok(stored);
        }
        let snapshot = Arc::new(derive.await?);
        if let (Some(cache), Some(stamp), true) = (self.cache(), stamp, self.store.exclusive()) {
            cache.insert_read(snapshot.clone(), stamp);
        }
        Ok(snapshot)
    }

    /// With a shared store, where the news of `record`'s session stood before saving it.
    fn witness(&self, record: &Record) -> Option<Witness> {
        if self.store.exclusive() {
            return None;
        }
        self.cache().map(|c| c.witness(&record.id()))
    }

    /// Caches what was just saved: `record`, derived from `previous` (its segment cookie line
    /// carries over), unless a shared store told of a change of its session since `witness`.
    /// Cached as the record alone: what comes next is mostly reads, served from the record's bytes, and
    /// plain edits, made on them; a full edit decodes it again.
    fn cached(
        &self,
        record: Record,
        previous: Option<&Snapshot>,
        witness: Option<Witness>,
    ) -> Arc<Snapshot> {
        let cache = self
            .cache()
            .filter(|_| witness.is_some() || self.store.exclusive());
        let record = match cache {
            Some(cache) => cache.compact(record, previous),
            None => record,
        };
        let snapshot = Arc::new(match previous {
            Some(previous) => Snapshot::edited(record, previous),
            None => Snapshot::read(record),
        });
        match (cache, witness) {
            (Some(cache), Some(witness)) => cache.insert_saved(snapshot.clone(), witness),
            (Some(cache), None) => cache.insert(snapshot.clone()),
            (None, _) => {}
        }
        snapshot
    }

    /// Drops the cached copy of session `id` (it is stale or gone).
    fn forget(&self, id: &SessionId) {
        if let Some(cache) = &self.cache {
            cache.remove(id);
        }
    }

    /// Whether the store answers within `store_timeout` (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed(&self.metrics.ping, self.store.ping()).await
    }

    /// Removes every session expired at `now` (ms); returns how many.
    pub async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        let started = Instant::now();
        let purged = self.store.purge_expired(now).await;
        self.metrics.purge.observe(started.elapsed().as_secs_f64());
        purged
    }

    /// Whether expired sessions must be purged (the store does not drop them by itself).
    pub fn needs_purge(&self) -> bool {
        !self.store.expires_by_itself()
    }

    /// Whether other processes may share the store (it is not this process's alone).
    pub fn shared(&self) -> bool {
        !self.store.exclusive()
    }

    /// The value every process on a shared store agrees on under `name` (the first one
    /// offered, see [`SessionStore::agree`]); `None` when the store is this process's alone.
    pub async fn agree(&self, name: &str, value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.timed(&self.metrics.agree, self.store.agree(name, value))
            .await
    }

    /// The setting `name` (see [`SessionStore::setting`]).
    pub async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.timed(&self.metrics.setting, self.store.setting(name))
            .await
    }

    /// Stores the setting `name` if it still holds `expected` (see
    /// [`SessionStore::put_setting`]).
    pub async fn put_setting(
        &self,
        name: &str,
        value: &[u8],
        expected: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.timed(
            &self.metrics.put_setting,
            self.store.put_setting(name, value, expected),
        )
        .await
    }

    /// Bounds a store call by `store_timeout`, recording its time in `histogram`.
    async fn timed<T>(
        &self,
        histogram: &Histogram,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, call).await;
        histogram.observe(started.elapsed().as_secs_f64());
        result.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "no answer within store_timeout ({:?})",
                self.timeout
            )))
        })
    }
}
