//! Every backend runs the same conformance suite.

use sessiond_store::{conformance, EmbeddedOptions, EmbeddedStore, MemoryStore};

#[tokio::test]
async fn memory_backend_conforms() {
    conformance::run_all(MemoryStore::new).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend_conforms() {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_all(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
        dirs.lock().unwrap().push(dir);
        store
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_backend_conforms_without_group_commit() {
    let dirs = std::sync::Mutex::new(Vec::new());
    conformance::run_all(|| {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions { max_batch: 1 }).unwrap();
        dirs.lock().unwrap().push(dir);
        store
    })
    .await;
}

/// A backend that writes records one by one: the trait's own `put_records`.
struct OneByOne(MemoryStore);

#[async_trait::async_trait]
impl sessiond_store::SessionStore for OneByOne {
    async fn get_record(
        &self,
        id: sessiond_core::SessionId,
        now_ms: u64,
    ) -> Result<Option<sessiond_core::Record>, sessiond_store::StoreError> {
        self.0.get_record(id, now_ms).await
    }

    async fn put_record(
        &self,
        record: &sessiond_core::Record,
        expected: Option<u64>,
    ) -> Result<(), sessiond_store::StoreError> {
        self.0.put_record(record, expected).await
    }

    async fn delete(
        &self,
        id: sessiond_core::SessionId,
    ) -> Result<bool, sessiond_store::StoreError> {
        self.0.delete(id).await
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<usize, sessiond_store::StoreError> {
        self.0.purge_expired(now_ms).await
    }

    async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, sessiond_store::StoreError> {
        self.0.setting(name).await
    }

    async fn put_setting(
        &self,
        name: &str,
        value: &[u8],
        expected: Option<&[u8]>,
    ) -> Result<(), sessiond_store::StoreError> {
        self.0.put_setting(name, value, expected).await
    }
}

#[tokio::test]
async fn a_backend_with_single_writes_conforms() {
    conformance::run_all(|| OneByOne(MemoryStore::new())).await;
}
