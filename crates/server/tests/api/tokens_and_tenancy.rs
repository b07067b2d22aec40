//! No token but our own, valid, for this account ever reads or writes a session; the account
//! of a request comes from its host (or `an`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sessiond::token::Keyring;

use crate::harness::*;

fn two_accounts() -> String {
    format!(
        "{}\n[[accounts]]\nname = \"acme\"\n[[accounts.apps]]\nname = \"vtex.authentication-session\"\n",
        sessiond::config::DEMO_CONFIG
    )
}

async fn session_with(
    app: &TestApp,
    host: Option<&str>,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut req = plain().post(app.url("/api/sessions?items=*")).json(&body);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    if let Some(t) = token {
        req = req.header("cookie", format!("vtex_session={t}"));
    }
    let r = req.send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn bad_tokens_never_reach_a_session() {
    let app = spawn_with(Some(&two_accounts())).await;
    let (status, victim) = session_with(
        &app,
        None,
        None,
        json!({"public": {"secret": {"value": "1"}}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let victim_id = victim["id"].as_str().unwrap().parse().unwrap();
    let attacker_token = create_session(&app, json!({})).await;

    let server_keys = Keyring::load(None, &[], &app.data_dir).unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let foreign_keys = Keyring::load(None, &[], other_dir.path()).unwrap();
    let account_id = "6c1f7c3e-8a5b-4d1e-9f20-3b7a2c9d4e51";
    let good = server_keys.issue(victim_id, "demo", account_id, now(), 3600);
    let parts: Vec<&str> = good.split('.').collect();
    let attacker_parts: Vec<&str> = attacker_token.split('.').collect();
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let hs_header = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"alg":"HS256","kid":"{}","typ":"JWT"}}"#,
        server_keys.kid()
    ));
    let unknown_kid = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","kid":"0000","typ":"JWT"}"#);
    let bad_tokens = vec![
        (
            "signed by another key",
            foreign_keys.issue(victim_id, "demo", account_id, now(), 3600),
        ),
        (
            "victim claims under the attacker's signature",
            format!("{}.{}.{}", attacker_parts[0], parts[1], attacker_parts[2]),
        ),
        ("alg none", format!("{none_header}.{}.", parts[1])),
        (
            "HS256 confusion",
            format!("{hs_header}.{}.{}", parts[1], parts[2]),
        ),
        (
            "unknown kid",
            format!("{unknown_kid}.{}.{}", parts[1], parts[2]),
        ),
        (
            "expired",
            server_keys.issue(victim_id, "demo", account_id, now() - 7200, 3600),
        ),
        (
            "another account",
            server_keys.issue(victim_id, "acme", account_id, now(), 3600),
        ),
        ("truncated signature", good[..good.len() - 4].to_owned()),
    ];
    for (what, token) in &bad_tokens {
        let (status, s) = session_with(
            &app,
            None,
            Some(token),
            json!({"public": {"secret": {"value": "pwned"}}}),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{what}: a bad token is no token"
        );
        assert_ne!(s["id"], victim["id"], "{what}");
        let r = plain()
            .get(app.url(&format!("/api/sessions/{token}?items=*")))
            .send()
            .await
            .unwrap();
        let s: Value = r.json().await.unwrap();
        assert_ne!(s["id"], victim["id"], "{what}");
    }
    // The genuine token still reads the untouched victim session.
    let (status, s) = session_with(&app, None, Some(&good), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(s["id"], victim["id"]);
    assert_eq!(s["version"], 1);
    assert_eq!(value_of(&s, "public", "secret"), Some(&json!("1")));
}

#[tokio::test]
async fn the_host_or_an_chooses_the_account() {
    let app = spawn_with(Some(&two_accounts())).await;
    let (status, acme) = session_with(&app, Some("ACME.example.com:8443"), None, json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        value_of(&acme, "account", "accountName"),
        Some(&json!("acme"))
    );
    let acme_id = value_of(&acme, "account", "id").unwrap().clone();
    assert_ne!(acme_id, json!("6c1f7c3e-8a5b-4d1e-9f20-3b7a2c9d4e51"));

    let r = plain()
        .post(app.url("/api/sessions?an=acme&items=account.*"))
        .header("host", "shared.example.com")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let via_an: Value = r.json().await.unwrap();
    assert_eq!(
        value_of(&via_an, "account", "accountName"),
        Some(&json!("acme"))
    );

    let (_, demo) = session_with(&app, Some("unknown.example.com"), None, json!({})).await;
    assert_eq!(
        value_of(&demo, "account", "accountName"),
        Some(&json!("demo"))
    );

    // A token of one account is no token on another account's host.
    let pair: Value = plain()
        .post(app.url("/api/sessions"))
        .header("host", "acme.example.com")
        .json(&json!({"public": {"mine": {"value": "acme"}}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let acme_token = pair["sessionToken"].as_str().unwrap();
    assert_eq!(jwt_part(acme_token, 1)["account"], "acme");
    let (status, on_demo) =
        session_with(&app, Some("demo.example.com"), Some(acme_token), json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(value_of(&on_demo, "public", "mine"), None);
    let (status, on_acme) =
        session_with(&app, Some("acme.example.com"), Some(acme_token), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value_of(&on_acme, "public", "mine"), Some(&json!("acme")));
}

#[tokio::test]
async fn a_token_near_its_end_is_renewed_for_the_same_session() {
    let app = spawn_app().await;
    let (_, s) = session_with(&app, None, None, json!({"public": {"a": {"value": "1"}}})).await;
    let keys = Keyring::load(None, &[], &app.data_dir).unwrap();
    let id = s["id"].as_str().unwrap().parse().unwrap();
    // Issued 4 of its 5 days ago: less than half its lifetime is left.
    let old = keys.issue(
        id,
        "demo",
        "6c1f7c3e-8a5b-4d1e-9f20-3b7a2c9d4e51",
        now() - 4 * 86400,
        5 * 86400,
    );
    let r = plain()
        .get(app.url("/api/sessions?items=public.a"))
        .header("cookie", format!("vtex_session={old}"))
        .send()
        .await
        .unwrap();
    let renewed = cookie_value(r.headers(), "vtex_session").expect("renewed token");
    assert_ne!(renewed, old);
    assert_eq!(jwt_part(&renewed, 1)["id"], s["id"]);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], s["id"]);
    assert_eq!(value_of(&body, "public", "a"), Some(&json!("1")));
}

/// A process that has not seen a token of a saved session takes it by the digest the session's
/// record keeps (created, saved for the first time after a create without a write, or moved to
/// a new id at a log-in), without a signature check; a token the record does not name (the old
/// id's, a changed one) is checked by signature.
#[tokio::test]
async fn a_restarted_process_checks_saved_tokens_by_their_record() {
    let dir = tempfile::tempdir().unwrap();
    let start = || serve(&["--data-dir".as_ref(), dir.path().as_os_str()]);
    let (first, base) = start();
    let created = create_session_at(&base, json!({"public": {"k": {"value": "v"}}})).await;
    let before_login = create_session_at(&base, json!({"public": {"k": {"value": "w"}}})).await;
    // PATCH with `cookie` and `body`: the session token of the answer.
    let patch = |cookie: String, body: Value| {
        let base = base.clone();
        async move {
            let r = plain()
                .patch(format!("{base}/api/sessions"))
                .header("cookie", cookie)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let answer = r.json::<Value>().await.unwrap();
            answer["sessionToken"].as_str().unwrap().to_owned()
        }
    };
    let identity = mint("demo", "alice@example.com", false, None);
    let logged_in = patch(
        format!("vtex_session={before_login}; VtexIdclientAutCookie_demo={identity}"),
        json!({}),
    )
    .await;
    assert_ne!(token_id(&logged_in), token_id(&before_login));
    // A page view without a token: a session not saved, whose first change saves it.
    let r = plain()
        .get(format!("{base}/api/sessions"))
        .send()
        .await
        .unwrap();
    let unsaved = cookie_value(r.headers(), "vtex_session").unwrap();
    assert_eq!(jwt_part(&unsaved, 1)["unsaved"], json!(true));
    let saved = patch(
        format!("vtex_session={unsaved}"),
        json!({"public": {"k": {"value": "x"}}}),
    )
    .await;
    assert_eq!(jwt_part(&saved, 1).get("unsaved"), None);
    assert_eq!(token_id(&saved), token_id(&unsaved));
    drop(first);

    let (_second, base) = start();
    let checks = |m: &Metrics| {
        let by = |how| m.get("sessiond_token_checks_total", &[("by", how)]);
        (by("record"), by("signature"))
    };
    let read = |token: String| {
        let base = base.clone();
        async move {
            let r = plain()
                .get(format!("{base}/api/sessions?items=*"))
                .header("cookie", format!("vtex_session={token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    let a = read(created.clone()).await;
    assert_eq!(text(&a, "public", "k"), Some("v"));
    assert_eq!(a["id"].as_str(), Some(token_id(&created).as_str()));
    let b = read(logged_in.clone()).await;
    assert_eq!(text(&b, "public", "k"), Some("w"));
    assert_eq!(b["id"].as_str(), Some(token_id(&logged_in).as_str()));
    let c = read(saved.clone()).await;
    assert_eq!(text(&c, "public", "k"), Some("x"));
    assert_eq!(checks(&Metrics::fetch(&base).await), (3.0, 0.0));
    // Known now: no second check.
    read(created.clone()).await;
    assert_eq!(checks(&Metrics::fetch(&base).await), (3.0, 0.0));

    // The old id's token: its record ended and keeps no digest, so the signature is checked;
    // without the identity cookie it is not led to the new session.
    let old = read(before_login.clone()).await;
    assert_ne!(old["id"].as_str(), Some(token_id(&logged_in).as_str()));
    assert_ne!(old["id"].as_str(), Some(token_id(&before_login).as_str()));
    assert_eq!(checks(&Metrics::fetch(&base).await), (3.0, 1.0));
    // The created token with a claim changed under its signature: not the record's digest,
    // and not a valid signature, so no token (a new session).
    let parts: Vec<&str> = created.split('.').collect();
    let mut claims = jwt_part(&created, 1);
    claims["exp"] = json!(claims["exp"].as_u64().unwrap() + 1);
    let changed = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    let forged = read(changed).await;
    assert_ne!(forged["id"].as_str(), Some(token_id(&created).as_str()));
    assert_eq!(text(&forged, "public", "k"), None);
    assert_eq!(checks(&Metrics::fetch(&base).await), (3.0, 2.0));
}
