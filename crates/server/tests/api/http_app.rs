//! A real HTTP session app (SPEC section 5): a fake app server in the test records every call and
//! answers a fixed transform; the manager is configured with the demo account plus that app.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode as AxumStatus, Uri};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sessiond_apps::http::signature;

use crate::harness::*;

const SECRET: &[u8] = b"s3cret";
const TRANSFORM_PATH: &str = "/_v/loyalty/session/transform";
const GOLD: &str = r#"{"loyalty":{"tier":{"value":"gold"}},"public":{"utm_source":{"value":"google"}},"other":{"x":{"value":"dropped"}}}"#;
const INLINE: &str = r#"configuration = { input = { public = ["loyaltyCard"], profile = ["email"] }, output = { loyalty = ["tier"], public = ["utm_source"] } }"#;

/// One call the fake app received.
#[derive(Clone, Debug)]
struct Recorded {
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// How the fake app answers.
#[derive(Clone, Debug)]
enum Behaviour {
    /// Status and body, at once.
    Answer(u16, String),
    /// Sleeps, then answers 200 with the body.
    Slow(Duration, String),
    /// 401 with a reason when the request body holds the text, else 200 with the body.
    RejectIf(String, String),
}

/// The fake app server.
#[derive(Clone)]
struct Fake {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Recorded>>>,
    behaviour: Arc<Mutex<Behaviour>>,
}

impl Fake {
    async fn spawn(behaviour: Behaviour) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Fake {
            addr: listener.local_addr().unwrap(),
            log: Arc::default(),
            behaviour: Arc::new(Mutex::new(behaviour)),
        };
        let state = fake.clone();
        let router =
            axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    state.log.lock().unwrap().push(Recorded {
                        path: uri.path().to_owned(),
                        headers,
                        body: body.to_vec(),
                    });
                    let behaviour = state.behaviour.lock().unwrap().clone();
                    let (status, body) = match behaviour {
                        Behaviour::Answer(status, body) => (status, body),
                        Behaviour::Slow(delay, body) => {
                            tokio::time::sleep(delay).await;
                            (200, body)
                        }
                        Behaviour::RejectIf(text, body) => {
                            let log = state.log.lock().unwrap();
                            let sent = &log.last().unwrap().body;
                            if String::from_utf8_lossy(sent).contains(&text) {
                                let reason =
                                    json!({"type": "Unauthorized", "message": "card refused"});
                                (401, reason.to_string())
                            } else {
                                (200, body)
                            }
                        }
                    };
                    (
                        AxumStatus::from_u16(status).unwrap(),
                        [(header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            });
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        fake
    }

    fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn calls(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    fn url(&self) -> String {
        format!("http://{}{TRANSFORM_PATH}", self.addr)
    }
}

/// The demo configuration plus the `loyalty` app (appended to the demo account, the last
/// `[[accounts]]` of the demo file).
fn config_with(url: &str, timeout_ms: u64, declaration: &str) -> String {
    format!(
        "{}\n[[accounts.apps]]\nname = \"loyalty\"\nurl = \"{url}\"\nsecret = \"s3cret\"\n\
         timeout_ms = {timeout_ms}\n{declaration}\n",
        sessiond::config::DEMO_CONFIG
    )
}

fn alice_token() -> String {
    mint("demo", "alice@example.com", false, None)
}

/// Checks the headers of a call and returns its body as JSON.
fn checked(call: &Recorded) -> Value {
    assert_eq!(call.path, TRANSFORM_PATH);
    assert_eq!(call.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(call.headers["x-vtex-account"], "demo");
    assert_eq!(
        call.headers["x-sessiond-signature"].to_str().unwrap(),
        signature(SECRET, &call.body),
        "HMAC of the exact body"
    );
    serde_json::from_slice(&call.body).unwrap()
}

/// The main scenario, for any way of declaring the app.
async fn exercise(app: &TestApp, fake: &Fake) {
    let mut v = Visitor::new(app);
    let a = v.patch("", json!({"color": {"value": "red"}})).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(fake.calls().is_empty(), "not runOnCreate, no input set");

    let s = v
        .edit(json!({
            "loyaltyCard": {"value": "card-1"},
            "utm_campaign": {"value": "black friday"},
            "color": {"value": "blue"}
        }))
        .await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "called once");
    assert_eq!(
        String::from_utf8(calls[0].body.clone()).unwrap(),
        r#"{"public":{"loyaltyCard":{"value":"card-1"}}}"#,
        "only the declared inputs that are set"
    );
    checked(&calls[0]);
    assert_eq!(text(&s, "loyalty", "tier"), Some("gold"));
    assert_eq!(
        s["namespaces"].get("other"),
        None,
        "undeclared output dropped"
    );
    assert_eq!(text(&s, "public", "utm_source"), Some("google"));
    assert_eq!(
        text(&s, "rnb", "campaigns"),
        Some("bf-google"),
        "the app's write triggers vtex.rnb-session in the next round"
    );
    let seg: Value = plain()
        .get(app.url("/api/segments"))
        .header(
            "cookie",
            format!("vtex_session={}", v.session.clone().unwrap()),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seg["campaigns"], "bf-google");
    assert_eq!(seg["utm_source"], "google");

    // A change to no input of the app does not call it.
    v.edit(json!({"color": {"value": "green"}})).await;
    assert_eq!(fake.calls().len(), 1);

    // Logging in sets profile.email: the app gets every declared input that is set.
    v.set_cookie("VtexIdclientAutCookie_demo", &alice_token());
    let s = v.edit(json!({})).await;
    assert_eq!(text(&s, "profile", "email"), Some("alice@example.com"));
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        checked(&calls[1]),
        json!({"profile": {"email": {"value": "alice@example.com"}},
               "public": {"loyaltyCard": {"value": "card-1"}}})
    );
    for call in &calls {
        let body = String::from_utf8(call.body.clone()).unwrap();
        assert!(!body.contains("VtexIdclientAutCookie"), "{body}");
        assert!(!body.contains("authentication"), "{body}");
    }
}

#[tokio::test]
async fn an_appended_app_belongs_to_the_demo_account() {
    let text = config_with("http://127.0.0.1:1/x", 2000, INLINE);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let settings =
        sessiond::config::Settings::load(Some(&path), sessiond::config::Overrides::default())
            .unwrap();
    assert_eq!(settings.accounts.len(), 1);
    assert_eq!(settings.accounts[0].name, "demo");
    let names: Vec<&str> = settings.accounts[0]
        .apps
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(names.len(), 7);
    assert_eq!(names.last(), Some(&"loyalty"));
    assert_eq!(settings.accounts[0].campaigns.len(), 3);
}

#[tokio::test]
async fn an_http_app_gets_its_inputs_signed_and_its_outputs_feed_the_cycle() {
    let fake = Fake::spawn(Behaviour::Answer(200, GOLD.into())).await;
    let app = spawn_with(Some(&config_with(&fake.url(), 2000, INLINE))).await;
    exercise(&app, &fake).await;
}

#[tokio::test]
async fn an_http_app_declared_by_vtex_configuration_json() {
    let fake = Fake::spawn(Behaviour::Answer(200, GOLD.into())).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("configuration.json");
    std::fs::write(
        &file,
        r#"{"loyalty": {"input": {"public": ["loyaltyCard"], "profile": ["email"]},
                        "output": {"loyalty": ["tier"], "public": ["utm_source"]}}}"#,
    )
    .unwrap();
    let declaration = format!("configuration_file = {:?}", file.to_str().unwrap());
    let app = spawn_with(Some(&config_with(&fake.url(), 2000, &declaration))).await;
    exercise(&app, &fake).await;
}

#[tokio::test]
async fn a_base_url_gets_the_default_transform_path() {
    let fake = Fake::spawn(Behaviour::Answer(200, GOLD.into())).await;
    let base = format!("http://{}", fake.addr);
    let app = spawn_with(Some(&config_with(&base, 2000, INLINE))).await;
    let mut v = Visitor::new(&app);
    let s = v.edit(json!({"loyaltyCard": {"value": "card-1"}})).await;
    assert_eq!(text(&s, "loyalty", "tier"), Some("gold"));
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, TRANSFORM_PATH);
}

#[tokio::test]
async fn a_failing_app_leaves_its_outputs_and_the_request_succeeds() {
    let fake = Fake::spawn(Behaviour::Answer(200, GOLD.into())).await;
    let app = spawn_with(Some(&config_with(&fake.url(), 200, INLINE))).await;
    let mut v = Visitor::new(&app);
    let s = v.edit(json!({"loyaltyCard": {"value": "card-0"}})).await;
    assert_eq!(text(&s, "loyalty", "tier"), Some("gold"));
    let platinum = r#"{"loyalty":{"tier":{"value":"platinum"}}}"#;
    let failures = [
        ("500", Behaviour::Answer(500, platinum.into())),
        ("invalid JSON", Behaviour::Answer(200, "{not json".into())),
        (
            "wrong shape",
            Behaviour::Answer(200, r#"{"loyalty":{"tier":"platinum"}}"#.into()),
        ),
        (
            "403 without a reason",
            Behaviour::Answer(403, "go away".into()),
        ),
        (
            "past its timeout",
            Behaviour::Slow(Duration::from_secs(2), platinum.into()),
        ),
    ];
    for (i, (what, behaviour)) in failures.into_iter().enumerate() {
        fake.set(behaviour);
        let before = fake.calls().len();
        let card = format!("card-{}", i + 1);
        let a = v.patch("", json!({"loyaltyCard": {"value": card}})).await;
        assert_eq!(a.status, StatusCode::OK, "{what}: {}", a.text);
        let s = &a.json;
        assert_eq!(fake.calls().len(), before + 1, "{what}: the app was called");
        assert_eq!(text(s, "loyalty", "tier"), Some("gold"), "{what}");
        assert_eq!(
            text(s, "public", "loyaltyCard"),
            Some(card.as_str()),
            "{what}"
        );
        let stored = v.get().await;
        assert_eq!(text(&stored, "loyalty", "tier"), Some("gold"), "{what}");
        assert_eq!(
            text(&stored, "public", "loyaltyCard"),
            Some(card.as_str()),
            "{what}"
        );
    }
}

#[tokio::test]
async fn an_app_rejection_fails_the_request_and_stores_nothing() {
    let fake = Fake::spawn(Behaviour::Answer(200, GOLD.into())).await;
    let app = spawn_with(Some(&config_with(&fake.url(), 2000, INLINE))).await;
    let mut v = Visitor::new(&app);
    v.edit(json!({"loyaltyCard": {"value": "card-1"}})).await;
    let before = v.get().await;
    assert_eq!(text(&before, "loyalty", "tier"), Some("gold"));
    for (status, body) in [
        (403, json!({"type": "Forbidden", "message": "no loyalty"})),
        (
            401,
            json!({"type": "Unauthorized", "message": "log in first"}),
        ),
    ] {
        fake.set(Behaviour::Answer(status, body.to_string()));
        let a = v
            .patch(
                "",
                json!({"loyaltyCard": {"value": "card-2"}, "color": {"value": "red"}}),
            )
            .await;
        assert_eq!(a.status.as_u16(), status, "{}", a.text);
        assert_eq!(a.json, body, "the app's own error");
        let after = v.get().await;
        assert_eq!(after["id"], before["id"]);
        assert_eq!(after["version"], before["version"], "nothing stored");
        assert_eq!(after["namespaces"], before["namespaces"]);
    }
    // On creation too.
    fake.set(Behaviour::Answer(
        403,
        json!({"type": "Forbidden", "message": "no loyalty"}).to_string(),
    ));
    let mut fresh = Visitor::new(&app);
    let a = fresh
        .patch("", json!({"loyaltyCard": {"value": "x"}}))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(
        a.json,
        json!({"type": "Forbidden", "message": "no loyalty"})
    );
}

/// SPEC section 5, conditional apps: an app with `when` (here: the visitor is logged in) is not
/// called while its condition fails, not even on create; it is called once the condition holds;
/// and when it stops holding (log-out) its outputs leave the session and it is not called.
#[tokio::test]
async fn a_conditional_app_runs_only_while_its_condition_holds() {
    let fake = Fake::spawn(Behaviour::Answer(
        200,
        r#"{"loyalty":{"tier":{"value":"gold"}}}"#.into(),
    ))
    .await;
    let config = config_with(
        &fake.url(),
        2000,
        "run_on_create = true\nwhen = { \"profile.isAuthenticated\" = \"true\" }\n\
         configuration = { input = { profile = [\"email\"] }, output = { loyalty = [\"tier\"] } }",
    );
    let app = spawn_with(Some(&config)).await;
    let mut v = Visitor::new(&app);
    let s = v.edit(json!({"color": {"value": "red"}})).await;
    assert!(fake.calls().is_empty(), "runOnCreate, but not logged in");
    assert_eq!(text(&s, "loyalty", "tier"), None);
    let s = v.edit(json!({"color": {"value": "blue"}})).await;
    assert!(fake.calls().is_empty());
    assert_ne!(text(&s, "profile", "isAuthenticated"), Some("true"));

    // Logged in: the condition holds, the app is called with its inputs alone.
    v.set_cookie(STORE_COOKIE, &alice_token());
    let s = v.edit(json!({})).await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 1, "called once the condition holds");
    assert_eq!(
        checked(&calls[0]),
        json!({"profile": {"email": {"value": "alice@example.com"}}})
    );
    assert_eq!(text(&s, "loyalty", "tier"), Some("gold"));

    // Logged out: the output is removed and the app is not called.
    v.drop_cookie(STORE_COOKIE);
    let s = v.edit(json!({})).await;
    assert_ne!(text(&s, "profile", "isAuthenticated"), Some("true"));
    assert_eq!(text(&s, "loyalty", "tier"), None, "{s}");
    assert_eq!(fake.calls().len(), 1, "not called after log-out");
    let s = v.get().await;
    assert_eq!(ns(&s, "loyalty"), &Value::Null, "{s}");
}

/// Every way an HTTP app can fail (down, past its timeout, 500, garbage, an answer over the size
/// limit, keys it did not declare, a 401 for some inputs only): the request is answered, the
/// session served with the app's outputs as they were, and the session's trace and the metrics
/// say what happened. (Two apps feeding each other forever: `operations::metrics_count_a_known_load`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_app_fault_is_bounded_served_traced_and_counted() {
    use crate::admin::{admin, TOKEN};
    use reqwest::Method;
    let fake = Fake::spawn(Behaviour::Answer(200, GOLD.into())).await;
    let entry = |url: String| {
        json!({
            "url": url,
            "timeout_ms": 300,
            "input": {"public": ["loyaltyCard"]},
            "output": {"loyalty": ["tier"]},
        })
    };
    let app = spawn_with(Some(&crate::admin::config())).await;
    let base = app.url("");
    let base = base.trim_end_matches('/');
    let install = |url: String| {
        let body = entry(url);
        async move {
            let path = "/_admin/accounts/demo/apps/faulty";
            let (status, answer) = admin(base, Method::PUT, path, Some(TOKEN), Some(body)).await;
            assert!(status.is_success(), "{answer}");
        }
    };
    install(format!("http://{}/", fake.addr)).await;
    let mut v = Visitor::new(&app);
    let s = v.edit(json!({"loyaltyCard": {"value": "card-0"}})).await;
    assert_eq!(text(&s, "loyalty", "tier"), Some("gold"));
    let session = format!(
        "/_admin/accounts/demo/sessions/{}",
        s["id"].as_str().unwrap()
    );
    let (status, _) = admin(
        base,
        Method::PUT,
        &format!("{session}/debug"),
        Some(TOKEN),
        Some(json!({"debug": true})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let counted = |series: &'static str| async move {
        Metrics::fetch(base)
            .await
            .get(series, &[("account", "demo"), ("app", "faulty")])
    };
    // The last call of `faulty` in the session's last trace.
    let last_call = || async {
        let (_, read) = admin(base, Method::GET, &session, Some(TOKEN), None).await;
        let trace = read["traces"].as_array().unwrap().last().unwrap().clone();
        trace["rounds"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["calls"].as_array().unwrap().clone())
            .rfind(|c| c["app"] == "faulty")
            .unwrap()
    };
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/", dead.local_addr().unwrap());
    drop(dead);
    let huge = format!(
        r#"{{"loyalty":{{"tier":{{"value":"{}"}}}}}}"#,
        "x".repeat(300 * 1024)
    );
    let platinum = r#"{"loyalty":{"tier":{"value":"platinum"}}}"#;
    let faults: [(&str, Option<Behaviour>, &str); 5] = [
        ("down", None, "error"),
        (
            "500",
            Some(Behaviour::Answer(500, platinum.into())),
            "answered HTTP 500",
        ),
        (
            "garbage",
            Some(Behaviour::Answer(200, "{not json".into())),
            "malformed answer",
        ),
        (
            "too large",
            Some(Behaviour::Answer(200, huge)),
            "larger than 262144 bytes",
        ),
        (
            "past its timeout",
            Some(Behaviour::Slow(Duration::from_secs(5), platinum.into())),
            "timed out after 300ms",
        ),
    ];
    for (i, (what, behaviour, error)) in faults.into_iter().enumerate() {
        match behaviour {
            Some(b) => fake.set(b),
            None => install(dead_url.clone()).await,
        }
        let failures = counted("sessiond_app_failures_total").await;
        let card = format!("card-{}", i + 1);
        let a = v.patch("", json!({"loyaltyCard": {"value": card}})).await;
        assert_eq!(a.status, StatusCode::OK, "{what}: {}", a.text);
        assert_eq!(text(&a.json, "loyalty", "tier"), Some("gold"), "{what}");
        assert_eq!(
            text(&a.json, "public", "loyaltyCard"),
            Some(card.as_str()),
            "{what}"
        );
        let stored = v.get().await;
        assert_eq!(
            text(&stored, "public", "loyaltyCard"),
            Some(card.as_str()),
            "{what}"
        );
        let call = last_call().await;
        let message = call["error"].as_str().unwrap_or_default();
        assert!(message.contains(error), "{what}: {call}");
        assert_eq!(
            call["timed_out"] == true,
            what == "past its timeout",
            "{what}: {call}"
        );
        assert_eq!(
            counted("sessiond_app_failures_total").await,
            failures + 1.0,
            "{what}"
        );
        if what == "down" {
            install(format!("http://{}/", fake.addr)).await;
        }
    }
    assert_eq!(counted("sessiond_app_timeouts_total").await, 1.0);

    // Keys it did not declare are dropped, and the trace names them.
    fake.set(Behaviour::Answer(200, GOLD.into()));
    let a = v
        .patch("", json!({"loyaltyCard": {"value": "card-9"}}))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(text(&a.json, "other", "x"), None);
    assert_eq!(text(&a.json, "public", "utm_source"), None);
    let call = last_call().await;
    assert_eq!(call["error"], Value::Null, "{call}");
    let mut dropped: Vec<&str> = call["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    dropped.sort();
    assert_eq!(dropped, ["other.x", "public.utm_source"], "{call}");

    // A 401 for some inputs only: those requests are refused and change nothing; the others
    // are served.
    fake.set(Behaviour::RejectIf("stolen".into(), GOLD.into()));
    let before = v.get().await;
    let a = v
        .patch("", json!({"loyaltyCard": {"value": "stolen-card"}}))
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
    assert_eq!(
        a.json,
        json!({"type": "Unauthorized", "message": "card refused"})
    );
    let after = v.get().await;
    assert_eq!(after["version"], before["version"], "nothing stored");
    assert_eq!(text(&after, "public", "loyaltyCard"), Some("card-9"));
    let a = v
        .patch("", json!({"loyaltyCard": {"value": "good-card"}}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(text(&a.json, "public", "loyaltyCard"), Some("good-card"));
    let rejections = Metrics::fetch(base).await.get(
        "sessiond_app_rejections_total",
        &[("account", "demo"), ("app", "faulty"), ("status", "401")],
    );
    assert_eq!(rejections, 1.0);
}
