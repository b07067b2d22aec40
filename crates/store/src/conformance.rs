//! The conformance suite: what every [`SessionStore`] backend must do.
//!
//! Each check takes a fresh, empty store and panics with a message on failure. A backend's
//! test file calls [`run_all`] (or the checks one by one) on a store of its kind.

use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sessiond_core::{Key, Record, Session, Value};

use crate::{SessionStore, StoreError};

/// The suite's "now": the real time when it started, since a backend that expires sessions by
/// itself (Redis) drops a session whose deadline is already past.
static NOW: LazyLock<u64> = LazyLock::new(|| {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
});
const TTL: u64 = 5 * 24 * 3600 * 1000;
/// A short lifetime, still long enough that no real clock reaches it while the suite runs.
const SHORT: u64 = 60_000;

fn session(account: &str) -> Session {
    let mut s = Session::new(account, *NOW, TTL);
    s.set(&Key::new("account", "accountName"), Value::new(account));
    s
}

/// Runs every check, each on a store made by `make`.
pub async fn run_all<S: SessionStore, F: Fn() -> S>(make: F) {
    missing_is_none(&make()).await;
    insert_then_get_round_trips(&make()).await;
    insert_twice_conflicts(&make()).await;
    compare_and_swap(&make()).await;
    expiry_and_purge(&make()).await;
    delete_removes(&make()).await;
    concurrent_writers_one_wins(Arc::new(make())).await;
    any_json_round_trips(&make()).await;
    put_records_all_or_none(&make(), false).await;
    put_records_all_or_none(&make(), true).await;
    shared_values_are_agreed_once(&make()).await;
    settings_change_by_compare_and_swap(&make()).await;
}

/// An unknown id is `None`.
pub async fn missing_is_none(store: &dyn SessionStore) {
    let s = session("demo");
    assert!(store.get(s.id, *NOW).await.unwrap().is_none());
}

/// What was put is what is got, field for field.
pub async fn insert_then_get_round_trips(store: &dyn SessionStore) {
    let s = session("demo");
    store.put(&s, None).await.unwrap();
    assert_eq!(store.get(s.id, *NOW).await.unwrap(), Some(s));
}

/// `expected = None` refuses to overwrite an existing session.
pub async fn insert_twice_conflicts(store: &dyn SessionStore) {
    let s = session("demo");
    store.put(&s, None).await.unwrap();
    let mut other = s.clone();
    other.set(&Key::new("public", "x"), Value::new("1"));
    assert!(matches!(
        store.put(&other, None).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.get(s.id, *NOW).await.unwrap(), Some(s));
}

/// A put with the stored version wins; a put with a stale version changes nothing.
pub async fn compare_and_swap(store: &dyn SessionStore) {
    let v1 = session("demo");
    store.put(&v1, None).await.unwrap();
    let mut v2 = v1.clone();
    v2.version = 2;
    v2.set(&Key::new("public", "a"), Value::new("2"));
    store.put(&v2, Some(1)).await.unwrap();
    let mut stale = v1.clone();
    stale.version = 2;
    stale.set(&Key::new("public", "a"), Value::new("stale"));
    assert!(matches!(
        store.put(&stale, Some(1)).await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        store.put(&stale, Some(7)).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(store.get(v1.id, *NOW).await.unwrap(), Some(v2));
}

/// Expired sessions are never returned, and the purge removes exactly them (a backend that
/// expires sessions by itself has nothing to purge).
pub async fn expiry_and_purge(store: &dyn SessionStore) {
    let short = Session::new("demo", *NOW, SHORT);
    let long = session("demo");
    store.put(&short, None).await.unwrap();
    store.put(&long, None).await.unwrap();
    assert!(store
        .get(short.id, *NOW + SHORT - 1)
        .await
        .unwrap()
        .is_some());
    assert!(store.get(short.id, *NOW + SHORT).await.unwrap().is_none());
    if store.expires_by_itself() {
        assert_eq!(store.purge_expired(*NOW + 2 * TTL).await.unwrap(), 0);
        let mut renewed = long.clone();
        renewed.version = 2;
        renewed.expires_at = *NOW + 2 * TTL;
        store.put(&renewed, Some(1)).await.unwrap();
        assert!(store.get(long.id, *NOW + TTL).await.unwrap().is_some());
        assert!(store.get(long.id, *NOW + 2 * TTL).await.unwrap().is_none());
        return;
    }
    assert_eq!(store.purge_expired(*NOW + SHORT).await.unwrap(), 1);
    assert_eq!(store.purge_expired(*NOW + SHORT).await.unwrap(), 0);
    assert!(!store.delete(short.id).await.unwrap());
    assert!(store.get(long.id, *NOW + SHORT).await.unwrap().is_some());
    // An update that extends the lifetime moves the session in the expiry index.
    let mut renewed = long.clone();
    renewed.version = 2;
    renewed.expires_at = *NOW + 2 * TTL;
    store.put(&renewed, Some(1)).await.unwrap();
    assert_eq!(store.purge_expired(*NOW + TTL).await.unwrap(), 0);
    assert!(store.get(long.id, *NOW + TTL).await.unwrap().is_some());
    assert_eq!(store.purge_expired(*NOW + 2 * TTL).await.unwrap(), 1);
}

/// Delete removes and reports whether it did.
pub async fn delete_removes(store: &dyn SessionStore) {
    let s = session("demo");
    store.put(&s, None).await.unwrap();
    assert!(store.delete(s.id).await.unwrap());
    assert!(!store.delete(s.id).await.unwrap());
    assert!(store.get(s.id, *NOW).await.unwrap().is_none());
    // A deleted id may be inserted again.
    store.put(&s, None).await.unwrap();
}

/// Of many concurrent writers with the same expected version, exactly one wins.
pub async fn concurrent_writers_one_wins<S: SessionStore>(store: Arc<S>) {
    let base = session("demo");
    store.put(&base, None).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = store.clone();
        let mut mine = base.clone();
        mine.version = 2;
        mine.set(&Key::new("public", "writer"), Value::new(i.to_string()));
        tasks.push(tokio::spawn(async move {
            match store.put(&mine, Some(1)).await {
                Ok(()) => Some(i),
                Err(StoreError::Conflict) => None,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        if let Some(i) = t.await.unwrap() {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = store.get(base.id, *NOW).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(
        stored.get_str("public", "writer"),
        Some(winners[0].to_string().as_str())
    );
}

/// Objects, numbers, booleans and unicode survive storage unchanged.
pub async fn any_json_round_trips(store: &dyn SessionStore) {
    let mut s = session("demo");
    let value =
        serde_json::json!({"z": 1, "a": [1.5, true, null, "ünï"], "n": 18446744073709551615u64});
    s.set(&Key::new("public", "obj"), Value::kept(value.clone()));
    store.put(&s, None).await.unwrap();
    let got = store.get(s.id, *NOW).await.unwrap().unwrap();
    assert_eq!(got.get("public", "obj"), Some(&Value::kept(value)));
    assert_eq!(
        serde_json::to_string(&got).unwrap(),
        serde_json::to_string(&s).unwrap()
    );
}

/// Several records saved together: all of them, or on a conflict none; the new session's id is
/// the old one's [`sessiond_core::SessionId::successor`] (as at a log-in) or unrelated.
pub async fn put_records_all_or_none(store: &dyn SessionStore, successor: bool) {
    let old = session("demo");
    store.put(&old, None).await.unwrap();
    // A new session and the old one ended, as at a log-in.
    let mut new = session("demo");
    if successor {
        new.id = old.id.successor();
    }
    let mut ended = old.clone();
    ended.version = 2;
    ended.active = false;
    ended.replaced_by = Some(new.id);
    let (new_record, ended_record) = (Record::encode(&new, None), Record::encode(&ended, None));
    store
        .put_records(&[(&new_record, None), (&ended_record, Some(1))])
        .await
        .unwrap();
    assert_eq!(store.get(new.id, *NOW).await.unwrap(), Some(new));
    assert_eq!(store.get(old.id, *NOW).await.unwrap(), Some(ended.clone()));
    // A stale condition on the last record: the new one is not left behind.
    let mut other = session("demo");
    if successor {
        other.id = old.id.successor();
    }
    let mut stale = ended.clone();
    stale.version = 3;
    stale.set(&Key::new("public", "a"), Value::new("stale"));
    let result = store
        .put_records(&[
            (&Record::encode(&other, None), None),
            (&Record::encode(&stale, None), Some(1)),
        ])
        .await;
    assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    assert_eq!(store.get(other.id, *NOW).await.unwrap(), None);
    assert_eq!(store.get(old.id, *NOW).await.unwrap(), Some(ended));
}

/// A setting is stored only over the value it is expected to hold (or none), and read back.
pub async fn settings_change_by_compare_and_swap(store: &dyn SessionStore) {
    let name = format!("conformance-{}", sessiond_core::SessionId::random());
    assert_eq!(store.setting(&name).await.unwrap(), None);
    store.put_setting(&name, b"one", None).await.unwrap();
    assert_eq!(
        store.setting(&name).await.unwrap().as_deref(),
        Some(&b"one"[..])
    );
    for (value, expected) in [
        (&b"x"[..], None),
        (b"x", Some(&b"two"[..])),
        (b"x", Some(b"")),
    ] {
        let refused = store.put_setting(&name, value, expected).await;
        assert!(matches!(refused, Err(StoreError::Conflict)), "{refused:?}");
    }
    store.put_setting(&name, b"", Some(b"one")).await.unwrap();
    assert_eq!(
        store.setting(&name).await.unwrap().as_deref(),
        Some(&b""[..])
    );
    store.put_setting(&name, b"three", Some(b"")).await.unwrap();
    assert_eq!(
        store.setting(&name).await.unwrap().as_deref(),
        Some(&b"three"[..])
    );
}

/// A shared backend stores the first value offered under a name and gives it to every later
/// caller; a backend of one process keeps none (`None`).
pub async fn shared_values_are_agreed_once(store: &dyn SessionStore) {
    let name = format!("conformance-{}", sessiond_core::SessionId::random());
    match store.agree(&name, b"first").await.unwrap() {
        None => assert_eq!(store.agree(&name, b"second").await.unwrap(), None),
        Some(first) => {
            assert_eq!(first, b"first");
            let again = store.agree(&name, b"second").await.unwrap();
            assert_eq!(again.as_deref(), Some(&b"first"[..]));
        }
    }
}
