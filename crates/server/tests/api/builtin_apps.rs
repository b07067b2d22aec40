//! The built-in apps of the demo account (SPEC section 6), end to end: a real server, a real HTTP
//! client sending cookies by hand, identity tokens minted by the real `sessiond auth-token`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::*;

const BOB: &str = "c0a80101-0000-4000-8000-000000000002";

fn store_token(email: &str) -> String {
    mint("demo", email, false, None)
}

fn admin_token(email: &str) -> String {
    mint("demo", email, true, None)
}

/// The customer log-in many tests here start from, by the demo account's store cookie.
trait LogIn {
    /// Logs in as the customer `email` by cookie; the session answer.
    async fn login(&mut self, email: &str) -> Value;
}

impl LogIn for Visitor<'_> {
    async fn login(&mut self, email: &str) -> Value {
        self.set_cookie(STORE_COOKIE, &store_token(email));
        let s = self.edit(json!({})).await;
        assert_eq!(text(&s, "profile", "isAuthenticated"), Some("true"), "{s}");
        s
    }
}

/// A plain GET of `path` with only `cookie` (if any): the session answer.
async fn read_alone(app: &TestApp, path: &str, cookie: Option<String>) -> Value {
    let mut req = plain().get(app.url(path));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// vtex.store-session

#[tokio::test]
async fn store_default_channel_sc_and_culture() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    let a = v.patch("", json!({})).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(
        ns(&a.json, "store"),
        &json!({
            "channel": {"value": "1"}, "currencyCode": {"value": "BRL"},
            "currencySymbol": {"value": "R$"}, "countryCode": {"value": "BRA"},
            "cultureInfo": {"value": "pt-BR"}, "channelPrivacy": {"value": "public"}
        })
    );
    let seg = v.segment().await;
    assert_eq!(seg["channel"], "1");
    assert_eq!(seg["currencyCode"], "BRL");
    assert_eq!(seg["channelPrivacy"], "public");

    let a = v.patch("sc=2", json!({})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let s = &a.json;
    assert_eq!(text(s, "store", "channel"), Some("2"));
    assert_eq!(text(s, "store", "currencyCode"), Some("USD"));
    assert_eq!(text(s, "store", "currencySymbol"), Some("US$"));
    assert_eq!(text(s, "store", "countryCode"), Some("USA"));
    assert_eq!(text(s, "store", "cultureInfo"), Some("en-US"));
    assert_eq!(text(s, "store", "channelPrivacy"), Some("public"));
    let seg = v.segment().await;
    assert_eq!(seg["channel"], "2");
    assert_eq!(seg["currencyCode"], "USD");
    assert_eq!(seg["countryCode"], "USA");

    // public.locale overrides the channel's culture; public.cultureInfo overrides both.
    let s = v.edit(json!({"locale": {"value": "en-GB"}})).await;
    assert_eq!(text(&s, "store", "cultureInfo"), Some("en-GB"));
    assert_eq!(text(&s, "store", "channel"), Some("2"));
    let s = v.edit(json!({"cultureInfo": {"value": "es-AR"}})).await;
    assert_eq!(text(&s, "store", "cultureInfo"), Some("es-AR"));
    let s = v.edit(json!({"cultureInfo": {"value": null}})).await;
    assert_eq!(text(&s, "store", "cultureInfo"), Some("en-GB"));
    assert_eq!(v.segment().await["cultureInfo"], "en-GB");
}

#[tokio::test]
async fn anonymous_request_for_a_restricted_or_unknown_channel_is_401_and_stores_nothing() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    v.edit(json!({"a": {"value": "1"}})).await;
    let before = v.get().await;
    for sc in ["3", "99"] {
        let a = v
            .patch(&format!("sc={sc}"), json!({"b": {"value": "2"}}))
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "sc={sc}: {}", a.text);
        assert_eq!(a.json["type"], "Unauthorized", "{}", a.text);
        assert!(
            a.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            a.text
        );
        let after = v.get().await;
        assert_eq!(after["id"], before["id"]);
        assert_eq!(
            after["version"], before["version"],
            "sc={sc}: nothing stored"
        );
        assert_eq!(after["namespaces"], before["namespaces"], "sc={sc}");
    }
    // Asking for it while creating fails the same way.
    let mut fresh = Visitor::new(&app);
    let a = fresh.patch("sc=3", json!({})).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
    assert_eq!(a.json["type"], "Unauthorized");
}

#[tokio::test]
async fn logged_in_customer_not_allowed_on_a_restricted_channel_is_403() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    v.login("carol@example.org").await;
    let before = v.get().await;
    let a = v.patch("sc=3", json!({})).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
    assert_eq!(a.json["type"], "Forbidden", "{}", a.text);
    assert!(a.json["message"].as_str().is_some(), "{}", a.text);
    let after = v.get().await;
    assert_eq!(after["version"], before["version"]);
    assert_eq!(text(&after, "store", "channel"), Some("1"));
    assert_eq!(text(&after, "public", "sc"), None);
}

#[tokio::test]
async fn restricted_channel_by_price_table_or_email_and_fallback_on_log_out() {
    let app = spawn_app().await;
    // Alice has the vip price table.
    let mut v = Visitor::new(&app);
    v.login("alice@example.com").await;
    let a = v.patch("sc=3", json!({})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(text(&a.json, "store", "channel"), Some("3"));
    assert_eq!(text(&a.json, "store", "channelPrivacy"), Some("private"));
    assert_eq!(text(&a.json, "store", "currencyCode"), Some("BRL"));
    let seg = v.segment().await;
    assert_eq!(seg["channel"], "3");
    assert_eq!(seg["channelPrivacy"], "private");

    // Log-out while on channel 3: back to the default channel, no error.
    v.drop_cookie(STORE_COOKIE);
    let a = v.patch("", json!({})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(text(&a.json, "profile", "isAuthenticated"), Some("false"));
    assert_eq!(text(&a.json, "store", "channel"), Some("1"));
    assert_eq!(text(&a.json, "store", "channelPrivacy"), Some("public"));
    assert_eq!(v.segment().await["channel"], "1");

    // Bob is on the channel's allowed emails.
    let mut b = Visitor::new(&app);
    b.login("bob@example.com").await;
    let a = b.patch("sc=3", json!({})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(text(&a.json, "store", "channel"), Some("3"));
    assert_eq!(text(&a.json, "store", "channelPrivacy"), Some("private"));

    // Log-in and the channel request in one request.
    let mut c = Visitor::new(&app);
    c.set_cookie(STORE_COOKIE, &store_token("alice@example.com"));
    let a = c.patch("sc=3", json!({})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(text(&a.json, "store", "channel"), Some("3"));
}

// ---------------------------------------------------------------------------------------------
// vtex.authentication-session

#[tokio::test]
async fn log_in_by_cookie_store_user_and_admin() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    v.edit(json!({})).await;
    let s = v.login("alice@example.com").await;
    assert_eq!(
        ns(&s, "authentication"),
        &json!({"storeUserId": {"value": ALICE}, "storeUserEmail": {"value": "alice@example.com"}})
    );

    let mut admin = Visitor::new(&app);
    admin.set_cookie(ADMIN_COOKIE, &admin_token("admin@example.com"));
    let s = admin.edit(json!({})).await;
    assert_eq!(
        ns(&s, "authentication"),
        &json!({"adminUserId": {"value": ADMIN}, "adminUserEmail": {"value": "admin@example.com"}})
    );
    assert_ne!(text(&s, "profile", "isAuthenticated"), Some("true"));
}

#[tokio::test]
async fn invalid_identity_tokens_authenticate_nobody() {
    let config = format!(
        "{}\n[[accounts]]\nname = \"acme\"\nidentity = {{ hs256_secret = \"acme-secret\" }}\n\
         [[accounts.apps]]\nname = \"vtex.authentication-session\"\n\
         [[accounts]]\nname = \"shared\"\nidentity = {{ hs256_secret = \"demo-identity-secret\" }}\n\
         [[accounts.apps]]\nname = \"vtex.authentication-session\"\n",
        sessiond::config::DEMO_CONFIG
    );
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("accounts.toml");
    std::fs::write(&config_path, &config).unwrap();
    let app = spawn_with(Some(&config)).await;

    let good = store_token("alice@example.com");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The binary only mints live tokens: the expired one is signed by the same minting code
    // (`sessiond_apps::identity::mint`, what `auth-token` calls) in the past.
    let expired = sessiond_apps::identity::mint(
        &sessiond_apps::identity::Identity {
            hs256_secret: Some("demo-identity-secret".into()),
            ..Default::default()
        },
        &sessiond_apps::identity::Mint {
            account: "demo",
            email: "alice@example.com",
            user_id: ALICE,
            admin: false,
            now_secs: now - 7200,
            ttl_secs: 3600,
        },
        None,
    )
    .unwrap();
    let mut tampered = good.clone();
    let at = good.rfind('.').unwrap() + 6;
    let flipped = if &good[at..=at] == "A" { "B" } else { "A" };
    tampered.replace_range(at..=at, flipped);
    let cases = [
        ("expired", STORE_COOKIE, expired),
        (
            "other account, other secret",
            STORE_COOKIE,
            mint("acme", "alice@example.com", false, Some(&config_path)),
        ),
        (
            "other account, same secret",
            STORE_COOKIE,
            mint("shared", "alice@example.com", false, Some(&config_path)),
        ),
        ("tampered signature", STORE_COOKIE, tampered),
        (
            "foreign cookie suffix",
            "VtexIdclientAutCookie_other",
            good.clone(),
        ),
        (
            "admin token of another account",
            ADMIN_COOKIE,
            mint("acme", "admin@example.com", true, Some(&config_path)),
        ),
    ];
    // Control: the genuine token in the right cookie logs in on this server.
    let mut control = Visitor::new(&app);
    control.set_cookie(STORE_COOKIE, &good);
    let s = control.edit(json!({})).await;
    assert_eq!(text(&s, "authentication", "storeUserId"), Some(ALICE));
    for (what, cookie, token) in cases {
        let mut v = Visitor::new(&app);
        v.set_cookie(cookie, &token);
        let a = v.patch("", json!({"x": {"value": "1"}})).await;
        assert_eq!(a.status, StatusCode::CREATED, "{what}: {}", a.text);
        assert_eq!(ns(&a.json, "authentication"), &Value::Null, "{what}");
        assert_ne!(
            text(&a.json, "profile", "isAuthenticated"),
            Some("true"),
            "{what}"
        );
        // The same on an existing session.
        let mut v = Visitor::new(&app);
        v.edit(json!({})).await;
        v.set_cookie(cookie, &token);
        let s = v.edit(json!({})).await;
        assert_eq!(ns(&s, "authentication"), &Value::Null, "{what}");
        assert_eq!(ns(&s, "profile").get("id"), None, "{what}");
    }
}

#[tokio::test]
async fn removing_the_identity_cookie_logs_out() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    v.login("alice@example.com").await;
    // A server-side call carrying only vtex_session keeps the recorded identity.
    let only_session = format!("vtex_session={}", v.session.clone().unwrap());
    let r = plain()
        .patch(app.url("/api/sessions?items=*"))
        .header("cookie", only_session)
        .json(&json!({"public": {"k": {"value": "v"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let s: Value = r.json().await.unwrap();
    assert_eq!(text(&s, "authentication", "storeUserId"), Some(ALICE));

    v.drop_cookie(STORE_COOKIE);
    let s = v.edit(json!({})).await;
    assert_eq!(ns(&s, "authentication"), &Value::Null, "{s}");
    assert_eq!(
        ns(&s, "profile"),
        &json!({"isAuthenticated": {"value": "false"}})
    );
    assert_eq!(ns(&s, "cookie").get(STORE_COOKIE), None);
    assert_eq!(v.segment().await["priceTables"], Value::Null);
}

// ---------------------------------------------------------------------------------------------
// vtex.profile-session

#[tokio::test]
async fn profile_of_a_logged_in_customer() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    let s = v.login("alice@example.com").await;
    assert_eq!(
        ns(&s, "profile"),
        &json!({
            "id": {"value": ALICE}, "email": {"value": "alice@example.com"},
            "firstName": {"value": "Alice"}, "lastName": {"value": "Silva"},
            "phone": {"value": "+5511999990001"}, "document": {"value": "12345678901"},
            "priceTables": {"value": "gold,vip"}, "isAuthenticated": {"value": "true"}
        })
    );
    assert_eq!(v.segment().await["priceTables"], "gold,vip");
    // Bob has no price table: the key is absent, not "".
    let mut b = Visitor::new(&app);
    let s = b.login("bob@example.com").await;
    assert_eq!(text(&s, "profile", "id"), Some(BOB));
    assert_eq!(ns(&s, "profile").get("priceTables"), None);
    assert_eq!(b.segment().await["priceTables"], Value::Null);
}

#[tokio::test]
async fn store_user_email_alone_gives_only_price_tables() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    let s = v
        .edit(json!({"storeUserEmail": {"value": "carol@example.org"}}))
        .await;
    assert_eq!(
        ns(&s, "profile"),
        &json!({"priceTables": {"value": "gold"}, "isAuthenticated": {"value": "false"}})
    );
    assert_eq!(ns(&s, "authentication"), &Value::Null);
    assert_eq!(v.segment().await["priceTables"], "gold");
    // Nothing: cleared, isAuthenticated "false" and no other key.
    let s = v.edit(json!({"storeUserEmail": {"value": null}})).await;
    assert_eq!(
        ns(&s, "profile"),
        &json!({"isAuthenticated": {"value": "false"}})
    );
    assert_eq!(v.segment().await["priceTables"], Value::Null);
}

// ---------------------------------------------------------------------------------------------
// vtex.rnb-session

#[tokio::test]
async fn campaigns_by_utm_need_every_condition() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    let s = v
        .edit(json!({"utm_source": {"value": "google"}, "utm_campaign": {"value": "black friday"}}))
        .await;
    assert_eq!(text(&s, "rnb", "campaigns"), Some("bf-google"));
    let seg = v.segment().await;
    assert_eq!(seg["campaigns"], "bf-google");
    assert_eq!(seg["utm_source"], "google");
    assert_eq!(seg["utm_campaign"], "black friday");
    // Losing one condition removes the campaign (absent, not "").
    let s = v.edit(json!({"utm_campaign": {"value": null}})).await;
    assert_eq!(ns(&s, "rnb").get("campaigns"), None, "{s}");
    assert_eq!(v.segment().await["campaigns"], Value::Null);

    for (what, public) in [
        (
            "only utm_source",
            json!({"utm_source": {"value": "google"}}),
        ),
        (
            "only utm_campaign",
            json!({"utm_campaign": {"value": "black friday"}}),
        ),
        (
            "another source",
            json!({"utm_source": {"value": "bing"}, "utm_campaign": {"value": "black friday"}}),
        ),
    ] {
        let mut v = Visitor::new(&app);
        let s = v.edit(public).await;
        assert_eq!(ns(&s, "rnb").get("campaigns"), None, "{what}: {s}");
        assert_eq!(v.segment().await["campaigns"], Value::Null, "{what}");
    }
    // Through the query string too.
    let mut q = Visitor::new(&app);
    let a = q
        .patch("utm_source=google&utm_campaign=black%20friday", json!({}))
        .await;
    assert_eq!(text(&a.json, "rnb", "campaigns"), Some("bf-google"));
}

#[tokio::test]
async fn campaigns_by_postal_code_and_price_table_sorted() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    let s = v.edit(json!({"postalCode": {"value": "01310100"}})).await;
    assert_eq!(text(&s, "rnb", "campaigns"), Some("sp-neighbours"));
    let s = v.login("alice@example.com").await;
    assert_eq!(text(&s, "rnb", "campaigns"), Some("sp-neighbours,vip-club"));
    let s = v
        .edit(json!({"utm_source": {"value": "google"}, "utm_campaign": {"value": "black friday"}}))
        .await;
    assert_eq!(
        text(&s, "rnb", "campaigns"),
        Some("bf-google,sp-neighbours,vip-club")
    );
    assert_eq!(
        v.segment().await["campaigns"],
        "bf-google,sp-neighbours,vip-club"
    );
    let s = v.edit(json!({"postalCode": {"value": "22000000"}})).await;
    assert_eq!(text(&s, "rnb", "campaigns"), Some("bf-google,vip-club"));
    // A logged-in customer without the vip table.
    let mut c = Visitor::new(&app);
    let s = c.login("carol@example.org").await;
    assert_eq!(ns(&s, "rnb").get("campaigns"), None, "{s}");
}

// ---------------------------------------------------------------------------------------------
// vtex.checkout-session

fn region(sellers: &str) -> String {
    STANDARD.encode(format!("SW#{sellers}"))
}

#[tokio::test]
async fn checkout_region_from_postal_code_coordinates_or_as_given() {
    let app = spawn_app().await;
    let cases = [
        (
            "SP postal code",
            json!({"country": {"value": "BRA"}, "postalCode": {"value": "01310100"}}),
            Some(region("lojasp;lojabr")),
        ),
        (
            "RJ postal code",
            json!({"country": {"value": "BRA"}, "postalCode": {"value": "22000000"}}),
            Some(region("lojarj;lojabr")),
        ),
        (
            "RJ coordinates",
            json!({"country": {"value": "BRA"}, "geoCoordinates": {"value": "-43.2,-22.9"}}),
            Some(region("lojarj")),
        ),
        (
            "postal code and coordinates: sellers united, each once",
            json!({"country": {"value": "BRA"}, "postalCode": {"value": "01310100"},
                   "geoCoordinates": {"value": "-43.2,-22.9"}}),
            Some(region("lojasp;lojarj;lojabr")),
        ),
        (
            "RJ postal code and RJ coordinates: lojarj once",
            json!({"country": {"value": "BRA"}, "postalCode": {"value": "22000000"},
                   "geoCoordinates": {"value": "-43.2,-22.9"}}),
            Some(region("lojarj;lojabr")),
        ),
        (
            "given regionId",
            json!({"regionId": {"value": "U1cjZ2l2ZW4="}, "country": {"value": "BRA"},
                   "postalCode": {"value": "01310100"}}),
            Some("U1cjZ2l2ZW4=".to_owned()),
        ),
        (
            "no country",
            json!({"postalCode": {"value": "01310100"}}),
            None,
        ),
        (
            "another country",
            json!({"country": {"value": "ARG"}, "postalCode": {"value": "01310100"}}),
            None,
        ),
    ];
    for (what, public, expected) in cases {
        let mut v = Visitor::new(&app);
        v.edit(json!({})).await;
        let s = v.edit(public).await;
        assert_eq!(
            text(&s, "checkout", "regionId").map(str::to_owned),
            expected,
            "{what}"
        );
        let seg = v.segment().await;
        assert_eq!(
            seg["regionId"].as_str().map(str::to_owned),
            expected,
            "{what}: the segment regionId is checkout.regionId"
        );
    }
    assert_eq!(region("lojasp;lojabr"), "U1cjbG9qYXNwO2xvamFicg==");
}

#[tokio::test]
async fn checkout_cart_id_is_drawn_once_and_region_follows_the_location() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    let s = v
        .edit(json!({"country": {"value": "BRA"}, "postalCode": {"value": "01310100"}}))
        .await;
    let cart = text(&s, "checkout", "cartId").unwrap().to_owned();
    assert_eq!(cart.len(), 32, "{cart}");
    assert!(
        cart.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{cart}"
    );
    for public in [
        json!({"postalCode": {"value": "22000000"}}),
        json!({"geoCoordinates": {"value": "-43.2,-22.9"}}),
        json!({"other": {"value": "x"}}),
    ] {
        let s = v.edit(public).await;
        assert_eq!(text(&s, "checkout", "cartId"), Some(cart.as_str()));
    }
    assert_eq!(
        text(&v.get().await, "checkout", "regionId").map(str::to_owned),
        Some(region("lojarj;lojabr"))
    );
    // No valid location any more: regionId removed, cartId kept.
    let s = v
        .edit(json!({"country": {"value": null}, "postalCode": {"value": null}}))
        .await;
    assert_eq!(ns(&s, "checkout").get("regionId"), None, "{s}");
    assert_eq!(text(&s, "checkout", "cartId"), Some(cart.as_str()));
    assert_eq!(v.segment().await["regionId"], Value::Null);
    // Another visitor gets another cart.
    let mut w = Visitor::new(&app);
    let s = w.edit(json!({"country": {"value": "BRA"}})).await;
    let other = text(&s, "checkout", "cartId").unwrap();
    assert_ne!(other, cart);
}

// ---------------------------------------------------------------------------------------------
// vtex.impersonate-session

#[tokio::test]
async fn an_admin_with_permission_impersonates_a_customer() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    v.set_cookie(ADMIN_COOKIE, &admin_token("admin@example.com"));
    let s = v.edit(json!({})).await;
    assert_eq!(text(&s, "impersonate", "canImpersonate"), Some("true"));
    assert_eq!(text(&s, "impersonate", "account"), Some("demo"));
    assert_eq!(ns(&s, "impersonate").get("storeUserId"), None);

    let s = v
        .edit(json!({"vtex-impersonated-customer-email": {"value": "alice@example.com"}}))
        .await;
    assert_eq!(
        ns(&s, "impersonate"),
        &json!({
            "storeUserId": {"value": ALICE}, "storeUserEmail": {"value": "alice@example.com"},
            "canImpersonate": {"value": "true"}, "account": {"value": "demo"}
        })
    );
    assert_eq!(text(&s, "profile", "id"), Some(ALICE));
    assert_eq!(text(&s, "profile", "firstName"), Some("Alice"));
    assert_eq!(text(&s, "profile", "priceTables"), Some("gold,vip"));
    assert_eq!(text(&s, "profile", "isAuthenticated"), Some("true"));
    assert_eq!(text(&s, "authentication", "adminUserId"), Some(ADMIN));
    assert_eq!(ns(&s, "authentication").get("storeUserId"), None);
    assert_eq!(v.segment().await["priceTables"], "gold,vip");

    // The email set to "" ends the impersonation.
    let s = v
        .edit(json!({"vtex-impersonated-customer-email": {"value": ""}}))
        .await;
    assert_eq!(ns(&s, "impersonate").get("storeUserId"), None, "{s}");
    assert_eq!(ns(&s, "impersonate").get("storeUserEmail"), None);
    assert_eq!(text(&s, "impersonate", "canImpersonate"), Some("true"));
    assert_eq!(
        ns(&s, "profile"),
        &json!({"isAuthenticated": {"value": "false"}})
    );
}

#[tokio::test]
async fn the_impersonated_email_may_come_from_a_cookie() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    v.set_cookie(ADMIN_COOKIE, &admin_token("admin@example.com"));
    v.set_cookie("vtex-impersonated-customer-email", "alice@example.com");
    let s = v.edit(json!({})).await;
    assert_eq!(text(&s, "impersonate", "storeUserId"), Some(ALICE));
    assert_eq!(text(&s, "profile", "email"), Some("alice@example.com"));
    // Dropping the cookie ends it.
    v.drop_cookie("vtex-impersonated-customer-email");
    let s = v.edit(json!({})).await;
    assert_eq!(ns(&s, "impersonate").get("storeUserId"), None, "{s}");
    assert_ne!(text(&s, "profile", "isAuthenticated"), Some("true"));
}

#[tokio::test]
async fn an_admin_without_permission_cannot_impersonate() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    v.set_cookie(ADMIN_COOKIE, &admin_token("viewer@example.com"));
    let s = v
        .edit(json!({"vtex-impersonated-customer-email": {"value": "alice@example.com"}}))
        .await;
    assert_eq!(
        text(&s, "authentication", "adminUserEmail"),
        Some("viewer@example.com")
    );
    assert_eq!(
        ns(&s, "impersonate"),
        &json!({"canImpersonate": {"value": "false"}, "account": {"value": "demo"}})
    );
    assert_ne!(text(&s, "profile", "isAuthenticated"), Some("true"));
    assert_eq!(ns(&s, "profile").get("id"), None);
    // A customer (not an admin) cannot either.
    let mut c = Visitor::new(&app);
    c.login("carol@example.org").await;
    let s = c
        .edit(json!({"vtex-impersonated-customer-email": {"value": "alice@example.com"}}))
        .await;
    assert_eq!(text(&s, "impersonate", "canImpersonate"), Some("false"));
    assert_eq!(ns(&s, "impersonate").get("storeUserId"), None);
    assert_eq!(text(&s, "profile", "email"), Some("carol@example.org"));
}

// ---------------------------------------------------------------------------------------------
// Session fixation (SPEC 3)

/// After an identity change made by `v`'s last request (answer `a`), checks the rotation: a new
/// id in the cookie, matching the answer, and the old token reads nothing of it.
async fn assert_rotated(app: &TestApp, a: &Answer, old_token: &str, what: &str) -> String {
    assert_eq!(a.status, StatusCode::OK, "{what}: {}", a.text);
    let new_token = a
        .session_cookie
        .clone()
        .unwrap_or_else(|| panic!("{what}: a new session token is set"));
    let old_id = token_id(old_token);
    let new_id = token_id(&new_token);
    assert_ne!(new_id, old_id, "{what}: a new session id");
    assert_eq!(a.json["id"], new_id.as_str(), "{what}");
    // The old token, alone or in the path, reads a fresh session.
    let by_cookie = read_alone(
        app,
        "/api/sessions?items=*",
        Some(format!("vtex_session={old_token}")),
    )
    .await;
    let by_path = read_alone(app, &format!("/api/sessions/{old_token}?items=*"), None).await;
    for (how, s) in [("cookie", by_cookie), ("path", by_path)] {
        assert_ne!(s["id"], old_id.as_str(), "{what}: old token by {how}");
        assert_ne!(s["id"], new_id.as_str(), "{what}: old token by {how}");
        assert_eq!(ns(&s, "authentication"), &Value::Null, "{what}: {how}");
        assert_eq!(ns(&s, "impersonate"), &Value::Null, "{what}: {how}");
        assert_eq!(value_of(&s, "public", "color"), None, "{what}: {how}");
        assert_eq!(s["version"], 1, "{what}: {how}");
    }
    // Editing with the old token creates a new session too.
    let r = plain()
        .patch(app.url("/api/sessions?items=*"))
        .header("cookie", format!("vtex_session={old_token}; _ga=1"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{what}");
    let s: Value = r.json().await.unwrap();
    assert_ne!(s["id"], new_id.as_str(), "{what}");
    new_token
}

#[tokio::test]
async fn log_in_and_log_out_rotate_the_session_id() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    let a = v.patch("", json!({"color": {"value": "red"}})).await;
    assert_eq!(a.status, StatusCode::CREATED);
    let planted = v.session.clone().unwrap();
    assert_eq!(a.json["id"], token_id(&planted).as_str());

    v.set_cookie(STORE_COOKIE, &store_token("alice@example.com"));
    let a = v.patch("", json!({})).await;
    let logged_in = assert_rotated(&app, &a, &planted, "log-in").await;
    assert_eq!(
        text(&a.json, "public", "color"),
        Some("red"),
        "carried over"
    );
    assert_eq!(text(&a.json, "authentication", "storeUserId"), Some(ALICE));
    // The new token reads the logged-in session.
    let s = read_alone(
        &app,
        "/api/sessions?items=*",
        Some(format!("vtex_session={logged_in}")),
    )
    .await;
    assert_eq!(s["id"], token_id(&logged_in).as_str());
    assert_eq!(text(&s, "profile", "email"), Some("alice@example.com"));
    // Without items, the token pair names the new session.
    let mut w = Visitor::new(&app);
    w.edit(json!({})).await;
    let before = w.session.clone().unwrap();
    w.set_cookie(STORE_COOKIE, &store_token("bob@example.com"));
    let a = w
        .send(Method::PATCH, "/api/sessions", Some(json!({})))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let pair_token = a.json["sessionToken"].as_str().unwrap();
    assert_eq!(Some(pair_token), a.session_cookie.as_deref());
    assert_ne!(token_id(pair_token), token_id(&before));

    // Log-out.
    v.drop_cookie(STORE_COOKIE);
    let a = v.patch("", json!({})).await;
    let logged_out = assert_rotated(&app, &a, &logged_in, "log-out").await;
    assert_eq!(
        text(&a.json, "public", "color"),
        Some("red"),
        "carried over"
    );
    assert_eq!(ns(&a.json, "authentication"), &Value::Null);
    assert_ne!(token_id(&logged_out), token_id(&planted));
}

#[tokio::test]
async fn impersonation_start_and_end_rotate_the_session_id() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    v.set_cookie(ADMIN_COOKIE, &admin_token("admin@example.com"));
    v.edit(json!({"color": {"value": "red"}})).await;
    let admin_token_ = v.session.clone().unwrap();
    let a = v
        .patch(
            "",
            json!({"vtex-impersonated-customer-email": {"value": "alice@example.com"}}),
        )
        .await;
    let impersonating = assert_rotated(&app, &a, &admin_token_, "impersonation start").await;
    assert_eq!(text(&a.json, "impersonate", "storeUserId"), Some(ALICE));
    assert_eq!(text(&a.json, "public", "color"), Some("red"));
    // The old token must not read the impersonated session (already checked: fresh session);
    // the new one does.
    let s = read_alone(
        &app,
        "/api/sessions?items=*",
        Some(format!("vtex_session={impersonating}")),
    )
    .await;
    assert_eq!(text(&s, "profile", "id"), Some(ALICE));

    let a = v
        .patch(
            "",
            json!({"vtex-impersonated-customer-email": {"value": ""}}),
        )
        .await;
    assert_rotated(&app, &a, &impersonating, "impersonation end").await;
    assert_eq!(text(&a.json, "public", "color"), Some("red"));
    assert_eq!(ns(&a.json, "impersonate").get("storeUserId"), None);
}

// ---------------------------------------------------------------------------------------------
// Secrets (SPEC 3)

#[tokio::test]
async fn identity_tokens_are_never_returned() {
    let app = spawn_app().await;
    let store = store_token("alice@example.com");
    let admin = admin_token("admin@example.com");
    let mut v = Visitor::new(&app);
    v.set_cookie(STORE_COOKIE, &store);
    v.set_cookie(ADMIN_COOKIE, &admin);
    let a = v.patch("", json!({"color": {"value": "red"}})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(text(&a.json, "authentication", "storeUserId"), Some(ALICE));
    assert_eq!(text(&a.json, "authentication", "adminUserId"), Some(ADMIN));
    let a = v
        .send(Method::GET, "/api/sessions?items=cookie.*", None)
        .await;
    assert_eq!(
        a.json["namespaces"],
        json!({"cookie": {
            STORE_COOKIE: {"value": "[redacted]"},
            ADMIN_COOKIE: {"value": "[redacted]"}
        }})
    );
    let a = v
        .send(
            Method::GET,
            "/api/sessions?items=cookie.VtexIdclientAutCookie_demo",
            None,
        )
        .await;
    assert_eq!(
        a.json["namespaces"],
        json!({"cookie": {STORE_COOKIE: {"value": "[redacted]"}}})
    );
    v.get().await;
    v.segment().await;
    v.send(Method::POST, "/api/sessions", Some(json!({}))).await;
    v.send(Method::PATCH, "/api/sessions?items=*", Some(json!({})))
        .await;
    let path = format!(
        "/api/sessions/{}?items=*,cookie.*",
        v.session.clone().unwrap()
    );
    v.send(Method::GET, &path, None).await;
    v.send(Method::DELETE, "/api/sessions", None).await;
    assert!(v.seen.len() >= 8);
    for token in [&store, &admin] {
        let signature = token.rsplit('.').next().unwrap();
        for body in &v.seen {
            assert!(!body.contains(token.as_str()), "a token leaked: {body}");
            assert!(!body.contains(signature), "a signature leaked: {body}");
        }
    }
}

#[tokio::test]
async fn a_bare_store_user_email_does_not_open_a_private_channel() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    v.edit(json!({})).await;
    let a = v
        .patch(
            "",
            json!({"sc": {"value": "3"}, "storeUserEmail": {"value": "alice@example.com"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
    assert_eq!(a.json["type"], "Unauthorized");
    assert_eq!(text(&v.get().await, "store", "channel"), Some("1"));
}

#[tokio::test]
async fn numbers_and_padded_text_are_read_as_text_by_the_built_ins() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    let s = v.edit(json!({"sc": {"value": 2}})).await;
    assert_eq!(text(&s, "store", "channel"), Some("2"));
    let s = v
        .edit(json!({"country": {"value": "BRA"}, "postalCode": {"value": " 01310100 "}}))
        .await;
    assert!(text(&s, "checkout", "regionId").is_some(), "{s}");
}

#[tokio::test]
async fn a_store_token_in_the_admin_cookie_is_no_admin() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    v.set_cookie("VtexIdclientAutCookie", &store_token("alice@example.com"));
    let s = v.edit(json!({})).await;
    assert_eq!(ns(&s, "authentication").get("adminUserEmail"), None, "{s}");
    v.drop_cookie("VtexIdclientAutCookie");
    v.set_cookie(STORE_COOKIE, &admin_token("admin@example.com"));
    let s = v.edit(json!({})).await;
    assert_eq!(ns(&s, "authentication").get("storeUserEmail"), None, "{s}");
}

#[tokio::test]
async fn requests_racing_with_a_log_in_land_in_the_logged_in_session() {
    let app = spawn_app().await;
    let mut v = Visitor::new(&app);
    v.edit(json!({"before": {"value": "1"}})).await;
    let old = v.session.clone().unwrap();
    let identity = store_token("alice@example.com");
    let cookie = format!("vtex_session={old}; _ga=1; {STORE_COOKIE}={identity}");
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let (url, cookie) = (app.url("/api/sessions?items=*"), cookie.clone());
            tokio::spawn(async move {
                let r = plain()
                    .patch(url)
                    .header("cookie", cookie)
                    .json(&json!({"public": {format!("k{i}"): {"value": i.to_string()}}}))
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let token = cookie_value(r.headers(), "vtex_session").unwrap();
                (status, token)
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    let mut last = String::new();
    for t in futures::future::join_all(tasks).await {
        let (status, token) = t.unwrap();
        assert_eq!(status, StatusCode::OK, "no request starts a new session");
        ids.insert(token_id(&token));
        last = token;
    }
    assert_eq!(
        ids.len(),
        1,
        "every request ends in the one logged-in session"
    );
    assert!(!ids.contains(&token_id(&old)), "the id changed at log-in");
    let s: Value = get_json(
        &app,
        "/api/sessions?items=*",
        format!("vtex_session={last}"),
    )
    .await;
    assert_eq!(text(&s, "public", "before"), Some("1"));
    for i in 0..10 {
        assert_eq!(
            text(&s, "public", &format!("k{i}")),
            Some(i.to_string().as_str()),
            "{s}"
        );
    }
    assert_eq!(text(&s, "profile", "isAuthenticated"), Some("true"));
    // The old token alone (a planted one) still reads nothing of it.
    let planted: Value = get_json(
        &app,
        "/api/sessions?items=*",
        format!("vtex_session={old}; _ga=1"),
    )
    .await;
    assert_ne!(planted["id"], s["id"]);
    assert_eq!(text(&planted, "public", "before"), None);
}
