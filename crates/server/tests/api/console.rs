//! The web console (`/_admin/ui`) in a real headless Chromium (Debian's `chromium`, driven
//! through `chromedriver` by a WebDriver client): sign in, the app graph, a debug session's
//! traces, an app installed through the form. With `SESSIOND_SCREENSHOTS=DIR` the test saves
//! the console's screenshots there (the README's pictures).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::json;

use crate::admin::{admin, config, Loyalty, TOKEN};
use crate::harness::*;

/// `chromedriver` on a free port, killed when dropped.
struct Driver(Child, u16);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Driver {
    fn start() -> Driver {
        sessiond_testkit::ensure_debian(
            &["chromium", "chromium-driver"],
            &["chromium", "chromedriver"],
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver(child, port);
        // Ready once it accepts connections.
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver never listened"
            );
            std::thread::yield_now();
        }
        driver
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,3200"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.1))
            .await
            .expect("a Chromium session")
    }
}

/// The text of the element `css`, once it is there.
async fn text_of(browser: &Client, css: &str) -> String {
    browser
        .wait()
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Waits until the text of `css` contains `needle`.
async fn wait_text(browser: &Client, css: &str, needle: &str) -> String {
    let started = Instant::now();
    loop {
        let text = text_of(browser, css).await;
        if text.contains(needle) {
            return text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{css} never said {needle:?}: {text:?}"
        );
        tokio::task::yield_now().await;
    }
}

async fn fill(browser: &Client, css: &str, value: &str) {
    let field = browser.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// With `SESSIOND_SCREENSHOTS=DIR`, a picture of the section `css` as `DIR/name`.
async fn screenshot(browser: &Client, css: &str, name: &str) {
    if let Some(dir) = std::env::var_os("SESSIOND_SCREENSHOTS") {
        let png = browser
            .find(Locator::Css(css))
            .await
            .unwrap()
            .screenshot()
            .await
            .unwrap();
        std::fs::write(std::path::Path::new(&dir).join(name), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_draws_the_graph_shows_traces_and_installs_an_app() {
    let driver = Driver::start();
    let app = spawn_with(Some(&config())).await;
    let base = app.url("");
    let loyalty = Loyalty::spawn().await;

    // A debug session that logged in: its trace has rounds of the built-in apps.
    let mut v = Visitor::new(&app);
    let id = v.edit(json!({"color": {"value": "red"}})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let debug = format!("/_admin/accounts/demo/sessions/{id}/debug");
    let (status, _) = admin(
        &base,
        Method::PUT,
        &debug,
        Some(TOKEN),
        Some(json!({"debug": true})),
    )
    .await;
    assert!(status.is_success());
    v.set_cookie(
        STORE_COOKIE,
        &mint("demo", "alice@example.com", false, None),
    );
    let s = v.edit(json!({})).await;
    let id = s["id"].as_str().unwrap().to_owned();

    let browser = driver.browser().await;
    browser.goto(&app.url("/_admin/ui")).await.unwrap();
    // A wrong token is refused, the right one lets in.
    fill(&browser, "#token", "not-the-token").await;
    click(&browser, "#sign-in-form button[type=submit]").await;
    wait_text(&browser, "#sign-in-error", "not the admin token").await;
    fill(&browser, "#token", TOKEN).await;
    click(&browser, "#sign-in-form button[type=submit]").await;
    wait_text(&browser, "#who", "account demo").await;

    // The graph: one node per app, an edge from authentication to profile labelled with a key.
    browser
        .wait()
        .for_element(Locator::Css("#graph svg g.node"))
        .await
        .unwrap();
    let nodes = browser
        .find_all(Locator::Css("#graph svg g.node"))
        .await
        .unwrap();
    assert_eq!(nodes.len(), 6);
    let edge = text_of(
        &browser,
        "#graph g.edge[data-from='vtex.authentication-session'][data-to='vtex.profile-session']",
    )
    .await;
    assert!(edge.contains("authentication."), "{edge}");
    wait_text(&browser, "#apps tbody", "vtex.store-session").await;
    screenshot(&browser, "#graph-section", "console-graph.png").await;

    // The session inspector: namespaces as tables, the trace as a timeline of rounds.
    fill(&browser, "#session-id", &id).await;
    click(&browser, "#session-form button[type=submit]").await;
    let profile = text_of(&browser, "table[data-namespace='profile']").await;
    assert!(profile.contains("alice@example.com"), "{profile}");
    let cookies = text_of(&browser, "table[data-namespace='cookie']").await;
    assert!(cookies.contains("[redacted]"), "{cookies}");
    let trace = text_of(&browser, "#traces .trace").await;
    assert!(trace.contains("round 1"), "{trace}");
    assert!(
        trace.contains("vtex.authentication-session"),
        "the log-in's first round: {trace}"
    );
    let calls = browser
        .find_all(Locator::Css("#traces .trace .call"))
        .await
        .unwrap();
    assert!(calls.len() >= 3, "{} calls", calls.len());
    screenshot(&browser, "#session-section", "console-session.png").await;

    // Installing through the form: the API's own message on bad input, then the app listed.
    fill(&browser, "#app-name", "loyalty").await;
    fill(
        &browser,
        "#app-body",
        r#"{"url": "ftp://x/", "configuration": {}}"#,
    )
    .await;
    click(&browser, "#app-submit").await;
    wait_text(&browser, "#app-error", "url").await;
    fill(&browser, "#app-body", &loyalty.body().to_string()).await;
    click(&browser, "#app-submit").await;
    let row = text_of(&browser, "#apps tr[data-app='loyalty']").await;
    assert!(row.contains("admin"), "{row}");
    assert!(row.contains("public.loyaltyCard"), "{row}");
    browser
        .wait()
        .for_element(Locator::Css("#graph g.node[data-app='loyalty']"))
        .await
        .unwrap();
    let (_, list) = admin(
        &base,
        Method::GET,
        "/_admin/accounts/demo/apps",
        Some(TOKEN),
        None,
    )
    .await;
    let names: Vec<&str> = list["apps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert!(names.contains(&"loyalty"));
    // Live metrics name the routes served.
    wait_text(
        &browser,
        "#requests tbody",
        "/_admin/accounts/{account}/apps",
    )
    .await;
    screenshot(&browser, "#apps-section", "console-apps.png").await;
    screenshot(&browser, "#metrics-section", "console-metrics.png").await;
    browser.close().await.unwrap();
}
