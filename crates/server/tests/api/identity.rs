//! Identity providers end to end (SPEC §6a): a real JWKS server started by the test on a free
//! port, with RSA and P-256 keys the test generates; VTEX ID-shaped tokens on the demo account.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::harness::*;

const SECRET: &str = "demo-identity-secret";

/// A signing key of the provider: its private half and its JWK.
struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    private: EncodingKey,
    /// The public key as PEM (for the HS256-with-public-key attack).
    public_pem: String,
    jwk: Value,
}

impl SigningKey {
    /// A fresh 2048-bit RSA key (RS256).
    fn rsa(kid: &str) -> Self {
        use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        use rsa::traits::PublicKeyParts;
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let public = key.to_public_key();
        SigningKey {
            kid: kid.to_owned(),
            algorithm: Algorithm::RS256,
            private: EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            public_pem: public.to_public_key_pem(LineEnding::LF).unwrap(),
            jwk: json!({
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            }),
        }
    }

    /// A fresh P-256 key (ES256), published without `alg` (the curve implies it).
    fn p256(kid: &str) -> Self {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let key = p256::SecretKey::random(&mut rand_core::OsRng);
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let point = key.public_key().to_encoded_point(false);
        SigningKey {
            kid: kid.to_owned(),
            algorithm: Algorithm::ES256,
            private: EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            public_pem: key.public_key().to_public_key_pem(LineEnding::LF).unwrap(),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
            }),
        }
    }

    /// `claims` signed with this key, its `kid` in the header.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.private).unwrap()
    }
}

/// OpenID Connect claims of a store user: `sub` is the id, `email` the email.
fn oidc_claims(edit: Value) -> Value {
    let mut claims = json!({
        "iss": "https://idp.test/",
        "sub": ALICE,
        "email": "alice@example.com",
        "aud": ["storefront", "webstore"],
        "iat": now(),
        "exp": now() + 3600,
    });
    for (k, v) in edit.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

/// A JWKS provider: serves the published keys at `/jwks.json`, after `delay`.
#[derive(Default)]
struct Provider {
    keys: Mutex<Vec<Value>>,
    delay: Mutex<Duration>,
    /// While set, it answers 503 (and counts no answer).
    down: std::sync::atomic::AtomicBool,
    /// Answers sent; watched by tests waiting for the next one.
    served: AtomicU64,
    notify: tokio::sync::Notify,
}

impl Provider {
    fn publish(&self, key: &SigningKey) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }

    /// Serves on `listener` until the test ends.
    fn serve(self: &Arc<Self>, listener: tokio::net::TcpListener) {
        let provider = self.clone();
        let router = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let provider = provider.clone();
                async move {
                    let delay = *provider.delay.lock().unwrap();
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    if provider.down.load(Ordering::SeqCst) {
                        return axum::response::IntoResponse::into_response(
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        );
                    }
                    let keys = provider.keys.lock().unwrap().clone();
                    provider.served.fetch_add(1, Ordering::SeqCst);
                    provider.notify.notify_waiters();
                    axum::response::IntoResponse::into_response((
                        [("cache-control", "public, max-age=300")],
                        axum::Json(json!({ "keys": keys })),
                    ))
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, router).await });
    }

    /// Waits until the provider has answered more than `n` times.
    async fn served_more_than(&self, n: u64) {
        loop {
            let notified = self.notify.notified();
            if self.served.load(Ordering::SeqCst) > n {
                return;
            }
            notified.await;
        }
    }
}

/// The demo configuration with its identity taken from the JWKS at `port`.
fn jwks_config(port: u16) -> String {
    sessiond::config::DEMO_CONFIG.replace(
        &format!("identity = {{ hs256_secret = \"{SECRET}\" }}"),
        &format!(
            "identity = {{ jwks_url = \"http://127.0.0.1:{port}/jwks.json\", issuer = \
             \"https://idp.test/\", email_claim = \"email\", user_id_claim = \"sub\" }}"
        ),
    )
}

/// A provider serving on a free port, and sessiond using it.
async fn provider_and_app(keys: &[&SigningKey]) -> (Arc<Provider>, TestApp) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let provider = Arc::new(Provider::default());
    for key in keys {
        provider.publish(key);
    }
    provider.serve(listener);
    let app = spawn_with(Some(&jwks_config(port))).await;
    (provider, app)
}

/// The store user the session says is logged in, after a PATCH.
async fn store_user(b: &mut Visitor<'_>) -> Option<String> {
    let s = b.edit(json!({})).await;
    value_of(&s, "authentication", "storeUserId").map(|v| v.as_str().unwrap().to_owned())
}

/// The store user `token` logs in on a fresh session, if any.
async fn logs_in(app: &TestApp, token: &str) -> Option<String> {
    let mut b = Visitor::new(app);
    b.set_cookie(STORE_COOKIE, token);
    store_user(&mut b).await
}

#[tokio::test]
async fn rs256_and_es256_tokens_log_in_and_a_rotated_key_works_without_restart() {
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::p256("ec-1");
    let (provider, app) = provider_and_app(&[&rsa, &ec]).await;
    let rs_token = rsa.sign(&oidc_claims(json!({})));
    let es_token = ec.sign(&oidc_claims(json!({})));
    assert_eq!(logs_in(&app, &rs_token).await.as_deref(), Some(ALICE));
    assert_eq!(logs_in(&app, &es_token).await.as_deref(), Some(ALICE));
    // The whole log-in follows: the profile of the user the provider named.
    let mut b = Visitor::new(&app);
    b.set_cookie(STORE_COOKIE, &es_token);
    let s = b.edit(json!({})).await;
    assert_eq!(value_of(&s, "profile", "firstName"), Some(&json!("Alice")));
    assert_eq!(
        value_of(&s, "authentication", "storeUserEmail"),
        Some(&json!("alice@example.com"))
    );

    // Rotation: the provider publishes a new key and signs with it. The next log-in with it
    // works, without a restart.
    let served = provider.served.load(Ordering::SeqCst);
    let rotated = SigningKey::p256("ec-2");
    provider.publish(&rotated);
    let token = rotated.sign(&oidc_claims(json!({})));
    assert_eq!(logs_in(&app, &token).await.as_deref(), Some(ALICE));
    assert!(provider.served.load(Ordering::SeqCst) > served, "refetched");
    // The older keys still work.
    let mut again = Visitor::new(&app);
    again.set_cookie(STORE_COOKIE, &rsa.sign(&oidc_claims(json!({"jti": "2"}))));
    assert_eq!(store_user(&mut again).await.as_deref(), Some(ALICE));
}

#[tokio::test]
async fn refused_tokens_are_no_log_in_and_no_error() {
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::p256("ec-1");
    let (_provider, app) = provider_and_app(&[&rsa, &ec]).await;
    let never_published = SigningKey::p256("ghost");
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"})),
        b64(&oidc_claims(json!({})))
    );
    // HS256 with the provider's public key as the HMAC secret.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let confused = jsonwebtoken::encode(
        &header,
        &oidc_claims(json!({})),
        &EncodingKey::from_secret(rsa.public_pem.as_bytes()),
    )
    .unwrap();
    // ES256 claimed for the RSA key's kid: the algorithm comes from the key.
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("rsa-1".into());
    let wrong_alg = jsonwebtoken::encode(&header, &oidc_claims(json!({})), &ec.private).unwrap();
    let cases = [
        (
            "wrong issuer",
            rsa.sign(&oidc_claims(json!({"iss": "https://evil.test/"}))),
        ),
        (
            "wrong audience",
            rsa.sign(&oidc_claims(json!({"aud": ["partner"]}))),
        ),
        (
            "other account",
            rsa.sign(&oidc_claims(json!({"account": "acme"}))),
        ),
        (
            "expired",
            ec.sign(&oidc_claims(
                json!({"iat": now() - 7200, "exp": now() - 3600}),
            )),
        ),
        (
            "not yet valid",
            ec.sign(&oidc_claims(json!({"nbf": now() + 600}))),
        ),
        ("no email", ec.sign(&oidc_claims(json!({"email": null})))),
        ("alg none", alg_none),
        ("HS256 with the public key", confused),
        ("another algorithm than the key's", wrong_alg),
        (
            "unknown kid never published",
            never_published.sign(&oidc_claims(json!({}))),
        ),
        ("not a JWT", "e30.e30.e30".to_owned()),
    ];
    for (what, token) in &cases {
        assert_eq!(logs_in(&app, token).await, None, "{what}");
    }
    // None of them in the admin cookie either.
    for (what, token) in &cases {
        let mut b = Visitor::new(&app);
        b.set_cookie(ADMIN_COOKIE, token);
        let s = b.edit(json!({})).await;
        assert_eq!(
            value_of(&s, "authentication", "adminUserId"),
            None,
            "{what}"
        );
    }
    // The control: the same provider's good token logs in.
    let good = rsa.sign(&oidc_claims(json!({})));
    assert_eq!(logs_in(&app, &good).await.as_deref(), Some(ALICE));
}

#[tokio::test]
async fn a_provider_down_at_start_stops_nothing_and_log_ins_work_once_it_is_up() {
    // A port nothing listens on yet.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = spawn_with(Some(&jwks_config(port))).await;
    let ec = SigningKey::p256("ec-1");
    let token = ec.sign(&oidc_claims(json!({})));
    let mut b = Visitor::new(&app);
    b.set_cookie(STORE_COOKIE, &token);
    assert_eq!(store_user(&mut b).await, None, "no keys, no log-in");
    let s = b.edit(json!({"k": {"value": "kept"}})).await;
    assert_eq!(value_of(&s, "public", "k"), Some(&json!("kept")));

    // The provider comes up; once it has answered the server, the same browser with the same
    // cookie is logged in.
    let provider = Arc::new(Provider::default());
    provider.publish(&ec);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    provider.serve(listener);
    provider.served_more_than(0).await;
    assert_eq!(store_user(&mut b).await.as_deref(), Some(ALICE));
    let s = b.edit(json!({})).await;
    assert_eq!(value_of(&s, "public", "k"), Some(&json!("kept")));
}

#[tokio::test]
async fn a_slow_provider_delays_no_request() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let ec = SigningKey::p256("ec-1");
    let provider = Arc::new(Provider::default());
    provider.publish(&ec);
    // Slower than any request may take: the server's own fetch gives up first.
    *provider.delay.lock().unwrap() = Duration::from_secs(60);
    provider.serve(listener);
    let app = spawn_with(Some(&jwks_config(port))).await;
    // A client that gives up long before the provider answers.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut anonymous = Visitor::with_client(&app, client.clone());
    let s = anonymous.edit(json!({"k": {"value": "1"}})).await;
    assert_eq!(value_of(&s, "public", "k"), Some(&json!("1")));
    let mut b = Visitor::with_client(&app, client.clone());
    b.set_cookie(STORE_COOKIE, &ec.sign(&oidc_claims(json!({}))));
    for _ in 0..3 {
        assert_eq!(store_user(&mut b).await, None);
    }
    let segment = client.get(app.url("/api/segments")).send().await.unwrap();
    assert_eq!(segment.status(), 200);
}

/// VTEX ID's claims: `sub` is the email, `audience` says admin or webstore.
fn vtex_id(email: &str, user_id: &str, audience: &str) -> String {
    let claims = json!({
        "sub": email,
        "account": "demo",
        "audience": audience,
        "sess": "9b5f4c1e-7f37-4c57-9d7e-1f1e0a7f8f3b",
        "exp": now() + 86_400,
        "type": "user",
        "userId": user_id,
        "iat": now(),
        "isRepresentative": false,
        "iss": "token-emitter",
        "jti": "d52c2c1a-3b8e-4bd4-9a3a-0e6d1b4a1a77",
    });
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("jwt".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn vtex_id_tokens_log_in_admins_who_impersonate_and_store_users() {
    let app = spawn_app().await;
    let admin = vtex_id("admin@example.com", ADMIN, "admin");
    let store = vtex_id("alice@example.com", ALICE, "webstore");

    let mut b = Visitor::new(&app);
    b.set_cookie(ADMIN_COOKIE, &admin);
    let s = b.edit(json!({})).await;
    assert_eq!(
        value_of(&s, "authentication", "adminUserId"),
        Some(&json!(ADMIN))
    );
    assert_eq!(
        value_of(&s, "authentication", "adminUserEmail"),
        Some(&json!("admin@example.com"))
    );
    assert_eq!(
        value_of(&s, "impersonate", "canImpersonate"),
        Some(&json!("true"))
    );
    // Impersonation starts: the call-centre admin acts as Alice.
    let s = b
        .edit(json!({"vtex-impersonated-customer-email": {"value": "alice@example.com"}}))
        .await;
    assert_eq!(
        value_of(&s, "impersonate", "storeUserId"),
        Some(&json!(ALICE))
    );
    assert_eq!(value_of(&s, "profile", "id"), Some(&json!(ALICE)));
    assert_eq!(
        value_of(&s, "profile", "isAuthenticated"),
        Some(&json!("true"))
    );
    // And ends.
    let s = b
        .edit(json!({"vtex-impersonated-customer-email": {"value": ""}}))
        .await;
    assert_eq!(value_of(&s, "impersonate", "storeUserId"), None);
    assert_eq!(value_of(&s, "profile", "id"), None);

    // A store user.
    let mut shopper = Visitor::new(&app);
    shopper.set_cookie(STORE_COOKIE, &store);
    assert_eq!(store_user(&mut shopper).await.as_deref(), Some(ALICE));

    // A store token copied into the admin cookie is no admin, and the reverse is no shopper.
    let mut forger = Visitor::new(&app);
    forger.set_cookie(ADMIN_COOKIE, &store);
    forger.set_cookie(STORE_COOKIE, &admin);
    let s = forger.edit(json!({})).await;
    assert_eq!(value_of(&s, "authentication", "adminUserId"), None);
    assert_eq!(value_of(&s, "authentication", "storeUserId"), None);
    assert_eq!(value_of(&s, "impersonate", "canImpersonate"), None);

    // Logging out by dropping the cookie clears the admin.
    b.drop_cookie(ADMIN_COOKIE);
    let s = b.edit(json!({})).await;
    assert_eq!(value_of(&s, "authentication", "adminUserId"), None);
}

#[test]
fn auth_token_signs_vtex_id_claims_with_a_pem_key_and_check_validates_identity() {
    use p256::pkcs8::{EncodePrivateKey, LineEnding};
    let dir = tempfile::tempdir().unwrap();
    let private = p256::SecretKey::random(&mut rand_core::OsRng);
    let public_pem = {
        use p256::pkcs8::EncodePublicKey;
        private
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    };
    let key_path = dir.path().join("identity.pem");
    std::fs::write(
        &key_path,
        private.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes(),
    )
    .unwrap();
    let config = sessiond::config::DEMO_CONFIG.replace(
        &format!("identity = {{ hs256_secret = \"{SECRET}\" }}"),
        &format!("identity = {{ public_key_pem = \"\"\"\n{public_pem}\"\"\" }}"),
    );
    let config_path = dir.path().join("pem.toml");
    std::fs::write(&config_path, &config).unwrap();
    let out = sessiond()
        .args([
            "auth-token",
            "--account",
            "demo",
            "--email",
            "admin@example.com",
            "--admin",
        ])
        .arg("--config")
        .arg(&config_path)
        .arg("--signing-key")
        .arg(&key_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(jwt_part(&token, 0)["alg"], "ES256");
    let claims = jwt_part(&token, 1);
    for (claim, expected) in [
        ("sub", json!("admin@example.com")),
        ("userId", json!(ADMIN)),
        ("account", json!("demo")),
        ("audience", json!("admin")),
        ("type", json!("user")),
        ("iss", json!("token-emitter")),
        ("isRepresentative", json!(false)),
    ] {
        assert_eq!(claims[claim], expected, "{claim}");
    }
    assert!(claims["sess"].is_string() && claims["jti"].is_string());
    // Without the private key it says what it needs.
    let out = sessiond()
        .args(["auth-token", "--account", "demo", "--email", "a@b.c"])
        .arg("--config")
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--signing-key"));

    // `sessiond check` of a configuration `text` written to `name`.
    let check = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        sessiond()
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap()
    };
    // `check` refuses an identity table with two key sources, a bad PEM or a bad URL.
    for (identity, expected) in [
        (
            "{ hs256_secret = \"x\", jwks_url = \"https://idp.test/jwks.json\" }".to_owned(),
            "exactly one",
        ),
        (
            "{ public_key_pem = \"-----BEGIN PUBLIC KEY-----\\nAAAA\\n-----END PUBLIC KEY-----\" }"
                .to_owned(),
            "public_key_pem",
        ),
        (
            "{ jwks_url = \"idp.test/jwks.json\" }".to_owned(),
            "jwks_url",
        ),
        (
            "{ issuer = \"https://idp.test/\" }".to_owned(),
            "needs one of",
        ),
    ] {
        let bad = sessiond::config::DEMO_CONFIG.replace(
            &format!("identity = {{ hs256_secret = \"{SECRET}\" }}"),
            &format!("identity = {identity}"),
        );
        let out = check("bad.toml", &bad);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{identity}");
        assert!(stderr.contains(expected), "{identity}: {stderr}");
    }
    let good = sessiond::config::DEMO_CONFIG.replace(
        &format!("identity = {{ hs256_secret = \"{SECRET}\" }}"),
        "identity = { jwks_url = \"https://idp.test/.well-known/jwks.json\", email_claim = \"email\", user_id_claim = \"sub\" }",
    );
    let out = check("good.toml", &good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_key_the_provider_does_not_publish_logs_the_user_out() {
    let rsa = SigningKey::rsa("rsa-1");
    let (_provider, app) = provider_and_app(&[&rsa]).await;
    let mut b = Visitor::new(&app);
    b.set_cookie(STORE_COOKIE, &rsa.sign(&oidc_claims(json!({}))));
    assert_eq!(store_user(&mut b).await.as_deref(), Some(ALICE));
    // The same browser now sends a token of a key the answering provider does not list: no
    // log-in, so Alice is logged out, as by any other token that does not verify.
    let ghost = SigningKey::p256("ghost");
    b.set_cookie(STORE_COOKIE, &ghost.sign(&oidc_claims(json!({}))));
    assert_eq!(store_user(&mut b).await, None);
}

#[tokio::test]
async fn what_one_cookie_decides_holds_while_the_other_waits_for_keys() {
    let ec = SigningKey::p256("ec-1");
    let (provider, app) = provider_and_app(&[&ec]).await;
    let mut b = Visitor::new(&app);
    b.set_cookie(STORE_COOKIE, &ec.sign(&oidc_claims(json!({}))));
    assert_eq!(store_user(&mut b).await.as_deref(), Some(ALICE));

    // The provider goes down; the browser logs the shopper out (drops the store cookie) and
    // brings an admin token of a key not fetched yet: the log-out holds, the admin waits.
    provider.down.store(true, Ordering::SeqCst);
    let rotated = SigningKey::p256("ec-2");
    let admin = rotated.sign(&oidc_claims(
        json!({"sub": ADMIN, "email": "admin@example.com", "aud": ["admin"]}),
    ));
    b.drop_cookie(STORE_COOKIE);
    b.set_cookie(ADMIN_COOKIE, &admin);
    let s = b.edit(json!({})).await;
    assert_eq!(value_of(&s, "authentication", "storeUserId"), None);
    assert_eq!(value_of(&s, "authentication", "adminUserId"), None);
    assert_eq!(
        value_of(&s, "cookie", STORE_COOKIE),
        None,
        "the removal is recorded"
    );

    // Back up with the new key: the same cookie logs the admin in.
    let served = provider.served.load(Ordering::SeqCst);
    provider.publish(&rotated);
    provider.down.store(false, Ordering::SeqCst);
    provider.served_more_than(served).await;
    let s = b.edit(json!({})).await;
    assert_eq!(
        value_of(&s, "authentication", "adminUserId"),
        Some(&json!(ADMIN))
    );
    assert_eq!(value_of(&s, "authentication", "storeUserId"), None);
}
