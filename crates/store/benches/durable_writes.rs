//! Durable write throughput of the embedded store: one fsync per write against group commit.
//!
//! 64 concurrent tasks each update their own session (about 1 KiB of JSON) with sequential
//! compare-and-swap puts, for a fixed total of writes, once with `max_batch: 1` and once with
//! the default group commit, in a fresh temporary directory each. Every acknowledged write is
//! fsynced in both runs; only the number of writes sharing one fsync differs.
//!
//! Run with `cargo bench -p sessiond-store --bench durable_writes`; set `DURABLE_WRITES` to
//! change the total number of writes (default 20,000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sessiond_core::{Key, Session, Value};
use sessiond_store::{EmbeddedOptions, EmbeddedStore, SessionStore};

const TASKS: usize = 64;
const NOW: u64 = 1_700_000_000_000;
const TTL: u64 = 24 * 3600 * 1000;

/// A session whose stored JSON is about 1 KiB.
fn session(task: usize) -> Session {
    let mut s = Session::new("bench", NOW, TTL);
    s.set(&Key::new("account", "accountName"), Value::new("bench"));
    s.set(
        &Key::new("public", "payload"),
        Value::new(format!("{task:04}").repeat(220)),
    );
    s
}

/// Runs the workload on a fresh store; returns the time the timed writes took.
async fn run(options: EmbeddedOptions, writes_per_task: usize) -> Duration {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Arc::new(EmbeddedStore::open(dir.path(), options).expect("open store"));
    let mut sessions = Vec::with_capacity(TASKS);
    for task in 0..TASKS {
        let s = session(task);
        store.put(&s, None).await.expect("insert");
        sessions.push(s);
    }
    let start = Instant::now();
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|mut s| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..writes_per_task {
                    let expected = s.version;
                    s.version += 1;
                    s.updated_at = NOW + i as u64;
                    store.put(&s, Some(expected)).await.expect("CAS update");
                }
                s
            })
        })
        .collect();
    let mut finished = Vec::with_capacity(TASKS);
    for t in tasks {
        finished.push(t.await.expect("writer task"));
    }
    let elapsed = start.elapsed();
    for s in finished {
        let stored = store.get(s.id, NOW).await.unwrap().expect("stored session");
        assert_eq!(stored.version, 1 + writes_per_task as u64);
    }
    elapsed
}

fn main() {
    let total: usize = std::env::var("DURABLE_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let per_task = total.div_ceil(TASKS);
    let total = per_task * TASKS;
    let json = serde_json::to_vec(&session(0)).unwrap().len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("durable_writes: {TASKS} tasks x {per_task} CAS updates = {total} writes, {json} B JSON each");

    let mut rates = Vec::new();
    for (label, options) in [
        (
            "max_batch = 1 (fsync per write)",
            EmbeddedOptions { max_batch: 1 },
        ),
        ("group commit (default options)", EmbeddedOptions::default()),
    ] {
        let elapsed = rt.block_on(run(options, per_task));
        let rate = total as f64 / elapsed.as_secs_f64();
        println!(
            "  {label:<32} {:>8.3} s  {rate:>10.0} writes/s",
            elapsed.as_secs_f64()
        );
        rates.push(rate);
    }
    println!(
        "  group commit / fsync per write: {:.1}x",
        rates[1] / rates[0]
    );
}
