//! The public sessions and segments API itself: token pairs and cookies, edits, `items`,
//! segments, watched cookies and concurrent edits, through a real HTTP client with cookies.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::*;

async fn post(client: &reqwest::Client, url: &str, body: Value) -> reqwest::Response {
    client.post(url).json(&body).send().await.unwrap()
}

async fn get_all(client: &reqwest::Client, app: &TestApp) -> Value {
    let r = client
        .get(app.url("/api/sessions?items=*"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

#[tokio::test]
async fn post_creates_with_token_pair_and_cookies() {
    let app = spawn_app().await;
    let r = post(
        &plain(),
        &app.url("/api/sessions"),
        json!({"public": {"variable1": {"value": "value1"}, "variable2": {"value": "value2"}}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let headers = r.headers().clone();
    let body: Value = r.json().await.unwrap();
    assert_eq!(keys(&body), vec!["segmentToken", "sessionToken"]);
    let token = body["sessionToken"].as_str().unwrap();
    assert_eq!(
        cookie_value(&headers, "vtex_session").as_deref(),
        Some(token)
    );
    assert_eq!(
        cookie_value(&headers, "vtex_segment").as_deref(),
        body["segmentToken"].as_str()
    );
    for (_, line) in set_cookies(&headers) {
        assert!(line.contains("; Path=/"), "{line}");
        assert!(line.contains("; HttpOnly"), "{line}");
        assert!(line.contains("; SameSite=Lax"), "{line}");
        assert!(line.contains("; Max-Age=432000"), "{line}");
        assert!(
            !line.contains("Secure"),
            "loopback listen: no Secure: {line}"
        );
        assert!(!line.contains("Domain"), "{line}");
    }
    let header = jwt_part(token, 0);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()));
    let claims = jwt_part(token, 1);
    assert_eq!(claims["account"], "demo");
    assert_eq!(claims["account.id"], "6c1f7c3e-8a5b-4d1e-9f20-3b7a2c9d4e51");
    assert_eq!(claims["sub"], "session");
    assert_eq!(claims["version"], 1);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        432000
    );
    for c in ["id", "iss", "jti"] {
        assert!(claims[c].as_str().is_some(), "{c}");
    }
    // The new session holds the manager's own values and the body.
    let s: Value = get_json(
        &app,
        "/api/sessions?items=*",
        format!("vtex_session={token}"),
    )
    .await;
    assert_eq!(
        keys(&s),
        vec!["active", "debug", "id", "namespaces", "version"]
    );
    assert_eq!(s["id"], claims["id"]);
    assert_eq!(s["version"], 1);
    assert_eq!(s["active"], true);
    assert_eq!(s["debug"], false);
    assert_eq!(
        s["namespaces"]["account"],
        json!({"id": {"value": "6c1f7c3e-8a5b-4d1e-9f20-3b7a2c9d4e51", "keepAlive": true},
               "accountName": {"value": "demo"}})
    );
    assert_eq!(
        s["namespaces"]["public"],
        json!({"variable1": {"value": "value1"}, "variable2": {"value": "value2"}})
    );
}

#[tokio::test]
async fn edits_keep_the_token_and_bump_the_version() {
    let app = spawn_app().await;
    let b = app.browser();
    let r = post(
        &b,
        &app.url("/api/sessions"),
        json!({"public": {"a": {"value": "1"}}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let first: Value = r.json().await.unwrap();
    let r = b
        .patch(app.url("/api/sessions"))
        .json(&json!({"public": {"a": {"value": "2"}, "b": {"value": "x"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let second: Value = r.json().await.unwrap();
    assert_eq!(
        first["sessionToken"], second["sessionToken"],
        "an edit does not re-sign"
    );
    let r = post(
        &b,
        &app.url("/api/sessions"),
        json!({"public": {"b": {"value": "y"}}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "POST with a valid token edits");
    let s = get_all(&b, &app).await;
    assert_eq!(s["version"], 3);
    assert_eq!(value_of(&s, "public", "a"), Some(&json!("2")));
    assert_eq!(value_of(&s, "public", "b"), Some(&json!("y")));
    // An edit that changes nothing saves nothing.
    let r = post(
        &b,
        &app.url("/api/sessions"),
        json!({"public": {"b": {"value": "y"}}}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(get_all(&b, &app).await["version"], 3);
}

#[tokio::test]
async fn patch_without_or_with_a_bad_token_creates() {
    let app = spawn_app().await;
    let r = plain()
        .patch(app.url("/api/sessions"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for cookie in [
        "vtex_session=",
        "vtex_session=garbage",
        "vtex_session=a.b.c",
    ] {
        let r = plain()
            .patch(app.url("/api/sessions"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{cookie}");
        assert!(cookie_value(r.headers(), "vtex_session").is_some());
    }
}

#[tokio::test]
async fn items_filter_shapes_the_answer() {
    let app = spawn_app().await;
    let b = app.browser();
    post(
        &b,
        &app.url("/api/sessions"),
        json!({"public": {"a": {"value": "1"}, "b": {"value": "2"}}}),
    )
    .await;
    let get = |q: &'static str| {
        let b = b.clone();
        let url = app.url(&format!("/api/sessions{q}"));
        async move {
            b.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let one = get("?items=public.a").await;
    assert_eq!(one["namespaces"], json!({"public": {"a": {"value": "1"}}}));
    let ns = get("?items=public.*,account.accountName").await;
    assert_eq!(
        ns["namespaces"],
        json!({"public": {"a": {"value": "1"}, "b": {"value": "2"}}, "account": {"accountName": {"value": "demo"}}})
    );
    let star = get("?items=%2A").await;
    assert_eq!(
        keys(&star["namespaces"]),
        vec!["account", "public", "store"]
    );
    assert_eq!(
        get("?items=nope.x,public.zzz").await["namespaces"],
        json!({})
    );
    let none = get("").await;
    assert_eq!(none["namespaces"], json!({}));
    assert_eq!(none["version"], 1);
}

#[tokio::test]
async fn get_creates_when_needed_and_never_stores_its_query() {
    let app = spawn_app().await;
    let b = app.browser();
    let r = b
        .get(app.url("/api/sessions?items=*&x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(cookie_value(r.headers(), "vtex_session").is_some());
    assert!(cookie_value(r.headers(), "vtex_segment").is_some());
    let first_token = cookie_value(r.headers(), "vtex_session").unwrap();
    let created: Value = r.json().await.unwrap();
    assert_eq!(value_of(&created, "public", "x"), None);
    let r = b
        .get(app.url("/api/sessions?items=*&y=2"))
        .send()
        .await
        .unwrap();
    let cookies = set_cookies(r.headers());
    assert_eq!(
        cookies.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        vec!["vtex_session", "vtex_segment"],
        "every session answer sets both cookies, the session token first"
    );
    assert_eq!(
        cookie_value(r.headers(), "vtex_session"),
        Some(first_token),
        "a fresh token is not re-signed on a read"
    );
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["id"], created["id"]);
    assert_eq!(again["version"], 1);
    assert_eq!(again["namespaces"].get("public"), None);
}

#[tokio::test]
async fn query_string_goes_into_public_and_the_body_wins() {
    let app = spawn_app().await;
    let b = app.browser();
    let r =
        b.post(app.url(
            "/api/sessions?color=red&utm_source=x&utm_campaign=black+friday&an=demo&k=%C3%A9",
        ))
        .json(&json!({"public": {"color": {"value": "body"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let s = get_all(&b, &app).await;
    assert_eq!(value_of(&s, "public", "color"), Some(&json!("body")));
    assert_eq!(value_of(&s, "public", "utm_source"), Some(&json!("x")));
    assert_eq!(
        value_of(&s, "public", "utm_campaign"),
        Some(&json!("black friday"))
    );
    assert_eq!(value_of(&s, "public", "k"), Some(&json!("é")));
    assert_eq!(value_of(&s, "public", "an"), None);
    assert_eq!(value_of(&s, "public", "items"), None);
    // With items, POST answers the session instead of the token pair.
    let r = b
        .post(app.url("/api/sessions?items=public.utm_source"))
        .json(&json!({"public": {"utm_source": {"value": "y"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let s: Value = r.json().await.unwrap();
    assert_eq!(
        s["namespaces"],
        json!({"public": {"utm_source": {"value": "y"}}})
    );
    assert_eq!(s["version"], 2);
}

#[tokio::test]
async fn values_null_deletes_empty_stays_any_json_round_trips() {
    let app = spawn_app().await;
    let b = app.browser();
    post(
        &b,
        &app.url("/api/sessions"),
        json!({"public": {"a": {"value": "1"}, "b": {"value": "2"}, "obj": {"value": {"z": [1, 2.5, true, null], "a": {"n": 1}}}, "n": {"value": 42}}}),
    )
    .await;
    post(
        &b,
        &app.url("/api/sessions"),
        json!({"public": {"a": {"value": null}, "e": {"value": ""}},
               "profile": {"email": {"value": "evil@example.com"}},
               "account": {"id": {"value": "hijack"}}}),
    )
    .await;
    let s = get_all(&b, &app).await;
    assert_eq!(value_of(&s, "public", "a"), None);
    assert_eq!(value_of(&s, "public", "b"), Some(&json!("2")));
    assert_eq!(value_of(&s, "public", "e"), Some(&json!("")));
    assert_eq!(value_of(&s, "public", "n"), Some(&json!(42)));
    assert_eq!(
        serde_json::to_string(value_of(&s, "public", "obj").unwrap()).unwrap(),
        r#"{"z":[1,2.5,true,null],"a":{"n":1}}"#
    );
    assert_eq!(
        s["namespaces"].get("profile"),
        None,
        "only public is applied"
    );
    assert_eq!(
        value_of(&s, "account", "id"),
        Some(&json!("6c1f7c3e-8a5b-4d1e-9f20-3b7a2c9d4e51"))
    );
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_changes_nothing() {
    let app = spawn_app().await;
    let b = app.browser();
    post(
        &b,
        &app.url("/api/sessions"),
        json!({"public": {"a": {"value": "1"}}}),
    )
    .await;
    let before = get_all(&b, &app).await;
    let deep = format!("{}1{}", "[".repeat(17), "]".repeat(17));
    let many: Vec<String> = (0..257)
        .map(|i| format!(r#""k{i}":{{"value":"1"}}"#))
        .collect();
    let cases: Vec<(String, &str, StatusCode, &str)> = vec![
        (
            "[1]".into(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "JSON object",
        ),
        (
            "{".into(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            r#"{"public": 1}"#.into(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "public",
        ),
        (
            r#"{"public": {"a": {"value": "2"}, "bad": {"v": 1}}}"#.into(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "public.bad",
        ),
        (
            r#"{"public": {"bad": "x"}}"#.into(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "public.bad",
        ),
        (
            "{}".into(),
            "application/x-www-form-urlencoded",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "JSON",
        ),
        (
            format!(
                r#"{{"public":{{"a":{{"value":"{}"}}}}}}"#,
                "x".repeat(70 * 1024)
            ),
            "application/json",
            StatusCode::PAYLOAD_TOO_LARGE,
            "max_body_bytes",
        ),
        (
            format!(
                r#"{{"public":{{"a":{{"value":"{}"}}}}}}"#,
                "x".repeat(17 * 1024)
            ),
            "application/json",
            StatusCode::BAD_REQUEST,
            "max_value_bytes",
        ),
        (
            format!(r#"{{"public":{{"{}":{{"value":"1"}}}}}}"#, "k".repeat(300)),
            "application/json",
            StatusCode::BAD_REQUEST,
            "max_key_bytes",
        ),
        (
            format!(r#"{{"public":{{"a":{{"value":{deep}}}}}}}"#),
            "application/json",
            StatusCode::BAD_REQUEST,
            "max_json_depth",
        ),
        (
            format!(r#"{{"public":{{{}}}}}"#, many.join(",")),
            "application/json",
            StatusCode::BAD_REQUEST,
            "max_public_keys",
        ),
    ];
    for (body, ct, status, needle) in cases {
        for method in [reqwest::Method::POST, reqwest::Method::PATCH] {
            let r = b
                .request(method.clone(), app.url("/api/sessions"))
                .header("content-type", ct)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                status,
                "{method} {}",
                &body[..body.len().min(60)]
            );
            let e: Value = r.json().await.unwrap();
            assert_eq!(keys(&e), vec!["message", "type"]);
            assert!(
                e["message"].as_str().unwrap().contains(needle),
                "{needle}: {e}"
            );
        }
    }
    let after = get_all(&b, &app).await;
    assert_eq!(before, after, "rejected requests change nothing");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json_errors() {
    let app = spawn_app().await;
    let r = plain().get(app.url("/api/nothing")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap()["type"], "NotFound");
    let r = plain().put(app.url("/api/sessions")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let e: Value = r.json().await.unwrap();
    assert_eq!(keys(&e), vec!["message", "type"]);
    let r = plain().get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = plain().get(app.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn reset_ends_the_session_and_keeps_only_keep_alive_values() {
    let app = spawn_app().await;
    let b = app.browser();
    let first: Value = post(
        &b,
        &app.url("/api/sessions"),
        json!({"public": {"kept": {"value": "k", "keepAlive": true}, "gone": {"value": "g"}}}),
    )
    .await
    .json()
    .await
    .unwrap();
    let old_token = first["sessionToken"].as_str().unwrap().to_owned();
    let old = get_all(&b, &app).await;
    let r = b.delete(app.url("/api/sessions")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let new_cookie = cookie_value(r.headers(), "vtex_session").unwrap();
    let pair: Value = r.json().await.unwrap();
    assert_eq!(keys(&pair), vec!["segmentToken", "sessionToken"]);
    assert_eq!(pair["sessionToken"].as_str(), Some(new_cookie.as_str()));
    assert_ne!(new_cookie, old_token);
    let fresh = get_all(&b, &app).await;
    assert_ne!(fresh["id"], old["id"]);
    assert_eq!(fresh["version"], 1);
    assert_eq!(value_of(&fresh, "public", "kept"), Some(&json!("k")));
    assert_eq!(fresh["namespaces"]["public"]["kept"]["keepAlive"], true);
    assert_eq!(value_of(&fresh, "public", "gone"), None);
    assert_eq!(
        value_of(&fresh, "account", "id"),
        Some(&json!("6c1f7c3e-8a5b-4d1e-9f20-3b7a2c9d4e51"))
    );
    // The old token is dead: it reads a brand-new session, not the old one.
    let via_old: Value = get_json(
        &app,
        "/api/sessions?items=*",
        format!("vtex_session={old_token}"),
    )
    .await;
    assert_ne!(via_old["id"], old["id"]);
    assert_ne!(via_old["id"], fresh["id"]);
    assert_eq!(value_of(&via_old, "public", "gone"), None);
}

#[tokio::test]
async fn token_in_the_path_reads_and_edits_that_session() {
    let app = spawn_app().await;
    let token = &create_session(&app, json!({"public": {"a": {"value": "1"}}})).await;
    let r = plain()
        .post(app.url(&format!("/api/sessions/{token}")))
        .json(&json!({"public": {"b": {"value": "2"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let s: Value = get_json(&app, &format!("/api/sessions/{token}?items=public.*"), "").await;
    assert_eq!(
        s["namespaces"],
        json!({"public": {"a": {"value": "1"}, "b": {"value": "2"}}})
    );
    assert_eq!(s["version"], 2);
    let r = plain()
        .patch(app.url("/api/sessions/invalidToken"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let other: Value = get_json(&app, "/api/sessions/invalidToken?items=*", "").await;
    assert_ne!(other["id"], s["id"]);
}

#[tokio::test]
async fn segments_derive_override_and_decode() {
    let app = spawn_app().await;
    let b = app.browser();
    post(
        &b,
        &app.url("/api/sessions"),
        json!({"public": {"utm_source": {"value": "google"}, "utmi_campaign": {"value": "banner"}}}),
    )
    .await;
    let r = b.get(app.url("/api/segments")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = cookie_value(r.headers(), "vtex_segment").unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.starts_with(r#"{"campaigns":null,"channel":"#),
        "{text}"
    );
    let seg: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(seg["utm_source"], "google");
    assert_eq!(seg["utmi_campaign"], "banner");
    // Overrides change the answer only.
    let over: Value = b
        .get(app.url("/api/segments?utm_source=bing&cultureInfo=en-US&session_path=x&workspace=w"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over["utm_source"], "bing");
    assert_eq!(over["cultureInfo"], "en-US");
    assert!(over.get("session_path").is_none());
    let s = get_all(&b, &app).await;
    assert_eq!(value_of(&s, "public", "utm_source"), Some(&json!("google")));
    assert_eq!(s["version"], 1, "a segment read stores nothing");
    // Decoding the cookie gives the same segment.
    let decoded: Value = get_json(&app, &format!("/api/segments/{cookie}"), "").await;
    assert_eq!(decoded, seg);
    // Without a session: the segment a new session would have, and its cookie.
    let r = plain().get(app.url("/api/segments")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(cookie_value(r.headers(), "vtex_segment").is_some());
    assert!(cookie_value(r.headers(), "vtex_session").is_none());
    assert_eq!(r.json::<Value>().await.unwrap()["utm_source"], Value::Null);
}

#[tokio::test]
async fn segment_tokens_decode_in_every_form() {
    use base64::Engine;
    let app = spawn_app().await;
    // A '/' and '+' in standard base64, padded.
    let json = r#"{"campaigns":null,"channel":"1","x":"??>>~"}"#;
    let std = base64::engine::general_purpose::STANDARD.encode(json);
    assert!(std.contains('/') || std.contains('+'), "{std}");
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    for token in [&std, &url] {
        let r = plain()
            .get(app.url(&format!("/api/segments/{token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{token}");
        assert_eq!(r.text().await.unwrap(), json);
    }
    for bad in ["%%%", "bm90IGpzb24", "WzFd"] {
        let r = plain()
            .get(app.url(&format!("/api/segments/{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(r.json::<Value>().await.unwrap()["type"], "BadRequest");
    }
}

#[tokio::test]
async fn watched_cookies_are_recorded_redacted_and_removed() {
    let app = spawn_app().await;
    let c = plain();
    let r = c
        .post(app.url("/api/sessions"))
        .header("cookie", "VtexIdclientAutCookie_demo=secret-jwt; _ga=GA1.2; vtex-impersonated-customer-email=x@y.z")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let token = cookie_value(r.headers(), "vtex_session").unwrap();
    let session_cookie = format!("vtex_session={token}");
    let read = |extra: &'static str| {
        let c = c.clone();
        let url = app.url("/api/sessions?items=cookie.*");
        let cookie = format!("{session_cookie}{extra}");
        async move {
            c.get(url)
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let s = read("").await;
    assert_eq!(
        s["namespaces"]["cookie"],
        json!({"VtexIdclientAutCookie_demo": {"value": "[redacted]"},
               "vtex-impersonated-customer-email": {"value": "[redacted]"}})
    );
    // A server-side call sending only vtex_session keeps the recorded cookies.
    let r = c
        .patch(app.url("/api/sessions"))
        .header("cookie", session_cookie.clone())
        .json(&json!({"public": {"a": {"value": "1"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        read("").await["namespaces"]["cookie"]
            .as_object()
            .unwrap()
            .len(),
        2
    );
    // A browser that no longer sends the identity cookie has logged out.
    let r = c
        .patch(app.url("/api/sessions"))
        .header(
            "cookie",
            format!("{session_cookie}; _ga=GA1.2; vtex-impersonated-customer-email=x@y.z"),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        read("").await["namespaces"]["cookie"],
        json!({"vtex-impersonated-customer-email": {"value": "[redacted]"}})
    );
}

#[tokio::test]
async fn concurrent_patches_lose_no_update() {
    patches_lose_no_update(spawn_app().await).await;
}

/// Without the session cache every request reads the store; with a cache of one session,
/// entries are evicted and read back all the time. Neither loses an update.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_lose_no_update_without_or_with_a_tiny_cache() {
    for size in [0, 1] {
        let config = format!("cache_sessions = {size}\n{}", sessiond::config::DEMO_CONFIG);
        patches_lose_no_update(spawn_with(Some(&config)).await).await;
    }
}

async fn patches_lose_no_update(app: TestApp) {
    let cookie = format!("vtex_session={}", create_session(&app, json!({})).await);
    let client = plain();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let client = client.clone();
            let cookie = cookie.clone();
            let url = app.url("/api/sessions");
            tokio::spawn(async move {
                client
                    .patch(url)
                    .header("cookie", cookie)
                    .json(&json!({"public": {format!("k{i}"): {"value": i.to_string()}}}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for status in futures::future::join_all(tasks).await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    let s: Value = client
        .get(app.url("/api/sessions?items=public.*"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public = s["namespaces"]["public"].as_object().unwrap();
    assert_eq!(public.len(), 50);
    for i in 0..50 {
        assert_eq!(public[&format!("k{i}")]["value"], i.to_string());
    }
    assert_eq!(s["version"], 51);
}

#[tokio::test]
async fn big_numbers_round_trip_exactly() {
    let app = spawn_app().await;
    let b = app.browser();
    let r = b
        .post(app.url("/api/sessions?items=public.n"))
        .header("content-type", "application/json")
        .body(r#"{"public": {"n": {"value": 123456789012345678901234567890.5}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.text()
            .await
            .unwrap()
            .split("\"namespaces\":")
            .nth(1)
            .unwrap()
            .split(",\"version\"")
            .next()
            .unwrap(),
        r#"{"public":{"n":{"value":123456789012345678901234567890.5}}}"#
    );
}

#[tokio::test]
async fn the_first_valid_of_several_session_cookies_is_used() {
    let app = spawn_app().await;
    let token = &create_session(&app, json!({"public": {"a": {"value": "1"}}})).await;
    let s: Value = plain()
        .get(app.url("/api/sessions?items=public.a"))
        .header(
            "cookie",
            format!("vtex_session=stale.junk.token; vtex_session={token}"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["id"], jwt_part(token, 1)["id"]);
    assert_eq!(value_of(&s, "public", "a"), Some(&json!("1")));
}

#[tokio::test]
async fn head_never_creates_a_session() {
    let app = spawn_app().await;
    let r = plain().head(app.url("/api/sessions")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(set_cookies(r.headers()).is_empty());
}

#[tokio::test]
async fn public_may_not_grow_past_its_limit_across_requests() {
    let app = spawn_app().await;
    let b = app.browser();
    let batch = |from: usize| {
        let entries: serde_json::Map<String, Value> = (from..from + 200)
            .map(|i| (format!("k{i}"), json!({"value": "1"})))
            .collect();
        json!({ "public": entries })
    };
    assert_eq!(
        post(&b, &app.url("/api/sessions"), batch(0)).await.status(),
        StatusCode::CREATED
    );
    let before = get_all(&b, &app).await;
    let r = post(&b, &app.url("/api/sessions"), batch(200)).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("max_public_keys"));
    assert_eq!(get_all(&b, &app).await, before);
    // Rewriting existing keys is fine, and the same key in query and body counts once.
    let r = b
        .post(app.url("/api/sessions?k1=q"))
        .json(&batch(0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn decoding_a_segment_token_applies_overrides_and_sets_the_cookie() {
    use base64::Engine;
    let app = spawn_app().await;
    let token = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(r#"{"channel":"1","utm_source":null,"cultureInfo":"pt-BR"}"#);
    let r = plain()
        .get(app.url(&format!(
            "/api/segments/{token}?utm_source=x&cultureInfo=en-US&an=demo"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        cookie_value(r.headers(), "vtex_segment").as_deref(),
        Some(token.as_str())
    );
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"channel":"1","utm_source":"x","cultureInfo":"en-US"}"#
    );
    let r = plain().get(app.url("/api/segments/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

/// A `GET ?items=*` through `base` with `cookie`: the answer's session and its token cookie.
async fn read_at(base: &str, cookie: &str) -> (Value, String) {
    let mut request = plain().get(format!("{base}/api/sessions?items=*"));
    if !cookie.is_empty() {
        request = request.header("cookie", cookie);
    }
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token = cookie_value(r.headers(), "vtex_session").unwrap();
    (r.json().await.unwrap(), token)
}

/// Writes to the store the process at `base` made so far.
async fn puts(base: &str) -> f64 {
    let m = Metrics::fetch(base).await;
    ["put", "put_two"]
        .iter()
        .map(|op| {
            m.get(
                "sessiond_store_call_duration_seconds_count",
                &[("operation", op)],
            )
        })
        .sum()
}

/// A session that holds only what the create cycle derives (a crawler's page view) is not
/// written: its token says so and the session is derived again, the same, wherever and
/// whenever the token comes back, until its first change saves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_values_is_saved_at_its_first_change() {
    let dir = tempfile::tempdir().unwrap();
    let start = || serve(&["--data-dir".as_ref(), dir.path().as_os_str()]);
    let (server, base) = start();
    // A flood of token-less page views writes nothing.
    let (first, token) = read_at(&base, "").await;
    for _ in 0..99 {
        read_at(&base, "").await;
    }
    assert_eq!(puts(&base).await, 0.0);
    let m = Metrics::fetch(&base).await;
    assert_eq!(m.get("sessiond_sessions_created_total", &[]), 100.0);
    assert_eq!(m.get("sessiond_sessions_unsaved_total", &[]), 100.0);
    assert_eq!(jwt_part(&token, 1)["unsaved"], true);
    // What the create cycle derives: the sales channel and its currency.
    assert_eq!(text(&first, "store", "channel"), Some("1"));
    // The token gives the same session, with the same token, again and after a restart.
    let cookie = format!("vtex_session={token}");
    assert_eq!(
        read_at(&base, &cookie).await,
        (first.clone(), token.clone())
    );
    drop(server);
    let (server, base) = start();
    assert_eq!(
        read_at(&base, &cookie).await,
        (first.clone(), token.clone())
    );
    assert_eq!(
        Metrics::fetch(&base)
            .await
            .get("sessiond_sessions_derived_total", &[]),
        1.0
    );
    assert_eq!(puts(&base).await, 0.0);

    // Its first change saves it, under the same id, with a token of a saved session.
    let r = plain()
        .patch(format!("{base}/api/sessions?items=*"))
        .header("cookie", &cookie)
        .json(&json!({"public": {"k": {"value": "v"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let saved_token = cookie_value(r.headers(), "vtex_session").unwrap();
    assert_ne!(saved_token, token);
    assert_eq!(jwt_part(&saved_token, 1).get("unsaved"), None);
    let saved: Value = r.json().await.unwrap();
    assert_eq!(saved["id"], first["id"]);
    assert_eq!(saved["version"], 2);
    assert_eq!(saved["namespaces"]["store"], first["namespaces"]["store"]);
    assert_eq!(text(&saved, "public", "k"), Some("v"));
    assert_eq!(puts(&base).await, 1.0);
    // The first token now finds the saved session (and is answered with a saved one's token).
    let (again, renewed) = read_at(&base, &cookie).await;
    assert_eq!(again, saved);
    assert_eq!(jwt_part(&renewed, 1).get("unsaved"), None);
    drop(server);
    let (server, base) = start();
    for c in [&cookie, &format!("vtex_session={saved_token}")] {
        assert_eq!(read_at(&base, c).await.0, saved);
    }

    // A log-in from a session never saved moves it to a new id and ends the old one: its
    // token, sent by another browser, leads to a new session, never the logged-in one.
    let (_, unsaved) = read_at(&base, "").await;
    let identity = mint("demo", "alice@example.com", false, None);
    let r = plain()
        .patch(format!("{base}/api/sessions?items=*"))
        .header(
            "cookie",
            format!("vtex_session={unsaved}; {STORE_COOKIE}={identity}"),
        )
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let logged_in: Value = r.json().await.unwrap();
    assert_eq!(
        text(&logged_in, "profile", "email"),
        Some("alice@example.com")
    );
    assert_ne!(logged_in["id"], jwt_part(&unsaved, 1)["id"]);
    let (other, _) = read_at(&base, &format!("vtex_session={unsaved}")).await;
    assert_ne!(other["id"], jwt_part(&unsaved, 1)["id"]);
    assert_ne!(other["id"], logged_in["id"]);
    assert_eq!(text(&other, "profile", "email"), None);

    // A reset of a session never saved ends it: its token is dead.
    let (_, unsaved) = read_at(&base, "").await;
    let r = plain()
        .delete(format!("{base}/api/sessions"))
        .header("cookie", format!("vtex_session={unsaved}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (after, _) = read_at(&base, &format!("vtex_session={unsaved}")).await;
    assert_ne!(after["id"], jwt_part(&unsaved, 1)["id"]);
    drop(server);
}

/// The end of a session never saved (here a reset) is kept as long as any of its tokens may
/// live, renewed ones included: its token never derives it again.
#[tokio::test]
async fn a_session_never_saved_that_ended_stays_ended_while_its_tokens_live() {
    let t0 = 1_800_000_000_000;
    let clock = sessiond::clock::Clock::manual(t0);
    let config =
        sessiond::config::DEMO_CONFIG.replace("session_ttl = \"5d\"", "session_ttl = \"8s\"");
    let app = spawn_at(Some(&config), clock.clone()).await;
    let base = app.url("");
    let (first, token) = read_at(&base, "").await;
    clock.set(t0 + 1_000);
    read_at(&base, &format!("vtex_session={token}")).await;
    // Past half its lifetime the token is renewed, still for a session never saved.
    clock.set(t0 + 5_000);
    let (_, renewed) = read_at(&base, &format!("vtex_session={token}")).await;
    assert_ne!(renewed, token);
    assert_eq!(jwt_part(&renewed, 1)["unsaved"], true);
    let r = plain()
        .delete(app.url("/api/sessions"))
        .header("cookie", format!("vtex_session={renewed}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The first session's deadline has passed; the renewed token's has not.
    clock.set(t0 + 10_000);
    let (after, _) = read_at(&base, &format!("vtex_session={renewed}")).await;
    assert_ne!(after["id"], first["id"], "an ended session came back");
}
