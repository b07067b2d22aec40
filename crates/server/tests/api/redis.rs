//! Many processes on one Redis: sessions, log-ins and resets move between `sessiond`
//! processes on a Redis Cluster, and a Redis that is down or frozen is answered with 503 in
//! time, then served again without a restart.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sessiond_testkit::{RedisCluster, RedisServer};

use crate::harness::{
    cookie_value, mint, plain, serve, spawn_on, text, token_id, Metrics, Process, ALICE,
    STORE_COOKIE,
};

/// `store_timeout`'s default.
const STORE_TIMEOUT: Duration = Duration::from_secs(1);

async fn send(
    method: reqwest::Method,
    url: String,
    cookie: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = plain().request(method, url).header("cookie", cookie);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn get(base: &str, token: &str) -> Value {
    let r = send(
        reqwest::Method::GET,
        format!("{base}/api/sessions?items=*"),
        &format!("vtex_session={token}"),
        None,
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn patch(base: &str, cookie: &str, public: Value) -> reqwest::Response {
    let body = json!({ "public": public });
    send(
        reqwest::Method::PATCH,
        format!("{base}/api/sessions"),
        cookie,
        Some(body),
    )
    .await
}

/// A PATCH answered with the whole session (`?items=*`).
async fn patch_items(base: &str, cookie: &str, public: Value) -> Value {
    let body = json!({ "public": public });
    let url = format!("{base}/api/sessions?items=*");
    let r = send(reqwest::Method::PATCH, url, cookie, Some(body)).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// A `sessiond serve` process on the store `url`, with a data directory of its own (dropped
/// with it): the process and its base URL.
fn serve_on(url: &str) -> ((Process, tempfile::TempDir), String) {
    let dir = tempfile::tempdir().unwrap();
    let (process, base) = serve(&[
        "--store".as_ref(),
        std::ffi::OsStr::new(url),
        "--data-dir".as_ref(),
        dir.path().as_os_str(),
    ]);
    ((process, dir), base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_cluster_serve_the_same_sessions() {
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let (_a, a) = serve_on(&url);
    let (_b, b) = serve_on(&url);

    // Created through A, read and edited through B, read again through A.
    let r = send(
        reqwest::Method::POST,
        format!("{a}/api/sessions"),
        "",
        Some(json!({"public": {"from": {"value": "a"}}})),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let token = r.json::<Value>().await.unwrap()["sessionToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let seen = get(&b, &token).await;
    assert_eq!(seen["id"], token_id(&token), "B verifies A's token");
    assert_eq!(text(&seen, "public", "from"), Some("a"));
    let cookie = format!("vtex_session={token}");
    assert_eq!(
        patch(&b, &cookie, json!({"by": {"value": "b"}}))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(text(&get(&a, &token).await, "public", "by"), Some("b"));

    // 2 x 25 concurrent PATCHes of that session, over both processes: no key is lost.
    let writes = (0..50).map(|i| {
        let base = if i % 2 == 0 { a.clone() } else { b.clone() };
        let cookie = cookie.clone();
        async move {
            let r = patch(
                &base,
                &cookie,
                json!({ format!("k{i}"): {"value": i.to_string()} }),
            )
            .await;
            assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
        }
    });
    futures::future::join_all(writes).await;
    let after = get(&b, &token).await;
    for i in 0..50 {
        assert_eq!(
            text(&after, "public", &format!("k{i}")),
            Some(i.to_string().as_str())
        );
    }

    // A log-in through B: a new id and token, which A serves with the profile.
    let identity = mint("demo", "alice@example.com", false, None);
    let r = patch(
        &b,
        &format!("{cookie}; {STORE_COOKIE}={identity}"),
        json!({}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let logged = cookie_value(r.headers(), "vtex_session").unwrap();
    assert_ne!(token_id(&logged), token_id(&token), "a new id at log-in");
    let seen = get(&a, &logged).await;
    assert_eq!(text(&seen, "authentication", "storeUserId"), Some(ALICE));
    assert_eq!(
        text(&seen, "public", "by"),
        Some("b"),
        "the values came along"
    );

    // A reset through A: B no longer serves the old token's session.
    let r = send(
        reqwest::Method::DELETE,
        format!("{a}/api/sessions"),
        &format!("vtex_session={logged}"),
        None,
    )
    .await;
    assert!(r.status().is_success(), "{}", r.status());
    let fresh = get(&b, &logged).await;
    assert_ne!(fresh["id"], token_id(&logged), "the reset session is gone");
    assert_eq!(text(&fresh, "authentication", "storeUserId"), None);
}

/// Polls `GET /ready` until it answers `status`, for up to 10 s; how long that took.
async fn ready_becomes(base: &str, status: StatusCode) -> Duration {
    let started = Instant::now();
    loop {
        let r = plain().get(format!("{base}/ready")).send().await.unwrap();
        if r.status() == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "/ready stayed {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Once `/ready` says the store is out of reach, a GET with `token` answers 503 `Unavailable`
/// within the store timeout (and a margin). (Until then, for a moment, a session this process
/// holds may still be answered from its cache: see ARCHITECTURE.md, Redis.)
async fn unavailable(base: &str, token: &str) {
    let waited = ready_becomes(base, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(waited < STORE_TIMEOUT * 3, "/ready took {waited:?}");
    let started = Instant::now();
    let r = send(
        reqwest::Method::GET,
        format!("{base}/api/sessions?items=*"),
        &format!("vtex_session={token}"),
        None,
    )
    .await;
    let took = started.elapsed();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "Unavailable", "{body}");
    assert!(took < STORE_TIMEOUT * 3, "answered after {took:?}");
    let r = plain().get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// Two processes on the store `url` (whose nodes are `nodes`): a session written through one
/// is never answered older by the other, reads with nothing changed come from the process's
/// copy, and a FLUSHALL empties the copies.
async fn never_older(url: String, nodes: &[RedisServer]) {
    let (_a, a) = serve_on(&url);
    let (_b, b) = serve_on(&url);
    ready_becomes(&a, StatusCode::OK).await;
    // Created with a value, so saved at once (a session that holds only what its create
    // cycle derives is saved at its first change).
    let token =
        crate::harness::create_session_at(&a, json!({"public": {"k": {"value": "v"}}})).await;
    let cookie = format!("vtex_session={token}");
    // A reads (and keeps) each version; B writes the next; A must answer B's at once.
    for i in 0..100 {
        let seen = get(&a, &token).await;
        assert_eq!(
            text(&seen, "public", "n"),
            (i > 0).then(|| (i - 1).to_string()).as_deref()
        );
        let r = patch(&b, &cookie, json!({"n": {"value": i.to_string()}})).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    for node in nodes {
        let stats = node.cli(&["info", "commandstats"]);
        assert!(stats.contains("cmdstat_client|tracking"), "{stats}");
    }
    // Sessions A read from Redis (its store metrics: other reads, such as the installed
    // apps a process follows, are not counted here).
    let gets = || async {
        Metrics::fetch(&a).await.get(
            "sessiond_store_call_duration_seconds_count",
            &[("operation", "get")],
        )
    };
    // Reads with no write between them come from A's copy, not from Redis.
    get(&a, &token).await;
    let before = gets().await;
    for _ in 0..20 {
        get(&a, &token).await;
    }
    assert_eq!(
        gets().await,
        before,
        "read from Redis while nothing changed"
    );

    // Edits in a row through A start from A's own last save (Redis tells A of its own writes
    // too, made in a script: the copy is stale, yet the compare-and-swap proves it current).
    for i in 0..10 {
        let r = patch(&a, &cookie, json!({"mine": {"value": i.to_string()}})).await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    assert_eq!(
        gets().await,
        before,
        "an edit read Redis after this process's own save"
    );
    // B changes the session: A's edit of another key starts from its stale copy, loses the
    // compare-and-swap, and is made again on B's version; nothing is lost.
    let r = patch(&b, &cookie, json!({"theirs": {"value": "1"}})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let answer = patch_items(&a, &cookie, json!({"mine": {"value": "10"}})).await;
    assert_eq!(text(&answer, "public", "theirs"), Some("1"), "{answer}");
    assert_eq!(text(&answer, "public", "mine"), Some("10"), "{answer}");
    // B changes it again; A's edit that changes nothing (on its stale copy) answers the
    // stored version, B's, not its copy.
    let r = patch(&b, &cookie, json!({"theirs": {"value": "2"}})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let answer = patch_items(&a, &cookie, json!({"mine": {"value": "10"}})).await;
    assert_eq!(text(&answer, "public", "theirs"), Some("2"), "{answer}");
    assert_eq!(text(&get(&b, &token).await, "public", "mine"), Some("10"));

    // Everything dropped in Redis: A forgets its copies too.
    get(&a, &token).await;
    for node in nodes {
        assert_eq!(node.cli(&["flushall"]), "OK");
    }
    let after = get(&a, &token).await;
    assert_ne!(
        after["id"],
        token_id(&token),
        "the flushed session is not served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_node_a_process_never_serves_a_session_older_than_another_acknowledged() {
    let redis = RedisServer::start();
    never_older(redis.url(), std::slice::from_ref(&redis)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_process_never_serves_a_session_older_than_another_acknowledged() {
    let cluster = RedisCluster::start();
    never_older(cluster.url(), cluster.nodes()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_or_freezes_gets_503_in_time_and_is_served_again() {
    let mut redis = RedisServer::start();
    let app = spawn_on(&redis.url()).await;
    let base = app.url("");
    let token =
        crate::harness::create_session(&app, json!({"public": {"a": {"value": "1"}}})).await;

    // Stopped: 503 within the timeout; restarted on the same port: served again, no restart
    // of sessiond (this Redis keeps nothing on disk, so the session is new).
    redis.stop();
    unavailable(&base, &token).await;
    redis.restart();
    ready_becomes(&base, StatusCode::OK).await;
    let fresh = get(&base, &token).await;
    assert_ne!(fresh["id"], token_id(&token));

    // Frozen (SIGSTOP): the same 503 in time; thawed: the session is served with its data.
    let token =
        crate::harness::create_session(&app, json!({"public": {"b": {"value": "2"}}})).await;
    redis.freeze();
    unavailable(&base, &token).await;
    redis.thaw();
    ready_becomes(&base, StatusCode::OK).await;
    let back = get(&base, &token).await;
    assert_eq!(back["id"], token_id(&token));
    assert_eq!(text(&back, "public", "b"), Some("2"));
}
