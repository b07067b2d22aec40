//! The six built-in session apps: their declarations (the VTEX documentation tables) and their
//! in-process transformers, which read the account's [`CommerceData`] and identity [`Verifier`].
//!
//! This module owns the declarations ([`NAMES`], [`spec`]), the factory ([`transformer`]) and
//! the helpers the apps share: reading an input as text (missing or `""` is absent), writing or
//! clearing outputs (cleared = removed, never `""`), comma-joined lists and postal-code ranges.
//! Each app's rules live in its own module:
//! - `store`: `vtex.store-session` (sales channel, currency, culture);
//! - `auth`: `vtex.authentication-session` (identity tokens);
//! - `profile`: `vtex.profile-session` (the customer record);
//! - `rnb`: `vtex.rnb-session` (campaign audiences);
//! - `checkout`: `vtex.checkout-session` (region of the sellers that deliver, cart id);
//! - `impersonate`: `vtex.impersonate-session` (an admin acting as a customer).

use std::cmp::Ordering;
use std::sync::Arc;

use sessiond_core::cycle::BoxFuture;
use sessiond_core::segment::normalize_list;
use sessiond_core::{AppError, AppSpec, Call, Changes, Key, Transformer, Value};

use crate::commerce::CommerceData;
use crate::identity::Verifier;

mod auth;
mod checkout;
mod impersonate;
mod profile;
mod rnb;
mod store;
#[cfg(test)]
mod testing;

/// The name of the built-in app that reads identity tokens.
pub const AUTHENTICATION: &str = "vtex.authentication-session";

/// The names of the built-in apps, in their default installation order.
pub const NAMES: [&str; 6] = [
    "vtex.store-session",
    "vtex.authentication-session",
    "vtex.profile-session",
    "vtex.rnb-session",
    "vtex.checkout-session",
    "vtex.impersonate-session",
];

/// The declaration of the built-in app `name`, or `None` when no built-in has that name.
pub fn spec(name: &str) -> Option<AppSpec> {
    let body = match name {
        "vtex.store-session" => serde_json::json!({
            "runOnCreate": true,
            "input": {"public": ["cultureInfo", "sc", "locale"], "profile": ["email", "isAuthenticated", "priceTables"]},
            "output": {"store": ["channel", "countryCode", "cultureInfo", "currencyCode", "currencySymbol", "channelPrivacy"]}
        }),
        "vtex.authentication-session" => serde_json::json!({
            "input": {"cookie": ["VtexIdclientAutCookie", "VtexIdclientAutCookie_.*"]},
            "output": {"authentication": ["adminUserId", "adminUserEmail", "storeUserId", "storeUserEmail"]}
        }),
        "vtex.profile-session" => serde_json::json!({
            "input": {"public": ["storeUserEmail"], "authentication": ["storeUserId"], "impersonate": ["storeUserId"]},
            "output": {"profile": ["id", "email", "firstName", "lastName", "phone", "document", "priceTables", "isAuthenticated"]}
        }),
        "vtex.rnb-session" => serde_json::json!({
            "input": {"profile": ["email", "priceTables"], "public": ["utm_source", "utm_campaign", "postalCode"]},
            "output": {"rnb": ["campaigns"]}
        }),
        // Beyond the table: the app reads its own `checkout.cartId`, so the id is drawn once and
        // then kept (costs one extra round, after which nothing changes).
        "vtex.checkout-session" => serde_json::json!({
            "input": {"public": ["regionId", "country", "postalCode", "geoCoordinates"], "checkout": ["cartId"]},
            "output": {"checkout": ["regionId", "cartId"]}
        }),
        "vtex.impersonate-session" => serde_json::json!({
            "input": {
                "public": ["vtex-impersonated-customer-email"],
                "cookie": ["vtex-impersonated-customer-email"],
                "authentication": ["adminUserEmail"]
            },
            "output": {"impersonate": ["storeUserId", "storeUserEmail", "canImpersonate", "account"]}
        }),
        _ => return None,
    };
    Some(AppSpec::from_declaration(name, &body).expect("built-in declarations are valid"))
}

/// The built-in transformer named `name`, reading `commerce` and verifying identity tokens
/// with `identity`, or `None` when no built-in has that name. The server installs what this
/// returns next to [`spec`]`(name)`.
pub fn transformer(
    name: &str,
    commerce: Arc<CommerceData>,
    identity: &Arc<Verifier>,
) -> Option<Arc<dyn Transformer>> {
    let app: Arc<dyn Transformer> = match name {
        "vtex.store-session" => Arc::new(Builtin(store::Store::new(commerce))),
        AUTHENTICATION => Arc::new(auth::Authentication::new(identity.clone())),
        "vtex.profile-session" => Arc::new(Builtin(profile::Profile::new(commerce))),
        "vtex.rnb-session" => Arc::new(Builtin(rnb::Rnb::new(commerce))),
        "vtex.checkout-session" => Arc::new(Builtin(checkout::Checkout::new(commerce))),
        "vtex.impersonate-session" => Arc::new(Builtin(impersonate::Impersonate::new(commerce))),
        _ => return None,
    };
    Some(app)
}

/// The synchronous rules of a built-in app (built-ins never wait on anything).
trait App: Send + Sync {
    /// The app's answer to one call.
    fn answer(&self, call: &Call<'_>) -> Result<Changes, AppError>;
}

/// Adapts an [`App`] to the asynchronous [`Transformer`] interface of the cycle.
struct Builtin<A>(A);

impl<A: App> Transformer for Builtin<A> {
    fn transform<'a>(&'a self, mut call: Call<'a>) -> BoxFuture<'a, Result<Changes, AppError>> {
        as_text_inputs(&mut call.input);
        Box::pin(futures::future::ready(self.0.answer(&call)))
    }
}

/// Built-in rules read text: numbers and booleans become their decimal/`true` text (`"sc": 2` is
/// channel "2") and surrounding white space is dropped, so a value's JSON type never silently
/// changes a rule's outcome.
fn as_text_inputs(input: &mut sessiond_core::Namespaces) {
    for (_, value) in input
        .iter_mut()
        .flat_map(|(_, keys)| std::sync::Arc::make_mut(keys).iter_mut())
    {
        let text = match &value.value {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::String(s) if s.trim().len() != s.len() => s.trim().to_owned(),
            _ => continue,
        };
        value.value = serde_json::Value::String(text);
    }
}

/// The input `namespace.key` as text, when it is set to a non-empty string.
fn text<'c>(call: &'c Call<'_>, namespace: &str, key: &str) -> Option<&'c str> {
    call.input
        .get(namespace)?
        .get(key)?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// The writes of one app into its output namespace.
struct Outputs {
    namespace: &'static str,
    changes: Changes,
}

impl Outputs {
    /// No writes yet, into `namespace`.
    fn new(namespace: &'static str) -> Self {
        Outputs {
            namespace,
            changes: Changes::new(),
        }
    }

    /// Writes `value` to `key`; `None` or `""` removes the key (a cleared output is absent).
    fn put(&mut self, key: &str, value: Option<&str>) {
        let key = Key::new(self.namespace, key);
        match value.filter(|v| !v.is_empty()) {
            Some(v) => self.changes.set(key, Value::new(v)),
            None => self.changes.remove(key),
        }
    }

    /// The answer.
    fn into_changes(self) -> Changes {
        self.changes
    }
}

/// Case-insensitive equality (emails, account names, country codes).
fn same_ci(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || a.to_lowercase() == b.to_lowercase()
}

/// The items of a comma-joined list: trimmed, empty items dropped.
fn list_items(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|p| !p.is_empty())
}

/// The session form of a multi-valued output: sorted, de-duplicated, comma-joined; `None` when
/// empty (so equal audiences give equal segment tokens).
fn joined_list<'s>(items: impl IntoIterator<Item = &'s str>) -> Option<String> {
    let items = items
        .into_iter()
        .map(|s| serde_json::Value::String(s.to_owned()))
        .collect();
    normalize_list(&serde_json::Value::Array(items))
}

/// A postal code as an integer in decimal text: its digits only, without leading zeros (so any
/// length compares correctly, see [`cmp_postal`]). `None` when it has no digits.
fn postal_number(code: &str) -> Option<String> {
    let digits: String = code.chars().filter(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return None;
    }
    let trimmed = digits.trim_start_matches('0');
    Some(if trimmed.is_empty() { "0" } else { trimmed }.to_owned())
}

/// Integer order of two [`postal_number`]s: the longer is larger, equal lengths compare as text.
fn cmp_postal(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Whether postal code `code` lies in one of the inclusive `ranges`. A code (or bound) without
/// digits matches nothing.
fn in_postal_ranges(code: &str, ranges: &[[String; 2]]) -> bool {
    let Some(code) = postal_number(code) else {
        return false;
    };
    ranges.iter().any(
        |[low, high]| match (postal_number(low), postal_number(high)) {
            (Some(low), Some(high)) => {
                cmp_postal(&low, &code) != Ordering::Greater
                    && cmp_postal(&code, &high) != Ordering::Greater
            }
            _ => false,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use sessiond_core::cycle::{self, Apps};
    use sessiond_core::Session;
    use std::time::Duration;

    #[test]
    fn every_builtin_has_a_declaration() {
        for name in NAMES {
            assert!(spec(name).is_some(), "{name}");
        }
        assert!(spec("vtex.nope").is_none());
        assert!(spec("vtex.store-session").unwrap().run_on_create);
        let auth = spec("vtex.authentication-session").unwrap();
        assert!(auth.watches(&Key::new("cookie", "VtexIdclientAutCookie_demo")));
        let checkout = spec("vtex.checkout-session").unwrap();
        assert!(checkout.watches(&Key::new("checkout", "cartId")));
    }

    #[test]
    fn every_builtin_has_a_transformer() {
        for name in NAMES {
            assert!(transformer(name, demo(), &verifier()).is_some(), "{name}");
        }
        assert!(transformer("vtex.nope", demo(), &verifier()).is_none());
    }

    #[test]
    fn postal_codes_compare_as_integers() {
        let ranges = [["01000000".to_owned(), "05999999".to_owned()]];
        assert!(in_postal_ranges("01000-000", &ranges));
        assert!(in_postal_ranges("05999999", &ranges));
        assert!(
            in_postal_ranges("1000000", &ranges),
            "leading zeros do not matter"
        );
        assert!(!in_postal_ranges("06000000", &ranges));
        assert!(!in_postal_ranges("999", &ranges));
        assert!(!in_postal_ranges(
            "123456789012345678901234567890123456789012",
            &ranges
        ));
        assert!(
            !in_postal_ranges("abc", &ranges),
            "no digits matches nothing"
        );
        assert!(!in_postal_ranges("", &ranges));
        let open = [["".to_owned(), "9".to_owned()]];
        assert!(
            !in_postal_ranges("1", &open),
            "a bound without digits matches nothing"
        );
    }

    #[test]
    fn lists_are_sorted_and_empty_is_none() {
        assert_eq!(
            joined_list(["vip", "gold", "vip"]).as_deref(),
            Some("gold,vip")
        );
        assert_eq!(joined_list([]), None);
        assert_eq!(list_items(" a, ,b,").collect::<Vec<_>>(), ["a", "b"]);
    }

    /// All six apps in one account, driven by the real cycle.
    fn demo_apps() -> Apps {
        Apps::new(
            NAMES
                .iter()
                .map(|name| {
                    let t = transformer(name, demo(), &verifier()).unwrap();
                    (spec(name).unwrap(), t, Duration::from_secs(2))
                })
                .collect(),
        )
    }

    async fn request(
        apps: &Apps,
        session: &mut Session,
        writes: &[(&str, Option<&str>)],
        created: bool,
    ) -> Result<(), cycle::Rejection> {
        let mut changes = Changes::new();
        for (key, value) in writes {
            let (ns, name) = key.split_once('.').unwrap();
            match value {
                Some(v) => changes.set(Key::new(ns, name), Value::new(*v)),
                None => changes.remove(Key::new(ns, name)),
            }
        }
        let delta = session.apply(&changes);
        cycle::run(apps, ACCOUNT, session, delta, created, 10)
            .await
            .map(|trace| assert!(!trace.loop_warning))
    }

    #[tokio::test]
    async fn the_six_apps_reach_a_fixed_point_together() {
        let apps = demo_apps();
        let mut s = Session::new(ACCOUNT, 0, 1_000_000);
        request(&apps, &mut s, &[], true).await.unwrap();
        assert_eq!(s.get_str("store", "channel"), Some("1"));
        assert_eq!(s.get_str("store", "channelPrivacy"), Some("public"));

        // Anonymous visitor asks for the VIP channel: 401.
        let err = request(&apps, &mut s, &[("public.sc", Some("3"))], false)
            .await
            .unwrap_err();
        assert_eq!((err.status, err.app.as_str()), (401, "vtex.store-session"));

        // Alice (price table vip) logs in and asks for it in the same request: granted, because
        // the store app runs again once her profile arrives.
        let mut s = Session::new(ACCOUNT, 0, 1_000_000);
        request(&apps, &mut s, &[], true).await.unwrap();
        let token = store_token("alice@example.com", ALICE);
        let cookie = "cookie.VtexIdclientAutCookie_demo";
        request(
            &apps,
            &mut s,
            &[(cookie, Some(&token)), ("public.sc", Some("3"))],
            false,
        )
        .await
        .unwrap();
        assert_eq!(s.get_str("authentication", "storeUserId"), Some(ALICE));
        assert_eq!(s.get_str("profile", "firstName"), Some("Alice"));
        assert_eq!(s.get_str("profile", "priceTables"), Some("gold,vip"));
        assert_eq!(s.get_str("store", "channel"), Some("3"));
        assert_eq!(s.get_str("store", "channelPrivacy"), Some("private"));
        assert_eq!(s.get_str("rnb", "campaigns"), Some("vip-club"));

        // She logs out: the VIP channel falls back to the default, her data is cleared.
        request(&apps, &mut s, &[(cookie, None)], false)
            .await
            .unwrap();
        assert_eq!(s.get("authentication", "storeUserId"), None);
        assert_eq!(s.get("profile", "email"), None);
        assert_eq!(s.get_str("profile", "isAuthenticated"), Some("false"));
        assert_eq!(s.get_str("store", "channel"), Some("1"));
        assert_eq!(s.get("rnb", "campaigns"), None);

        // A location gives a region and a cart id that later requests keep.
        request(
            &apps,
            &mut s,
            &[
                ("public.country", Some("BRA")),
                ("public.postalCode", Some("22000-000")),
            ],
            false,
        )
        .await
        .unwrap();
        let cart = s.get_str("checkout", "cartId").unwrap().to_owned();
        assert!(s.get_str("checkout", "regionId").is_some());
        request(
            &apps,
            &mut s,
            &[("public.postalCode", Some("01310-100"))],
            false,
        )
        .await
        .unwrap();
        assert_eq!(s.get_str("checkout", "cartId"), Some(cart.as_str()));
        assert_eq!(s.get_str("rnb", "campaigns"), Some("sp-neighbours"));
    }
}
