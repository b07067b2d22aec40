//! Test fixtures shared by the built-in apps' tests: the demo account's commerce data (as in
//! `config/demo.toml`), its identity keys, and a runner that calls one app the way the cycle does.

use std::collections::BTreeMap;
use std::sync::Arc;

use sessiond_core::cycle::inputs_of;
use sessiond_core::{AppError, Call, Delta, Key, Namespaces, SessionId, Transformer, Value};

use super::{spec, transformer};
use crate::commerce::{Admin, Campaign, CommerceData, Customer, DeliveryArea, SalesChannel};
use crate::identity::{mint, Identity, Mint, Verifier};

/// The demo account name.
pub const ACCOUNT: &str = "demo";
/// The demo identity secret.
pub const SECRET: &str = "demo-identity-secret";
/// Alice's customer id (price tables vip, gold).
pub const ALICE: &str = "c0a80101-0000-4000-8000-000000000001";
/// Bob's customer id (no price table, allowed on the VIP channel by email).
pub const BOB: &str = "c0a80101-0000-4000-8000-000000000002";
/// Carol's customer id (price table gold).
pub const CAROL: &str = "c0a80101-0000-4000-8000-000000000003";

/// The demo account's HS256 identity.
pub fn identity() -> Identity {
    Identity {
        hs256_secret: Some(SECRET.to_owned()),
        ..Identity::default()
    }
}

/// The verifier of [`identity`].
pub fn verifier() -> Arc<Verifier> {
    Arc::new(Verifier::new(&identity()).unwrap())
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A valid demo store-user token.
pub fn store_token(email: &str, user_id: &str) -> String {
    minted(email, user_id, false, now(), 3600)
}

/// A demo token (an admin's when `admin`) issued at `iat` for `ttl` seconds.
pub fn minted(email: &str, user_id: &str, admin: bool, iat: u64, ttl: u64) -> String {
    let what = Mint {
        account: ACCOUNT,
        email,
        user_id,
        admin,
        now_secs: iat,
        ttl_secs: ttl,
    };
    mint(&identity(), &what, None).unwrap()
}

fn channel(
    id: &str,
    name: &str,
    currency: (&str, &str),
    country: &str,
    culture: &str,
) -> SalesChannel {
    SalesChannel {
        id: id.into(),
        name: name.into(),
        currency_code: currency.0.into(),
        currency_symbol: currency.1.into(),
        country_code: country.into(),
        culture: culture.into(),
        ..SalesChannel::default()
    }
}

fn customer(
    id: &str,
    email: &str,
    names: (&str, &str),
    phone: &str,
    doc: &str,
    tables: &[&str],
) -> Customer {
    Customer {
        id: id.into(),
        email: email.into(),
        first_name: names.0.into(),
        last_name: names.1.into(),
        phone: phone.into(),
        document: doc.into(),
        price_tables: tables.iter().map(|t| t.to_string()).collect(),
    }
}

fn range(low: &str, high: &str) -> [String; 2] {
    [low.to_owned(), high.to_owned()]
}

/// The demo account's commerce data (`config/demo.toml`).
pub fn demo() -> Arc<CommerceData> {
    let main = SalesChannel {
        default: true,
        ..channel("1", "Main", ("BRL", "R$"), "BRA", "pt-BR")
    };
    let vip = SalesChannel {
        restricted: true,
        allowed_price_tables: vec!["vip".into()],
        allowed_emails: vec!["bob@example.com".into()],
        ..channel("3", "VIP", ("BRL", "R$"), "BRA", "pt-BR")
    };
    Arc::new(CommerceData {
        sales_channels: vec![
            main,
            channel("2", "International", ("USD", "US$"), "USA", "en-US"),
            vip,
        ],
        customers: vec![
            customer(
                ALICE,
                "alice@example.com",
                ("Alice", "Silva"),
                "+5511999990001",
                "12345678901",
                &["vip", "gold"],
            ),
            customer(
                BOB,
                "bob@example.com",
                ("Bob", "Souza"),
                "+5521999990002",
                "10987654321",
                &[],
            ),
            customer(
                CAROL,
                "carol@example.org",
                ("Carol", "Lima"),
                "+5531999990003",
                "11122233344",
                &["gold"],
            ),
        ],
        admins: vec![
            Admin {
                id: "a0a80101-0000-4000-8000-000000000001".into(),
                email: "admin@example.com".into(),
                can_impersonate: true,
            },
            Admin {
                id: "a0a80101-0000-4000-8000-000000000002".into(),
                email: "viewer@example.com".into(),
                can_impersonate: false,
            },
        ],
        delivery_areas: vec![
            DeliveryArea {
                seller: "lojasp".into(),
                country: "BRA".into(),
                postal_ranges: vec![range("01000000", "05999999")],
                ..DeliveryArea::default()
            },
            DeliveryArea {
                seller: "lojarj".into(),
                country: "BRA".into(),
                postal_ranges: vec![range("20000000", "23799999")],
                center: Some([-43.2096, -22.9035]),
                radius_km: Some(30.0),
            },
            DeliveryArea {
                seller: "lojabr".into(),
                country: "BRA".into(),
                postal_ranges: vec![range("01000000", "99999999")],
                ..DeliveryArea::default()
            },
        ],
        campaigns: vec![
            Campaign {
                id: "bf-google".into(),
                utm_source: vec!["google".into()],
                utm_campaign: vec!["black friday".into()],
                ..Campaign::default()
            },
            Campaign {
                id: "sp-neighbours".into(),
                postal_ranges: vec![range("01000000", "05999999")],
                ..Campaign::default()
            },
            Campaign {
                id: "vip-club".into(),
                price_tables: vec!["vip".into()],
                ..Campaign::default()
            },
        ],
    })
}

/// What an app answered: `"ns.key"` → `Some(text)` written, `None` removed; absent = untouched.
pub type Answer = BTreeMap<String, Option<String>>;

/// Calls `app` (a transformer of the built-in `name`) as the cycle would: `set` holds the session
/// values (`("ns.key", "text")`, only the declared inputs reach the app), `changed` the keys
/// changed so far in the cycle.
pub async fn call(
    app: &dyn Transformer,
    name: &str,
    set: &[(&str, &str)],
    changed: &[&str],
) -> Result<Answer, AppError> {
    let declaration = spec(name).unwrap();
    let split = |k: &str| {
        let (ns, key) = k.split_once('.').unwrap();
        Key::new(ns, key)
    };
    let mut session = Namespaces::new();
    for (k, v) in set {
        let key = split(k);
        std::sync::Arc::make_mut(session.entry(key.namespace).or_default())
            .insert(key.name, Value::new(*v));
    }
    let delta: Delta = changed.iter().map(|k| split(k)).collect();
    let changes = app
        .transform(Call {
            app: &declaration,
            account: ACCOUNT,
            session: SessionId::min(),
            input: inputs_of(&declaration, &session),
            changed: &delta,
        })
        .await?;
    Ok(changes
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                v.as_ref().and_then(|v| v.as_str().map(String::from)),
            )
        })
        .collect())
}

/// Calls the built-in `name` of the demo account (HS256 identity).
pub async fn run(name: &str, set: &[(&str, &str)], changed: &[&str]) -> Result<Answer, AppError> {
    let app = transformer(name, demo(), &verifier()).unwrap();
    call(app.as_ref(), name, set, changed).await
}

/// The text the answer wrote to `key`, if it wrote one.
pub fn written<'a>(answer: &'a Answer, key: &str) -> Option<&'a str> {
    answer.get(key)?.as_deref()
}

/// Whether the answer removed `key`.
pub fn removed(answer: &Answer, key: &str) -> bool {
    matches!(answer.get(key), Some(None))
}
