//! The admin API (SPEC section 8): every route behind the bearer `admin_token` (absent from the
//! configuration: no admin API at all), apps installed and uninstalled while the server runs
//! (kept in the store: across a restart on the embedded store, between live processes on
//! Redis), sessions read whole by id and their `debug` switched.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sessiond_testkit::RedisServer;

use crate::harness::*;

pub(crate) const TOKEN: &str = "admin-secret-0123456789";

/// The demo configuration with the admin API on.
pub(crate) fn config() -> String {
    format!(
        "admin_token = \"{TOKEN}\"\n{}",
        sessiond::config::DEMO_CONFIG
    )
}

/// A session app answering `{"loyalty": {"tier": "gold"}}`, counting its calls.
pub(crate) struct Loyalty {
    pub(crate) addr: SocketAddr,
    calls: Arc<AtomicUsize>,
}

impl Loyalty {
    pub(crate) async fn spawn() -> Loyalty {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let router = axum::Router::new().fallback(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { axum::Json(json!({"loyalty": {"tier": {"value": "gold"}}})) }
        });
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Loyalty { addr, calls }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The app's install body: VTEX's `configuration.json` plus `url`.
    pub(crate) fn body(&self) -> Value {
        json!({
            "loyalty": {"input": {"public": ["loyaltyCard"]}, "output": {"loyalty": ["tier"]}},
            "url": format!("http://{}/", self.addr),
        })
    }
}

/// An admin request: the answer's status and JSON body (`null` when there is none).
pub(crate) async fn admin(
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = plain().request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// GET `path` with the admin token.
async fn get(base: &str, path: &str) -> (StatusCode, Value) {
    admin(base, Method::GET, path, Some(TOKEN), None).await
}

/// PUT `body` to `path` with the admin token.
async fn put(base: &str, path: &str, body: Value) -> (StatusCode, Value) {
    admin(base, Method::PUT, path, Some(TOKEN), Some(body)).await
}

/// DELETE `path` with the admin token.
async fn delete(base: &str, path: &str) -> (StatusCode, Value) {
    admin(base, Method::DELETE, path, Some(TOKEN), None).await
}

fn base(app: &TestApp) -> String {
    app.url("")
}

fn app_names(list: &Value) -> Vec<&str> {
    list["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect()
}

/// A visitor's loyalty tier after sending a loyalty card to `base`.
async fn tier_after_card(base: &str) -> Option<String> {
    let r = plain()
        .post(format!("{base}/api/sessions?items=loyalty.tier"))
        .json(&json!({"public": {"loyaltyCard": {"value": "card-1"}}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let s: Value = r.json().await.unwrap();
    text(&s, "loyalty", "tier").map(str::to_owned)
}

#[tokio::test]
async fn without_admin_token_there_is_no_admin_api() {
    let app = spawn_app().await;
    for path in [
        "/_admin/accounts/demo/apps",
        "/_admin/accounts/demo/sessions/6c1f7c3e-8a5b-4d1e-9f20-3b7a2c9d4e51",
    ] {
        let (status, body) = get(&base(&app), path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["type"], "NotFound");
    }
}

#[tokio::test]
async fn every_admin_route_wants_the_token() {
    let app = spawn_with(Some(&config())).await;
    let id = "6c1f7c3e-8a5b-4d1e-9f20-3b7a2c9d4e51";
    let routes = [
        (Method::GET, "/_admin/accounts/demo/apps".to_owned(), None),
        (
            Method::PUT,
            "/_admin/accounts/demo/apps/x".to_owned(),
            Some(json!({})),
        ),
        (
            Method::DELETE,
            "/_admin/accounts/demo/apps/x".to_owned(),
            None,
        ),
        (
            Method::GET,
            format!("/_admin/accounts/demo/sessions/{id}"),
            None,
        ),
        (
            Method::PUT,
            format!("/_admin/accounts/demo/sessions/{id}/debug"),
            Some(json!({"debug": true})),
        ),
    ];
    for (method, path, body) in &routes {
        for token in [
            None,
            Some("wrong"),
            Some(""),
            Some(&TOKEN[..TOKEN.len() - 1]),
        ] {
            let mut request = plain().request(method.clone(), app.url(path));
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let r = request.send().await.unwrap();
            assert_eq!(
                r.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}"
            );
            assert!(r.headers().contains_key("www-authenticate"));
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["type"], "Unauthorized");
        }
    }
    // The right token, not as a bearer token, is no way in either.
    let r = plain()
        .get(app.url("/_admin/accounts/demo/apps"))
        .header("authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = get(&base(&app), "/_admin/accounts/demo/apps").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn apps_are_listed_installed_validated_and_uninstalled() {
    let app = spawn_with(Some(&config())).await;
    let base = base(&app);
    let loyalty = Loyalty::spawn().await;
    let apps = "/_admin/accounts/demo/apps";
    let (status, list) = get(&base, apps).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["account"], "demo");
    let builtins = app_names(&list);
    assert_eq!(builtins.len(), 6, "{list}");
    assert_eq!(builtins[0], "vtex.store-session");
    assert_eq!(list["apps"][0]["source"], "config");
    assert_eq!(list["apps"][0]["builtin"], true);
    assert_eq!(list["apps"][0]["declaration"]["runOnCreate"], true);
    assert_eq!(tier_after_card(&base).await, None);

    // Installed (VTEX's configuration.json plus url): 201, listed last, used at once.
    let path = format!("{apps}/loyalty");
    let (status, installed) = put(&base, &path, loyalty.body()).await;
    assert_eq!(status, StatusCode::CREATED, "{installed}");
    assert_eq!(installed["app"]["name"], "loyalty");
    assert_eq!(installed["app"]["source"], "admin");
    assert_eq!(
        installed["app"]["declaration"]["input"],
        json!({"public": ["loyaltyCard"]})
    );
    let (_, list) = get(&base, apps).await;
    assert_eq!(app_names(&list).last(), Some(&"loyalty"));
    assert_eq!(tier_after_card(&base).await.as_deref(), Some("gold"));
    assert_eq!(loyalty.calls(), 1);

    // Replaced (an entry as in the configuration, with a condition): 200.
    let entry = json!({
        "url": format!("http://{}/", loyalty.addr),
        "configuration": {"input": {"public": ["loyaltyCard"]}, "output": {"loyalty": ["tier"]}},
        "when": {"public.member": true},
        "timeout_ms": 500,
    });
    let (status, replaced) = put(&base, &path, entry).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(
        replaced["app"]["declaration"]["when"],
        json!(["public.member = true"])
    );
    assert_eq!(tier_after_card(&base).await, None, "its condition fails");
    assert_eq!(loyalty.calls(), 1);

    // Bad input: 400 naming the field; nothing changes.
    let url = format!("http://{}/", loyalty.addr);
    for (body, field) in [
        (json!({"url": "ftp://x/", "configuration": {}}), "url"),
        (
            json!({"url": url, "configuration": {}, "colour": "red"}),
            "colour",
        ),
        (
            json!({"url": url, "configuration": {}, "when": {"member": true}}),
            "when.member",
        ),
        (
            json!({"url": url, "configuration": {}, "secret": "s"}),
            "secret",
        ),
        (
            json!({"url": url, "configuration": {"input": {"public": "k"}}}),
            "input.public",
        ),
        (
            json!({"url": url, "configuration": {}, "timeout_ms": 0}),
            "timeout_ms",
        ),
        (
            json!({"url": url, "configuration": {}, "timeout_ms": "2000"}),
            "timeout_ms",
        ),
        (
            json!({"url": url, "configuration": {}, "when": {"a.b": 1}}),
            "when.a.b",
        ),
        (
            json!({"name": "other", "url": url, "configuration": {}}),
            "name",
        ),
        (json!({"configuration": {}}), "url"),
        (json!([1]), "JSON object"),
    ] {
        let (status, error) = put(&base, &path, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error}");
        assert_eq!(error["type"], "BadRequest");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(field), "{field} in {message}");
    }
    let (status, error) = put(&base, &format!("{apps}/bad%20name"), loyalty.body()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(error["message"].as_str().unwrap().contains("name"));
    let (_, after) = get(&base, apps).await;
    assert_eq!(
        after["apps"],
        list["apps"]
            .as_array()
            .map(|a| {
                let mut a = a.clone();
                *a.last_mut().unwrap() = replaced["app"].clone();
                Value::Array(a)
            })
            .unwrap()
    );

    // Unknown account or app: 404.
    for (method, path) in [
        (Method::GET, "/_admin/accounts/nope/apps"),
        (Method::DELETE, "/_admin/accounts/nope/apps/loyalty"),
        (Method::DELETE, "/_admin/accounts/demo/apps/nope"),
    ] {
        let (status, error) = admin(&base, method.clone(), path, Some(TOKEN), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {error}");
        assert_eq!(error["type"], "NotFound");
    }
    let (status, _) = put(&base, "/_admin/accounts/nope/apps/loyalty", loyalty.body()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Uninstalled: 204, gone from the list; a configured app too.
    let (status, _) = delete(&base, &path).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = delete(&base, &format!("{apps}/vtex.rnb-session")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = get(&base, apps).await;
    let names = app_names(&list);
    assert_eq!(names.len(), 5);
    assert!(!names.contains(&"loyalty") && !names.contains(&"vtex.rnb-session"));
}

#[tokio::test]
async fn sessions_are_read_by_id_and_their_debug_switched() {
    let app = spawn_with(Some(&config())).await;
    let base = base(&app);
    let mut v = Visitor::new(&app);
    let first = v.edit(json!({})).await["id"].as_str().unwrap().to_owned();
    v.set_cookie(
        STORE_COOKIE,
        &mint("demo", "alice@example.com", false, None),
    );
    let s = v.edit(json!({"color": {"value": "red"}})).await;
    let id = s["id"].as_str().unwrap().to_owned();
    let path = format!("/_admin/accounts/demo/sessions/{id}");
    let (status, read) = get(&base, &path).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["id"], id.as_str());
    assert_eq!(read["account"], "demo");
    assert_eq!(read["debug"], false);
    assert_eq!(read["namespaces"]["public"]["color"]["value"], "red");
    assert_eq!(
        read["namespaces"]["profile"]["email"]["value"],
        "alice@example.com"
    );
    assert_eq!(
        read["namespaces"]["cookie"][STORE_COOKIE]["value"], "[redacted]",
        "identity cookies are never shown"
    );
    assert!(!read.to_string().contains(v.session.as_deref().unwrap()));

    let debug = format!("{path}/debug");
    let (status, on) = put(&base, &debug, json!({"debug": true})).await;
    assert_eq!(status, StatusCode::OK, "{on}");
    assert_eq!(on["debug"], true);
    assert_eq!(v.get().await["debug"], true, "the session says so too");
    let (_, read) = get(&base, &path).await;
    assert_eq!(read["debug"], true);
    assert_eq!(read["namespaces"]["public"]["color"]["value"], "red");
    let (status, off) = put(&base, &debug, json!({"debug": false})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(off["debug"], false);

    for body in [
        json!({"debug": "yes"}),
        json!({}),
        json!({"debug": true, "x": 1}),
        json!([true]),
    ] {
        let (status, error) = put(&base, &debug, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            error["message"].as_str().unwrap().contains("debug")
                || error["message"].as_str().unwrap().contains("object"),
            "{error}"
        );
    }
    // The session this one replaced at the log-in is no longer a live session.
    let gone = format!("/_admin/accounts/demo/sessions/{first}");
    let (status, _) = get(&base, &gone).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_ne!(first, id);
    let unknown = "/_admin/accounts/demo/sessions/00000000-0000-4000-8000-000000000000";
    let (status, error) = get(&base, unknown).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    let (status, _) = put(&base, &format!("{unknown}/debug"), json!({"debug": true})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, error) = get(&base, "/_admin/accounts/demo/sessions/not-an-id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error["message"].as_str().unwrap().contains("`id`"),
        "{error}"
    );
    let (status, _) = get(&base, &format!("/_admin/accounts/nope/sessions/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// A `sessiond serve` process with the admin API on, on `store`, in `dir`.
fn serve_admin(dir: &std::path::Path, store: &str) -> (Process, String) {
    let path = dir.join("sessiond.toml");
    std::fs::write(&path, config()).unwrap();
    serve(&[
        "--config".as_ref(),
        path.as_os_str(),
        "--data-dir".as_ref(),
        dir.join("data").as_os_str(),
        "--store".as_ref(),
        std::ffi::OsStr::new(store),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_app_survives_a_restart_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let loyalty = Loyalty::spawn().await;
    {
        let (_process, base) = serve_admin(dir.path(), "embedded");
        let (status, _) = put(&base, "/_admin/accounts/demo/apps/loyalty", loyalty.body()).await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _) = delete(&base, "/_admin/accounts/demo/apps/vtex.rnb-session").await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (_process, base) = serve_admin(dir.path(), "embedded");
    assert_eq!(tier_after_card(&base).await.as_deref(), Some("gold"));
    let (_, list) = get(&base, "/_admin/accounts/demo/apps").await;
    let names = app_names(&list);
    assert_eq!(names.last(), Some(&"loyalty"));
    assert!(!names.contains(&"vtex.rnb-session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_installed_through_one_process_is_used_by_another_on_redis() {
    let redis = RedisServer::start();
    let loyalty = Loyalty::spawn().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_a, a) = serve_admin(dir_a.path(), &redis.url());
    let (_b, b) = serve_admin(dir_b.path(), &redis.url());
    assert_eq!(tier_after_card(&b).await, None);
    let (status, _) = put(&a, "/_admin/accounts/demo/apps/loyalty", loyalty.body()).await;
    assert_eq!(status, StatusCode::CREATED);
    // B reads the stored apps four times a second: its requests use the app from then on.
    let installed = Instant::now();
    loop {
        let (_, list) = get(&b, "/_admin/accounts/demo/apps").await;
        if app_names(&list).contains(&"loyalty") {
            break;
        }
        assert!(
            installed.elapsed() < Duration::from_secs(10),
            "B never saw the app"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(tier_after_card(&b).await.as_deref(), Some("gold"));
    // Uninstalled through B: A stops using it.
    let (status, _) = delete(&b, "/_admin/accounts/demo/apps/loyalty").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    loop {
        let (_, list) = get(&a, "/_admin/accounts/demo/apps").await;
        if !app_names(&list).contains(&"loyalty") {
            break;
        }
        assert!(
            installed.elapsed() < Duration::from_secs(20),
            "A never saw the removal"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(tier_after_card(&a).await, None);
}

/// SPEC section 5 and the debug traces: a session with `debug` keeps the trace of each edit's
/// cycle (the last 20), which shows a conditional app called once its condition holds, and
/// skipped with its outputs removed when it stops holding (log-out).
#[tokio::test]
async fn a_debug_session_keeps_its_cycle_traces() {
    let loyalty = Loyalty::spawn().await;
    let config = format!(
        "{}\n[[accounts.apps]]\nname = \"loyalty\"\nurl = \"http://{}/\"\n\
         when = {{ \"profile.isAuthenticated\" = \"true\" }}\n\
         configuration = {{ input = {{ profile = [\"email\"] }}, output = {{ loyalty = [\"tier\"] }} }}\n",
        config(),
        loyalty.addr
    );
    let app = spawn_with(Some(&config)).await;
    let base = base(&app);
    let mut v = Visitor::new(&app);
    let id = v.edit(json!({"color": {"value": "red"}})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/_admin/accounts/demo/sessions/{id}");
    let (status, _) = put(&base, &format!("{path}/debug"), json!({"debug": true})).await;
    assert_eq!(status, StatusCode::OK);

    // Log-in: the loyalty app runs once its condition holds.
    let identity = mint("demo", "alice@example.com", false, None);
    v.set_cookie(STORE_COOKIE, &identity);
    let s = v.edit(json!({})).await;
    assert_eq!(text(&s, "loyalty", "tier"), Some("gold"));
    let id = s["id"].as_str().unwrap().to_owned();
    let path = format!("/_admin/accounts/demo/sessions/{id}");
    let (_, read) = get(&base, &path).await;
    assert_eq!(read["debug"], true, "the new id keeps debug");
    let traces = read["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{read}");
    let login = &traces[0];
    let called = |trace: &Value| -> Vec<String> {
        trace["rounds"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["calls"].as_array().unwrap().iter())
            .map(|c| c["app"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(called(login).contains(&"loyalty".to_owned()), "{login}");
    assert!(login["at"].as_u64().unwrap() > 0);
    assert!(login["requestId"].as_str().is_some_and(|r| !r.is_empty()));
    let text_of = login.to_string();
    assert!(!text_of.contains(&identity), "identity token redacted");
    assert!(text_of.contains("[redacted]"), "{login}");
    let loyalty_call = login["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["calls"].as_array().unwrap().iter())
        .find(|c| c["app"] == "loyalty")
        .unwrap();
    assert_eq!(
        loyalty_call["input"]["profile"]["email"]["value"],
        "alice@example.com"
    );
    assert_eq!(loyalty_call["output"]["loyalty.tier"]["value"], "gold");
    assert!(loyalty_call["micros"].as_u64().is_some());

    // Log-out: skipped, its output removed, and the trace says so.
    v.drop_cookie(STORE_COOKIE);
    let s = v.edit(json!({})).await;
    assert_eq!(text(&s, "loyalty", "tier"), None);
    let id = s["id"].as_str().unwrap().to_owned();
    let path = format!("/_admin/accounts/demo/sessions/{id}");
    let (_, read) = get(&base, &path).await;
    let traces = read["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 2);
    let logout = &traces[1];
    assert!(!called(logout).contains(&"loyalty".to_owned()), "{logout}");
    let skipped: Vec<&Value> = logout["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["skipped"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(skipped.len(), 1, "{logout}");
    assert_eq!(skipped[0]["app"], "loyalty");
    assert_eq!(
        skipped[0]["condition"],
        "profile.isAuthenticated = \"true\""
    );
    assert_eq!(skipped[0]["removed"], json!(["loyalty.tier"]));
    assert_eq!(loyalty.calls(), 1);

    // The last 20 are kept.
    for i in 0..25 {
        v.edit(json!({"n": {"value": i.to_string()}})).await;
    }
    let (_, read) = get(&base, &path).await;
    let traces = read["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 20);
    assert_eq!(
        v.get().await["namespaces"]["public"]["n"]["value"],
        "24",
        "every edit saved"
    );
    assert!(traces[19]["at"].as_u64() >= traces[0]["at"].as_u64());
    // Debug off: the traces go.
    let (_, off) = put(&base, &format!("{path}/debug"), json!({"debug": false})).await;
    assert_eq!(off["traces"], json!([]));
}

/// Replacing a configured app that signs its calls keeps its secret (secrets stay in the
/// configuration file: never in the store, never shown).
#[tokio::test]
async fn a_replaced_signed_app_keeps_its_secret_out_of_the_store() {
    let loyalty = Loyalty::spawn().await;
    let config = format!(
        "{}\n[[accounts.apps]]\nname = \"loyalty\"\nurl = \"http://{}/\"\nsecret = \"very-secret-hmac-key\"\n\
         configuration = {{ input = {{ public = [\"loyaltyCard\"] }}, output = {{ loyalty = [\"tier\"] }} }}\n",
        config(),
        loyalty.addr
    );
    let app = spawn_with(Some(&config)).await;
    let base = base(&app);
    let path = "/_admin/accounts/demo/apps/loyalty";
    let mut body = loyalty.body();
    body["timeout_ms"] = json!(700);
    let (status, replaced) = put(&base, path, body).await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["app"]["signed"], true);
    assert_eq!(replaced["app"]["timeout_ms"], 700);
    assert!(!replaced.to_string().contains("very-secret-hmac-key"));
    let stored = app.store.setting("apps").await.unwrap().unwrap();
    let stored = String::from_utf8(stored).unwrap();
    assert!(
        stored.contains("700") && !stored.contains("very-secret"),
        "{stored}"
    );
    assert_eq!(tier_after_card(&base).await.as_deref(), Some("gold"));
}
