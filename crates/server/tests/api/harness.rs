//! The shared test harness: a real server on port 0 with a temporary data directory, driven by a
//! real HTTP client, and a visitor whose cookies are kept by hand.

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sessiond::clock::Clock;
use sessiond::config::{Overrides, Settings};
use sessiond::Application;
use sessiond_store::SessionStore;

/// Alice's user id in the demo configuration (`config/demo.toml`), the customer most tests log in.
pub const ALICE: &str = "c0a80101-0000-4000-8000-000000000001";
/// The demo configuration's administrator's user id.
pub const ADMIN: &str = "a0a80101-0000-4000-8000-000000000001";
/// The demo account's store-user identity cookie (VTEX ID names it after the account).
pub const STORE_COOKIE: &str = "VtexIdclientAutCookie_demo";
/// The admin identity cookie, the same name for every account.
pub const ADMIN_COOKIE: &str = "VtexIdclientAutCookie";

/// A running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The store it saves to (read what was saved while it runs).
    pub store: std::sync::Arc<dyn SessionStore>,
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
    spawn_at(config, Clock::system()).await
}

/// Like [`spawn_with`], serving requests at the time `clock` says.
pub async fn spawn_at(config: Option<&str>, clock: Clock) -> TestApp {
    spawn_full(config, clock, "embedded").await
}

/// The demo configuration on the store `store` names (`redis://…`).
pub async fn spawn_on(store: &str) -> TestApp {
    spawn_full(None, Clock::system(), store).await
}

async fn spawn_full(config: Option<&str>, clock: Clock, store: &str) -> TestApp {
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
            store: Some(store.into()),
            log_format: None,
        },
    )
    .unwrap();
    let app = Application::build_with_clock(settings, clock)
        .await
        .unwrap();
    let addr = app.local_addr().unwrap();
    let store = app.store();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        data_dir,
        store,
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

/// The `sessiond` binary as a command, with none of the `SESSIOND_*` settings of the
/// environment it runs in and a quiet log.
pub fn sessiond() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_sessiond"));
    c.env("SESSIOND_LOG", "warn");
    for var in [
        "SESSIOND_CONFIG",
        "SESSIOND_LISTEN",
        "SESSIOND_DATA_DIR",
        "SESSIOND_STORE",
        "SESSIOND_LOG_FORMAT",
    ] {
        c.env_remove(var);
    }
    c
}

/// A `sessiond serve` process, SIGKILLed when dropped (also when a test fails).
pub struct Process(std::process::Child);

impl Process {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sessiond serve --listen 127.0.0.1:0` with `args` and reads the address it prints:
/// the process and its base URL (`http://127.0.0.1:PORT`).
pub fn serve<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (Process, String) {
    let mut child = sessiond()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the sessiond binary starts");
    let base = listening_base(&mut child);
    (Process(child), base)
}

/// The base URL (`http://127.0.0.1:PORT`) a started `sessiond serve` prints as its first line
/// on its (piped) stdout.
pub fn listening_base(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("sessiond listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned()
}

/// An identity token printed by `sessiond auth-token` (demo configuration unless `config`).
pub fn mint(account: &str, email: &str, admin: bool, config: Option<&std::path::Path>) -> String {
    let mut cmd = sessiond();
    cmd.args(["auth-token", "--account", account, "--email", email]);
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
    get_json_at(&app.url(""), path, cookie).await
}

/// [`get_json`] on the server at `base` (`http://host:port`).
pub async fn get_json_at(base: &str, path: &str, cookie: impl AsRef<str>) -> Value {
    let mut request = plain().get(format!("{base}{path}"));
    if !cookie.as_ref().is_empty() {
        request = request.header("cookie", cookie.as_ref());
    }
    request.send().await.unwrap().json().await.unwrap()
}

/// Seconds since the epoch, for the times inside tokens.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The value at `namespaces.ns.key.value` of a session answer.
pub fn value_of<'a>(session: &'a Value, ns: &str, key: &str) -> Option<&'a Value> {
    session["namespaces"].get(ns)?.get(key)?.get("value")
}

/// The text at `namespaces.ns.key.value`.
pub fn text<'a>(s: &'a Value, ns: &str, key: &str) -> Option<&'a str> {
    value_of(s, ns, key).map(|v| v.as_str().expect("a text value"))
}

/// One namespace of a session answer (`null` when absent).
pub fn ns<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["namespaces"].get(name).unwrap_or(&Value::Null)
}

/// What one request answered.
pub struct Answer {
    pub status: StatusCode,
    /// The `vtex_session` cookie set by the answer, if any.
    pub session_cookie: Option<String>,
    pub text: String,
    /// `null` when the body is not JSON.
    pub json: Value,
}

/// A browser whose cookies are kept by hand: the session token plus other cookies (`_ga=1` by
/// default, so every request is a browser request and cookie removals count as log-outs).
pub struct Visitor<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    pub session: Option<String>,
    cookies: Vec<(String, String)>,
    /// Every answer body received, for the secrets check.
    pub seen: Vec<String>,
}

impl<'a> Visitor<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        Visitor::with_client(app, plain())
    }

    /// A visitor sending with `client`, e.g. one that gives up after a timeout.
    pub fn with_client(app: &'a TestApp, client: reqwest::Client) -> Self {
        Visitor {
            app,
            client,
            session: None,
            cookies: vec![("_ga".into(), "1".into())],
            seen: Vec::new(),
        }
    }

    pub fn set_cookie(&mut self, name: &str, value: &str) {
        self.drop_cookie(name);
        self.cookies.push((name.to_owned(), value.to_owned()));
    }

    pub fn drop_cookie(&mut self, name: &str) {
        self.cookies.retain(|(n, _)| n != name);
    }

    fn cookie_header(&self) -> String {
        self.session
            .iter()
            .map(|t| format!("vtex_session={t}"))
            .chain(self.cookies.iter().map(|(n, v)| format!("{n}={v}")))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn send(&mut self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut req = self.client.request(method, self.app.url(path));
        let cookies = self.cookie_header();
        if !cookies.is_empty() {
            req = req.header("cookie", cookies);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let session_cookie = cookie_value(r.headers(), "vtex_session");
        if status.is_success() {
            if let Some(t) = &session_cookie {
                self.session = Some(t.clone());
            }
        }
        let text = r.text().await.unwrap();
        self.seen.push(text.clone());
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            session_cookie,
            text,
            json,
        }
    }

    /// PATCH `/api/sessions?items=*&<query>` with `{"public": public}`.
    pub async fn patch(&mut self, query: &str, public: Value) -> Answer {
        let sep = if query.is_empty() { "" } else { "&" };
        let path = format!("/api/sessions?items=*{sep}{query}");
        self.send(Method::PATCH, &path, Some(json!({ "public": public })))
            .await
    }

    /// A PATCH that must succeed with 200 (or 201 when creating) and answer a session: a
    /// refused identity token is never an error of the request.
    pub async fn edit(&mut self, public: Value) -> Value {
        let a = self.patch("", public).await;
        assert!(a.status.is_success(), "{}: {}", a.status, a.text);
        assert!(a.json.is_object(), "{}: {}", a.status, a.text);
        a.json
    }

    /// GET `/api/sessions?items=*`.
    pub async fn get(&mut self) -> Value {
        let a = self.send(Method::GET, "/api/sessions?items=*", None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        a.json
    }

    pub async fn segment(&mut self) -> Value {
        let a = self.send(Method::GET, "/api/segments", None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        a.json
    }
}

/// One sample: its name, labels and value.
type Sample = (String, Vec<(String, String)>, f64);

/// Prometheus text, parsed: `name{labels} value` lines.
pub struct Metrics(Vec<Sample>);

impl Metrics {
    /// The metrics `base` serves at `/metrics`.
    pub async fn fetch(base: &str) -> Metrics {
        Metrics::fetch_with(&plain(), base).await
    }

    /// [`Metrics::fetch`] through `client` (one kept-alive connection across fetches).
    pub async fn fetch_with(client: &reqwest::Client, base: &str) -> Metrics {
        let answer = client.get(format!("{base}/metrics")).send().await.unwrap();
        Metrics::parse(&answer.text().await.unwrap())
    }

    pub fn parse(text: &str) -> Metrics {
        let line = regex::Regex::new(r#"^([a-z_]+)(?:\{(.*)\})? (\S+)$"#).unwrap();
        let label = regex::Regex::new(r#"([a-z_]+)="((?:[^"\\]|\\.)*)""#).unwrap();
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .map(|l| {
                    let c = line
                        .captures(l)
                        .unwrap_or_else(|| panic!("not a sample: {l}"));
                    let labels = c.get(2).map_or(Vec::new(), |ls| {
                        label
                            .captures_iter(ls.as_str())
                            .map(|lc| (lc[1].to_owned(), lc[2].to_owned()))
                            .collect()
                    });
                    (c[1].to_owned(), labels, c[3].parse().unwrap())
                })
                .collect(),
        )
    }

    /// The sample of `name` with exactly `labels`; 0 when there is none (a counter not yet
    /// incremented with those labels).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .find(|(n, ls, _)| {
                n == name
                    && ls.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map_or(0.0, |(_, _, v)| *v)
    }
}
