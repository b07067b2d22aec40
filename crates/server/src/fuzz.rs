//! The entry points of the fuzz targets (`fuzz/`, `cargo fuzz`) and of the test that replays
//! their committed corpora on stable Rust (`tests/fuzz_corpus.rs`): each takes arbitrary bytes
//! and must never panic, whatever they are. Each names the parser it exercises.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue};
use futures::FutureExt;
use sessiond_apps::identity::{Cookie, Identity, Verifier};
use sessiond_core::{Record, Value};

use crate::config::{Limits, Overrides, Settings};
use crate::http::request::{public_writes, Filters, Query, RequestCookies};
use crate::snapshot::Snapshot;
use crate::tenancy::Tenancy;
use crate::token::{generate_pem, token_digest, Keyring, Lookup};

/// A target: its name (the folder of its corpus under `fuzz/corpus/`) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 11] = [
    ("record", record),
    ("items", items),
    ("body", body),
    ("query", query),
    ("cookies", cookies),
    ("session_token", session_token),
    ("identity_token", identity_token),
    ("segment_token", segment_token),
    ("config", config),
    ("app_answer", app_answer),
    ("app_entry", app_entry),
];

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// A stored record: parsed, every header field read, answered whole and cut to a filter,
/// edited in place, ended; a record that decodes encodes back to the same session; the same
/// record holding its segment token apart stores and answers the same bytes.
pub fn record(data: &[u8]) {
    let Ok(record) = Record::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    let shared = Bytes::copy_from_slice(record.segment_token().as_bytes());
    let compact = record.clone().sharing_segment(&shared);
    assert!(
        compact.shared_segment().is_some(),
        "its own token is shared"
    );
    assert_eq!(compact.stored(), record.stored(), "stored as parsed");
    assert_eq!(compact.answer(), record.answer());
    assert_eq!(compact.traces(), record.traces());
    assert_eq!(compact.has_secrets(), record.has_secrets());
    let _ = (
        record.version(),
        record.expires_at(),
        record.updated_at(),
        record.id(),
    );
    let _ = (
        record.active(),
        record.debug(),
        record.account(),
        record.replaced_by(),
        record.token_digest(),
    );
    let _ = (
        record.segment_token(),
        record.traces(),
        record.has_secrets(),
    );
    let snapshot = Snapshot::read(record.clone());
    let filters = Filters::default();
    for raw in ["*", "public.*,store.channel,cookie.x", "nope.x"] {
        let _ = snapshot.answer(Some(&filters.get(raw)), true);
    }
    let version = record.version().saturating_add(1);
    if let Some(mut editing) = record.edit("public") {
        editing.values.insert("k".into(), Value::new("v"));
        let edited = editing.finish(version, 1, 2);
        Record::parse(edited.stored()).expect("an edited record parses");
    }
    let ended = record.ended(version, 1, None, 0);
    Record::parse(ended.stored()).expect("an ended record parses");
    if let Ok(session) = record.decode() {
        let again = Record::encode(&session, None);
        let decoded = Record::parse(again.stored())
            .and_then(|r| r.decode())
            .expect("an encoded session decodes");
        assert_eq!(decoded, session, "a session survives its record");
    }
}

/// An `items` filter, applied to a session's answer.
pub fn items(data: &[u8]) {
    let Some(raw) = text(data) else { return };
    let mut session = sessiond_core::Session::new("demo", 0, 1_000);
    session.set(&sessiond_core::Key::new("public", "a.b"), Value::new("x"));
    session.set(
        &sessiond_core::Key::new("cookie", "c"),
        Value::new("secret"),
    );
    let snapshot = Snapshot::new(session);
    let answer = snapshot
        .answer(Some(&Filters::default().get(raw)), true)
        .expect("a session in memory answers");
    assert!(
        !answer.windows(6).any(|w| w == b"secret"),
        "a secret answered"
    );
}

/// A POST/PATCH body (JSON), with the default limits.
pub fn body(data: &[u8]) {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let _ = public_writes(&Query::parse(None), &headers, data, &Limits::default());
}

/// A query string, as the `public` writes of an edit.
pub fn query(data: &[u8]) {
    let Some(raw) = text(data) else { return };
    let query = Query::parse(Some(raw));
    let _ = public_writes(&query, &HeaderMap::new(), b"", &Limits::default());
}

/// A `Cookie` header.
pub fn cookies(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, value);
    let cookies = RequestCookies::parse(&headers);
    let _ = cookies.get_all("vtex_session").count();
    let _ = (cookies.iter().count(), cookies.only_session_token());
}

/// A session token (`vtex_session`), checked against a signing key.
pub fn session_token(data: &[u8]) {
    static KEYS: OnceLock<Keyring> = OnceLock::new();
    let Some(token) = text(data) else { return };
    // A configured key: the data directory is not read.
    let keys = KEYS.get_or_init(|| {
        let pem = generate_pem().expect("a key");
        Keyring::load(Some(&pem), &[], Path::new("/nonexistent")).expect("a keyring")
    });
    let _ = keys.verify(token, "demo", 1_000);
    // As a process that has not seen it, with a record keeping the digest of that very text
    // (taken without a signature) or of the first bytes (checked by signature).
    for stored in [
        token_digest(token),
        [data.first().copied().unwrap_or(0); 16],
    ] {
        if let Lookup::Claimed(claimed) = keys.lookup(token, "demo", 1_000) {
            let _ = keys.confirm(claimed, Some(&stored));
        }
    }
}

/// An identity token (`VtexIdclientAutCookie…`), checked with an HS256 secret, in both cookies.
pub fn identity_token(data: &[u8]) {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    let Some(token) = text(data) else { return };
    let verifier = VERIFIER.get_or_init(|| {
        Verifier::new(&Identity {
            hs256_secret: Some("fuzz-identity-secret".into()),
            ..Identity::default()
        })
        .expect("a verifier")
    });
    for cookie in [Cookie::Store, Cookie::Admin] {
        let verdict = verifier.verify(token, "demo", cookie, false).now_or_never();
        assert!(verdict.is_some(), "an HS256 check never waits");
    }
}

/// A segment token (`vtex_segment`, `/api/segments/{token}`).
pub fn segment_token(data: &[u8]) {
    let Some(token) = text(data) else { return };
    let _ = sessiond_core::segment::decode(token);
}

/// A configuration file, and its accounts built as `serve` builds them.
pub fn config(data: &[u8]) {
    let Some(toml) = text(data) else { return };
    let Ok(settings) = Settings::from_text(toml, Overrides::default(), Path::new("/nonexistent"))
    else {
        return;
    };
    let _ = Tenancy::new(&settings.accounts, &settings.default_account);
}

/// The answer of an HTTP app's transform call.
pub fn app_answer(data: &[u8]) {
    let _ = sessiond_apps::http::parse_answer(data);
}

/// An admin API install body, validated against the demo account as an install is.
pub fn app_entry(data: &[u8]) {
    static DEMO: OnceLock<Arc<Tenancy>> = OnceLock::new();
    let tenancy = DEMO.get_or_init(|| {
        let settings = Settings::load(None, Overrides::default()).expect("the demo settings");
        Arc::new(Tenancy::new(&settings.accounts, &settings.default_account).expect("demo"))
    });
    let Ok(entry) = crate::http::admin::entry("loyalty", &Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = tenancy.with_apps("demo", &[entry]);
}
