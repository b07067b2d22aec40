//! Shared test harness: a real server on port 0 with a temporary data directory, driven by a
//! real HTTP client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::Value;
use sessiond::config::{Overrides, Settings};
use sessiond::Application;

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A client with a cookie jar, like a browser.
    pub fn browser(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap()
    }
}

/// A client without a cookie jar: cookies are set by hand.
pub fn plain() -> reqwest::Client {
    reqwest::Client::new()
}

/// The demo configuration on the embedded store in a fresh temp dir.
pub async fn spawn_app() -> TestApp {
    spawn_with(None).await
}

/// Like [`spawn_app`], with a configuration file's text instead of the demo one.
pub async fn spawn_with(config: Option<&str>) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config_path = config.map(|text| {
        let p = dir.path().join("sessiond.toml");
        std::fs::write(&p, text).unwrap();
        p
    });
    let settings = Settings::load(
        config_path.as_deref(),
        Overrides {
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(data_dir.clone()),
            store: Some("embedded".into()),
        },
    )
    .unwrap();
    let app = Application::build(settings).await.unwrap();
    let addr = app.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        data_dir,
        _dir: Some(dir),
        shutdown: Some(tx),
    }
}

/// The `Set-Cookie` lines of a response, by cookie name.
pub fn set_cookies(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| {
            let line = v.to_str().unwrap().to_owned();
            let name = line.split('=').next().unwrap().to_owned();
            (name, line)
        })
        .collect()
}

/// The value of cookie `name` set by a response.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    set_cookies(headers)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, line)| line.split(';').next().unwrap()[name.len() + 1..].to_owned())
}

/// The decoded claims of a JWT (without verifying it).
pub fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Creates a session with `POST /api/sessions` and `body` (no cookie); its session token.
pub async fn create_session(app: &TestApp, body: Value) -> String {
    create_session_at(&app.url(""), body).await
}

/// [`create_session`] on the server at `base` (`http://host:port`).
pub async fn create_session_at(base: &str, body: Value) -> String {
    let pair: Value = plain()
        .post(format!("{base}/api/sessions"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    pair["sessionToken"].as_str().unwrap().to_owned()
}

/// The session id a session token names.
pub fn token_id(token: &str) -> String {
    jwt_part(token, 1)["id"].as_str().unwrap().to_owned()
}

/// An identity token printed by `sessiond auth-token` (demo configuration unless `config`).
pub fn mint(account: &str, email: &str, admin: bool, config: Option<&std::path::Path>) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sessiond"));
    cmd.env_remove("SESSIOND_CONFIG")
        .args(["auth-token", "--account", account, "--email", email]);
    if admin {
        cmd.arg("--admin");
    }
    if let Some(path) = config {
        cmd.arg("--config").arg(path);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "auth-token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");
    token
}

/// GET `path` with the `Cookie` header `cookie` (none when empty); the JSON answer.
pub async fn get_json(app: &TestApp, path: &str, cookie: impl AsRef<str>) -> Value {
    let mut request = plain().get(app.url(path));
    if !cookie.as_ref().is_empty() {
        request = request.header("cookie", cookie.as_ref());
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// The value at `namespaces.ns.key.value` of a session answer.
pub fn value_of<'a>(session: &'a Value, ns: &str, key: &str) -> Option<&'a Value> {
    session["namespaces"].get(ns)?.get(key)?.get("value")
}
