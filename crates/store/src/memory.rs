//! A process-local backend: a map plus an expiry index. Not durable.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use parking_lot::{Mutex, MutexGuard};
use sessiond_core::{Record, SessionId};

use crate::{SessionStore, StoreError};

/// Sessions held in memory.
#[derive(Default)]
pub struct MemoryStore {
    /// A panic cannot leave the maps half-written (each operation is a single insert/remove
    /// pair), so the lock stays usable after one (it is not poisoned).
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<SessionId, Record>,
    /// (expires_at, id): the purge walks this from the front.
    expiry: BTreeSet<(u64, SessionId)>,
    /// Settings by name.
    settings: HashMap<String, Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    fn exclusive(&self) -> bool {
        true
    }

    async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().settings.get(name).cloned())
    }

    async fn put_setting(
        &self,
        name: &str,
        value: &[u8],
        expected: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.settings.get(name).map(Vec::as_slice) != expected {
            return Err(StoreError::Conflict);
        }
        inner.settings.insert(name.to_owned(), value.to_vec());
        Ok(())
    }

    async fn get_record(&self, id: SessionId, now_ms: u64) -> Result<Option<Record>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .sessions
            .get(&id)
            .filter(|r| !r.is_expired(now_ms))
            .cloned())
    }

    async fn put_record(&self, record: &Record, expected: Option<u64>) -> Result<(), StoreError> {
        self.put_records(&[(record, expected)]).await
    }

    async fn put_records(&self, puts: &[(&Record, Option<u64>)]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        // Every condition first, each against the stored version or the one an earlier put
        // of the same call leaves.
        for (i, (record, expected)) in puts.iter().enumerate() {
            let id = record.id();
            let current = match puts[..i]
                .iter()
                .rev()
                .find(|(earlier, _)| earlier.id() == id)
            {
                Some((earlier, _)) => Some(earlier.version()),
                None => inner.sessions.get(&id).map(|r| r.version()),
            };
            if current != *expected {
                return Err(StoreError::Conflict);
            }
        }
        for (record, _) in puts {
            let id = record.id();
            if let Some(old) = inner.sessions.insert(id, (*record).clone()) {
                inner.expiry.remove(&(old.expires_at(), id));
            }
            inner.expiry.insert((record.expires_at(), id));
        }
        Ok(())
    }

    async fn delete(&self, id: SessionId) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        match inner.sessions.remove(&id) {
            Some(r) => {
                inner.expiry.remove(&(r.expires_at(), id));
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        let due: Vec<(u64, SessionId)> = inner
            .expiry
            .range(..(now_ms.saturating_add(1), SessionId::min()))
            .copied()
            .collect();
        for entry in &due {
            inner.expiry.remove(entry);
            inner.sessions.remove(&entry.1);
        }
        Ok(due.len())
    }
}
