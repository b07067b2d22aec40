//! `vtex.authentication-session`: who is logged in, from the identity-token cookies.
//!
//! `cookie.VtexIdclientAutCookie` carries the admin's token, `cookie.VtexIdclientAutCookie_<account>`
//! the store user's. Each is a JWT verified with the account's identity keys: HS256 with the
//! shared secret, or, when a public key is configured, RS256 (RSA key) or ES256 (P-256 key) and
//! nothing else — never `none`, never HS256 (the public key is not a secret). A valid, unexpired
//! token for this account writes the id/email pair; anything else clears it.
//!
//! A token is verified once: the claims of the tokens that verified are remembered by the
//! token's SHA-256 digest until their `exp` (a visitor's cookie comes with every request that
//! re-runs the app; with RS256 or ES256 keys a verification costs tens of microseconds).
//!
//! Also owns [`mint_identity_token`], which signs the tokens this app accepts.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sessiond_core::{AppError, Call, Changes};
use sha2::{Digest, Sha256};

use super::{same_ci, text, App, Outputs};
use crate::commerce::Identity;

/// The admin's identity cookie.
const ADMIN_COOKIE: &str = "VtexIdclientAutCookie";
/// The `aud` claim of admin tokens.
const ADMIN_AUDIENCE: &str = "admin";
/// The `aud` claim of store-user tokens minted here.
const STORE_AUDIENCE: &str = "store";
/// The prefix of the store user's identity cookie (followed by the account name).
const STORE_COOKIE_PREFIX: &str = "VtexIdclientAutCookie_";

/// The claims of an identity token, all required.
#[derive(Deserialize)]
struct Claims {
    /// The user's email.
    sub: String,
    /// The user's id.
    #[serde(rename = "userId")]
    user_id: String,
    /// The account the token was issued for.
    account: String,
    /// `admin` for admin tokens; store-user tokens say `store` or nothing.
    #[serde(default)]
    aud: Option<String>,
    /// Expiry, seconds since the Unix epoch (checked by the validation, without leeway).
    exp: u64,
}

/// Most identity tokens remembered as verified; the memory starts over when full.
const REMEMBERED_TOKENS: usize = 1 << 16;

/// What a verified token says, as far as the app reads it.
#[derive(Clone)]
struct Verified {
    user_id: String,
    email: String,
    account: String,
    admin: bool,
    /// Seconds since the Unix epoch; the token is valid while `exp > now`.
    exp: u64,
}

/// The authentication app of one account: how it verifies identity tokens.
pub(super) struct Authentication {
    /// The verification key and rules; `None` when the account has no identity keys.
    verifier: Option<(DecodingKey, Validation)>,
    /// Tokens that verified, by SHA-256 digest of the (trimmed) token.
    verified: Mutex<HashMap<[u8; 32], Verified>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Authentication {
    /// The app verifying tokens with `identity`; errs when the keys are unusable.
    pub(super) fn new(identity: &Identity) -> Result<Self, String> {
        let verifier = match (&identity.public_key_pem, &identity.hs256_secret) {
            (Some(pem), _) => Some(public_key(pem)?),
            (None, Some(secret)) if secret.is_empty() => {
                return Err("the identity hs256_secret is empty".to_owned())
            }
            (None, Some(secret)) => Some((
                DecodingKey::from_secret(secret.as_bytes()),
                Algorithm::HS256,
            )),
            (None, None) => None,
        };
        Ok(Authentication {
            verified: Mutex::default(),
            verifier: verifier.map(|(key, algorithm)| {
                let mut validation = Validation::new(algorithm);
                validation.leeway = 0;
                validation.validate_aud = false;
                validation.set_required_spec_claims(&["exp"]);
                (key, validation)
            }),
        })
    }

    /// The `(userId, email)` of `token` when it verifies, was issued for `account`, and is of
    /// the kind the cookie carries: the admin cookie takes only `aud: "admin"` tokens, the store
    /// cookie never does (a shopper's token must not make them an admin, nor the reverse).
    fn verify(&self, token: &str, account: &str, admin: bool) -> Option<(String, String)> {
        let v = self.verified(token.trim(), now_secs())?;
        (v.admin == admin
            && same_ci(&v.account, account)
            && !v.user_id.is_empty()
            && !v.email.is_empty())
        .then_some((v.user_id, v.email))
    }

    /// The claims of `token` if its signature holds and it has not expired at `now`: from the
    /// memory of verified tokens, else checked (and remembered when it verifies).
    fn verified(&self, token: &str, now: u64) -> Option<Verified> {
        let (key, validation) = self.verifier.as_ref()?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Each operation is one lookup, insert or clear: a panic cannot leave it half-written.
        let memory = || self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = memory().get(&digest).filter(|v| v.exp > now) {
            return Some(v.clone());
        }
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .ok()?
            .claims;
        let v = Verified {
            admin: claims.aud.as_deref() == Some(ADMIN_AUDIENCE),
            user_id: claims.user_id,
            email: claims.sub,
            account: claims.account,
            exp: claims.exp,
        };
        let mut remembered = memory();
        if remembered.len() >= REMEMBERED_TOKENS {
            remembered.clear();
        }
        remembered.insert(digest, v.clone());
        Some(v)
    }
}

/// The verification key of a public key PEM and the one algorithm it accepts.
fn public_key(pem: &str) -> Result<(DecodingKey, Algorithm), String> {
    if pem.contains("PRIVATE KEY") {
        return Err(
            "the identity public_key_pem holds a private key; configure the public key \
                    (-----BEGIN PUBLIC KEY-----)"
                .to_owned(),
        );
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
        // A P-256 point is 65 bytes uncompressed or 33 compressed; other curves are longer.
        let is_p256 = match key.try_get_as_bytes() {
            Ok(point) => matches!(
                (point.len(), point.first()),
                (65, Some(4)) | (33, Some(2 | 3))
            ),
            Err(_) => false,
        };
        if !is_p256 {
            return Err(
                "the identity public_key_pem is an EC key on a curve other than P-256 (ES256)"
                    .to_owned(),
            );
        }
        return Ok((key, Algorithm::ES256));
    }
    match DecodingKey::from_rsa_pem(pem.as_bytes()) {
        Ok(key) => Ok((key, Algorithm::RS256)),
        Err(e) => Err(format!(
            "the identity public_key_pem is not a PEM RSA or P-256 public key: {e}"
        )),
    }
}

impl App for Authentication {
    fn answer(&self, call: &Call<'_>) -> Result<Changes, AppError> {
        let admin = text(call, "cookie", ADMIN_COOKIE)
            .and_then(|token| self.verify(token, call.account, true));
        let store = call.input.get("cookie").and_then(|cookies| {
            cookies
                .iter()
                .filter(|(name, _)| {
                    name.strip_prefix(STORE_COOKIE_PREFIX)
                        .is_some_and(|suffix| same_ci(suffix, call.account))
                })
                .filter_map(|(_, value)| value.as_str())
                .find_map(|token| self.verify(token, call.account, false))
        });
        let mut out = Outputs::new("authentication");
        out.put("adminUserId", admin.as_ref().map(|(id, _)| id.as_str()));
        out.put(
            "adminUserEmail",
            admin.as_ref().map(|(_, email)| email.as_str()),
        );
        out.put("storeUserId", store.as_ref().map(|(id, _)| id.as_str()));
        out.put(
            "storeUserEmail",
            store.as_ref().map(|(_, email)| email.as_str()),
        );
        Ok(out.into_changes())
    }
}

/// The claims [`mint_identity_token`] signs.
#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    #[serde(rename = "userId")]
    user_id: &'a str,
    account: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// Signs a store-user identity token (a `VtexIdclientAutCookie_<account>` value) for
/// `email`/`user_id` of `account`, valid from `now_secs` for `ttl_secs`: HS256 with the account's
/// `hs256_secret`, claims `sub` (email), `userId`, `account`, `aud: "store"`, `iat`, `exp`. It is
/// what `sessiond auth-token` prints, so demos and tests can log in without an identity
/// provider. Errs when the account has no secret.
pub fn mint_identity_token(
    identity: &Identity,
    account: &str,
    email: &str,
    user_id: &str,
    now_secs: u64,
    ttl_secs: u64,
) -> Result<String, String> {
    mint(
        identity,
        account,
        email,
        user_id,
        STORE_AUDIENCE,
        now_secs,
        ttl_secs,
    )
}

/// Like [`mint_identity_token`], for an admin (`aud: "admin"`, the `VtexIdclientAutCookie`
/// value): `sessiond auth-token --admin`.
pub fn mint_admin_token(
    identity: &Identity,
    account: &str,
    email: &str,
    user_id: &str,
    now_secs: u64,
    ttl_secs: u64,
) -> Result<String, String> {
    mint(
        identity,
        account,
        email,
        user_id,
        ADMIN_AUDIENCE,
        now_secs,
        ttl_secs,
    )
}

fn mint(
    identity: &Identity,
    account: &str,
    email: &str,
    user_id: &str,
    aud: &str,
    now_secs: u64,
    ttl_secs: u64,
) -> Result<String, String> {
    let secret = identity
        .hs256_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            format!("account {account} has no identity hs256_secret to sign tokens with")
        })?;
    let claims = MintedClaims {
        sub: email,
        user_id,
        account,
        aud,
        iat: now_secs,
        exp: now_secs.saturating_add(ttl_secs),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| format!("cannot sign the identity token: {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::transformer;
    use super::*;

    const APP: &str = "vtex.authentication-session";
    const STORE: &str = "cookie.VtexIdclientAutCookie_demo";
    const ADMIN: &str = "cookie.VtexIdclientAutCookie";
    const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEJIrPtZtrQ3tiUeLybeApuzun7OCQ
mgI5KdAi+UQWiIod/tjlRgf/BocBlLfr9ySSGKtSx+2UqqXyrhNYDMLeWA==
-----END PUBLIC KEY-----
";
    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgTXMhSBCO8ZYP14vp
R8Ewy/PIfyN1WXodDoekAX56h0uhRANCAAQkis+1m2tDe2JR4vJt4Cm7O6fs4JCa
Ajkp0CL5RBaIih3+2OVGB/8GhwGUt+v3JJIYq1LH7ZSqpfKuE1gMwt5Y
-----END PRIVATE KEY-----
";
    const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAzeX7PTOl8bihNRfS18R1
CT/bgmWJ/ghazcRS6tZGMIs/OcFpbj4u/UwIQL+3jXCP1xEn4U3Pj2NrwsyZsaAS
jcVMR+usruKeScnd5UINXRbfGsMwDe5cBq+tZ0+oXL36fj14LnJZt+w1mYtE9Lk+
W8F9bc9KFAFB5ZtPoyZhrR7nl8FlazvVrnEid/fHrhpmFxyZQEbGhS9w1wLzxOow
XwRvWfmTXCJdj6U9wvnDpPOjiaEtUeaU7cfQ54A0ueqX0VOLIxvdzXY5RCaYHnmz
nbZ23Xb6BY26o2iOyXYFvvxfhzmN+2ft5dLkOGS0qB/tXs5LPRhL2NFU0uPmpFMf
LQIDAQAB
-----END PUBLIC KEY-----
";
    const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDN5fs9M6XxuKE1
F9LXxHUJP9uCZYn+CFrNxFLq1kYwiz85wWluPi79TAhAv7eNcI/XESfhTc+PY2vC
zJmxoBKNxUxH66yu4p5Jyd3lQg1dFt8awzAN7lwGr61nT6hcvfp+PXguclm37DWZ
i0T0uT5bwX1tz0oUAUHlm0+jJmGtHueXwWVrO9WucSJ398euGmYXHJlARsaFL3DX
AvPE6jBfBG9Z+ZNcIl2PpT3C+cOk86OJoS1R5pTtx9DngDS56pfRU4sjG93NdjlE
JpgeebOdtnbddvoFjbqjaI7JdgW+/F+HOY37Z+3l0uQ4ZLSoH+1ezks9GEvY0VTS
4+akUx8tAgMBAAECggEAQQTwly2RqCkFI0aAKunbiY20TFOzRVivEA6Anq8GoDrA
vwTQPeN+JDfX3VaNaKlUivZccR4Ivv+G3o+Ms1ZYtZNJ2OZX9CwVDzkjjMuUe8KG
tqVPrf6I6gWdDSRPBuZpTWcs5gHvShDaBkBACMXcps4NxVjxzCpvfEnU1rD+pFOu
itbczzCw/4P2AdAodO/MQQSkP4D4CKhIJpUCAdCIhb6QIMND9+aOUNdEct5zIHkw
k0wT4HuFSVy5Gsuke8TfAdZNYAF7+T4cfrcs33S2RgZ7TrfTHMLSaHixOufZwDus
IHqrONqPHW+c2FwahqXEaVY9uxbuqfB+CqY4YOiOMwKBgQDpLk2XZ92fAwUy5L7B
AXa3sgNI58R3vA7uWYyx0FfQyhfrL0/XSVJFTJpCilLyHMTXtZf0DpOH7oljizwO
PS6TUgkgkn0KFTHKrfY/z37PDciW/1/hnkhDqgibq7p7P7UjPI1M7YQUKcldVgrm
BXbDyMP8PS5oBXKUQ5zQv77XXwKBgQDiDDDueiY+b3DXF39h422tp65K+0sc8i23
hwcuezLLK9D59enFPMu5vTGrrORrmv5P4F+AS8liLV1bvtthaxJ19P330YhrWLJn
MRA0/0e2fndMnVBdFGaCOIpG2kENjGQobhcaMB0pDmFi6bx6Ap2+jgXRR+kG8GTe
itvAiIFQ8wKBgQCQZs1EKt0y4MLybne2vHpRbdrc5jJj18EDV89qOlR3hv9i9Kyj
7NMW+UY6WMDfEHPSBbHxQKmaL11DmPD6/GaAcvgWBMGMYe2wzyRFBfFItgd3gvRU
mxmzVXP5O1LDioNZK+FxN1FozyvVMjiTk+SlgAnmhdjcMCtxp6FQIL5FTwKBgDSy
Pt35X90CQb4C3lFFoZXwFzOnrXUMCBhWxBfT5J10k30SFPNEHwIn1uJ8patoMI0S
c3EHOeVHShJPRflJ6r3Q5TvWfwT3Ym+oAm04bdFfXhRgQBHS5arJ34Jw8uVjqx25
vG0AdmvRzGYwsx2Gapu3pCeLqglSFVHD8ULLD8p9AoGAHXZTwv4/m1Kn6ZbkXMnm
ZCNOi8yeFV79oboYaeKz9lFrWi1qmrLTmg5G2AJpB9jvTr3nAMotR6IkjIf1A879
/CTX3MrtuZA7GZF4NI0woc5ras5LHj6knUl6fThGlFS2J8ogaZbGgkENff9CN34H
bCvQ4za4Dm+chhZ3zekcTKs=
-----END PRIVATE KEY-----
";

    fn claims(account: &str, exp: u64) -> serde_json::Value {
        serde_json::json!({
            "sub": "alice@example.com",
            "userId": ALICE,
            "account": account,
            "iat": now(),
            "exp": exp,
        })
    }

    fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
    }

    fn hs256(secret: &str, claims: &serde_json::Value) -> String {
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(secret.as_bytes()),
            claims,
        )
    }

    fn es256(claims: &serde_json::Value) -> String {
        let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        sign(Algorithm::ES256, &key, claims)
    }

    fn public(pem: &str) -> Identity {
        Identity {
            hs256_secret: Some(SECRET.to_owned()),
            public_key_pem: Some(pem.to_owned()),
        }
    }

    async fn run_with(identity: &Identity, set: &[(&str, &str)]) -> Answer {
        let app = transformer(APP, ACCOUNT, demo(), identity)
            .unwrap()
            .unwrap();
        let changed: Vec<&str> = set.iter().map(|(k, _)| *k).collect();
        call(app.as_ref(), APP, set, &changed).await.unwrap()
    }

    fn store_user(a: &Answer) -> Option<(&str, &str)> {
        Some((
            written(a, "authentication.storeUserId")?,
            written(a, "authentication.storeUserEmail")?,
        ))
    }

    fn store_cleared(a: &Answer) -> bool {
        removed(a, "authentication.storeUserId") && removed(a, "authentication.storeUserEmail")
    }

    #[tokio::test]
    async fn a_valid_store_token_logs_the_customer_in() {
        let token = store_token("alice@example.com", ALICE);
        let a = run(APP, &[(STORE, &token)], &[STORE]).await.unwrap();
        assert_eq!(store_user(&a), Some((ALICE, "alice@example.com")));
        assert!(removed(&a, "authentication.adminUserId"));
        assert!(removed(&a, "authentication.adminUserEmail"));
        // The cookie suffix is the account name, in any case.
        let a = run(APP, &[("cookie.VtexIdclientAutCookie_DEMO", &token)], &[])
            .await
            .unwrap();
        assert_eq!(store_user(&a), Some((ALICE, "alice@example.com")));
    }

    #[tokio::test]
    async fn a_valid_admin_token_logs_the_admin_in() {
        let id = "a0a80101-0000-4000-8000-000000000001";
        let token =
            mint_admin_token(&identity(), "DEMO", "admin@example.com", id, now(), 60).unwrap();
        let a = run(APP, &[(ADMIN, &token)], &[ADMIN]).await.unwrap();
        assert_eq!(written(&a, "authentication.adminUserId"), Some(id));
        assert_eq!(
            written(&a, "authentication.adminUserEmail"),
            Some("admin@example.com")
        );
        assert!(store_cleared(&a));
    }

    #[tokio::test]
    async fn expired_tokens_are_refused_without_leeway() {
        let token = mint_identity_token(
            &identity(),
            ACCOUNT,
            "alice@example.com",
            ALICE,
            now() - 3600,
            30,
        )
        .unwrap();
        assert!(store_cleared(
            &run(APP, &[(STORE, &token)], &[]).await.unwrap()
        ));
        // Expired a few seconds ago: still refused (the library's default leeway is 60 s).
        let token = hs256(SECRET, &claims(ACCOUNT, now() - 5));
        assert!(store_cleared(
            &run(APP, &[(STORE, &token)], &[]).await.unwrap()
        ));
    }

    #[tokio::test]
    async fn tokens_of_another_account_are_refused() {
        let token = hs256(SECRET, &claims("other", now() + 60));
        assert!(store_cleared(
            &run(APP, &[(STORE, &token)], &[]).await.unwrap()
        ));
        let a = run(APP, &[(ADMIN, &token)], &[]).await.unwrap();
        assert!(removed(&a, "authentication.adminUserId"));
    }

    #[tokio::test]
    async fn bad_signatures_and_garbage_are_refused() {
        let token = hs256("not-the-secret", &claims(ACCOUNT, now() + 60));
        assert!(store_cleared(
            &run(APP, &[(STORE, &token)], &[]).await.unwrap()
        ));
        let good = store_token("alice@example.com", ALICE);
        let tampered = format!("{}x", &good[..good.len() - 1]);
        let tampered = if tampered == good {
            format!("{good}x")
        } else {
            tampered
        };
        for token in [tampered.as_str(), "abc", "a.b.c", "..", ""] {
            let a = run(APP, &[(STORE, token)], &[]).await.unwrap();
            assert!(store_cleared(&a), "{token:?}");
        }
    }

    #[tokio::test]
    async fn tokens_missing_a_claim_are_refused() {
        let mut no_exp = claims(ACCOUNT, 0);
        no_exp.as_object_mut().unwrap().remove("exp");
        let mut no_user = claims(ACCOUNT, now() + 60);
        no_user.as_object_mut().unwrap().remove("userId");
        for c in [no_exp, no_user] {
            let token = hs256(SECRET, &c);
            assert!(store_cleared(
                &run(APP, &[(STORE, &token)], &[]).await.unwrap()
            ));
        }
    }

    #[tokio::test]
    async fn cookies_for_another_account_suffix_are_ignored() {
        let token = store_token("alice@example.com", ALICE);
        let a = run(APP, &[("cookie.VtexIdclientAutCookie_other", &token)], &[])
            .await
            .unwrap();
        assert!(store_cleared(&a));
    }

    #[tokio::test]
    async fn removed_cookies_clear_everything() {
        let a = run(APP, &[], &[STORE, ADMIN]).await.unwrap();
        assert_eq!(a.len(), 4);
        assert!(a.values().all(Option::is_none));
    }

    #[tokio::test]
    async fn without_identity_keys_nobody_is_logged_in() {
        let token = store_token("alice@example.com", ALICE);
        let a = run_with(&Identity::default(), &[(STORE, &token), (ADMIN, &token)]).await;
        assert!(a.values().all(Option::is_none));
        assert_eq!(a.len(), 4);
    }

    #[tokio::test]
    async fn a_public_key_accepts_its_algorithm_only() {
        let es = es256(&claims(ACCOUNT, now() + 60));
        let a = run_with(&public(EC_PUBLIC), &[(STORE, &es)]).await;
        assert_eq!(store_user(&a), Some((ALICE, "alice@example.com")));
        // Expired or other-account ES256 tokens are refused too.
        let expired = es256(&claims(ACCOUNT, now() - 5));
        assert!(store_cleared(
            &run_with(&public(EC_PUBLIC), &[(STORE, &expired)]).await
        ));
        // HS256 is never accepted with a public key: neither with the secret, nor with the
        // public key itself used as an HMAC secret (algorithm confusion).
        let hs = hs256(SECRET, &claims(ACCOUNT, now() + 60));
        let confused = hs256(EC_PUBLIC, &claims(ACCOUNT, now() + 60));
        for token in [hs, confused] {
            assert!(store_cleared(
                &run_with(&public(EC_PUBLIC), &[(STORE, &token)]).await
            ));
        }
        // Nor an unsigned token.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(claims(ACCOUNT, now() + 60).to_string())
        );
        assert!(store_cleared(
            &run_with(&public(EC_PUBLIC), &[(STORE, &none)]).await
        ));
        // An ES256 token is refused by an HS256-only account.
        assert!(store_cleared(&run_with(&identity(), &[(STORE, &es)]).await));
    }

    #[tokio::test]
    async fn an_rsa_public_key_accepts_rs256() {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let rs = sign(Algorithm::RS256, &key, &claims(ACCOUNT, now() + 60));
        let a = run_with(&public(RSA_PUBLIC), &[(STORE, &rs)]).await;
        assert_eq!(store_user(&a), Some((ALICE, "alice@example.com")));
        let es = es256(&claims(ACCOUNT, now() + 60));
        assert!(store_cleared(
            &run_with(&public(RSA_PUBLIC), &[(STORE, &es)]).await
        ));
    }

    #[test]
    fn unusable_identity_keys_are_configuration_errors() {
        let build = |identity: &Identity| transformer(APP, ACCOUNT, demo(), identity).map(|_| ());
        let err = build(&public("not a pem")).unwrap_err();
        assert!(
            err.contains("demo") && err.contains("public_key_pem"),
            "{err}"
        );
        let err = build(&public(EC_PRIVATE)).unwrap_err();
        assert!(err.contains("private key"), "{err}");
        let empty = Identity {
            hs256_secret: Some(String::new()),
            public_key_pem: None,
        };
        assert!(build(&empty).unwrap_err().contains("empty"));
        assert!(build(&public(EC_PUBLIC)).is_ok());
        assert!(build(&public(RSA_PUBLIC)).is_ok());
        // Only the authentication app reads the identity keys.
        assert!(transformer("vtex.profile-session", ACCOUNT, demo(), &public("x")).is_ok());
    }

    #[test]
    fn minting_needs_a_secret_and_sets_every_claim() {
        let err = mint_identity_token(&Identity::default(), ACCOUNT, "a@b.c", "u", 0, 1);
        assert!(err.unwrap_err().contains("hs256_secret"));
        let token = mint_identity_token(&identity(), ACCOUNT, "a@b.c", "u", 1000, 60).unwrap();
        let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode(&token)
            .unwrap()
            .claims;
        assert_eq!(
            claims,
            serde_json::json!({"sub": "a@b.c", "userId": "u", "account": "demo", "aud": "store", "iat": 1000, "exp": 1060})
        );
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
    }

    #[tokio::test]
    async fn store_and_admin_tokens_only_work_in_their_own_cookie() {
        let store =
            mint_identity_token(&identity(), ACCOUNT, "alice@example.com", ALICE, now(), 60)
                .unwrap();
        let admin =
            mint_admin_token(&identity(), ACCOUNT, "admin@example.com", "a1", now(), 60).unwrap();
        let swapped = run_with(
            &identity(),
            &[
                ("cookie.VtexIdclientAutCookie", store.as_str()),
                ("cookie.VtexIdclientAutCookie_demo", admin.as_str()),
            ],
        )
        .await;
        for key in [
            "adminUserId",
            "adminUserEmail",
            "storeUserId",
            "storeUserEmail",
        ] {
            assert!(removed(&swapped, &format!("authentication.{key}")), "{key}");
        }
    }

    #[test]
    fn a_token_is_verified_once_and_remembered_until_it_expires() {
        let app = Authentication::new(&identity()).unwrap();
        let t0 = now();
        let token =
            mint_identity_token(&identity(), ACCOUNT, "alice@example.com", ALICE, t0, 60).unwrap();
        assert_eq!(
            app.verify(&token, ACCOUNT, false),
            Some((ALICE.to_owned(), "alice@example.com".to_owned()))
        );
        assert_eq!(app.verified.lock().unwrap().len(), 1);
        // Remembered: the same answer, and the same rules (kind, account) still apply.
        assert!(app.verify(&token, ACCOUNT, false).is_some());
        assert!(
            app.verify(&token, ACCOUNT, true).is_none(),
            "not an admin token"
        );
        assert!(app.verify(&token, "other", false).is_none());
        // A remembered entry counts only before its exp; after, the token is checked again
        // (here: it is no JWT at all, so it is refused).
        let remember = |exp| {
            app.verified.lock().unwrap().insert(
                Sha256::digest(b"not-a-jwt").into(),
                Verified {
                    user_id: "u".into(),
                    email: "e".into(),
                    account: ACCOUNT.into(),
                    admin: false,
                    exp,
                },
            )
        };
        remember(t0 + 100);
        assert!(app.verified("not-a-jwt", t0).is_some());
        remember(t0);
        assert!(app.verified("not-a-jwt", t0).is_none());
        app.verified.lock().unwrap().clear();
        assert!(app.verify(&token, ACCOUNT, false).is_some());
        // A forged token is never remembered.
        let mut forged = token.clone();
        forged.pop();
        assert!(app.verify(&forged, ACCOUNT, false).is_none());
        assert_eq!(app.verified.lock().unwrap().len(), 1);
        // The memory is bounded: full, it starts over.
        {
            let mut memory = app.verified.lock().unwrap();
            memory.clear();
            for i in 0..REMEMBERED_TOKENS as u32 {
                let mut digest = [0u8; 32];
                digest[..4].copy_from_slice(&i.to_be_bytes());
                memory.insert(
                    digest,
                    Verified {
                        user_id: String::new(),
                        email: String::new(),
                        account: String::new(),
                        admin: false,
                        exp: 0,
                    },
                );
            }
        }
        assert!(app.verify(&token, ACCOUNT, false).is_some());
        assert_eq!(app.verified.lock().unwrap().len(), 1);
    }
}
