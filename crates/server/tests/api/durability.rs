//! Acknowledged writes survive SIGKILL: the real binary, killed mid-load, restarted on the same
//! data directory.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{create_session_at, jwt_part, mint, plain, serve, token_id, Process};

/// Starts `sessiond serve` on port 0 on the data directory `data_dir`.
fn start(data_dir: &Path) -> (Process, String) {
    serve(&["--data-dir".as_ref(), data_dir.as_os_str()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (server, base) = start(dir.path());
    let client = plain();

    const WRITERS: usize = 8;
    let mut tokens = Vec::new();
    for w in 0..WRITERS {
        let r = client
            .post(format!("{base}/api/sessions"))
            .json(&json!({"public": {"writer": {"value": w.to_string()}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let pair: Value = r.json().await.unwrap();
        tokens.push(pair["sessionToken"].as_str().unwrap().to_owned());
    }

    // Writers patch new keys until the server dies; each records what was acknowledged.
    let acked: Arc<Mutex<Vec<Vec<usize>>>> = Arc::new(Mutex::new(vec![Vec::new(); WRITERS]));
    let total = Arc::new(AtomicUsize::new(0));
    let (enough_tx, enough_rx) = tokio::sync::oneshot::channel::<()>();
    let enough_tx = Arc::new(Mutex::new(Some(enough_tx)));
    let mut tasks = Vec::new();
    for (w, token) in tokens.iter().cloned().enumerate() {
        let (client, base, acked, total, enough_tx) = (
            client.clone(),
            base.clone(),
            acked.clone(),
            total.clone(),
            enough_tx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            for n in 0..10_000 {
                let sent = client
                    .patch(format!("{base}/api/sessions"))
                    .header("cookie", format!("vtex_session={token}"))
                    .json(&json!({"public": {format!("k{n}"): {"value": n}}}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == StatusCode::OK => {
                        acked.lock().unwrap()[w].push(n);
                        if total.fetch_add(1, Ordering::SeqCst) + 1 == 400 {
                            if let Some(tx) = enough_tx.lock().unwrap().take() {
                                let _ = tx.send(());
                            }
                        }
                    }
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    enough_rx.await.unwrap();
    drop(server); // SIGKILL, with writes in flight
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let acked_total: usize = acked.iter().map(Vec::len).sum();
    assert!(acked_total >= 400);

    let (_server, base) = start(dir.path());
    for (w, token) in tokens.iter().enumerate() {
        let r = client
            .get(format!("{base}/api/sessions?items=public.*"))
            .header("cookie", format!("vtex_session={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let s: Value = r.json().await.unwrap();
        assert_eq!(
            s["id"].as_str(),
            jwt_part(token, 1)["id"].as_str(),
            "the old token still names its session"
        );
        let public = s["namespaces"]["public"].as_object().unwrap();
        assert_eq!(public["writer"]["value"], w.to_string());
        for n in &acked[w] {
            assert_eq!(
                public.get(&format!("k{n}")).map(|v| &v["value"]),
                Some(&json!(n)),
                "writer {w}: acknowledged key k{n} lost"
            );
        }
        // Version = creation + every applied patch (acknowledged, plus at most the one in flight).
        let version = s["version"].as_u64().unwrap() as usize;
        assert!(version == 1 + acked[w].len() || version == 2 + acked[w].len());
    }
}

/// What a log-in leaves of the session it replaces, as stored: the end of it (inactive, by
/// whom replaced), with none of its values or identity tokens.
#[tokio::test]
async fn a_log_in_stores_only_the_end_of_the_old_session() {
    use sessiond_store::embedded::{EmbeddedOptions, EmbeddedStore};
    use sessiond_store::SessionStore;

    let dir = tempfile::tempdir().unwrap();
    let (server, base) = start(dir.path());
    let old_token = create_session_at(&base, json!({"public": {"k": {"value": "v"}}})).await;
    let identity = mint("demo", "alice@example.com", false, None);
    let r = plain()
        .patch(format!("{base}/api/sessions"))
        .header(
            "cookie",
            format!("vtex_session={old_token}; VtexIdclientAutCookie_demo={identity}"),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let pair: Value = r.json().await.unwrap();
    let new_id = token_id(pair["sessionToken"].as_str().unwrap());
    let old_id = token_id(&old_token);
    assert_ne!(new_id, old_id, "a log-in moves the session to a new id");
    drop(server);

    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let record = store
        .get_record(old_id.parse().unwrap(), 0)
        .await
        .unwrap()
        .expect("the end of the old session is stored");
    assert!(!record.active());
    assert_eq!(
        record.replaced_by().map(|id| id.to_string()),
        Some(new_id.clone())
    );
    assert!(!record.has_secrets(), "no identity token is kept with it");
    let ended = record.decode().unwrap();
    assert!(
        ended.namespaces.is_empty(),
        "no values: {:?}",
        ended.namespaces
    );
    let new = store
        .get_record(new_id.parse().unwrap(), 0)
        .await
        .unwrap()
        .expect("the new session is stored");
    assert!(new.active() && new.has_secrets());
    assert_eq!(
        new.decode().unwrap().get_str("public", "k"),
        Some("v"),
        "the values moved to the new session"
    );
}
