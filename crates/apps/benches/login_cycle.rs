//! One log-in cycle with the six built-in apps: the identity cookie arrives →
//! authentication → profile → store and rnb (and impersonate) → the segment token.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sessiond_apps::builtin;
use sessiond_apps::commerce::CommerceData;
use sessiond_apps::identity::{mint, Identity, Mint, Verifier};
use sessiond_core::cycle::{self, Apps};
use sessiond_core::{Changes, Key, Segment, Session, Value};

const ACCOUNT: &str = "demo";

fn commerce() -> CommerceData {
    serde_json::from_value(serde_json::json!({
        "sales_channels": [
            {"id": "1", "name": "Main", "currency_code": "BRL", "currency_symbol": "R$",
             "country_code": "BRA", "culture": "pt-BR", "default": true},
            {"id": "3", "name": "VIP", "currency_code": "BRL", "currency_symbol": "R$",
             "country_code": "BRA", "culture": "pt-BR", "restricted": true,
             "allowed_price_tables": ["vip"]}
        ],
        "customers": [
            {"id": "c0a80101-0000-4000-8000-000000000001", "email": "alice@example.com",
             "first_name": "Alice", "last_name": "Silva", "phone": "+5511999990001",
             "document": "12345678901", "price_tables": ["vip", "gold"]}
        ],
        "admins": [{"id": "a1", "email": "admin@example.com", "can_impersonate": true}],
        "delivery_areas": [
            {"seller": "lojasp", "country": "BRA", "postal_ranges": [["01000000", "05999999"]]}
        ],
        "campaigns": [
            {"id": "bf-google", "utm_source": ["google"], "utm_campaign": ["black friday"]},
            {"id": "vip-club", "price_tables": ["vip"]}
        ]
    }))
    .expect("valid commerce data")
}

fn bench_login(c: &mut Criterion) {
    let identity = Identity {
        hs256_secret: Some("demo-identity-secret".into()),
        ..Identity::default()
    };
    let verifier = Arc::new(Verifier::new(&identity).expect("a usable identity"));
    let commerce = Arc::new(commerce());
    let apps = Apps::new(
        builtin::NAMES
            .iter()
            .map(|name| {
                let spec = builtin::spec(name).expect("a built-in");
                let t = builtin::transformer(name, commerce.clone(), &verifier).expect("exists");
                (spec, t, Duration::from_secs(2))
            })
            .collect(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    // An anonymous session after its create cycle.
    let mut anonymous = Session::new(ACCOUNT, 0, u64::MAX / 2);
    runtime
        .block_on(cycle::run(
            &apps,
            ACCOUNT,
            &mut anonymous,
            Default::default(),
            true,
            10,
        ))
        .expect("create cycle");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let what = Mint {
        account: ACCOUNT,
        email: "alice@example.com",
        user_id: "c0a80101-0000-4000-8000-000000000001",
        admin: false,
        now_secs: now,
        ttl_secs: 3600,
    };
    let token = mint(&identity, &what, None).expect("token");
    let mut login = Changes::new();
    login.set(
        Key::new("cookie", "VtexIdclientAutCookie_demo"),
        Value::new(token),
    );

    // Check once that the cycle does what the benchmark claims.
    let mut check = anonymous.clone();
    let delta = check.apply(&login);
    let trace = runtime
        .block_on(cycle::run(&apps, ACCOUNT, &mut check, delta, false, 10))
        .expect("log-in cycle");
    assert_eq!(check.get_str("profile", "isAuthenticated"), Some("true"));
    assert_eq!(
        Segment::of(&check).price_tables.as_deref(),
        Some("gold,vip")
    );
    assert_eq!(Segment::of(&check).campaigns.as_deref(), Some("vip-club"));
    eprintln!("log-in cycle rounds: {:?}", trace.calls_by_round());

    c.bench_function("login_cycle", |b| {
        b.iter(|| {
            let mut session = anonymous.clone();
            let delta = session.apply(&login);
            runtime
                .block_on(cycle::run(&apps, ACCOUNT, &mut session, delta, false, 10))
                .expect("log-in cycle");
            Segment::of(&session).encode()
        })
    });
}

criterion_group!(benches, bench_login);
criterion_main!(benches);
