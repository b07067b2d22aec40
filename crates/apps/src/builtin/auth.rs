//! `vtex.authentication-session`: who is logged in, from the identity-token cookies.
//!
//! `cookie.VtexIdclientAutCookie` carries the admin's token, `cookie.VtexIdclientAutCookie_<account>`
//! the store user's. The account's [`Verifier`] says what each is worth (SPEC §6a): the admin
//! cookie logs in only tokens with the admin audience, the store cookie only tokens with the
//! store audience or none, so a shopper's token never makes them an admin, nor the reverse.
//! A token that logs nobody in clears the pair its cookie writes.
//!
//! When a token cannot be checked yet (its provider's keys are out of reach), the app answers
//! [`AppError::Undecided`]: the pair that cookie writes stays as it was and the cookie is not
//! recorded, so the next request sending it asks again and logs the user in once the keys
//! arrive; what the other cookie decides (a log-in, a log-out) is applied at once.

use std::sync::Arc;

use sessiond_core::cycle::BoxFuture;
use sessiond_core::{AppError, Call, Changes, Key, Transformer};

use super::{same_ci, text, Outputs};
use crate::identity::{Cookie, User, Verdict, Verifier};

/// The admin's identity cookie.
const ADMIN_COOKIE: &str = "VtexIdclientAutCookie";
/// The prefix of the store user's identity cookie (followed by the account name).
const STORE_COOKIE_PREFIX: &str = "VtexIdclientAutCookie_";

/// The authentication app of one account.
pub(super) struct Authentication {
    verifier: Arc<Verifier>,
}

impl Authentication {
    /// The app logging users in with the tokens `verifier` accepts.
    pub(super) fn new(verifier: Arc<Verifier>) -> Self {
        Authentication { verifier }
    }
}

/// What one identity cookie of a call decides.
enum Decision {
    /// This user (or nobody) is logged in by it.
    User(Option<User>),
    /// Its token cannot be checked yet (why), sent in these cookies.
    Pending(String, Vec<Key>),
}

impl Authentication {
    /// The admin cookie's decision. `may_wait`: the first token that needs a provider's keys
    /// may wait for them; the others of the same call do not (the call has one timeout).
    async fn admin(&self, call: &Call<'_>, may_wait: &mut bool) -> Decision {
        let Some(token) = text(call, "cookie", ADMIN_COOKIE) else {
            return Decision::User(None);
        };
        let verdict = self
            .verifier
            .verify(token, call.account, Cookie::Admin, *may_wait)
            .await;
        decision(verdict, vec![Key::new("cookie", ADMIN_COOKIE)], may_wait)
    }

    /// The store cookies' decision: the first token that logs someone in; else pending when
    /// one of them could not be checked yet; else nobody.
    async fn store(&self, call: &Call<'_>, may_wait: &mut bool) -> Decision {
        let Some(cookies) = call.input.get("cookie") else {
            return Decision::User(None);
        };
        let mut pending: Option<(String, Vec<Key>)> = None;
        for (name, value) in cookies.iter().filter(|(name, _)| {
            name.strip_prefix(STORE_COOKIE_PREFIX)
                .is_some_and(|suffix| same_ci(suffix, call.account))
        }) {
            let Some(token) = value.as_str() else {
                continue;
            };
            let verdict = self
                .verifier
                .verify(token, call.account, Cookie::Store, *may_wait)
                .await;
            match decision(verdict, vec![Key::new("cookie", name.as_str())], may_wait) {
                Decision::User(Some(user)) => return Decision::User(Some(user)),
                Decision::User(None) => {}
                Decision::Pending(why, keys) => {
                    let (_, all) = pending.get_or_insert_with(|| (why, Vec::new()));
                    all.extend(keys);
                }
            }
        }
        match pending {
            Some((why, keys)) => Decision::Pending(why, keys),
            None => Decision::User(None),
        }
    }
}

/// The decision of one token's `verdict`, sent in the cookies `keys`; an undecided one uses up
/// the call's wait.
fn decision(verdict: Verdict, keys: Vec<Key>, may_wait: &mut bool) -> Decision {
    match verdict {
        Verdict::User(user) => Decision::User(Some(user)),
        Verdict::Refused => Decision::User(None),
        Verdict::Undecided(why) => {
            *may_wait = false;
            Decision::Pending(why, keys)
        }
    }
}

impl Transformer for Authentication {
    fn transform<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Changes, AppError>> {
        Box::pin(async move {
            let mut may_wait = true;
            let admin = self.admin(&call, &mut may_wait).await;
            let store = self.store(&call, &mut may_wait).await;
            let mut out = Outputs::new("authentication");
            let mut pending = Vec::new();
            let mut why = None;
            for (decision, id, email) in [
                (admin, "adminUserId", "adminUserEmail"),
                (store, "storeUserId", "storeUserEmail"),
            ] {
                match decision {
                    Decision::User(user) => {
                        out.put(id, user.as_ref().map(|u| u.id.as_str()));
                        out.put(email, user.as_ref().map(|u| u.email.as_str()));
                    }
                    Decision::Pending(reason, keys) => {
                        why.get_or_insert(reason);
                        pending.extend(keys);
                    }
                }
            }
            match why {
                None => Ok(out.into_changes()),
                Some(why) => Err(AppError::Undecided {
                    why,
                    decided: out.into_changes(),
                    pending,
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::transformer;
    use super::*;
    use crate::identity::{mint, Identity, Mint, User};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

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

    const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEA/9Wa8wwyjCuP7YJpZfD6iOR1gACA78rci6LUa0bpvSc=
-----END PUBLIC KEY-----
";
    const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEILg+zEvbb3cO0rmWVhYo4OXTyjWDGUaXFUzXlLAVlyKY
-----END PRIVATE KEY-----
";

    /// VTEX ID's store-user claims for Alice, expiring at `exp`.
    fn claims(account: &str, exp: u64) -> serde_json::Value {
        serde_json::json!({
            "sub": "alice@example.com",
            "userId": ALICE,
            "account": account,
            "audience": "webstore",
            "sess": "b3c1",
            "type": "user",
            "iss": "token-emitter",
            "jti": "0f0e",
            "isRepresentative": false,
            "iat": now(),
            "exp": exp,
        })
    }

    /// Alice's claims with `edit` applied (`null` removes a claim).
    fn claims_with(edit: serde_json::Value) -> serde_json::Value {
        let mut c = claims(ACCOUNT, now() + 60);
        for (k, v) in edit.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
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
            public_key_pem: Some(pem.to_owned()),
            ..Identity::default()
        }
    }

    async fn run_with(identity: &Identity, set: &[(&str, &str)]) -> Answer {
        let verifier = Arc::new(Verifier::new(identity).unwrap());
        let app = transformer(APP, demo(), &verifier).unwrap();
        let changed: Vec<&str> = set.iter().map(|(k, _)| *k).collect();
        call(app.as_ref(), APP, set, &changed).await.unwrap()
    }

    fn store_user(a: &Answer) -> Option<(&str, &str)> {
        Some((
            written(a, "authentication.storeUserId")?,
            written(a, "authentication.storeUserEmail")?,
        ))
    }

    fn admin_user(a: &Answer) -> Option<(&str, &str)> {
        Some((
            written(a, "authentication.adminUserId")?,
            written(a, "authentication.adminUserEmail")?,
        ))
    }

    fn store_cleared(a: &Answer) -> bool {
        removed(a, "authentication.storeUserId") && removed(a, "authentication.storeUserEmail")
    }

    fn admin_cleared(a: &Answer) -> bool {
        removed(a, "authentication.adminUserId") && removed(a, "authentication.adminUserEmail")
    }

    /// Whether `token` logs Alice in through the store cookie of the demo account.
    async fn logs_in(identity: &Identity, token: &str) -> bool {
        let a = run_with(identity, &[(STORE, token)]).await;
        match store_user(&a) {
            Some(user) => user == (ALICE, "alice@example.com"),
            None => {
                assert!(store_cleared(&a));
                false
            }
        }
    }

    #[tokio::test]
    async fn a_valid_store_token_logs_the_customer_in() {
        let token = store_token("alice@example.com", ALICE);
        let a = run(APP, &[(STORE, &token)], &[STORE]).await.unwrap();
        assert_eq!(store_user(&a), Some((ALICE, "alice@example.com")));
        assert!(admin_cleared(&a));
        // The cookie suffix is the account name, in any case.
        let a = run(APP, &[("cookie.VtexIdclientAutCookie_DEMO", &token)], &[])
            .await
            .unwrap();
        assert_eq!(store_user(&a), Some((ALICE, "alice@example.com")));
    }

    #[tokio::test]
    async fn a_valid_admin_token_logs_the_admin_in() {
        let id = "a0a80101-0000-4000-8000-000000000001";
        let token = minted("admin@example.com", id, true, now(), 60);
        let a = run(APP, &[(ADMIN, &token)], &[ADMIN]).await.unwrap();
        assert_eq!(admin_user(&a), Some((id, "admin@example.com")));
        assert!(store_cleared(&a));
    }

    #[tokio::test]
    async fn vtex_id_audiences_pick_the_cookie() {
        let identity = identity();
        let admin = hs256(
            SECRET,
            &claims_with(serde_json::json!({"audience": "admin"})),
        );
        let store = hs256(SECRET, &claims(ACCOUNT, now() + 60));
        let a = run_with(&identity, &[(ADMIN, &admin), (STORE, &store)]).await;
        assert_eq!(admin_user(&a), Some((ALICE, "alice@example.com")));
        assert_eq!(store_user(&a), Some((ALICE, "alice@example.com")));
        // Swapped, neither logs anyone in: a store token never makes an admin.
        let a = run_with(&identity, &[(ADMIN, &store), (STORE, &admin)]).await;
        assert!(admin_cleared(&a) && store_cleared(&a));
    }

    #[tokio::test]
    async fn audiences_come_from_aud_as_text_or_list_or_from_audience() {
        let admin_in = |edit| async move {
            let token = hs256(SECRET, &claims_with(edit));
            admin_user(&run_with(&identity(), &[(ADMIN, &token)]).await).is_some()
        };
        assert!(admin_in(serde_json::json!({"audience": null, "aud": "admin"})).await);
        assert!(admin_in(serde_json::json!({"audience": null, "aud": ["web", "admin"]})).await);
        assert!(!admin_in(serde_json::json!({"audience": null, "aud": ["webstore"]})).await);
        assert!(!admin_in(serde_json::json!({"audience": null})).await);
        for (edit, store) in [
            (serde_json::json!({"audience": null}), true),
            (
                serde_json::json!({"audience": null, "aud": "webstore"}),
                true,
            ),
            (
                serde_json::json!({"audience": null, "aud": ["x", "webstore"]}),
                true,
            ),
            // A third audience is no log-in in either cookie.
            (serde_json::json!({"audience": "partner"}), false),
            (
                serde_json::json!({"audience": null, "aud": ["partner"]}),
                false,
            ),
            (serde_json::json!({"audience": null, "aud": 7}), false),
        ] {
            let token = hs256(SECRET, &claims_with(edit.clone()));
            assert_eq!(logs_in(&identity(), &token).await, store, "{edit}");
            assert!(
                admin_cleared(&run_with(&identity(), &[(ADMIN, &token)]).await),
                "{edit}"
            );
        }
    }

    #[tokio::test]
    async fn configured_claims_and_audiences_are_read() {
        let oidc = Identity {
            hs256_secret: Some(SECRET.into()),
            email_claim: Some("email".into()),
            user_id_claim: Some("sub".into()),
            admin_audience: Some("backoffice".into()),
            store_audience: Some("shop-client".into()),
            issuer: Some("https://idp.example.com/".into()),
            ..Identity::default()
        };
        let token = |edit| {
            let mut c = serde_json::json!({
                "sub": ALICE,
                "email": "alice@example.com",
                "aud": ["shop-client"],
                "iss": "https://idp.example.com/",
                "exp": now() + 60,
            });
            for (k, v) in serde_json::Value::as_object(&edit).unwrap() {
                c[k] = v.clone();
            }
            hs256(SECRET, &c)
        };
        // No account claim: OIDC providers send none.
        assert!(logs_in(&oidc, &token(serde_json::json!({}))).await);
        assert!(!logs_in(&oidc, &token(serde_json::json!({"iss": "https://evil/"}))).await);
        assert!(!logs_in(&oidc, &token(serde_json::json!({"aud": "webstore"}))).await);
        assert!(!logs_in(&oidc, &token(serde_json::json!({"account": "other"}))).await);
        assert!(logs_in(&oidc, &token(serde_json::json!({"account": "DEMO"}))).await);
        let admin = token(serde_json::json!({"aud": "backoffice"}));
        let a = run_with(&oidc, &[(ADMIN, &admin)]).await;
        assert_eq!(admin_user(&a), Some((ALICE, "alice@example.com")));
        // Without `iss` while an issuer is configured: refused.
        let mut c =
            serde_json::json!({"sub": ALICE, "email": "alice@example.com", "exp": now() + 60});
        assert!(!logs_in(&oidc, &hs256(SECRET, &c)).await);
        c["iss"] = "https://idp.example.com/".into();
        assert!(logs_in(&oidc, &hs256(SECRET, &c)).await);
    }

    #[tokio::test]
    async fn exp_is_checked_without_leeway_and_nbf_with_a_minute() {
        let identity = identity();
        assert!(
            !logs_in(
                &identity,
                &minted("alice@example.com", ALICE, false, now() - 3600, 30)
            )
            .await
        );
        // Expired a few seconds ago: refused.
        assert!(!logs_in(&identity, &hs256(SECRET, &claims(ACCOUNT, now() - 5))).await);
        let nbf = |offset: i64| {
            hs256(
                SECRET,
                &claims_with(serde_json::json!({"nbf": now() as i64 + offset})),
            )
        };
        assert!(
            !logs_in(&identity, &nbf(600)).await,
            "valid only in ten minutes"
        );
        assert!(logs_in(&identity, &nbf(30)).await, "a clock a little ahead");
        assert!(logs_in(&identity, &nbf(-30)).await);
        // An nbf that is not a number says nothing of when the token is valid: refused.
        let odd = hs256(SECRET, &claims_with(serde_json::json!({"nbf": "soon"})));
        assert!(!logs_in(&identity, &odd).await);
    }

    #[tokio::test]
    async fn tokens_of_another_account_are_refused() {
        let token = hs256(SECRET, &claims("other", now() + 60));
        assert!(!logs_in(&identity(), &token).await);
        let admin = hs256(
            SECRET,
            &claims_with(serde_json::json!({"account": "other", "audience": "admin"})),
        );
        assert!(admin_cleared(
            &run(APP, &[(ADMIN, &admin)], &[]).await.unwrap()
        ));
    }

    #[tokio::test]
    async fn bad_signatures_and_garbage_are_refused() {
        let token = hs256("not-the-secret", &claims(ACCOUNT, now() + 60));
        assert!(!logs_in(&identity(), &token).await);
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
        for missing in ["exp", "userId", "sub"] {
            let token = hs256(SECRET, &claims_with(serde_json::json!({ missing: null })));
            assert!(!logs_in(&identity(), &token).await, "{missing}");
        }
        let empty = hs256(SECRET, &claims_with(serde_json::json!({"userId": " "})));
        assert!(!logs_in(&identity(), &empty).await);
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
        let ec = public(EC_PUBLIC);
        assert!(logs_in(&ec, &es256(&claims(ACCOUNT, now() + 60))).await);
        assert!(!logs_in(&ec, &es256(&claims(ACCOUNT, now() - 5))).await);
        // HS256 is never accepted with a public key: neither with some secret, nor with the
        // public key itself used as an HMAC secret (algorithm confusion).
        assert!(!logs_in(&ec, &hs256(SECRET, &claims(ACCOUNT, now() + 60))).await);
        assert!(!logs_in(&ec, &hs256(EC_PUBLIC, &claims(ACCOUNT, now() + 60))).await);
        // Nor an unsigned token, whatever its header says.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"ES256","typ":"JWT"}"#,
        ] {
            let unsigned = format!(
                "{}.{}.",
                b64.encode(header),
                b64.encode(claims(ACCOUNT, now() + 60).to_string())
            );
            assert!(!logs_in(&ec, &unsigned).await, "{header}");
        }
        // An ES256 token is refused by an HS256-only account.
        assert!(!logs_in(&identity(), &es256(&claims(ACCOUNT, now() + 60))).await);
    }

    #[tokio::test]
    async fn rsa_and_ed25519_public_keys_take_rs256_and_eddsa() {
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
        let ed = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
        let rs256 = sign(Algorithm::RS256, &rsa, &claims(ACCOUNT, now() + 60));
        let ps256 = sign(Algorithm::PS256, &rsa, &claims(ACCOUNT, now() + 60));
        let eddsa = sign(Algorithm::EdDSA, &ed, &claims(ACCOUNT, now() + 60));
        let es = es256(&claims(ACCOUNT, now() + 60));
        assert!(logs_in(&public(RSA_PUBLIC), &rs256).await);
        assert!(!logs_in(&public(RSA_PUBLIC), &ps256).await, "RS256 only");
        assert!(!logs_in(&public(RSA_PUBLIC), &es).await);
        assert!(logs_in(&public(ED_PUBLIC), &eddsa).await);
        assert!(!logs_in(&public(ED_PUBLIC), &es).await);
        assert!(!logs_in(&public(EC_PUBLIC), &eddsa).await);
    }

    #[test]
    fn unusable_identity_tables_are_configuration_errors() {
        let err = |identity: &Identity| Verifier::new(identity).unwrap_err();
        assert!(err(&public("not a pem")).contains("public_key_pem"));
        assert!(err(&public(EC_PRIVATE)).contains("private key"));
        let two = Identity {
            hs256_secret: Some(SECRET.into()),
            public_key_pem: Some(EC_PUBLIC.into()),
            ..Identity::default()
        };
        assert!(err(&two).contains("exactly one"), "{}", err(&two));
        let none = Identity {
            issuer: Some("https://idp/".into()),
            ..Identity::default()
        };
        assert!(err(&none).contains("needs one of"));
        let empty = Identity {
            hs256_secret: Some(String::new()),
            ..Identity::default()
        };
        assert!(err(&empty).contains("empty"));
        for url in ["not a url", "ftp://idp/jwks.json", "file:///etc/jwks.json"] {
            let jwks = Identity {
                jwks_url: Some(url.into()),
                ..Identity::default()
            };
            assert!(err(&jwks).contains("jwks_url"), "{url}");
        }
        let same = Identity {
            hs256_secret: Some(SECRET.into()),
            store_audience: Some("admin".into()),
            ..Identity::default()
        };
        assert!(err(&same).contains("admin_audience"));
        let reserved = Identity {
            hs256_secret: Some(SECRET.into()),
            email_claim: Some("exp".into()),
            ..Identity::default()
        };
        assert!(err(&reserved).contains("email_claim"));
        for pem in [EC_PUBLIC, RSA_PUBLIC, ED_PUBLIC] {
            assert!(Verifier::new(&public(pem)).is_ok());
        }
        let jwks = Identity {
            jwks_url: Some("https://idp.example.com/.well-known/jwks.json".into()),
            ..Identity::default()
        };
        assert!(Verifier::new(&jwks).is_ok());
    }

    #[test]
    fn minting_signs_vtex_id_claims() {
        let what = Mint {
            account: ACCOUNT,
            email: "a@b.c",
            user_id: "u",
            admin: false,
            now_secs: 1000,
            ttl_secs: 60,
        };
        let err = mint(&Identity::default(), &what, None).unwrap_err();
        assert!(err.contains("no identity keys"), "{err}");
        let token = mint(&identity(), &what, None).unwrap();
        let mut claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode(&token)
            .unwrap()
            .claims;
        for random in ["sess", "jti"] {
            assert_eq!(claims[random].as_str().unwrap().len(), 36, "{random}");
            claims.as_object_mut().unwrap().remove(random);
        }
        assert_eq!(
            claims,
            serde_json::json!({"sub": "a@b.c", "userId": "u", "account": "demo",
                "audience": "webstore", "type": "user", "iss": "token-emitter",
                "isRepresentative": false, "iat": 1000, "exp": 1060})
        );
        assert_eq!(
            jsonwebtoken::decode_header(&token).unwrap().alg,
            Algorithm::HS256
        );
        let admin = mint(
            &identity(),
            &Mint {
                admin: true,
                ..what
            },
            None,
        )
        .unwrap();
        let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode(&admin)
            .unwrap()
            .claims;
        assert_eq!(claims["audience"], "admin");
    }

    #[tokio::test]
    async fn minting_with_a_public_key_takes_its_private_half() {
        let what = Mint {
            account: ACCOUNT,
            email: "alice@example.com",
            user_id: ALICE,
            admin: false,
            now_secs: now(),
            ttl_secs: 60,
        };
        for (public_pem, private_pem, alg) in [
            (EC_PUBLIC, EC_PRIVATE, Algorithm::ES256),
            (RSA_PUBLIC, RSA_PRIVATE, Algorithm::RS256),
            (ED_PUBLIC, ED_PRIVATE, Algorithm::EdDSA),
        ] {
            let identity = public(public_pem);
            assert!(mint(&identity, &what, None)
                .unwrap_err()
                .contains("--signing-key"));
            let token = mint(&identity, &what, Some(private_pem)).unwrap();
            assert_eq!(jsonwebtoken::decode_header(&token).unwrap().alg, alg);
            assert!(logs_in(&identity, &token).await);
        }
        // A private key of the right kind but another pair: refused.
        let other = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgGD3wIdm1uBcyXoo1
0H0Rk+ZynoOn+vlNhmoQZrDBCSyhRANCAAQ8wsLTiYIBpCsVrpjXQato/cH2MPhK
h6ecta86E125Ql9WzO54DiOOPYU1QwAyR548Ca+NS1r3Bgfjl1poClDk
-----END PRIVATE KEY-----
";
        let err = mint(&public(EC_PUBLIC), &what, Some(other)).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        let err = mint(&public(EC_PUBLIC), &what, Some(RSA_PRIVATE)).unwrap_err();
        assert!(err.contains("P-256"), "{err}");
    }

    #[tokio::test]
    async fn a_token_is_verified_once_and_remembered_until_it_expires() {
        let verifier = Verifier::new(&identity()).unwrap();
        let t0 = now();
        let token = minted("alice@example.com", ALICE, false, t0, 60);
        let alice = || {
            Verdict::User(User {
                id: ALICE.to_owned(),
                email: "alice@example.com".to_owned(),
            })
        };
        assert_eq!(
            verifier.verify(&token, ACCOUNT, Cookie::Store, true).await,
            alice()
        );
        assert_eq!(verifier.remembered_len(), 1);
        // Remembered: the same answer, and the same rules (cookie, account) still apply.
        assert_eq!(
            verifier.verify(&token, ACCOUNT, Cookie::Store, true).await,
            alice()
        );
        assert_eq!(
            verifier.verify(&token, ACCOUNT, Cookie::Admin, true).await,
            Verdict::Refused
        );
        assert_eq!(
            verifier.verify(&token, "other", Cookie::Store, true).await,
            Verdict::Refused
        );
        assert_eq!(verifier.remembered_len(), 1);
        // A forged token is never remembered.
        let mut forged = token.clone();
        forged.pop();
        assert_eq!(
            verifier.verify(&forged, ACCOUNT, Cookie::Store, true).await,
            Verdict::Refused
        );
        assert_eq!(verifier.remembered_len(), 1);
    }
}
