//! What a request changes ([`Edit`]: its `public` writes and the cookies the apps watch, kept
//! whole so they can be applied again after a conflict), and the plan of an edit: unchanged,
//! made in place on the stored record, or the full path (decode, apply, run the cycle).

use sessiond_core::segment::Segment;
use sessiond_core::{Changes, Key, Record, Session, Value};

use super::{SessionError, SessionService};
use crate::config::Limits;
use crate::snapshot::Snapshot;
use crate::tenancy::Account;

/// Most cookies recorded from one request (key patterns could otherwise admit any number).
pub const MAX_RECORDED_COOKIES: usize = 32;

/// The changes a request makes, kept whole so they can be re-applied after a conflict.
#[derive(Debug, Default)]
pub struct Edit {
    /// `public` writes from the query string then the body (the body wins).
    pub public: Changes,
    /// Cookies the installed apps watch, as sent.
    pub watched_cookies: Vec<(String, String)>,
    /// Whether cookies no longer sent are removed from the `cookie` namespace.
    pub sync_cookies: bool,
}

impl Edit {
    /// Builds an edit from the request's `public` writes and its `cookies` (name, value; in
    /// the order sent). Cookies over the key or value limits, or past
    /// [`MAX_RECORDED_COOKIES`], are not recorded. `sync_cookies`: the request speaks for the
    /// browser, so watched cookies it does not send are removed (false for a server-side call
    /// that sends only the session token).
    pub fn new<'c>(
        account: &Account,
        public: Changes,
        cookies: impl Iterator<Item = (&'c str, &'c str)>,
        sync_cookies: bool,
        limits: &Limits,
    ) -> Self {
        let watched_cookies = cookies
            .filter(|(name, value)| {
                !value.is_empty()
                    && value.len() <= limits.max_value_bytes
                    && name.len() <= limits.max_key_bytes
                    && account.apps.index().watches_cookie(name)
            })
            .take(MAX_RECORDED_COOKIES)
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        Edit {
            public,
            watched_cookies,
            sync_cookies,
        }
    }

    /// Whether the request changes nothing: no `public` write, no watched cookie.
    pub(super) fn is_empty(&self) -> bool {
        self.public.is_empty() && self.watched_cookies.is_empty()
    }

    /// Whether this request sends exactly the cookies `session` has recorded (and at least one).
    pub(super) fn same_browser(&self, session: &Session) -> bool {
        let Some(recorded) = session.namespaces.get("cookie") else {
            return false;
        };
        recorded.len() == self.watched_cookies.len()
            && self
                .watched_cookies
                .iter()
                .all(|(n, v)| recorded.get(n).and_then(|r| r.as_str()) == Some(v.as_str()))
    }

    /// The writes of this edit against `session` (cookie removals depend on what it holds).
    pub(super) fn changes_for(&self, session: &Session) -> Changes {
        let mut changes = self.public.clone();
        if self.sync_cookies {
            if let Some(recorded) = session.namespaces.get("cookie") {
                for name in recorded.keys() {
                    if !self.watched_cookies.iter().any(|(n, _)| n == name) {
                        changes.remove(Key::new("cookie", name.as_str()));
                    }
                }
            }
        }
        for (name, value) in &self.watched_cookies {
            changes.set(
                Key::new("cookie", name.as_str()),
                Value::new(value.as_str()),
            );
        }
        changes
    }
}

/// How an edit is made: what [`SessionService::plan`] found.
pub(super) enum Plan {
    /// The edit changes nothing.
    Unchanged,
    /// Made on the stored record without decoding the session: the record of the edited
    /// session (byte for byte what the full path would save).
    InPlace(Record),
    /// The full path: decode, apply, run the cycle.
    Full,
}

impl SessionService {
    /// `edit` applied to `loaded` without decoding it, when nothing but `public` values change
    /// and the cycle would have nothing to do: no cookie to record or remove, no app watching a
    /// written key, no segment input among them. Gives the record of the edited session (the
    /// one the full path would save, byte for byte), or says the edit changes nothing.
    pub(super) fn plan(
        &self,
        account: &Account,
        loaded: &Snapshot,
        edit: &Edit,
        now: u64,
    ) -> Result<Plan, SessionError> {
        let record = loaded.record();
        // A debug session keeps the trace of every edit's cycle.
        if !self.fast_paths || record.debug() {
            return Ok(Plan::Full);
        }
        if !edit.watched_cookies.is_empty() || (edit.sync_cookies && record.has_secrets()) {
            return Ok(Plan::Full);
        }
        let index = account.apps.index();
        let plain = |key: &Key| {
            key.namespace == "public" && !Segment::reads(key) && index.watchers(key).is_empty()
        };
        if !edit.public.iter().all(|(key, _)| plain(key)) {
            return Ok(Plan::Full);
        }
        let Some(mut editing) = record.edit("public") else {
            return Ok(Plan::Full);
        };
        let before = editing.values.clone();
        for (key, value) in edit.public.iter() {
            match value {
                Some(value) => {
                    editing.values.insert(key.name.clone(), value.clone());
                }
                None => {
                    editing.values.remove(key.name.as_str());
                }
            }
        }
        if editing.values == before {
            return Ok(Plan::Unchanged);
        }
        self.check_public_count(before.len(), editing.values.len())?;
        Ok(Plan::InPlace(editing.finish(
            record.version() + 1,
            now,
            now.saturating_add(self.ttl_ms()),
        )))
    }
}
