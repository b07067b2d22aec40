//! The Redis backend against real `redis-server` processes: the conformance suite on one node,
//! on one with a password, and on a cluster of three masters; then what only Redis has.

use std::time::{Duration, Instant};

use sessiond_core::{Record, Session};
use sessiond_store::{conformance, RedisStore, SessionStore, StoreError};
use sessiond_testkit::{RedisCluster, RedisServer};

const TIMEOUT: Duration = Duration::from_secs(2);

async fn open(url: &str) -> RedisStore {
    RedisStore::open(url, TIMEOUT).await.unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_conforms() {
    let server = RedisServer::start();
    let store = open(&server.url()).await;
    conformance::run_all(|| store.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_password_and_a_database_conforms() {
    let server = RedisServer::with_password("s3cret pass");
    let url = format!("redis://:s3cret%20pass@127.0.0.1:{}/2", server.port());
    let store = open(&url).await;
    conformance::run_all(|| store.clone()).await;
    assert_ne!(
        server.cli(&["-n", "2", "dbsize"]),
        "0",
        "written to database 2"
    );
    assert_eq!(server.cli(&["-n", "0", "dbsize"]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_conforms() {
    let cluster = RedisCluster::start();
    let store = open(&cluster.url()).await;
    conformance::run_all(|| store.clone()).await;
    // The sessions are spread over the masters.
    let holding = cluster
        .nodes()
        .iter()
        .filter(|n| n.cli(&["dbsize"]) != "0")
        .count();
    assert!(holding >= 2, "sessions on {holding} of 3 masters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_slots_moved_is_followed() {
    let cluster = RedisCluster::start();
    let store = open(&cluster.url()).await;
    let sessions: Vec<Session> = (0..300)
        .map(|_| Session::new("demo", now(), 3_600_000))
        .collect();
    for s in &sessions {
        store.put(s, None).await.unwrap();
    }
    // Half of the first master's slots (and their sessions) move to the second one: the
    // client's map of the slots is stale, and Redis answers MOVED for them.
    let keys_before = cluster.nodes()[1].cli(&["dbsize"]);
    let moved = tokio::task::spawn_blocking(move || {
        cluster.move_slots(0, 1, 2730);
        cluster
    })
    .await
    .unwrap();
    assert_ne!(
        moved.nodes()[1].cli(&["dbsize"]),
        keys_before,
        "sessions moved"
    );
    for s in &sessions {
        assert_eq!(store.get(s.id, now()).await.unwrap().as_ref(), Some(s));
        let mut next = s.clone();
        next.version = 2;
        store.put(&next, Some(1)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_sets_the_deadline_as_the_key_expiry() {
    let server = RedisServer::start();
    let store = open(&server.url()).await;
    let session = Session::new("demo", now(), 3_600_000);
    store.put(&session, None).await.unwrap();
    let key = server.cli(&["--scan", "--pattern", "sessiond:*"]);
    assert_eq!(
        server.cli(&["pexpiretime", &key]),
        session.expires_at.to_string()
    );
    let mut longer = session.clone();
    longer.version = 2;
    longer.expires_at += 60_000;
    store.put(&longer, Some(1)).await.unwrap();
    assert_eq!(
        server.cli(&["pexpiretime", &key]),
        longer.expires_at.to_string()
    );
    // What is stored is the record, byte for byte.
    let stored = store.get_record(session.id, now()).await.unwrap().unwrap();
    assert_eq!(stored.stored(), Record::encode(&longer, None).stored());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_error_that_names_no_password() {
    let server = RedisServer::with_password("right");
    let url = format!("redis://:wrong@127.0.0.1:{}", server.port());
    let started = Instant::now();
    let error = match RedisStore::open(&url, TIMEOUT).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a wrong password connected"),
    };
    assert!(started.elapsed() < TIMEOUT * 3, "{:?}", started.elapsed());
    assert!(!error.contains("wrong"), "{error}");
    assert!(error.contains(":***@"), "{error}");
    assert!(
        error.to_lowercase().contains("auth") || error.contains("WRONGPASS"),
        "{error}"
    );
    let none = format!("redis://127.0.0.1:{}", server.port());
    assert!(
        RedisStore::open(&none, TIMEOUT).await.is_err(),
        "no password at all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_down_or_frozen_is_unavailable_in_time_and_then_back() {
    let mut server = RedisServer::start();
    let store = open(&server.url()).await;
    let session = Session::new("demo", now(), 3_600_000);
    store.put(&session, None).await.unwrap();

    server.freeze();
    let started = Instant::now();
    let frozen = store.get_record(session.id, now()).await;
    assert!(
        matches!(frozen, Err(StoreError::Unavailable(_))),
        "{frozen:?}"
    );
    assert!(started.elapsed() < TIMEOUT * 2, "{:?}", started.elapsed());
    server.thaw();
    let mut back = false;
    for _ in 0..50 {
        if let Ok(Some(s)) = store.get(session.id, now()).await {
            assert_eq!(s, session);
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "served again after SIGCONT");

    server.stop();
    let started = Instant::now();
    let down = store.ping().await;
    assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");
    assert!(started.elapsed() < TIMEOUT * 2, "{:?}", started.elapsed());
    server.restart();
    let mut back = false;
    for _ in 0..50 {
        if store.ping().await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "answers again once restarted");
    // Nothing was persisted: the restarted Redis is empty, and the store works on it.
    assert_eq!(store.get(session.id, now()).await.unwrap(), None);
    store.put(&session, None).await.unwrap();
}
