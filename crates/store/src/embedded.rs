//! The durable default backend: a redb file in the data directory, written with group commit.
//!
//! Every write goes through one writer thread. It takes the first waiting request, then every
//! request that queued up meanwhile (up to `max_batch`), applies them in order inside ONE write
//! transaction (so compare-and-swap checks see earlier writes of the same batch), and commits
//! once: one fsync for the whole group. Only then are the callers answered, so an `Ok` means the
//! write is on disk. Reads go straight to the latest committed snapshot.
//!
//! Record layout: `version (u64 BE) ‖ expires_at (u64 BE) ‖ session JSON`, so a compare-and-swap
//! reads 16 bytes instead of decoding the session. The expiry index maps
//! `expires_at (u64 BE) ‖ id` to nothing, in deadline order, for the purge.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sessiond_core::{Session, SessionId};
use tokio::sync::oneshot;

use crate::{decode, encode, SessionStore, StoreError};

const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("expiry");
const HEADER: usize = 16;

/// How the embedded store behaves.
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Most writes committed together in one transaction (1 = one fsync per write).
    pub max_batch: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions { max_batch: 512 }
    }
}

/// Sessions in a redb file, durable on every acknowledged write.
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: mpsc::Sender<Write>,
    path: PathBuf,
}

enum Op {
    Put {
        id: SessionId,
        record: Vec<u8>,
        expires_at: u64,
        expected: Option<u64>,
    },
    Delete(SessionId),
    Purge(u64),
}

enum Done {
    Put,
    Deleted(bool),
    Purged(usize),
}

struct Write {
    op: Op,
    reply: oneshot::Sender<Result<Done, StoreError>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn expiry_key(expires_at: u64, id: &SessionId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&expires_at.to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

fn header(record: &[u8]) -> Result<(u64, u64), StoreError> {
    if record.len() < HEADER {
        return Err(StoreError::Corrupt("record shorter than its header".into()));
    }
    let version = u64::from_be_bytes(record[..8].try_into().expect("8 bytes"));
    let expires = u64::from_be_bytes(record[8..16].try_into().expect("8 bytes"));
    Ok((version, expires))
}

impl EmbeddedStore {
    /// Opens (or creates) the store file `sessions.redb` in `dir`.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot create data directory {}: {e}",
                dir.display()
            ))
        })?;
        let path = dir.join("sessions.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(unavailable)?;
        txn.open_table(SESSIONS).map_err(unavailable)?;
        txn.open_table(EXPIRY).map_err(unavailable)?;
        txn.commit().map_err(unavailable)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let writer_db = db.clone();
        let max_batch = options.max_batch.max(1);
        thread::Builder::new()
            .name("sessiond-store-writer".into())
            .spawn(move || writer_loop(&writer_db, &rx, max_batch))
            .map_err(unavailable)?;
        Ok(EmbeddedStore {
            db,
            writer: tx,
            path,
        })
    }

    /// The file the sessions live in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn submit(&self, op: Op) -> Result<Done, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(Write { op, reply })
            .map_err(|_| unavailable("the store writer has stopped"))?;
        answer
            .await
            .map_err(|_| unavailable("the store writer has stopped"))?
    }
}

/// The writer thread: group commit until every sender is gone.
fn writer_loop(db: &Database, rx: &mpsc::Receiver<Write>, max_batch: usize) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        match apply_batch(db, &batch) {
            Ok(results) => {
                for (w, r) in batch.drain(..).zip(results) {
                    let _ = w.reply.send(r);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                for w in batch.drain(..) {
                    let _ = w.reply.send(Err(unavailable(&e)));
                }
            }
        }
    }
}

/// Applies a batch in one transaction; per-op outcomes, or an error for the whole batch.
fn apply_batch(
    db: &Database,
    batch: &[Write],
) -> Result<Vec<Result<Done, StoreError>>, redb::Error> {
    let txn = db.begin_write()?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut sessions = txn.open_table(SESSIONS)?;
        let mut expiry = txn.open_table(EXPIRY)?;
        for w in batch {
            let result = match &w.op {
                Op::Put {
                    id,
                    record,
                    expires_at,
                    expected,
                } => {
                    let current = match sessions.get(id.as_bytes().as_slice())? {
                        Some(old) => Some(header(old.value())),
                        None => None,
                    };
                    match current {
                        Some(Err(e)) => Err(e),
                        Some(Ok((v, _))) if Some(v) != *expected => Err(StoreError::Conflict),
                        None if expected.is_some() => Err(StoreError::Conflict),
                        current => {
                            if let Some(Ok((_, old_expiry))) = current {
                                expiry.remove(expiry_key(old_expiry, id).as_slice())?;
                            }
                            sessions.insert(id.as_bytes().as_slice(), record.as_slice())?;
                            expiry.insert(expiry_key(*expires_at, id).as_slice(), ())?;
                            Ok(Done::Put)
                        }
                    }
                }
                Op::Delete(id) => {
                    let removed = sessions
                        .remove(id.as_bytes().as_slice())?
                        .map(|old| header(old.value()));
                    match removed {
                        Some(Ok((_, exp))) => {
                            expiry.remove(expiry_key(exp, id).as_slice())?;
                            Ok(Done::Deleted(true))
                        }
                        Some(Err(_)) => Ok(Done::Deleted(true)),
                        None => Ok(Done::Deleted(false)),
                    }
                }
                Op::Purge(now) => {
                    let bound = expiry_key(now.saturating_add(1), &SessionId::min());
                    let mut due = Vec::new();
                    for entry in expiry.range::<&[u8]>(..bound.as_slice())? {
                        let (k, _) = entry?;
                        due.push(k.value().to_vec());
                    }
                    for k in &due {
                        expiry.remove(k.as_slice())?;
                        sessions.remove(&k[8..])?;
                    }
                    Ok(Done::Purged(due.len()))
                }
            };
            results.push(result);
        }
    }
    txn.commit()?;
    Ok(results)
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn get(&self, id: SessionId, now_ms: u64) -> Result<Option<Session>, StoreError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(SESSIONS).map_err(unavailable)?;
        let Some(record) = table.get(id.as_bytes().as_slice()).map_err(unavailable)? else {
            return Ok(None);
        };
        let record = record.value();
        let (_, expires_at) = header(record)?;
        if expires_at <= now_ms {
            return Ok(None);
        }
        decode(&record[HEADER..]).map(Some)
    }

    async fn put(&self, session: &Session, expected: Option<u64>) -> Result<(), StoreError> {
        let json = encode(session);
        let mut record = Vec::with_capacity(HEADER + json.len());
        record.extend_from_slice(&session.version.to_be_bytes());
        record.extend_from_slice(&session.expires_at.to_be_bytes());
        record.extend_from_slice(&json);
        self.submit(Op::Put {
            id: session.id,
            record,
            expires_at: session.expires_at,
            expected,
        })
        .await
        .map(|_| ())
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
        self.db.begin_read().map(|_| ()).map_err(unavailable)
    }
}
