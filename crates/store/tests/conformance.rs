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
