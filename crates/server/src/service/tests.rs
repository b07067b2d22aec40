//! The session rules without a server: a service over the memory store, the built-in demo
//! account, and a time the test chooses.

use std::sync::Arc;
use std::time::Duration;

use sessiond_core::segment::Segment;
use sessiond_core::{Changes, Key, Value};
use sessiond_store::MemoryStore;

use super::*;
use crate::config::{Limits, Overrides, Settings};
use crate::tenancy::Tenancy;

/// 2026-01-01, in ms.
const T0: u64 = 1_767_225_600_000;

struct Rig {
    service: SessionService,
    account: Arc<Account>,
    limits: Limits,
    _keys: tempfile::TempDir,
}

fn rig() -> Rig {
    let settings = Settings::load(None, Overrides::default()).unwrap();
    let tenancy = Tenancy::new(&settings.accounts, &settings.default_account).unwrap();
    let account = tenancy.resolve(None, None).clone();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keyring::load(None, &[], dir.path()).unwrap();
    let repo = Arc::new(Repository::new(
        Arc::new(MemoryStore::new()),
        Duration::from_secs(5),
        1000,
    ));
    let service = SessionService::new(
        repo,
        keys,
        settings.session_ttl,
        settings.limits.max_public_keys,
        true,
    );
    Rig {
        service,
        account,
        limits: settings.limits,
        _keys: dir,
    }
}

impl Rig {
    fn edit(&self, public: &[(&str, Option<&str>)], cookies: &[(&str, &str)]) -> Edit {
        let mut changes = Changes::new();
        for (name, value) in public {
            let key = Key::new("public", *name);
            match value {
                Some(v) => changes.set(key, Value::new(*v)),
                None => changes.remove(key),
            }
        }
        Edit::new(
            &self.account,
            changes,
            cookies.iter().copied(),
            true,
            &self.limits,
        )
    }

    async fn create(&self, public: &[(&str, Option<&str>)]) -> Outcome {
        let edit = self.edit(public, &[]);
        self.service
            .edit(&self.account, &[], &edit, T0)
            .await
            .unwrap()
    }
}

/// What the full path makes of `edit` on `loaded` at `now`: the keys the request and the
/// cycle changed, and the record it would save.
async fn full_path(rig: &Rig, loaded: &Snapshot, edit: &Edit, now: u64) -> (Delta, Record) {
    let service = &rig.service;
    let before = loaded.session().unwrap();
    let mut session = before.clone();
    let delta = session.apply_owned(edit.changes_for(&session));
    let changed = service
        .settle(
            &rig.account,
            &mut session,
            Some(before),
            delta,
            (false, true),
            0,
        )
        .await
        .unwrap();
    session.version = before.version + 1;
    session.updated_at = now;
    session.expires_at = now + service.ttl_ms();
    let record = record_of(&session, Some((loaded, &changed)), true);
    (changed, record)
}

#[tokio::test]
async fn an_in_place_edit_is_only_planned_when_the_full_path_would_change_nothing_else() {
    let rig = rig();
    let created = rig
        .create(&[("kept", Some("1")), ("gone", Some("x"))])
        .await;
    let loaded = created.snapshot;
    let index = rig.account.apps.index();
    // Keys some app watches or the segment reads, next to plain ones.
    let watched = [
        "sc",
        "utm_source",
        "utm_campaign",
        "cultureInfo",
        "country",
        "postalCode",
    ]
    .into_iter()
    .filter(|k| {
        let key = Key::new("public", *k);
        !index.watchers(&key).is_empty() || Segment::reads(&key)
    })
    .collect::<Vec<_>>();
    assert!(!watched.is_empty(), "the demo account watches public keys");
    let mut edits = vec![
        rig.edit(&[("plain", Some("v"))], &[]),
        rig.edit(&[("gone", None)], &[]),
        rig.edit(&[("kept", Some("2")), ("plain", Some("w"))], &[]),
        rig.edit(
            &[("plain", Some("v"))],
            &[("VtexIdclientAutCookie_demo", "t")],
        ),
    ];
    for key in &watched {
        edits.push(rig.edit(&[(key, Some("1"))], &[]));
    }
    let now = T0 + 1_000;
    let mut in_place = 0;
    for edit in &edits {
        let (changed, full) = full_path(&rig, &loaded, edit, now).await;
        match rig.service.plan(&rig.account, &loaded, edit, now).unwrap() {
            Plan::InPlace(record) => {
                in_place += 1;
                let written: Delta = edit.public.iter().map(|(k, _)| k.clone()).collect();
                assert_eq!(changed, written, "the cycle would have changed more");
                assert_eq!(
                    record.stored(),
                    full.stored(),
                    "the same record byte for byte"
                );
            }
            Plan::Unchanged => assert!(changed.is_empty()),
            Plan::Full => {}
        }
    }
    assert_eq!(in_place, 3, "the three plain edits are made in place");
    assert!(matches!(
        rig.service
            .plan(
                &rig.account,
                &loaded,
                &rig.edit(&[("kept", Some("1"))], &[]),
                now
            )
            .unwrap(),
        Plan::Unchanged
    ));
}

#[tokio::test]
async fn edits_that_race_each_other_all_land() {
    let rig = rig();
    let created = rig.create(&[]).await;
    let token = created.token.clone();
    let edits: Vec<Edit> = (0..8)
        .map(|i| rig.edit(&[(&format!("k{i}"), Some("v"))], &[]))
        .collect();
    let tokens = [token.as_str()];
    let outcomes = futures::future::join_all(
        edits
            .iter()
            .map(|e| rig.service.edit(&rig.account, &tokens, e, T0 + 10)),
    )
    .await;
    for outcome in outcomes {
        assert!(!outcome.unwrap().created);
    }
    let read = rig
        .service
        .read(&rig.account, &tokens, &Edit::default(), T0 + 20)
        .await
        .unwrap();
    let session = read.snapshot.session().unwrap();
    assert_eq!(session.version, created.snapshot.record().version() + 8);
    for i in 0..8 {
        assert_eq!(session.get("public", &format!("k{i}")).unwrap().value, "v");
    }
}

#[tokio::test]
async fn a_token_is_renewed_after_half_its_life_and_read_until_it_expires() {
    let rig = rig();
    let created = rig.create(&[]).await;
    let tokens = [created.token.as_str()];
    let ttl = rig.service.ttl_ms();
    let none = Edit::default();
    let read = |now| rig.service.read(&rig.account, &tokens, &none, now);

    let early = read(T0 + ttl / 2 - 1_000).await.unwrap();
    assert_eq!(early.token, created.token, "the request's own token");
    assert_eq!(early.snapshot.id(), created.snapshot.id());

    let late = read(T0 + ttl / 2 + 1_000).await.unwrap();
    assert_ne!(late.token, created.token, "a renewed token");
    assert_eq!(
        late.snapshot.id(),
        created.snapshot.id(),
        "for the same session"
    );

    let after = read(T0 + ttl + 1_000).await.unwrap();
    assert!(after.created, "an expired session is a new one");
    assert_ne!(after.snapshot.id(), created.snapshot.id());
}
