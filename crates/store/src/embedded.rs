//! The durable default backend: a fjall (LSM-tree) database in the data directory, written with
//! group commit.
//!
//! Every write goes through one writer thread. It takes the first waiting request, then every
//! request that queued up meanwhile (up to `max_batch`), checks them in order against the stored
//! data plus a small in-batch overlay (so a compare-and-swap sees earlier writes of the same
//! batch), and commits all their changes as ONE fjall write batch persisted with
//! [`PersistMode::SyncAll`]: one fsync of the journal for the whole group. Only then are the
//! callers answered, so an `Ok` means the write is on disk. Because nothing else writes, plain
//! keyspaces suffice (no transactional database); reads go to the keyspace as it is, and fjall
//! makes a batch visible only after its journal write, so a reader never sees an unsynced write.
//!
//! A fjall batch gives all its items one sequence number, so two items with the same key in one
//! batch would collide; the writer therefore folds each batch into one final change per key.
//!
//! Values are [`Record`]s as encoded (their first 17 bytes hold the version and deadline, so a
//! compare-and-swap reads those instead of decoding the session). The expiry keyspace maps
//! `hour of expires_at (u64 BE) ‖ id` to nothing, in deadline order, for the purge: by the hour,
//! so that the many writes a session gets within an hour touch its index entry once, not each
//! time (the purge reads each due session's own deadline).
//!
//! Reads run on [`READERS`] reader threads fed by a bounded queue, not on the threads that
//! serve requests: a read of a block that is not in memory waits for the disk, and on the
//! runtime's thread that wait would stall every request it serves (a server on one core has
//! one such thread) and could not be cut short by the caller's `store_timeout`, whose timer runs
//! on that same thread. The readers run with Linux's `SCHED_BATCH` policy: a read queued while
//! the runtime is busy does not preempt it, so on one core the reads of many requests run
//! together once the runtime waits for something, instead of each read taking the core from it
//! (BENCHMARKS.md, "Store reads off the runtime's thread").
//!
//! The block cache is [`CACHE_BYTES`] (512 MiB): sessions are read by id in random order, so
//! every read of a session the service has not cached loads a block; with the blocks of about
//! half a million sessions in memory most of those loads need no system call.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use async_trait::async_trait;
use bytes::Bytes;
use fjall::config::CompressionPolicy;
use fjall::{CompressionType, Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use parking_lot::{Mutex, MutexGuard};
use sessiond_core::record::{self, Record};
use sessiond_core::SessionId;
use tokio::sync::oneshot;

use crate::{SessionStore, StoreError};

const SESSIONS: &str = "sessions";
const EXPIRY: &str = "expiry-hours";
/// Settings by name (the apps installed at run time): rare writes, made outside the group
/// commit, under [`EmbeddedStore::settings_lock`], each persisted before it is answered.
const SETTINGS: &str = "settings";
/// The granularity of the expiry index, in milliseconds.
const EXPIRY_BUCKET_MS: u64 = 3_600_000;

/// Size of fjall's block cache, in bytes (512 MiB; it fills only as data grows). Measured at
/// 1,000,000 sessions (about 1 GB of records): GET of sessions not in the service's own cache
/// went from 10,500 to 27,000 requests/s when this grew from 64 MiB to 512 MiB.
pub const CACHE_BYTES: u64 = 512 * 1024 * 1024;

/// Most bytes of journal fjall keeps (its default is 512 MiB). A journal is deleted once every
/// keyspace's memtable with writes in it is flushed, and the expiry index's memtable, of 24-byte
/// keys, fills slowly: journals piled up towards the default behind it (at 1,000,000 sessions,
/// 838 bytes per session on disk in all, 368 with this cap). Past this size fjall flushes the
/// memtables that hold the oldest journal. The journal is also what a restart after a crash
/// replays (2.1-2.9 s at 1,000,000 sessions, 0.84 s with this cap).
pub const MAX_JOURNALS_BYTES: u64 = 128 * 1024 * 1024;

/// Reader threads. Reads of blocks not in memory wait for the disk, several at a time.
pub const READERS: usize = 4;

/// Most reads waiting for a reader; past it a read fails at once as unavailable (the disk is
/// stuck, or far slower than the requests coming in) instead of queueing without end.
pub const READ_QUEUE: usize = 4096;

/// How the embedded store behaves.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Most writes committed together in one batch (1 = one fsync per write).
    pub max_batch: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions { max_batch: 512 }
    }
}

/// Sessions in a fjall database, durable on every acknowledged write.
pub struct EmbeddedStore {
    sessions: Keyspace,
    settings: Keyspace,
    /// Serialises the compare-and-swaps of settings.
    settings_lock: Arc<Mutex<()>>,
    db: Database,
    /// Set by the writer once a commit failed: fjall refuses further writes after that.
    failed: Arc<AtomicBool>,
    /// `None` only while dropping, so the writer sees the channel close.
    writer: Option<mpsc::Sender<Write>>,
    thread: Option<thread::JoinHandle<()>>,
    /// The reader threads' queue; `None` only while dropping, so they see it close.
    reads: Option<mpsc::SyncSender<ReadJob>>,
    readers: Vec<thread::JoinHandle<()>>,
    path: PathBuf,
}

/// A read for a reader thread: it answers through the channel it captured.
type ReadJob = Box<dyn FnOnce() + Send>;

/// What the writer thread works on.
struct Engine {
    db: Database,
    sessions: Keyspace,
    expiry: Keyspace,
    failed: Arc<AtomicBool>,
    /// (version, expires_at) of recently written sessions as committed (`None`: removed), so a
    /// compare-and-swap of a session written lately needs no lookup. Only the writer uses it.
    known: Mutex<HashMap<SessionId, Option<(u64, u64)>>>,
}

/// Most entries of [`Engine::known`]; it starts over when full (about 12 MiB).
const KNOWN_LIMIT: usize = 1 << 18;

enum Op {
    Put(Put),
    /// Puts that succeed or fail together.
    PutAll(Vec<Put>),
    Delete(SessionId),
    Purge(u64),
}

enum Done {
    Put,
    Deleted(bool),
    Purged(usize),
}

struct Put {
    id: SessionId,
    record: Bytes,
    version: u64,
    expires_at: u64,
    expected: Option<u64>,
}

impl Put {
    fn of(record: &Record, expected: Option<u64>) -> Put {
        Put {
            id: record.id(),
            record: record.stored(),
            version: record.version(),
            expires_at: record.expires_at(),
            expected,
        }
    }
}

struct Write {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The hour a deadline falls in.
fn bucket(expires_at: u64) -> u64 {
    expires_at / EXPIRY_BUCKET_MS
}

/// The expiry index entry of a session with this deadline.
fn expiry_key(expires_at: u64, id: &SessionId) -> [u8; 24] {
    bucket_key(bucket(expires_at), id)
}

fn bucket_key(bucket: u64, id: &SessionId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&bucket.to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

/// `(version, expires_at)` of a stored record.
fn header(stored: &[u8]) -> Result<(u64, u64), StoreError> {
    record::header(stored)
        .ok_or_else(|| StoreError::Corrupt("record shorter than its header".into()))
}

/// A stored value as a [`Record`].
fn to_record(stored: &[u8]) -> Result<Record, StoreError> {
    Ok(Record::parse(Bytes::copy_from_slice(stored))?)
}

impl EmbeddedStore {
    /// Opens (or creates) the store database `sessions.fjall` (a directory) in `dir`.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("sessions.fjall");
        let engine = Engine::open(&path)?;
        let sessions = engine.sessions.clone();
        let db = engine.db.clone();
        let settings = db
            .keyspace(SETTINGS, KeyspaceCreateOptions::default)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let failed = engine.failed.clone();
        // The readers first: they hold nothing of the database, so if a thread cannot be
        // started, those started end once `reads` is dropped and the database is released.
        let (reads, queue) = mpsc::sync_channel(READ_QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let readers = (0..READERS)
            .map(|_| {
                let queue = queue.clone();
                thread::Builder::new()
                    .name("sessiond-store-reader".into())
                    .spawn(move || reader_loop(&queue))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::channel();
        let max_batch = options.max_batch.max(1);
        let thread = thread::Builder::new()
            .name("sessiond-store-writer".into())
            .spawn(move || writer_loop(&engine, &rx, max_batch))
            .map_err(unavailable)?;
        Ok(EmbeddedStore {
            sessions,
            settings,
            settings_lock: Arc::new(Mutex::new(())),
            db,
            failed,
            writer: Some(tx),
            thread: Some(thread),
            reads: Some(reads),
            readers,
            path,
        })
    }

    /// Runs `read` on a reader thread. Fails as unavailable at once when [`READ_QUEUE`] reads
    /// are waiting already; a caller that stops waiting (its `store_timeout` passed) leaves the
    /// read to be skipped.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job: ReadJob = Box::new(move || {
            if !reply.is_closed() {
                let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
                let _ = reply.send(read.unwrap_or_else(|_| {
                    tracing::error!("a store read panicked");
                    Err(unavailable("a store read panicked"))
                }));
            }
        });
        let queue = self
            .reads
            .as_ref()
            .ok_or_else(|| unavailable("the store is closing"))?;
        queue.try_send(job).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => {
                unavailable(format!("{READ_QUEUE} store reads are waiting already"))
            }
            mpsc::TrySendError::Disconnected(_) => unavailable("the store readers have stopped"),
        })?;
        answer
            .await
            .map_err(|_| unavailable("the store readers have stopped"))?
    }

    /// The directory the sessions live in (a fjall database).
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn submit(&self, op: Op) -> Result<Done, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .as_ref()
            .ok_or_else(|| unavailable("the store is closing"))?
            .send(Write { op, reply })
            .map_err(|_| unavailable("the store writer has stopped"))?;
        answer
            .await
            .map_err(|_| unavailable("the store writer has stopped"))?
    }
}

impl Drop for EmbeddedStore {
    /// Closes both queues and waits for the writer to finish what was queued and for the
    /// readers to end, so the database is released (and may be opened again) once the store is
    /// gone. On a disk that does not answer, this waits as long as the disk does.
    fn drop(&mut self) {
        self.writer.take();
        self.reads.take();
        for thread in self.thread.take().into_iter().chain(self.readers.drain(..)) {
            let _ = thread.join();
        }
    }
}

impl Engine {
    fn open(path: &Path) -> Result<Engine, StoreError> {
        let cannot_open = |e: fjall::Error| {
            StoreError::Unavailable(format!("cannot open {}: {e}", path.display()))
        };
        let db = Database::builder(path)
            .cache_size(CACHE_BYTES)
            .max_journaling_size(MAX_JOURNALS_BYTES)
            .open()
            .map_err(cannot_open)?;
        let sessions = db
            .keyspace(SESSIONS, sessions_options)
            .map_err(cannot_open)?;
        let expiry = db
            .keyspace(EXPIRY, KeyspaceCreateOptions::default)
            .map_err(cannot_open)?;
        Ok(Engine {
            db,
            sessions,
            expiry,
            failed: Arc::new(AtomicBool::new(false)),
            known: Mutex::new(HashMap::new()),
        })
    }
}

/// The sessions keyspace: data blocks compressed with LZ4 on every level (fjall's default leaves
/// the first two uncompressed). Records of one account repeat most of their bytes (the segment
/// token, the names of namespaces and keys, the store's values), so a block of records shrinks
/// to about half; the first levels hold every session freshly written or changed, so they
/// count. fjall stores a keyspace's options when it creates it: a data directory made before
/// keeps the default, and opens and works as before.
fn sessions_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .data_block_compression_policy(CompressionPolicy::all(CompressionType::Lz4))
}

/// The deadline of the stored session (`None`: there is none) when `put`'s condition holds
/// against `state`, the session's (version, expires_at).
fn check(
    state: Result<Option<(u64, u64)>, StoreError>,
    put: &Put,
) -> Result<Option<u64>, StoreError> {
    match state? {
        Some((v, exp)) if Some(v) == put.expected => Ok(Some(exp)),
        None if put.expected.is_none() => Ok(None),
        _ => Err(StoreError::Conflict),
    }
}

/// The writer thread: group commit until every sender is gone.
fn writer_loop(engine: &Engine, rx: &mpsc::Receiver<Write>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    let commits = crate::metrics::commits();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        // Let the threads that serve requests run first: on a busy machine they queue more
        // writes meanwhile, so one fsync covers more of them.
        thread::yield_now();
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        commits.batch.observe(batch.len() as f64);
        match apply_batch(engine, &mut batch, &commits.fsync) {
            Ok(results) => {
                for (w, r) in batch.drain(..).zip(results) {
                    let _ = w.reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                engine.failed.store(true, Ordering::Relaxed);
                for w in batch.drain(..) {
                    let _ = w.reply.send(Err(unavailable(&e)));
                }
            }
        }
    }
}

/// A reader thread: runs reads until the store is dropped (a read that panics is caught in
/// its job, [`EmbeddedStore::read`]).
fn reader_loop(queue: &Mutex<mpsc::Receiver<ReadJob>>) {
    batch_policy();
    loop {
        // One reader waits in `recv` holding the lock, the others for the lock.
        let job = queue.lock().recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Puts the calling thread under Linux's `SCHED_BATCH` policy (its niceness unchanged): it is
/// not woken ahead of the thread running, so a queued read waits until the runtime's thread
/// waits too, rather than taking the core from it for each read.
///
/// glibc only: musl's `sched_setscheduler` does nothing (it fails with `ENOSYS`). A systemd unit
/// that filters `@resources` must allow `sched_setscheduler` (`deploy/sessiond.service` does).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn batch_policy() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` reads `param` during the call only; pid 0 is the calling
    // thread.
    let done = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if done != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(%error, "store reader stays under the default scheduling policy");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn batch_policy() {}

/// A stored session, unless it is absent or expired at `now_ms`.
fn read_record(
    sessions: &Keyspace,
    id: SessionId,
    now_ms: u64,
) -> Result<Option<Record>, StoreError> {
    let Some(stored) = sessions.get(id.as_bytes()).map_err(unavailable)? else {
        return Ok(None);
    };
    let (_, expires_at) = header(&stored)?;
    if expires_at <= now_ms {
        return Ok(None);
    }
    to_record(&stored).map(Some)
}

/// One batch in the making: its outcome so far, and the final change of every key it touches.
struct Pending<'a> {
    engine: &'a Engine,
    /// id → the session's (version, expires_at) after the batch so far, `None` once deleted.
    overlay: HashMap<SessionId, Option<(u64, u64)>>,
    /// Session key → new record, or `None` to remove it.
    sessions: BTreeMap<[u8; 16], Option<Bytes>>,
    /// Expiry key → whether it exists after the batch.
    expiry: BTreeMap<[u8; 24], bool>,
    /// The engine's committed states of recently written sessions.
    known: MutexGuard<'a, HashMap<SessionId, Option<(u64, u64)>>>,
}

impl Pending<'_> {
    /// The session's (version, expires_at) as the batch sees it: its own writes first, then
    /// the writer's memory of what it committed, then the keyspace.
    fn state(
        &self,
        id: &SessionId,
    ) -> Result<Result<Option<(u64, u64)>, StoreError>, fjall::Error> {
        if let Some(s) = self.overlay.get(id) {
            return Ok(Ok(*s));
        }
        if let Some(s) = self.known.get(id) {
            return Ok(Ok(*s));
        }
        Ok(match self.engine.sessions.get(id.as_bytes())? {
            Some(record) => header(&record).map(Some),
            None => Ok(None),
        })
    }

    fn remove_session(&mut self, id: &SessionId) {
        self.sessions.insert(*id.as_bytes(), None);
        self.overlay.insert(*id, None);
    }

    /// The record moves into the batch (so it is left empty) unless the check fails.
    fn put(&mut self, put: &mut Put) -> Result<Result<Done, StoreError>, fjall::Error> {
        Ok(match check(self.state(&put.id)?, put) {
            Ok(old_expiry) => {
                self.apply(put, old_expiry);
                Ok(Done::Put)
            }
            Err(e) => Err(e),
        })
    }

    /// Puts that succeed or fail together: every condition is checked, each against the state
    /// the earlier puts leave, before any record moves into the batch.
    fn put_all(&mut self, puts: &mut [Put]) -> Result<Result<Done, StoreError>, fjall::Error> {
        let mut old_expiries = Vec::with_capacity(puts.len());
        for (i, put) in puts.iter().enumerate() {
            let state = match puts[..i].iter().rev().find(|earlier| earlier.id == put.id) {
                Some(earlier) => Ok(Some((earlier.version, earlier.expires_at))),
                None => self.state(&put.id)?,
            };
            match check(state, put) {
                Ok(old_expiry) => old_expiries.push(old_expiry),
                Err(e) => return Ok(Err(e)),
            }
        }
        for (put, old_expiry) in puts.iter_mut().zip(old_expiries) {
            self.apply(put, old_expiry);
        }
        Ok(Ok(Done::Put))
    }

    /// Moves `put`'s record into the batch; `old_expiry` is the deadline the session had.
    fn apply(&mut self, put: &mut Put, old_expiry: Option<u64>) {
        let id = put.id;
        // The index entry moves only when the deadline moves to another hour.
        if old_expiry.map(bucket) != Some(bucket(put.expires_at)) {
            if let Some(old) = old_expiry {
                self.expiry.insert(expiry_key(old, &id), false);
            }
            self.expiry.insert(expiry_key(put.expires_at, &id), true);
        }
        self.sessions
            .insert(*id.as_bytes(), Some(std::mem::take(&mut put.record)));
        self.overlay.insert(id, Some((put.version, put.expires_at)));
    }

    fn delete(&mut self, id: &SessionId) -> Result<Result<Done, StoreError>, fjall::Error> {
        let existed = match self.state(id)? {
            Ok(Some((_, exp))) => {
                self.expiry.insert(expiry_key(exp, id), false);
                true
            }
            // A corrupt record still goes; its expiry entry is dropped by a later purge.
            Err(_) => true,
            Ok(None) => false,
        };
        if existed {
            self.remove_session(id);
        }
        Ok(Ok(Done::Deleted(existed)))
    }

    fn purge(&mut self, now: u64) -> Result<Result<Done, StoreError>, fjall::Error> {
        // Every entry of the hours up to now's; those of now's hour may not be due yet.
        let bound = bucket_key(bucket(now) + 1, &SessionId::min());
        // Due entries: the stored ones this batch has not removed, plus the ones it added.
        let mut due = Vec::new();
        for entry in self.engine.expiry.range(..bound.as_slice()) {
            let Ok(key) = <[u8; 24]>::try_from(entry.key()?.as_ref()) else {
                return Ok(Err(StoreError::Corrupt(
                    "expiry key is not 24 bytes".into(),
                )));
            };
            if self.expiry.get(&key) != Some(&false) {
                due.push(key);
            }
        }
        due.extend(
            self.expiry
                .range(..bound)
                .filter(|(_, &exists)| exists)
                .map(|(k, _)| *k),
        );
        due.sort_unstable();
        due.dedup();
        let mut purged = 0;
        for key in due {
            let hour = u64::from_be_bytes(key[..8].try_into().expect("8 bytes"));
            let id = SessionId::from_bytes(key[8..].try_into().expect("16 bytes"));
            // Remove the session only if this entry is its current hour and its deadline has
            // passed (or it is corrupt); an entry of another hour is a leftover and goes alone.
            match self.state(&id)? {
                Ok(Some((_, exp))) if bucket(exp) == hour => {
                    if exp > now {
                        continue;
                    }
                }
                Err(_) => {}
                Ok(_) => {
                    self.expiry.insert(key, false);
                    continue;
                }
            }
            self.expiry.insert(key, false);
            self.remove_session(&id);
            purged += 1;
        }
        Ok(Ok(Done::Purged(purged)))
    }
}

/// Applies a batch as one durable fjall batch; per-op outcomes, or an error for the whole batch.
fn apply_batch(
    engine: &Engine,
    batch: &mut [Write],
    commits: &prometheus::Histogram,
) -> Result<Vec<Result<Done, StoreError>>, fjall::Error> {
    let mut pending = Pending {
        engine,
        overlay: HashMap::new(),
        sessions: BTreeMap::new(),
        expiry: BTreeMap::new(),
        known: engine.known.lock(),
    };
    let mut results = Vec::with_capacity(batch.len());
    for w in batch {
        let result = match &mut w.op {
            Op::Put(put) => pending.put(put)?,
            Op::PutAll(puts) => pending.put_all(puts)?,
            Op::Delete(id) => pending.delete(id)?,
            Op::Purge(now) => pending.purge(*now)?,
        };
        results.push(result);
    }
    let mut writes = engine.db.batch().durability(Some(PersistMode::SyncAll));
    for (key, record) in pending.sessions {
        match record {
            Some(record) => writes.insert(&engine.sessions, key.as_slice(), &record[..]),
            None => writes.remove(&engine.sessions, key.as_slice()),
        }
    }
    for (key, exists) in pending.expiry {
        if exists {
            writes.insert(&engine.expiry, key.as_slice(), b"".as_slice());
        } else {
            writes.remove(&engine.expiry, key.as_slice());
        }
    }
    // An empty batch (only conflicts or no-ops) commits nothing and needs no fsync.
    let started = std::time::Instant::now();
    let committed = writes.commit();
    commits.observe(started.elapsed().as_secs_f64());
    let (mut known, overlay) = (pending.known, pending.overlay);
    match committed {
        Ok(()) => {
            if known.len() + overlay.len() > KNOWN_LIMIT {
                known.clear();
            }
            known.extend(overlay);
        }
        Err(e) => {
            known.clear();
            return Err(e);
        }
    }
    Ok(results)
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    /// The data is this process's own (the embedded database is locked by its opener).
    fn exclusive(&self) -> bool {
        true
    }

    async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let (settings, name) = (self.settings.clone(), name.as_bytes().to_vec());
        self.read(move || Ok(settings.get(name).map_err(unavailable)?.map(|v| v.to_vec())))
            .await
    }

    async fn put_setting(
        &self,
        name: &str,
        value: &[u8],
        expected: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let (settings, db, lock) = (
            self.settings.clone(),
            self.db.clone(),
            self.settings_lock.clone(),
        );
        let (name, value, expected) = (
            name.as_bytes().to_vec(),
            value.to_vec(),
            expected.map(<[u8]>::to_vec),
        );
        tokio::task::spawn_blocking(move || {
            let _serial = lock.lock();
            let stored = settings.get(&name).map_err(unavailable)?;
            if stored.as_deref() != expected.as_deref() {
                return Err(StoreError::Conflict);
            }
            settings.insert(name, value).map_err(unavailable)?;
            db.persist(PersistMode::SyncAll).map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    async fn get_record(&self, id: SessionId, now_ms: u64) -> Result<Option<Record>, StoreError> {
        let sessions = self.sessions.clone();
        self.read(move || read_record(&sessions, id, now_ms)).await
    }

    async fn put_record(&self, record: &Record, expected: Option<u64>) -> Result<(), StoreError> {
        self.submit(Op::Put(Put::of(record, expected)))
            .await
            .map(|_| ())
    }

    async fn put_records(&self, puts: &[(&Record, Option<u64>)]) -> Result<(), StoreError> {
        let puts = puts.iter().map(|(r, e)| Put::of(r, *e)).collect();
        self.submit(Op::PutAll(puts)).await.map(|_| ())
    }

    async fn delete(&self, id: SessionId) -> Result<bool, StoreError> {
        match self.submit(Op::Delete(id)).await? {
            Done::Deleted(b) => Ok(b),
            _ => Err(unavailable("unexpected writer answer")),
        }
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<usize, StoreError> {
        match self.submit(Op::Purge(now_ms)).await? {
            Done::Purged(n) => Ok(n),
            _ => Err(unavailable("unexpected writer answer")),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(unavailable("a commit failed; the store refuses writes"));
        }
        let sessions = self.sessions.clone();
        self.read(move || {
            sessions
                .get(SessionId::min().as_bytes())
                .map(|_| ())
                .map_err(unavailable)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sessiond_core::{Key, Session, Value};

    use super::*;

    const NOW: u64 = 1_700_000_000_000;
    const TTL: u64 = 3_600_000;

    fn session(ttl: u64) -> Session {
        let mut s = Session::new("demo", NOW, ttl);
        s.set(&Key::new("public", "n"), Value::new("1"));
        s
    }

    fn put(s: &Session, expected: Option<u64>) -> Op {
        Op::Put(Put::of(&Record::encode(s, None), expected))
    }

    /// Runs `ops` as ONE batch on the engine; the outcome of each.
    fn one_batch(engine: &Engine, ops: Vec<Op>) -> Vec<Result<Done, StoreError>> {
        let mut writes: Vec<Write> = ops
            .into_iter()
            .map(|op| Write {
                op,
                reply: oneshot::channel().0,
            })
            .collect();
        apply_batch(engine, &mut writes, &crate::metrics::commits().fsync).expect("batch commits")
    }

    fn at_version(s: &Session, version: u64) -> Session {
        Session {
            version,
            ..s.clone()
        }
    }

    fn stored_version(engine: &Engine, s: &Session) -> Option<u64> {
        let record = engine.sessions.get(s.id.as_bytes()).unwrap()?;
        Some(header(&record).unwrap().0)
    }

    #[test]
    fn a_batch_sees_its_own_earlier_writes() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("db")).unwrap();
        let a1 = session(TTL);
        let (a2, a3) = (at_version(&a1, 2), at_version(&a1, 3));
        let b = session(TTL);
        let short = session(10);
        let results = one_batch(
            &engine,
            vec![
                put(&a1, None),      // inserts
                put(&a1, None),      // conflicts with the insert just before
                put(&a2, Some(1)),   // sees version 1 from this batch
                put(&a3, Some(1)),   // stale: version 2 is in the batch
                put(&a3, Some(2)),   // wins
                Op::Delete(b.id),    // nothing to delete
                put(&b, None),       // inserts
                Op::Delete(b.id),    // deletes what the batch inserted
                put(&b, Some(1)),    // conflicts: deleted in this batch
                put(&short, None),   // expires at NOW + 10
                Op::Purge(NOW + 10), // purges the batch's own short session
                Op::Purge(NOW + 10), // nothing left
            ],
        );
        let outcome: Vec<String> = results
            .iter()
            .map(|r| match r {
                Ok(Done::Put) => "put".to_string(),
                Ok(Done::Deleted(d)) => format!("deleted {d}"),
                Ok(Done::Purged(n)) => format!("purged {n}"),
                Err(StoreError::Conflict) => "conflict".to_string(),
                Err(e) => format!("error {e}"),
            })
            .collect();
        assert_eq!(
            outcome,
            [
                "put",
                "conflict",
                "put",
                "conflict",
                "put",
                "deleted false",
                "put",
                "deleted true",
                "conflict",
                "put",
                "purged 1",
                "purged 0",
            ]
        );
        assert_eq!(stored_version(&engine, &a1), Some(3));
        assert_eq!(stored_version(&engine, &b), None);
        assert_eq!(stored_version(&engine, &short), None);
        // Only a3's deadline is left in the expiry index.
        let keys: Vec<_> = engine
            .expiry
            .iter()
            .map(|g| g.key().unwrap().to_vec())
            .collect();
        assert_eq!(keys, [expiry_key(a3.expires_at, &a3.id).to_vec()]);
    }

    #[test]
    fn puts_together_see_the_batch_and_fail_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("db")).unwrap();
        let a = session(TTL);
        let (a2, a3) = (at_version(&a, 2), at_version(&a, 3));
        let (b, c) = (session(TTL), session(TTL));
        let together = |puts: Vec<(&Session, Option<u64>)>| {
            Op::PutAll(
                puts.into_iter()
                    .map(|(s, e)| Put::of(&Record::encode(s, None), e))
                    .collect(),
            )
        };
        let results = one_batch(
            &engine,
            vec![
                put(&a, None),
                // sees `a` from this batch, and its own first put of `a`
                together(vec![(&b, None), (&a2, Some(1)), (&a3, Some(2))]),
                // `a` is at 3 now: nothing of this goes in
                together(vec![(&c, None), (&a2, Some(1))]),
            ],
        );
        assert!(matches!(results[1], Ok(Done::Put)));
        assert!(matches!(results[2], Err(StoreError::Conflict)));
        assert_eq!(stored_version(&engine, &a), Some(3));
        assert_eq!(stored_version(&engine, &b), Some(1));
        assert_eq!(stored_version(&engine, &c), None);
    }

    #[test]
    fn a_batch_sees_stored_data_and_purges_across_both() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("db")).unwrap();
        let old = session(10);
        let kept = session(10);
        one_batch(&engine, vec![put(&old, None), put(&kept, None)]);
        let mut renewed = kept.clone();
        renewed.version = 2;
        renewed.expires_at = NOW + TTL;
        let fresh = session(20);
        let results = one_batch(
            &engine,
            vec![
                put(&renewed, Some(1)), // moves `kept` past the purge
                put(&fresh, None),      // expires at NOW + 20, also due
                put(&old, None),        // conflicts with the stored record
                Op::Purge(NOW + 20),    // `old` (stored) and `fresh` (this batch)
            ],
        );
        assert!(matches!(results[2], Err(StoreError::Conflict)));
        assert!(matches!(results[3], Ok(Done::Purged(2))));
        assert_eq!(stored_version(&engine, &kept), Some(2));
        assert_eq!(stored_version(&engine, &old), None);
        assert_eq!(stored_version(&engine, &fresh), None);
        assert_eq!(engine.expiry.iter().count(), 1);
    }

    #[test]
    fn writes_within_the_hour_keep_one_index_entry_and_the_purge_waits_for_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("db")).unwrap();
        let start = bucket(NOW) * EXPIRY_BUCKET_MS; // the first millisecond of an hour
        let mut s = session(TTL);
        s.expires_at = start + 1_000;
        one_batch(&engine, vec![put(&s, None)]);
        let entries = |engine: &Engine| {
            engine
                .expiry
                .iter()
                .map(|g| g.key().unwrap().to_vec())
                .collect::<Vec<_>>()
        };
        let first = entries(&engine);
        for v in 2..=5 {
            s.version = v;
            s.expires_at += 1_000; // later, same hour
            one_batch(&engine, vec![put(&s, Some(v - 1))]);
        }
        assert_eq!(entries(&engine), first, "same hour: the entry is untouched");
        // Due hour, deadline not reached: kept, entry and all.
        let results = one_batch(&engine, vec![Op::Purge(s.expires_at - 1)]);
        assert!(matches!(results[0], Ok(Done::Purged(0))));
        assert_eq!(stored_version(&engine, &s), Some(5));
        assert_eq!(entries(&engine), first);
        // Moved to the next hour: the entry moves with it.
        s.version = 6;
        s.expires_at = start + EXPIRY_BUCKET_MS + 5;
        one_batch(&engine, vec![put(&s, Some(5))]);
        assert_eq!(entries(&engine), [expiry_key(s.expires_at, &s.id).to_vec()]);
        let results = one_batch(&engine, vec![Op::Purge(s.expires_at)]);
        assert!(matches!(results[0], Ok(Done::Purged(1))));
        assert!(entries(&engine).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let kept = session(TTL);
        let mut updated = session(TTL);
        let gone = session(TTL);
        let short = session(10);
        {
            let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
            assert!(store.path().starts_with(dir.path()));
            for s in [&kept, &updated, &gone, &short] {
                store.put(s, None).await.unwrap();
            }
            updated.version = 2;
            updated.set(&Key::new("public", "n"), Value::new("2"));
            store.put(&updated, Some(1)).await.unwrap();
            assert!(store.delete(gone.id).await.unwrap());
        }
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        store.ping().await.unwrap();
        assert_eq!(store.get(kept.id, NOW).await.unwrap(), Some(kept));
        assert_eq!(
            store.get(updated.id, NOW).await.unwrap(),
            Some(updated.clone())
        );
        assert_eq!(store.get(gone.id, NOW).await.unwrap(), None);
        assert!(matches!(
            store.put(&updated, Some(1)).await,
            Err(StoreError::Conflict)
        ));
        // The expiry index came back too.
        assert_eq!(store.purge_expired(NOW + 10).await.unwrap(), 1);
        assert_eq!(store.get(short.id, NOW).await.unwrap(), None);
    }

    /// Keeps every reader of `store` busy until the returned sender is dropped.
    fn hold_readers(store: &EmbeddedStore) -> mpsc::Sender<()> {
        let (release, held) = mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let (started, busy) = mpsc::channel();
        for _ in 0..READERS {
            let (held, started) = (held.clone(), started.clone());
            let job: ReadJob = Box::new(move || {
                started.send(()).unwrap();
                let _ = held.lock().recv();
            });
            store.reads.as_ref().unwrap().try_send(job).unwrap();
        }
        for _ in 0..READERS {
            busy.recv_timeout(Duration::from_secs(10))
                .expect("every reader takes a job");
        }
        release
    }

    #[tokio::test]
    async fn a_read_waits_for_a_reader_and_a_full_queue_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        let s = session(TTL);
        store.put(&s, None).await.unwrap();
        let release = hold_readers(&store);
        // The read waits for a reader, not on this (the only) runtime thread: the caller's
        // timeout still runs, as `store_timeout` does.
        let waited =
            tokio::time::timeout(Duration::from_millis(20), store.get_record(s.id, NOW)).await;
        assert!(waited.is_err(), "the read waited on the calling thread");
        let reads = store.reads.as_ref().unwrap();
        let mut queued = 1; // the read given up above, skipped once a reader takes it
        while reads.try_send(Box::new(|| {})).is_ok() {
            queued += 1;
        }
        assert_eq!(queued, READ_QUEUE);
        match store.get_record(s.id, NOW).await {
            Err(StoreError::Unavailable(why)) => {
                assert_eq!(why, "4096 store reads are waiting already")
            }
            other => panic!("a read past a full queue: {other:?}"),
        }
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        drop(release);
        // Once a job queued behind all those has run, the queue has room again.
        let (ran, run) = mpsc::channel();
        let job: ReadJob = Box::new(move || ran.send(()).unwrap());
        reads.send(job).unwrap();
        run.recv().unwrap();
        assert_eq!(store.get(s.id, NOW).await.unwrap(), Some(s.clone()));
        store.ping().await.unwrap();
        // A read that panics fails as unavailable, and every reader still reads.
        let failed = store
            .read(|| -> Result<(), StoreError> { panic!("a read") })
            .await;
        match failed {
            Err(StoreError::Unavailable(why)) => assert_eq!(why, "a store read panicked"),
            other => panic!("a read that panicked: {other:?}"),
        }
        let held = hold_readers(&store);
        drop(held);
        assert_eq!(store.get(s.id, NOW).await.unwrap(), Some(s));
    }
}
