//! The fast paths (edits made on the stored record, answers cut out of the stored one, cookie
//! lines kept with a session, segment tokens carried over) give the same bytes as the simple
//! path: two servers, one with `fast_paths = false`, on one clock, get the same requests; every
//! answer, every `Set-Cookie` line and every stored record must be the same. What is drawn at
//! random (session ids, cart ids, token ids, signatures) is named by order of appearance on
//! each side before comparing, so those must appear in the same places too.

use std::collections::HashMap;

use regex::bytes::Regex;
use reqwest::Method;
use serde_json::{json, Value};
use sessiond::clock::Clock;
use sessiond_core::SessionId;

use crate::harness::*;

/// Names what is drawn at random, in order of first appearance: `⟨n⟩`.
#[derive(Default)]
struct Names {
    seen: HashMap<Vec<u8>, usize>,
    /// Session ids, in order of appearance.
    ids: Vec<SessionId>,
    /// The digests records keep of session tokens (`token_digest`), of every token seen.
    digests: Vec<[u8; 16]>,
}

impl Names {
    fn name(&mut self, found: &[u8]) -> Vec<u8> {
        let next = self.seen.len();
        let n = *self.seen.entry(found.to_vec()).or_insert(next);
        if n == next {
            if let Some(id) = std::str::from_utf8(found)
                .ok()
                .and_then(|t| t.parse::<SessionId>().ok())
            {
                self.ids.push(id);
            }
        }
        format!("⟨{n}⟩").into_bytes()
    }

    /// `bytes` with JWTs shown as their claims and random ids named.
    fn normalize(&mut self, bytes: &[u8]) -> String {
        let jwt = Regex::new(r"eyJ[A-Za-z0-9_-]+\.([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+").unwrap();
        let claims = jwt.replace_all(bytes, |c: &regex::bytes::Captures| {
            let token = std::str::from_utf8(&c[0]).unwrap();
            let digest = sessiond::token::token_digest(token);
            if !self.digests.contains(&digest) {
                self.digests.push(digest);
            }
            let claims = jwt_part(token, 1);
            format!("<jwt {claims}>").into_bytes()
        });
        let ids = Regex::new(
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32}",
        )
        .unwrap();
        let named = ids.replace_all(&claims, |c: &regex::bytes::Captures| self.name(&c[0]));
        String::from_utf8_lossy(&named).into_owned()
    }

    /// A stored record with the binary forms of the named session ids named too.
    fn normalize_record(&mut self, bytes: &[u8]) -> String {
        let mut out = bytes.to_vec();
        // The digest of a token this side answered with (which one, a race may decide).
        for digest in &self.digests {
            if let Some(pos) = out.windows(16).position(|w| w == digest) {
                out[pos..pos + 16].fill(0xDD);
            }
        }
        for (i, id) in self.ids.iter().enumerate() {
            let raw = id.as_bytes();
            let mut mark = [0xEEu8; 16];
            mark[12..].copy_from_slice(&(i as u32).to_be_bytes());
            let mut at = 0;
            while let Some(pos) = out[at..].windows(16).position(|w| w == raw) {
                out[at + pos..at + pos + 16].copy_from_slice(&mark);
                at += pos + 16;
            }
        }
        let text: String = out
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    (b as char).to_string()
                } else {
                    format!("\\x{b:02x}")
                }
            })
            .collect();
        self.normalize(text.as_bytes())
    }
}

/// One side: a server, its browsers' cookies, and its names.
struct Side {
    app: TestApp,
    names: Names,
    /// Cookies by browser, sent by hand.
    jars: HashMap<&'static str, Vec<(String, String)>>,
}

/// The two servers, fast and simple, and the clock they share.
struct Twins {
    sides: [Side; 2],
    clock: Clock,
    now: u64,
}

/// What one request answered, normalized.
#[derive(Debug, PartialEq)]
struct Seen {
    status: u16,
    set_cookies: Vec<String>,
    body: String,
}

impl Twins {
    async fn new() -> Self {
        let now = now() * 1000;
        let clock = Clock::manual(now);
        let simple = format!("fast_paths = false\n{}", sessiond::config::DEMO_CONFIG);
        let fast = spawn_at(None, clock.clone()).await;
        let simple = spawn_at(Some(&simple), clock.clone()).await;
        let side = |app| Side {
            app,
            names: Names::default(),
            jars: HashMap::new(),
        };
        Twins {
            sides: [side(fast), side(simple)],
            clock,
            now,
        }
    }

    fn set_cookie(&mut self, browser: &'static str, name: &str, value: &str) {
        for side in &mut self.sides {
            let jar = side.jars.entry(browser).or_default();
            jar.retain(|(n, _)| n != name);
            jar.push((name.to_owned(), value.to_owned()));
        }
    }

    fn drop_cookie(&mut self, browser: &'static str, name: &str) {
        for side in &mut self.sides {
            side.jars
                .entry(browser)
                .or_default()
                .retain(|(n, _)| n != name);
        }
    }

    /// Sends the request to both servers as `browser` (keeping the session cookie it gets) a
    /// second later than the last one, and checks that both answered the same.
    async fn send(
        &mut self,
        browser: &'static str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        self.now += 1000;
        self.clock.set(self.now);
        let mut seen = Vec::new();
        let mut json = Value::Null;
        for side in &mut self.sides {
            let jar = side.jars.entry(browser).or_default();
            let cookie: Vec<String> = jar.iter().map(|(n, v)| format!("{n}={v}")).collect();
            let mut request = plain()
                .request(method.clone(), side.app.url(path))
                .header("cookie", cookie.join("; "));
            if let Some(body) = &body {
                request = request.json(body);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            if let Some(token) = cookie_value(response.headers(), "vtex_session") {
                jar.retain(|(n, _)| n != "vtex_session");
                jar.insert(0, ("vtex_session".to_owned(), token));
            }
            let lines: Vec<String> = set_cookies(response.headers())
                .into_iter()
                .map(|(_, line)| side.names.normalize(line.as_bytes()))
                .collect();
            let bytes = response.bytes().await.unwrap();
            json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            seen.push(Seen {
                status,
                set_cookies: lines,
                body: side.names.normalize(&bytes),
            });
        }
        assert_eq!(seen[0], seen[1], "{method} {path} as {browser}");
        assert!(seen[0].status < 500, "{seen:?}");
        json
    }

    async fn patch(&mut self, browser: &'static str, query: &str, public: Value) -> Value {
        let path = format!("/api/sessions{query}");
        self.send(
            browser,
            Method::PATCH,
            &path,
            Some(json!({ "public": public })),
        )
        .await
    }

    async fn get(&mut self, browser: &'static str, query: &str) -> Value {
        let path = format!("/api/sessions{query}");
        self.send(browser, Method::GET, &path, None).await
    }

    /// Every stored record of every session either side named, compared.
    async fn compare_records(&mut self) -> usize {
        let count = self.sides[0].names.ids.len();
        assert_eq!(count, self.sides[1].names.ids.len());
        for i in 0..count {
            let mut records = Vec::new();
            for side in &mut self.sides {
                let id = side.names.ids[i];
                let record = side.app.store.get_record(id, 0).await.unwrap();
                records.push(record.map(|r| side.names.normalize_record(&r.stored())));
            }
            assert_eq!(records[0], records[1], "the record of session ⟨{i}⟩");
        }
        count
    }
}

#[tokio::test]
async fn the_fast_paths_give_the_bytes_of_the_simple_path() {
    let mut t = Twins::new().await;
    let filters = [
        "",
        "?items=*",
        "?items=public.k,store.channel",
        "?items=account.*,profile.isAuthenticated",
        "?items=cookie.VtexIdclientAutCookie_demo,nope.x,public.*",
        "?items=authentication.storeUserId,%2A",
    ];

    // Create, then read with several filters (each twice: the second answer may be kept).
    t.send(
        "shopper",
        Method::POST,
        "/api/sessions",
        Some(json!({"public": {"k": {"value": "v"}}})),
    )
    .await;
    for filter in filters.iter().chain(&filters) {
        t.get("shopper", filter).await;
    }

    // Plain edits (public keys nothing watches): write, the same again, delete, JSON values.
    t.patch("shopper", "?items=*", json!({"color": {"value": "red"}}))
        .await;
    t.patch("shopper", "", json!({"color": {"value": "red"}}))
        .await;
    t.patch(
        "shopper",
        "?items=public.*",
        json!({"n": {"value": 12345678901234567890u64}, "o": {"value": {"a": [1, "x"]}}}),
    )
    .await;
    t.patch(
        "shopper",
        "?items=public.k",
        json!({"color": {"value": null}}),
    )
    .await;
    t.patch("shopper", "?items=*&q=from+query", json!({})).await;
    // Full edits: an app's input, a segment input, a location.
    t.patch("shopper", "?items=store.*", json!({"sc": {"value": "1"}}))
        .await;
    t.patch(
        "shopper",
        "",
        json!({"utm_source": {"value": "google"}, "utm_campaign": {"value": "black friday"}}),
    )
    .await;
    t.patch(
        "shopper",
        "?items=checkout.*,rnb.*",
        json!({"country": {"value": "BRA"}, "postalCode": {"value": "01310-100"}}),
    )
    .await;
    for filter in &filters {
        t.get("shopper", filter).await;
    }

    // Log-in (a new id), reads, a plain edit of the logged-in session, log-out by cookie.
    let alice = mint("demo", "alice@example.com", false, None);
    t.set_cookie("shopper", STORE_COOKIE, &alice);
    t.patch("shopper", "?items=*", json!({})).await;
    for filter in &filters {
        t.get("shopper", filter).await;
    }
    t.patch("shopper", "", json!({"color": {"value": "blue"}}))
        .await;
    t.send("shopper", Method::GET, "/api/segments", None).await;
    t.drop_cookie("shopper", STORE_COOKIE);
    t.patch("shopper", "?items=*", json!({})).await;

    // An admin impersonates Alice, then stops.
    let admin = mint("demo", "admin@example.com", true, None);
    t.set_cookie("admin", ADMIN_COOKIE, &admin);
    t.patch("admin", "?items=*", json!({})).await;
    t.patch(
        "admin",
        "?items=*",
        json!({"vtex-impersonated-customer-email": {"value": "alice@example.com"}}),
    )
    .await;
    t.get("admin", "?items=profile.*,impersonate.*").await;
    t.patch(
        "admin",
        "?items=*",
        json!({"vtex-impersonated-customer-email": {"value": ""}}),
    )
    .await;

    // Reset keeps only keepAlive values; the new session is read and edited.
    t.send("shopper", Method::DELETE, "/api/sessions", None)
        .await;
    t.get("shopper", "?items=*").await;
    t.patch("shopper", "?items=*", json!({"after": {"value": "reset"}}))
        .await;
    // A session that is not found (a forged token) starts a new one on both.
    t.set_cookie("stranger", "vtex_session", "not-a-token");
    t.patch("stranger", "?items=*", json!({"x": {"value": "1"}}))
        .await;
    t.send("stranger", Method::GET, "/api/segments?utm_source=x", None)
        .await;

    let compared = t.compare_records().await;
    assert!(compared >= 5, "sessions compared: {compared}");
}

#[tokio::test]
async fn concurrent_edits_end_in_the_same_session_with_and_without_fast_paths() {
    let mut t = Twins::new().await;
    t.send("page", Method::POST, "/api/sessions", Some(json!({})))
        .await;
    // Twenty edits of distinct keys of one session at once on each side, plain and full ones
    // mixed: the order they land in is the race's, so only the end is compared.
    for side in &mut t.sides {
        let cookie: Vec<String> = side.jars["page"]
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        let cookie = cookie.join("; ");
        let edits = (0..20).map(|i| {
            // Every fifth one is an input of an app (or of the segment): a full edit.
            let key = match i {
                0 => "utm_campaign".to_owned(),
                5 => "regionId".to_owned(),
                10 => "cultureInfo".to_owned(),
                15 => "locale".to_owned(),
                _ => format!("k{i}"),
            };
            let body = json!({"public": {key: {"value": format!("v{i}")}}});
            plain()
                .patch(side.app.url("/api/sessions"))
                .header("cookie", cookie.clone())
                .json(&body)
                .send()
        });
        for response in futures::future::join_all(edits).await {
            let response = response.unwrap();
            assert_eq!(response.status(), 200);
            let token = cookie_value(response.headers(), "vtex_session").unwrap();
            side.names
                .digests
                .push(sessiond::token::token_digest(&token));
        }
    }
    let end = t.get("page", "?items=public.*").await;
    assert_eq!(end["namespaces"]["public"].as_object().unwrap().len(), 20);
    assert_eq!(end["version"], 21);
    t.compare_records().await;
}
