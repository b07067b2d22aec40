//! Running it as an operator does: the real binary stopped by SIGTERM while a request is in
//! flight, its log lines, its request ids, `/metrics` after a known load, `/openapi.json`
//! against the router (and schemathesis against the live server), `/.well-known/jwks.json`.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, StatusCode as AxumStatus};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;

/// How long a test waits for something the server must do promptly before failing.
const PATIENCE: Duration = Duration::from_secs(20);

/// A `sessiond serve` process whose log lines (stderr) the test reads; SIGKILLed when
/// dropped.
struct Running {
    child: Child,
    base: String,
    log: mpsc::Receiver<String>,
    /// Every log line read so far.
    seen: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Starts `sessiond serve --listen 127.0.0.1:0` with `args`, logging at `level` in
    /// `format`.
    fn start(args: &[&str], level: &str, format: &str) -> Running {
        let mut child = sessiond()
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", format])
            .args(args)
            .env("SESSIOND_LOG", level)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sessiond binary starts");
        let base = listening_base(&mut child);
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            base,
            log,
            seen: Vec::new(),
        }
    }

    /// [`Running::start`] with a configuration file and a data directory.
    fn configured(
        config: &std::path::Path,
        data: &std::path::Path,
        level: &str,
        format: &str,
    ) -> Running {
        let (config, data) = (config.to_str().unwrap(), data.to_str().unwrap());
        Running::start(&["--config", config, "--data-dir", data], level, format)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Reads log lines until one contains `text`; that line.
    fn wait_for_line(&mut self, text: &str) -> String {
        loop {
            match self.log.recv_timeout(PATIENCE) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(e) => panic!("no log line with {text:?} ({e}); lines: {:#?}", self.seen),
            }
        }
    }

    /// Every log line written until the process ended.
    fn rest_of_log(&mut self) -> Vec<String> {
        while let Ok(line) = self.log.recv_timeout(PATIENCE) {
            self.seen.push(line);
        }
        self.seen.clone()
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the process did not exit"
            );
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
}

/// A session app server the test drives: `/slow` tells the test it was called and answers
/// once the test releases it; `/never` never answers; `/deny` answers 401; `/ping` and
/// `/pong` feed each other forever.
struct Apps {
    addr: SocketAddr,
    called: tokio::sync::mpsc::UnboundedReceiver<()>,
    release: tokio::sync::watch::Sender<bool>,
}

impl Apps {
    async fn spawn() -> Apps {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (called_tx, called) = tokio::sync::mpsc::unbounded_channel();
        let (release, released) = tokio::sync::watch::channel(false);
        let json = |body: Value| {
            (
                AxumStatus::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
        };
        let bump = |body: &Bytes, from: &str, to: &str| {
            let input: Value = serde_json::from_slice(body).unwrap();
            let n = input["public"][from]["value"].as_i64().unwrap_or(0);
            json!({"public": {to: {"value": n + 1}}})
        };
        let router = axum::Router::new()
            .route(
                "/slow",
                axum::routing::post(move || {
                    let (called_tx, mut released) = (called_tx.clone(), released.clone());
                    async move {
                        let _ = called_tx.send(());
                        let _ = released.wait_for(|r| *r).await;
                        json(json!({"public": {"slowDone": {"value": "done"}}}))
                    }
                }),
            )
            .route(
                "/never",
                axum::routing::post(std::future::pending::<String>),
            )
            .route(
                "/deny",
                axum::routing::post(|| async {
                    (
                        AxumStatus::UNAUTHORIZED,
                        [(header::CONTENT_TYPE, "application/json")],
                        r#"{"type":"Unauthorized","message":"not for you"}"#,
                    )
                }),
            )
            .route(
                "/ping",
                axum::routing::post(
                    move |body: Bytes| async move { json(bump(&body, "ping", "pong")) },
                ),
            )
            .route(
                "/pong",
                axum::routing::post(
                    move |body: Bytes| async move { json(bump(&body, "pong", "ping")) },
                ),
            );
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Apps {
            addr,
            called,
            release,
        }
    }

    /// The demo configuration plus these apps on the demo account, written to `dir`.
    fn config(&self, dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
        let app = |name: &str, input: &str, output: &str, timeout_ms: u64| {
            format!(
                "[[accounts.apps]]\nname = \"{name}\"\nurl = \"http://{}/{name}\"\ntimeout_ms = {timeout_ms}\n\
                 configuration = {{ input = {{ public = [\"{input}\"] }}, output = {{ public = [\"{output}\"] }} }}\n",
                self.addr
            )
        };
        let text = format!(
            "{extra}\n{}\n{}{}{}{}{}",
            sessiond::config::DEMO_CONFIG,
            app("slow", "slow", "slowDone", 10_000),
            app("never", "never", "neverDone", 300),
            app("deny", "deny", "denyDone", 10_000),
            app("ping", "ping", "pong", 10_000),
            app("pong", "pong", "ping", 10_000),
        );
        let path = dir.join("sessiond.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// POST or PATCH `body` to `/api/sessions` with `cookie`; status and JSON answer.
async fn send(
    method: reqwest::Method,
    base: &str,
    cookie: &str,
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = plain()
        .request(method, format!("{base}/api/sessions"))
        .json(&body);
    if !cookie.is_empty() {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap())
}

/// `{"public": {key: {"value": value}}}`.
fn public(key: &str, value: Value) -> Value {
    json!({"public": {key: {"value": value}}})
}

/// A server on the test's apps (top-level settings `extra`) with a PATCH in flight, held by
/// the slow app (which has been called), then sent SIGTERM and draining.
struct Draining {
    _dir: tempfile::TempDir,
    apps: Apps,
    server: Running,
    data: std::path::PathBuf,
    cookie: String,
    in_flight: tokio::task::JoinHandle<(StatusCode, reqwest::header::HeaderMap, Value)>,
}

async fn draining(extra: &str) -> Draining {
    let dir = tempfile::tempdir().unwrap();
    let mut apps = Apps::spawn().await;
    let config = apps.config(dir.path(), extra);
    let data = dir.path().join("data");
    let mut server = Running::configured(&config, &data, "info", "text");
    let token = create_session_at(&server.base, json!({})).await;
    let cookie = format!("vtex_session={token}");
    let in_flight = tokio::spawn({
        let (base, cookie) = (server.base.clone(), cookie.clone());
        async move {
            let edit = public("slow", json!("go"));
            send(reqwest::Method::PATCH, &base, &cookie, edit).await
        }
    });
    apps.called.recv().await.expect("the slow app is called");
    server.signal("TERM");
    server.wait_for_line("shutting down");
    Draining {
        _dir: dir,
        apps,
        server,
        data,
        cookie,
        in_flight,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    let mut d = draining("").await;
    // While draining, a new request is refused (or, had its connection been taken just before
    // the signal, answered whole): never half-answered.
    match plain().get(d.server.url("/health")).send().await {
        Err(e) => assert!(e.is_connect() || e.is_request(), "{e}"),
        Ok(r) => assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok"),
    }
    d.apps.release.send(true).unwrap();
    let (status, _, answer) = d.in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(
        answer["sessionToken"].is_string(),
        "the whole answer: {answer}"
    );
    assert_eq!(d.server.exit_code(), Some(0));
    let log = d.server.rest_of_log();
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:#?}");
    // The edit that finished during the drain is stored.
    let (_again, again_base) = serve(&["--data-dir", d.data.to_str().unwrap()]);
    let session = get_json_at(
        &again_base,
        "/api/sessions?items=public.slow,public.slowDone",
        &d.cookie,
    )
    .await;
    assert_eq!(value_of(&session, "public", "slow"), Some(&json!("go")));
    assert_eq!(
        value_of(&session, "public", "slowDone"),
        Some(&json!("done"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let mut d = draining("shutdown_timeout = \"1h\"").await;
    d.server.signal("INT");
    assert_eq!(
        d.server.exit_code(),
        Some(130),
        "the second signal (SIGINT) ends it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_known_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut apps = Apps::spawn().await;
    let config = apps.config(dir.path(), "");
    let data = dir.path().join("data");
    let server = Running::configured(&config, &data, "warn", "text");
    let base = server.base.clone();
    use reqwest::Method;
    // Three creates, each saved (with a value: see `sessions::a_session_without_values_is_saved_at_its_first_change`).
    let mut cookies = Vec::new();
    for _ in 0..3 {
        let body = json!({"public": {"visit": {"value": "1"}}});
        let (status, _, pair) = send(Method::POST, &base, "", body).await;
        assert_eq!(status, StatusCode::CREATED);
        cookies.push(format!(
            "vtex_session={}",
            pair["sessionToken"].as_str().unwrap()
        ));
    }
    // Five reads of the first.
    for _ in 0..5 {
        let r = plain()
            .get(format!("{base}/api/sessions?items=*"))
            .header("cookie", &cookies[0])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // A log-in on the first.
    let identity = mint("demo", "alice@example.com", false, None);
    let login = format!("{}; {STORE_COOKIE}={identity}", cookies[0]);
    let (status, _, _) = send(Method::PATCH, &base, &login, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // A compare-and-swap conflict on the second: an edit waits on the slow app while another
    // edit of the same session is saved.
    let first = tokio::spawn({
        let (base, cookie) = (base.clone(), cookies[1].clone());
        async move { send(Method::PATCH, &base, &cookie, public("slow", json!("1"))).await }
    });
    apps.called.recv().await.expect("the slow app is called");
    let (status, _, _) = send(
        Method::PATCH,
        &base,
        &cookies[1],
        public("other", json!("x")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    apps.release.send(true).unwrap();
    let (status, _, _) = first.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    // An app timeout, an app's 401, a loop stopped at max_rounds, on the third.
    let (status, _, _) = send(
        Method::PATCH,
        &base,
        &cookies[2],
        public("never", json!("1")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, refusal) = send(
        Method::PATCH,
        &base,
        &cookies[2],
        public("deny", json!("1")),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refusal}");
    let (status, _, _) = send(Method::PATCH, &base, &cookies[2], public("ping", json!(0))).await;
    assert_eq!(status, StatusCode::OK);

    let m = Metrics::fetch(&base).await;
    let requests = |method: &str, status: &str| {
        m.get(
            "sessiond_http_requests_total",
            &[
                ("route", "/api/sessions"),
                ("method", method),
                ("status", status),
            ],
        )
    };
    assert_eq!(requests("POST", "201"), 3.0);
    assert_eq!(requests("GET", "200"), 5.0);
    assert_eq!(requests("PATCH", "200"), 5.0);
    assert_eq!(requests("PATCH", "401"), 1.0);
    assert_eq!(
        m.get(
            "sessiond_http_request_duration_seconds_count",
            &[("route", "/api/sessions"), ("method", "PATCH")]
        ),
        6.0
    );
    assert!(
        m.get(
            "sessiond_http_request_duration_seconds_bucket",
            &[
                ("route", "/api/sessions"),
                ("method", "PATCH"),
                ("le", "+Inf")
            ]
        ) == 6.0,
        "a histogram with buckets"
    );
    assert_eq!(m.get("sessiond_sessions_created_total", &[]), 3.0);
    assert_eq!(m.get("sessiond_logins_total", &[]), 1.0);
    assert_eq!(m.get("sessiond_logouts_total", &[]), 0.0);
    assert_eq!(m.get("sessiond_cas_conflicts_total", &[]), 1.0);
    assert_eq!(m.get("sessiond_cas_retries_total", &[]), 1.0);
    // Cycles: 3 creates, the log-in, the slow edit twice, the timeout, the refusal, the loop.
    assert_eq!(m.get("sessiond_cycles_total", &[]), 9.0);
    assert_eq!(m.get("sessiond_cycle_rounds_count", &[]), 9.0);
    assert_eq!(m.get("sessiond_cycle_loop_limit_total", &[]), 1.0);
    let app = |name: &str, series: &str| m.get(series, &[("account", "demo"), ("app", name)]);
    assert_eq!(app("slow", "sessiond_app_calls_total"), 2.0);
    assert_eq!(app("slow", "sessiond_app_call_duration_seconds_count"), 2.0);
    assert_eq!(app("never", "sessiond_app_calls_total"), 1.0);
    assert_eq!(app("never", "sessiond_app_timeouts_total"), 1.0);
    assert_eq!(app("never", "sessiond_app_failures_total"), 1.0);
    assert_eq!(
        m.get(
            "sessiond_app_rejections_total",
            &[("account", "demo"), ("app", "deny"), ("status", "401")]
        ),
        1.0
    );
    // The loop: ping and pong called in turn for max_rounds (10) rounds.
    assert_eq!(
        app("ping", "sessiond_app_calls_total") + app("pong", "sessiond_app_calls_total"),
        10.0
    );
    // Session loads: the 5 reads and the 7 edits' loads came from the cache, but the retry
    // after the conflict, which read the store.
    assert_eq!(m.get("sessiond_cache_hits_total", &[]), 11.0);
    assert_eq!(m.get("sessiond_cache_misses_total", &[]), 1.0);
    let store = |op: &str| {
        m.get(
            "sessiond_store_call_duration_seconds_count",
            &[("operation", op)],
        )
    };
    assert_eq!(store("get"), 1.0);
    // Saves: 3 creates, the other edit, the slow edit twice (one lost), the timeout, the
    // loop; the log-in saves the new id and ends the old one in one write.
    assert_eq!(store("put"), 8.0);
    assert_eq!(store("put_successor"), 1.0);
    // Group commits: as many fsyncs as batches, the writes in them those 9 saves and the
    // purges of expired sessions (one at start).
    let purges = store("purge");
    assert!(purges >= 1.0);
    let writes = m.get("sessiond_store_commit_batch_size_sum", &[]);
    assert_eq!(writes, 9.0 + purges);
    let batches = m.get("sessiond_store_commit_batch_size_count", &[]);
    assert!((1.0..=writes).contains(&batches), "{batches}");
    assert_eq!(
        m.get("sessiond_store_fsync_duration_seconds_count", &[]),
        batches
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_and_json_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Running::start(&["--data-dir", data.to_str().unwrap()], "debug", "json");
    // Every line is one JSON object; the startup summary says what runs.
    let summary = server.wait_for_line("listening");
    let summary: Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["level"], "INFO");
    assert_eq!(summary["secure_cookies"], false);
    let seen: Vec<Value> = server
        .seen
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<&str> = seen.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(messages.contains(&"starting sessiond"), "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("session signing key generated into")),
        "{messages:?}"
    );
    // A client's request id is answered and logged; without one, a new one is made.
    let token = create_session_at(&server.base, json!({})).await;
    let r = plain()
        .get(server.url("/api/sessions?items=*"))
        .header("cookie", format!("vtex_session={token}"))
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "req-42");
    let line: Value = serde_json::from_str(&server.wait_for_line("req-42")).unwrap();
    assert_eq!(line["message"], "request");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/api/sessions");
    assert_eq!(line["status"], 200);
    assert_eq!(line["account"], "demo");
    assert!(line["micros"].as_u64().is_some());
    assert!(
        !line.to_string().contains(&token),
        "never a token in the log: {line}"
    );
    let made = plain().get(server.url("/health")).send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        id.len() == 33 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'),
        "{id}"
    );
    let too_long = "x".repeat(200);
    let replaced = plain()
        .get(server.url("/health"))
        .header("x-request-id", &too_long)
        .send()
        .await
        .unwrap();
    assert_ne!(replaced.headers()["x-request-id"], too_long.as_str());
    // No log line anywhere holds a session token or an identity cookie value.
    let log = server.seen.join("\n");
    assert!(!log.contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_verifies_the_session_tokens() {
    let app = spawn_app().await;
    let jwks = get_json(&app, "/.well-known/jwks.json", "").await;
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    let token = create_session(&app, json!({})).await;
    let header = jwt_part(&token, 0);
    let key = &keys[0];
    assert_eq!(key["kid"], header["kid"]);
    assert_eq!(key["alg"], "ES256");
    let decoding = jsonwebtoken::DecodingKey::from_ec_components(
        key["x"].as_str().unwrap(),
        key["y"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let claims =
        jsonwebtoken::decode::<Value>(&token, &decoding, &validation).expect("verified by the JWK");
    assert_eq!(claims.claims["id"], jwt_part(&token, 1)["id"]);
}

/// The routes of the router and the paths of `/openapi.json` are the same, each documented
/// method is answered (never 405) and each undocumented one is not; the VTEX paths keep VTEX's
/// methods, statuses and schema names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_router_and_vtex() {
    // With the admin API on, so that its routes are routed too.
    let config = format!(
        "admin_token = \"t0ken-t0ken-t0ken\"\n{}",
        sessiond::config::DEMO_CONFIG
    );
    let app = spawn_with(Some(&config)).await;
    let doc = get_json(&app, "/openapi.json", "").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let routed: Vec<String> = sessiond::http::ROUTES
        .iter()
        .map(|r| r.replace("{*", "{"))
        .collect();
    let mut documented: Vec<String> = paths.keys().cloned().collect();
    let mut sorted = routed.clone();
    sorted.sort();
    documented.sort();
    assert_eq!(documented, sorted, "documented paths = routed paths");
    let methods = ["get", "head", "post", "put", "patch", "delete"];
    for (path, ops) in paths {
        let concrete = path
            .replace("{token}", "x")
            .replace("{account}", "demo")
            .replace("{name}", "x")
            .replace("{id}", "00000000-0000-4000-8000-000000000000")
            .replace("{asset}", "console.js");
        // The metrics name the route the router takes.
        let template = routed.iter().position(|r| r == path);
        assert_eq!(sessiond::http::route_of(&concrete), template, "{concrete}");
        for method in methods {
            let r = plain()
                .request(
                    reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    app.url(&concrete),
                )
                .send()
                .await
                .unwrap();
            // HEAD is answered wherever GET is (HTTP's rule).
            let documented =
                ops.get(method).is_some() || (method == "head" && ops.get("get").is_some());
            assert_eq!(
                r.status() != StatusCode::METHOD_NOT_ALLOWED,
                documented,
                "{method} {path}: {}",
                r.status()
            );
            assert_ne!(
                r.status(),
                StatusCode::NOT_FOUND,
                "{method} {path} is routed"
            );
        }
    }
    // VTEX's own document of the Session Manager API.
    for unrouted in ["/api/sessions/a/b", "/api", "/nope", "/api/sessions/"] {
        assert_eq!(sessiond::http::route_of(unrouted), None, "{unrouted}");
        let r = plain().get(app.url(unrouted)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{unrouted}");
    }
    assert_eq!(
        sessiond::http::route_of("/api/segments/a/b+c=="),
        routed.iter().position(|r| r == "/api/segments/{token}")
    );
    let vtex: Value = serde_json::from_str(include_str!(
        "../fixtures/vtex-session-manager-api.openapi.json"
    ))
    .unwrap();
    for (path, ops) in vtex["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let ours = &paths[path][method];
            assert!(ours.is_object(), "{method} {path} is VTEX's");
            for status in op["responses"].as_object().unwrap().keys() {
                assert!(
                    ours["responses"][status].is_object(),
                    "{method} {path} {status}"
                );
            }
            let schema_of = |o: &Value, status: &str| {
                o["responses"][status]["content"]["application/json"]["schema"]["$ref"].clone()
            };
            for status in op["responses"].as_object().unwrap().keys() {
                assert_eq!(
                    schema_of(ours, status),
                    schema_of(op, status),
                    "{method} {path}"
                );
            }
        }
    }
    // Every property VTEX gives its schemas is in ours.
    for (name, schema) in vtex["components"]["schemas"].as_object().unwrap() {
        let ours = &doc["components"]["schemas"][name];
        for property in schema["properties"].as_object().unwrap().keys() {
            assert!(
                ours["properties"][property].is_object(),
                "{name}.{property}"
            );
        }
    }
}

/// schemathesis (property-based tests generated from `/openapi.json`) against the real binary:
/// no server error, and every answer's status, content type, headers and body as documented.
#[test]
fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let tool =
        sessiond_testkit::ensure_schemathesis(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_server, base) = serve(&["--data-dir", data.to_str().unwrap()]);
    let out = std::process::Command::new(tool)
        .args([
            "run",
            &format!("{base}/openapi.json"),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
            "--max-examples",
            "50",
        ])
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let tail = |text: &str| {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    };
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{}\n{}",
        tail(&report),
        tail(&String::from_utf8_lossy(&out.stderr))
    );
    assert!(report.contains("23 selected / 23 total"), "{report}");
}

/// `deploy/sessiond.service` passes `systemd-analyze verify` (with `ExecStart` pointed at this
/// build: verify checks that the program exists), and lets a drain finish before systemd kills.
#[test]
fn the_systemd_unit_verifies() {
    sessiond_testkit::ensure_debian(&["systemd"], &["systemd-analyze"]);
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/sessiond.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/sessiond serve"));
    for hardening in [
        "DynamicUser=yes",
        "StateDirectory=sessiond",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(hardening), "{hardening}");
    }
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec=…s");
    assert!(
        stop > 30,
        "TimeoutStopSec {stop}s is above the default shutdown_timeout (30 s)"
    );
    // A system call the filter leaves out kills the process (no SystemCallErrorNumber=).
    let allowed = allowed_system_calls(&unit);
    for call in ["sched_setscheduler", "fsync", "epoll_wait", "futex"] {
        assert!(allowed.contains(call), "SystemCallFilter= allows {call}");
    }
    for call in ["setpriority", "sched_setaffinity", "mount"] {
        assert!(!allowed.contains(call), "SystemCallFilter= refuses {call}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessiond.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/sessiond", env!("CARGO_BIN_EXE_sessiond")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        !said.contains("sessiond.service"),
        "no warning about the unit: {said}"
    );
}

/// The system calls a unit's `SystemCallFilter=` lines allow, as systemd reads them when the
/// first line is an allow list: each later line adds its calls, or with `~` takes them away.
/// Groups (`@name`) are expanded by `systemd-analyze syscall-filter`.
fn allowed_system_calls(unit: &str) -> std::collections::BTreeSet<String> {
    fn expand(item: &str, into: &mut std::collections::BTreeSet<String>) {
        if !item.starts_with('@') {
            into.insert(item.to_owned());
            return;
        }
        let out = std::process::Command::new("systemd-analyze")
            .args(["syscall-filter", item])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "systemd-analyze syscall-filter {item}"
        );
        for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                expand(line, into);
            }
        }
    }
    let mut allowed = std::collections::BTreeSet::new();
    let lines = unit
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="));
    for (i, line) in lines.enumerate() {
        let (deny, items) = match line.strip_prefix('~') {
            Some(items) => (true, items),
            None => (false, line),
        };
        assert!(
            i > 0 || !deny,
            "the first SystemCallFilter= is an allow list"
        );
        let mut calls = std::collections::BTreeSet::new();
        for item in items.split_whitespace() {
            expand(item, &mut calls);
        }
        if deny {
            allowed.retain(|c| !calls.contains(c));
        } else {
            allowed.extend(calls);
        }
    }
    allowed
}

/// `metrics_listen` moves `/metrics` to a second address, which serves nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_the_metrics_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sessiond.toml");
    std::fs::write(
        &config,
        format!(
            "metrics_listen = \"127.0.0.1:0\"\n{}",
            sessiond::config::DEMO_CONFIG
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut server = Running::configured(&config, &data, "info", "json");
    let line: Value = serde_json::from_str(&server.wait_for_line("listening")).unwrap();
    let metrics = format!("http://{}", line["metrics"].as_str().unwrap());
    assert_ne!(metrics, server.base);
    create_session_at(&server.base, json!({})).await;
    let text = plain()
        .get(format!("{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("sessiond_sessions_created_total 1"), "{text}");
    let other = plain()
        .get(format!("{metrics}/api/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    // Not on the public address any more.
    let public = plain().get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    let error: Value = public.json().await.unwrap();
    assert_eq!(error["type"], "NotFound");
}
