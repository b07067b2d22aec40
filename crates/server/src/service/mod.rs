//! The session service: the one place where a request becomes a stored change.
//!
//! load → apply the request's changes → run the transform cycle → save with compare-and-swap
//! on `version`. When another request saved first, the same request changes are re-applied to
//! the newer session, the cycle re-run, and the save tried again, so no update is ever lost;
//! after [`MAX_ATTEMPTS`] the request answers 409.
//!
//! Session fixation: when the cycle changes the visitor's identity (log-in, log-out,
//! impersonation), the session is saved under a new id with a new token, and the old id is
//! deactivated, so a token planted before log-in never reads the logged-in session.
//!
//! Here: `read`, `edit`, `reset`, `preview` and what they share (load, build, the cycle, the
//! one place tokens are issued). Beside it: `edit` (what a request changes, and the plan of an
//! edit: unchanged, in place on the record, or full), `identity` (the rotation to a new id and
//! the succession grace), `turns` (the queue of edits that lost a compare-and-swap). It knows
//! nothing of HTTP, takes the time as `now`, and reaches sessions only through the
//! repository.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{Histogram, IntCounter};
use sessiond_core::cycle::{self, identity_changed, IDENTITY_KEYS};
use sessiond_core::items::{REDACTED, SECRET_NAMESPACE};
use sessiond_core::record::RecordError;
use sessiond_core::{Changes, Delta, Key, Record, Session, SessionId, Value};

use crate::repo::{Repository, StoreError};
use crate::snapshot::Snapshot;
use crate::telemetry::request_id;
use crate::tenancy::Account;
use crate::token::{Keyring, Lookup, Verified};
use edit::Plan;
pub use edit::{Edit, MAX_RECORDED_COOKIES};
pub use identity::SUCCESSION_GRACE;
use turns::{Turn, Turns};

mod edit;
mod identity;
mod turns;

#[cfg(test)]
mod tests;

/// Why a request on a session did not succeed. The HTTP layer gives each its status.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The session kept changing under this request: [`MAX_ATTEMPTS`] compare-and-swaps lost.
    #[error("the session was changed by other requests too often; try again")]
    Conflict,
    /// The store did not answer within `store_timeout`, or failed.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
    /// A stored session could not be read.
    #[error("a stored session could not be read: {0}")]
    Corrupt(String),
    /// The edit would grow `public` past its limit.
    #[error("the session would hold {count} keys in `public`, over the limit of {limit} (max_public_keys)")]
    TooManyPublicKeys {
        /// Keys `public` would hold.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A session app refused the request (401 or 403, with its own `type` and `message`).
    #[error("rejected by a session app with {status}: {kind}: {message}")]
    Rejected {
        /// 401 or 403.
        status: u16,
        /// The error's `type`.
        kind: String,
        /// The error's `message`.
        message: String,
    },
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => SessionError::Conflict,
            StoreError::Unavailable(m) => SessionError::Unavailable(m),
            StoreError::Corrupt(m) => SessionError::Corrupt(m),
        }
    }
}

impl From<RecordError> for SessionError {
    fn from(e: RecordError) -> Self {
        SessionError::Corrupt(e.to_string())
    }
}

/// Most compare-and-swap attempts of one request before it answers 409.
pub const MAX_ATTEMPTS: usize = 16;

/// A loaded session and the token that named it (`None`: it must get a new token).
struct Loaded<'t> {
    snapshot: Arc<Snapshot>,
    token: Option<(&'t str, Verified)>,
    /// False for the base of an edit that a shared store said changed (see [`Purpose::Edit`]).
    fresh: bool,
}

/// What a session is loaded for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// To be answered as it stands.
    Read,
    /// As the base of an edit saved with compare-and-swap: a cached copy that a shared store
    /// said changed will do (the news is often of this process's own last save), since the
    /// save fails if it was indeed overtaken; an edit that then saves nothing loads again.
    Edit,
}

/// What a request ends with: the session, whether it was created, and its token.
pub struct Outcome {
    /// The session as stored.
    pub snapshot: Arc<Snapshot>,
    /// Whether the session was created by this request.
    pub created: bool,
    /// The session token to answer with (the request's own, unless it was renewed or the
    /// session is new or got a new id).
    pub token: String,
}

/// What one attempt of an edit ended with.
enum Attempt {
    /// The session as it now stands under the id the request named.
    Kept(Arc<Snapshot>),
    /// The edit changes nothing: the session is the loaded one.
    Unchanged(Arc<Snapshot>),
    /// The session saved with a new token, whose digest its record keeps: under a new id (its
    /// identity changed), or for the first time (it was created without a write).
    Reissued(Arc<Snapshot>, String),
    /// Another request saved first: load again and retry.
    Lost,
}

/// The record of `session`. `previous` is the snapshot it was derived from by changing the
/// keys given with it: with `fast`, its segment token is kept when none of those keys is an
/// input of the segment; else (or without `previous`) the token is derived anew.
fn record_of(session: &Session, previous: Option<(&Snapshot, &Delta)>, fast: bool) -> Record {
    if !fast {
        return Record::encode(session, None);
    }
    let segment = previous.and_then(|(p, changed)| p.segment_after(changed.iter()));
    Record::encode(session, segment)
}

/// How far the clocks of processes sharing a store may differ: the record that ends a session
/// is kept that much longer than its tokens could live.
const CLOCK_MARGIN: Duration = Duration::from_secs(60);

/// Most cycle traces a debug session keeps (the latest).
pub const MAX_TRACES: usize = 20;

/// Largest trace kept whole (its JSON); a larger one keeps its rounds' apps, durations and
/// errors without their inputs and outputs.
pub const MAX_TRACE_BYTES: usize = 16 * 1024;

/// Appends the trace of a cycle run at `now` to the traces `session` keeps (it has `debug`):
/// identity cookie values redacted, bounded in size, the last [`MAX_TRACES`] kept.
fn keep_trace(session: &mut Session, trace: &sessiond_core::Trace, created: bool, now: u64) {
    let mut trace = trace.redacted();
    let mut truncated = false;
    let size = |t: &sessiond_core::Trace| serde_json::to_vec(t).map_or(usize::MAX, |v| v.len());
    if size(&trace) > MAX_TRACE_BYTES {
        truncated = true;
        for call in trace.rounds.iter_mut().flat_map(|r| r.calls.iter_mut()) {
            call.input = Default::default();
            call.output.clear();
            call.dropped.truncate(16);
        }
    }
    let mut entry = serde_json::to_value(&trace).unwrap_or_default();
    if let Some(fields) = entry.as_object_mut() {
        fields.insert("at".into(), now.into());
        fields.insert("requestId".into(), request_id().to_string().into());
        fields.insert("created".into(), created.into());
        if truncated {
            fields.insert("truncated".into(), true.into());
        }
    }
    session.traces.push(entry);
    let extra = session.traces.len().saturating_sub(MAX_TRACES);
    session.traces.drain(..extra);
}

/// Session `session` as an operator sees it: every namespace (the values of the secret one
/// redacted), its state and times (milliseconds since the Unix epoch).
fn inspected(session: &Session) -> serde_json::Value {
    let mut namespaces = serde_json::Map::new();
    for (name, values) in session.namespaces.iter() {
        let mut shown = serde_json::to_value(&**values).unwrap_or_default();
        if name.as_str() == SECRET_NAMESPACE {
            if let Some(values) = shown.as_object_mut() {
                for value in values.values_mut() {
                    value["value"] = serde_json::Value::from(REDACTED);
                }
            }
        }
        namespaces.insert(name.to_string(), shown);
    }
    serde_json::json!({
        "id": session.id.to_string(),
        "account": session.account,
        "namespaces": namespaces,
        "version": session.version,
        "active": session.active,
        "debug": session.debug,
        "createdAt": session.created_at,
        "updatedAt": session.updated_at,
        "expiresAt": session.expires_at,
        "replacedBy": session.replaced_by.map(|id| id.to_string()),
        "traces": session.traces,
    })
}

/// Loads, edits and saves sessions.
pub struct SessionService {
    repo: Arc<Repository>,
    keys: Keyring,
    ttl: Duration,
    max_public_keys: usize,
    /// Whether plain edits are made on the stored record and segment tokens carried over
    /// (see `Settings::fast_paths`).
    fast_paths: bool,
    /// Turns of the edits of one session that lost a compare-and-swap.
    turns: Turns,
    metrics: Metrics,
}

/// The service's metrics (the per-app ones are labelled by app, so looked up per call).
struct Metrics {
    created: IntCounter,
    unsaved: IntCounter,
    derived: IntCounter,
    logins: IntCounter,
    logouts: IntCounter,
    conflicts: IntCounter,
    retries: IntCounter,
    cycles: IntCounter,
    rounds: Histogram,
    loop_limit: IntCounter,
}

impl Metrics {
    fn new() -> Self {
        let m = crate::telemetry::metrics();
        Metrics {
            created: m.sessions_created.clone(),
            unsaved: m.sessions_unsaved.clone(),
            derived: m.sessions_derived.clone(),
            logins: m.logins.clone(),
            logouts: m.logouts.clone(),
            conflicts: m.cas_conflicts.clone(),
            retries: m.cas_retries.clone(),
            cycles: m.cycles.clone(),
            rounds: m.cycle_rounds.clone(),
            loop_limit: m.cycle_loop_limit.clone(),
        }
    }

    /// Counts a rotation to a new id: a log-in when the visitor now has an identity, else a
    /// log-out.
    fn rotated(&self, session: &Session) {
        if IDENTITY_KEYS
            .iter()
            .any(|(ns, key)| session.get(ns, key).is_some())
        {
            self.logins.inc();
        } else {
            self.logouts.inc();
        }
    }

    /// Counts what a cycle of `account` did.
    fn cycle(&self, account: &Account, trace: &sessiond_core::Trace) {
        if trace.rounds.is_empty() {
            return;
        }
        self.cycles.inc();
        self.rounds.observe(trace.rounds.len() as f64);
        if trace.loop_warning {
            self.loop_limit.inc();
        }
        let m = crate::telemetry::metrics();
        for call in trace.rounds.iter().flat_map(|r| &r.calls) {
            let labels = [account.name.as_str(), call.app.as_str()];
            m.app_calls.with_label_values(&labels).inc();
            m.app_duration
                .with_label_values(&labels)
                .observe(call.micros as f64 / 1_000_000.0);
            if call.rejected {
                let status = call.rejection_status.unwrap_or_default().to_string();
                m.app_rejections
                    .with_label_values(&[account.name.as_str(), call.app.as_str(), &status])
                    .inc();
            } else if call.error.is_some() && !call.undecided {
                m.app_failures.with_label_values(&labels).inc();
                if call.timed_out {
                    m.app_timeouts.with_label_values(&labels).inc();
                }
            }
        }
    }
}

impl SessionService {
    /// A service over the sessions of `repo`, signing with `keys`.
    pub fn new(
        repo: Arc<Repository>,
        keys: Keyring,
        ttl: Duration,
        max_public_keys: usize,
        fast_paths: bool,
    ) -> Self {
        SessionService {
            repo,
            keys,
            ttl,
            max_public_keys,
            fast_paths,
            turns: Turns::default(),
            metrics: Metrics::new(),
        }
    }

    /// The session lifetime.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether the store answers within `store_timeout` (readiness).
    pub async fn ping(&self) -> Result<(), SessionError> {
        self.repo.ping().await.map_err(Into::into)
    }

    /// Whether expired sessions must be purged (the store does not drop them by itself).
    pub fn needs_purge(&self) -> bool {
        self.repo.needs_purge()
    }

    /// Removes every session expired at `now` (ms); returns how many.
    pub async fn purge_expired(&self, now: u64) -> Result<usize, StoreError> {
        self.repo.purge_expired(now).await
    }

    /// Session `id` as `purpose` needs it, and whether it is fresh from the store.
    async fn load_for(
        &self,
        id: SessionId,
        now: u64,
        purpose: Purpose,
    ) -> Result<Option<(Arc<Snapshot>, bool)>, SessionError> {
        Ok(match purpose {
            Purpose::Read => self.repo.load(id, now).await?.map(|s| (s, true)),
            Purpose::Edit => self.repo.load_base(id, now).await?,
        })
    }

    /// The live session of this account named by the first valid one of `tokens` (a browser
    /// may hold stale `vtex_session` cookies from other paths or domains next to the current
    /// one); `None` when no token is valid.
    ///
    /// A token whose session was replaced at a log-in or log-out less than [`SUCCESSION_GRACE`]
    /// ago leads to the successor, but only for a request carrying exactly the successor's
    /// recorded cookies (the same browser, racing with its own log-in). A token planted before
    /// log-in, sent without the victim's identity cookie, never does.
    async fn load<'t>(
        &self,
        account: &Account,
        tokens: &[&'t str],
        edit: &Edit,
        now: u64,
        purpose: Purpose,
    ) -> Result<Option<Loaded<'t>>, SessionError> {
        for &token in tokens {
            let (verified, mut loaded) = match self.keys.lookup(token, &account.name, now / 1000) {
                Lookup::Known(verified) => {
                    (verified, self.load_for(verified.id, now, purpose).await?)
                }
                Lookup::Claimed(claimed) => {
                    // Read before the token is checked, for the digest its record may hold;
                    // nothing read is used unless the token proves genuine, and a store that
                    // fails is the answer only for a genuine token.
                    let loaded = match self.load_for(claimed.id(), now, purpose).await {
                        Ok(loaded) => loaded,
                        Err(e) => match self.keys.confirm(claimed, None) {
                            Some(_) => return Err(e),
                            None => continue,
                        },
                    };
                    let stored = loaded.as_ref().and_then(|(s, _)| s.record().token_digest());
                    match self.keys.confirm(claimed, stored) {
                        Some(verified) => (verified, loaded),
                        None => continue,
                    }
                }
                Lookup::Invalid => continue,
            };
            if let Some((snapshot, false)) = &loaded {
                if !snapshot.record().active() {
                    // Whether it ended, and for which successor, only the store can tell.
                    loaded = self.repo.load(verified.id, now).await?.map(|s| (s, true));
                }
            }
            let (snapshot, fresh) = match loaded {
                Some(loaded) => loaded,
                None if verified.unsaved => match self.derived(account, verified.id, now).await? {
                    Some(snapshot) => (snapshot, true),
                    None => continue,
                },
                None => continue,
            };
            let s = snapshot.record();
            if s.account() != account.name {
                continue;
            }
            if s.active() {
                return Ok(Some(Loaded {
                    snapshot,
                    token: Some((token, verified)),
                    fresh,
                }));
            }
            if let Some(successor) = self.successor(&snapshot, edit, now).await? {
                return Ok(Some(Loaded {
                    snapshot: successor,
                    token: None,
                    fresh: true,
                }));
            }
        }
        Ok(None)
    }

    /// Session `id` of `account`, created without a write, derived again the same (not counted
    /// or logged as a cycle: it was, at creation); as stored if a save of it came meanwhile.
    /// When an HTTP app has joined the account's create cycle since, whose answer may differ
    /// the next time, it is saved as just derived.
    async fn derived(
        &self,
        account: &Account,
        id: SessionId,
        now: u64,
    ) -> Result<Option<Arc<Snapshot>>, SessionError> {
        let derive = async {
            self.metrics.derived.inc();
            let session = self
                .build(account, id, &Edit::default(), now, false)
                .await?;
            Ok::<_, SessionError>(Snapshot::new(session))
        };
        let snapshot = self.repo.load_or_derive(id, now, derive).await?;
        if snapshot.stored() || account.lazy_creates {
            return Ok(Some(snapshot));
        }
        let record = record_of(snapshot.session()?, None, self.fast_paths);
        match self.repo.save(record, None, None).await {
            Ok(saved) => Ok(Some(saved)),
            Err(StoreError::Conflict) => Ok(self.repo.load(id, now).await?),
            Err(e) => Err(e.into()),
        }
    }

    /// New session `id` of `account` with the manager's own values and `edit` applied, after
    /// the create cycle (counted and logged when `observed`).
    async fn build(
        &self,
        account: &Account,
        id: SessionId,
        edit: &Edit,
        now: u64,
        observed: bool,
    ) -> Result<Session, SessionError> {
        let mut session = Session::new(account.name.as_str(), now, self.ttl_ms());
        session.id = id;
        let mut changes = Changes::new();
        changes.set(Key::new("account", "id"), Value::kept(account.id.as_str()));
        changes.set(
            Key::new("account", "accountName"),
            Value::new(account.name.as_str()),
        );
        changes.extend(edit.changes_for(&session));
        let delta = session.apply_owned(changes);
        self.settle(account, &mut session, None, delta, (true, observed), now)
            .await?;
        Ok(session)
    }

    /// A request may not grow `public` past `max_public_keys` (a session that is already over a
    /// lowered limit can still be edited, as long as it does not grow).
    fn check_public_size(&self, before: &Session, after: &Session) -> Result<(), SessionError> {
        let count = |s: &Session| s.namespaces.get("public").map_or(0, |p| p.len());
        self.check_public_count(count(before), count(after))
    }

    fn check_public_count(&self, old: usize, new: usize) -> Result<(), SessionError> {
        if new > self.max_public_keys && new > old {
            return Err(SessionError::TooManyPublicKeys {
                count: new,
                limit: self.max_public_keys,
            });
        }
        Ok(())
    }

    /// Runs the transform cycle (the create cycle when `created`) on `session`, which the
    /// request changed in the keys of `delta` (from `before`, or from nothing for a new
    /// session), counted in the metrics and logged at debug level when `observed`. Returns
    /// every key changed by the request or the cycle.
    ///
    /// The request's cookies that an app could not decide on yet (its identity provider's keys
    /// are out of reach, say) are put back as they were before the request, so the next request
    /// sending them runs the app again instead of finding them already recorded.
    async fn settle(
        &self,
        account: &Account,
        session: &mut Session,
        before: Option<&Session>,
        delta: Delta,
        (created, observed): (bool, bool),
        now: u64,
    ) -> Result<Delta, SessionError> {
        let detail = session.debug || (observed && tracing::enabled!(tracing::Level::DEBUG));
        let result = cycle::run_with(
            &account.apps,
            &account.name,
            session,
            delta,
            created,
            account.max_rounds,
            detail,
        )
        .await;
        let trace = match result {
            Ok(trace) => trace,
            Err(rejection) => {
                self.metrics.cycle(account, &rejection.trace);
                tracing::info!(request_id = %request_id(), account = %account.name, app = %rejection.app, status = rejection.status, kind = %rejection.kind, "a session app refused the request");
                tracing::debug!(request_id = %request_id(), app = %rejection.app, status = rejection.status, trace = %serde_json::to_string(&rejection.trace.redacted()).unwrap_or_default(), "the refused request's cycle");
                return Err(SessionError::Rejected {
                    status: rejection.status,
                    kind: rejection.kind,
                    message: rejection.message,
                });
            }
        };
        if observed {
            self.metrics.cycle(account, &trace);
        }
        for call in trace.rounds.iter().flat_map(|r| &r.calls) {
            if let Some(error) = call.error.as_ref().filter(|_| !call.rejected) {
                // An app that cannot decide yet says why itself, once per streak.
                if call.undecided {
                    tracing::debug!(request_id = %request_id(), account = %account.name, app = %call.app, %error, "session app cannot decide yet");
                    continue;
                }
                tracing::warn!(request_id = %request_id(), account = %account.name, app = %call.app, %error, "session app failed; its outputs are unchanged");
            }
        }
        if trace.loop_warning {
            tracing::warn!(
                request_id = %request_id(),
                account = %account.name,
                session = %session.id,
                rounds = trace.rounds.len(),
                "transform cycle stopped at max_rounds with keys still changing"
            );
        }
        if observed && !trace.rounds.is_empty() {
            tracing::debug!(request_id = %request_id(), session = %session.id, trace = %serde_json::to_string(&trace.redacted()).unwrap_or_default(), "transform cycle");
        }
        if session.debug {
            keep_trace(session, &trace, created, now);
        }
        if !trace.unrecorded.is_empty() {
            let mut restore = Changes::new();
            for key in trace.unrecorded {
                match before.and_then(|b| b.get(&key.namespace, &key.name)) {
                    Some(value) => restore.set(key, value.clone()),
                    None => restore.remove(key),
                }
            }
            session.apply_owned(restore);
        }
        Ok(trace.changed)
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis() as u64
    }

    /// How long the record that ends a session at `now` is kept at least: past the expiry of
    /// every token of the session (a token is valid for the session lifetime from its issue,
    /// and a token of a session never saved would otherwise derive it again once the record
    /// is purged), with a margin for the clocks of other processes.
    fn ended_kept_until(&self, now: u64) -> u64 {
        now.saturating_add(self.ttl_ms())
            .saturating_add(CLOCK_MARGIN.as_millis() as u64)
    }

    /// A new token for session `id`, saved or (`unsaved`) not, and its digest as a record keeps
    /// it: the one place session tokens are signed.
    fn token(
        &self,
        account: &Account,
        id: SessionId,
        unsaved: bool,
        now: u64,
    ) -> (String, [u8; 16]) {
        self.keys.issue_for(
            id,
            (&account.name, &account.id),
            now / 1000,
            self.ttl.as_secs(),
            unsaved,
        )
    }

    /// The token of `session`, about to be saved under its id (created, or rotated to a new
    /// identity; see also [`SessionService::put`]): its digest goes into the record, so that a
    /// process that has not seen the token takes it without a signature check (see
    /// [`crate::token`]).
    pub(super) fn token_saved_with(
        &self,
        account: &Account,
        session: &mut Session,
        now: u64,
    ) -> String {
        let (token, digest) = self.token(account, session.id, false, now);
        session.token_digest = Some(digest);
        token
    }

    /// The answer with a new token for `snapshot`.
    fn issued(
        &self,
        account: &Account,
        snapshot: Arc<Snapshot>,
        created: bool,
        now: u64,
    ) -> Outcome {
        let (token, _) = self.token(account, snapshot.id(), !snapshot.stored(), now);
        Outcome {
            snapshot,
            created,
            token,
        }
    }

    /// The answer for a loaded session: with the request's own token, unless it has less than
    /// half of its lifetime left, named the session's predecessor, or was issued before the
    /// session was first saved (a token says whether its session was saved: see
    /// [`SessionService::create`]).
    fn kept(
        &self,
        account: &Account,
        snapshot: Arc<Snapshot>,
        token: Option<(&str, Verified)>,
        now: u64,
    ) -> Outcome {
        match token {
            Some((token, verified))
                if !verified.needs_renewal(now / 1000) && verified.unsaved != snapshot.stored() =>
            {
                Outcome {
                    snapshot,
                    created: false,
                    token: token.to_owned(),
                }
            }
            _ => self.issued(account, snapshot, false, now),
        }
    }

    /// A new session with `edit` applied, after the create cycle.
    ///
    /// A session that holds only what the create cycle derives (a token-less request that
    /// changes nothing: a crawler's page view, a visitor's first) is not written when the
    /// account's create cycle calls built-in apps only ([`Account::lazy_creates`]): its token
    /// says so, and until a request changes it, every request presenting the token gets it
    /// derived again, identically (the same id, so the same cart). Its first change saves it
    /// and answers with a token of a saved session.
    async fn create(
        &self,
        account: &Account,
        edit: &Edit,
        now: u64,
    ) -> Result<Outcome, SessionError> {
        let mut session = self
            .build(account, SessionId::random(), edit, now, true)
            .await?;
        if account.lazy_creates && edit.is_empty() {
            self.metrics.created.inc();
            self.metrics.unsaved.inc();
            return Ok(self.issued(account, Arc::new(Snapshot::new(session)), true, now));
        }
        let token = self.token_saved_with(account, &mut session, now);
        let record = record_of(&session, None, self.fast_paths);
        let snapshot = self.repo.save(record, None, None).await?;
        self.metrics.created.inc();
        Ok(Outcome {
            snapshot,
            created: true,
            token,
        })
    }

    /// GET at `now` (ms): the session the token names, or a new one when there is none. Never
    /// changes an existing session.
    pub async fn read(
        &self,
        account: &Account,
        tokens: &[&str],
        edit: &Edit,
        now: u64,
    ) -> Result<Outcome, SessionError> {
        match self.load(account, tokens, edit, now, Purpose::Read).await? {
            Some(Loaded {
                snapshot, token, ..
            }) => Ok(self.kept(account, snapshot, token, now)),
            None => self.create(account, edit, now).await,
        }
    }

    /// POST/PATCH at `now` (ms): applies `edit` to the session the token names and runs the
    /// cycle (compare-and-swap, retried on conflict), or creates a session with it.
    pub async fn edit(
        &self,
        account: &Account,
        tokens: &[&str],
        edit: &Edit,
        now: u64,
    ) -> Result<Outcome, SessionError> {
        // Taken after a first conflict: later attempts queue behind the other edits of the
        // same session instead of racing them again.
        let mut turn: Option<Turn<'_>> = None;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                self.metrics.retries.inc();
            }
            let Some(Loaded {
                snapshot,
                mut token,
                fresh,
            }) = self.load(account, tokens, edit, now, Purpose::Edit).await?
            else {
                return self.create(account, edit, now).await;
            };
            let mut id = snapshot.id();
            let mut attempt = self.attempt(account, snapshot, edit, now).await;
            let proven = matches!(
                attempt,
                Ok(Attempt::Kept(_) | Attempt::Reissued(..) | Attempt::Lost)
                    | Err(SessionError::Unavailable(_))
            );
            if !fresh && !proven {
                // Nothing was saved, so nothing proved the base current: the answer (the
                // session unchanged, or a refusal) must come from the stored version.
                let Some(loaded) = self.load(account, tokens, edit, now, Purpose::Read).await?
                else {
                    return self.create(account, edit, now).await;
                };
                (id, token) = (loaded.snapshot.id(), loaded.token);
                attempt = self.attempt(account, loaded.snapshot, edit, now).await;
            }
            match attempt? {
                Attempt::Kept(snapshot) | Attempt::Unchanged(snapshot) => {
                    return Ok(self.kept(account, snapshot, token, now))
                }
                Attempt::Reissued(snapshot, token) => {
                    return Ok(Outcome {
                        snapshot,
                        created: false,
                        token,
                    })
                }
                Attempt::Lost => {
                    self.metrics.conflicts.inc();
                    if turn.is_none() {
                        turn = Some(self.turns.wait(id).await);
                    }
                }
            }
        }
        Err(SessionError::Conflict)
    }

    /// One attempt of `edit` on `loaded`: planned, then made in place or by the full path.
    async fn attempt(
        &self,
        account: &Account,
        loaded: Arc<Snapshot>,
        edit: &Edit,
        now: u64,
    ) -> Result<Attempt, SessionError> {
        Ok(match self.plan(account, &loaded, edit, now)? {
            Plan::Unchanged => Attempt::Unchanged(loaded),
            Plan::InPlace(record) => self.put(account, record, &loaded, now).await?,
            Plan::Full => self.edit_full(account, loaded, edit, now).await?,
        })
    }

    /// The full path of an edit: decode the session, apply the request's changes, run the
    /// cycle, and save what changed (under a new id when the visitor's identity changed).
    async fn edit_full(
        &self,
        account: &Account,
        loaded: Arc<Snapshot>,
        edit: &Edit,
        now: u64,
    ) -> Result<Attempt, SessionError> {
        let before = loaded.session()?;
        let mut session = before.clone();
        let delta = session.apply_owned(edit.changes_for(&session));
        self.check_public_size(before, &session)?;
        let changed = self
            .settle(
                account,
                &mut session,
                Some(before),
                delta,
                (false, true),
                now,
            )
            .await?;
        if session.namespaces == before.namespaces && session.traces == before.traces {
            return Ok(Attempt::Unchanged(loaded));
        }
        session.version = before.version + 1;
        session.updated_at = now;
        session.expires_at = now.saturating_add(self.ttl_ms());
        if identity_changed(before, &session) {
            return self
                .rotate(account, (&loaded, &changed), session, now)
                .await;
        }
        let record = record_of(&session, Some((&loaded, &changed)), self.fast_paths);
        self.put(account, record, &loaded, now).await
    }

    /// Saves `record`, the next version of `loaded`, if `loaded` is still the stored version.
    /// A session saved for the first time (created without a write) is answered with a new
    /// token, signed first so that its record keeps the token's digest.
    async fn put(
        &self,
        account: &Account,
        record: Record,
        loaded: &Arc<Snapshot>,
        now: u64,
    ) -> Result<Attempt, SessionError> {
        let (record, token) = if loaded.stored() {
            (record, None)
        } else {
            let (token, digest) = self.token(account, record.id(), false, now);
            (record.with_token_digest(digest), Some(token))
        };
        match self
            .repo
            .save(record, loaded.expected(), Some(loaded))
            .await
        {
            Ok(snapshot) => Ok(match token {
                Some(token) => Attempt::Reissued(snapshot, token),
                None => Attempt::Kept(snapshot),
            }),
            Err(StoreError::Conflict) => Ok(Attempt::Lost),
            Err(e) => Err(e.into()),
        }
    }

    /// DELETE: ends the session the token names (its token stops working) and starts a fresh
    /// one carrying over only its `keepAlive` values. The old session is deactivated first, so
    /// an answer always means the old token is dead.
    pub async fn reset(
        &self,
        account: &Account,
        tokens: &[&str],
        now: u64,
    ) -> Result<Outcome, SessionError> {
        let mut carry = Edit::default();
        let mut ended = false;
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                self.metrics.retries.inc();
            }
            let Some(Loaded { snapshot, .. }) = self
                .load(account, tokens, &Edit::default(), now, Purpose::Read)
                .await?
            else {
                ended = true;
                break;
            };
            carry.public = snapshot.session()?.kept_alive();
            let old = snapshot.record();
            let record = old.ended(old.version() + 1, now, None, self.ended_kept_until(now));
            match self.repo.save(record, snapshot.expected(), None).await {
                Ok(_) => {
                    ended = true;
                    break;
                }
                Err(StoreError::Conflict) => self.metrics.conflicts.inc(),
                Err(e) => return Err(e.into()),
            }
        }
        if !ended {
            return Err(SessionError::Conflict);
        }
        self.create(account, &carry, now).await
    }

    /// Session `id` of `account` as an operator sees it (the admin API): every namespace, the
    /// values of the secret one (identity cookies) redacted, with its state and times; `None`
    /// when there is no such live session. Read from the store itself.
    pub async fn inspect(
        &self,
        account: &Account,
        id: SessionId,
        now: u64,
    ) -> Result<Option<serde_json::Value>, SessionError> {
        let Some(snapshot) = self.repo.load(id, now).await? else {
            return Ok(None);
        };
        let record = snapshot.record();
        // A session never saved is not there for an operator, cached copy or not.
        if record.account() != account.name || !record.active() || !snapshot.stored() {
            return Ok(None);
        }
        Ok(Some(inspected(snapshot.session()?)))
    }

    /// Switches the `debug` flag of session `id` of `account` (compare-and-swap, retried on
    /// conflict); the session as [`SessionService::inspect`] shows it, `None` when there is no
    /// such live session. Its lifetime and data are unchanged.
    pub async fn set_debug(
        &self,
        account: &Account,
        id: SessionId,
        debug: bool,
        now: u64,
    ) -> Result<Option<serde_json::Value>, SessionError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(snapshot) = self.repo.load(id, now).await? else {
                return Ok(None);
            };
            let record = snapshot.record();
            if record.account() != account.name || !record.active() || !snapshot.stored() {
                return Ok(None);
            }
            let before = snapshot.session()?;
            if before.debug == debug {
                return Ok(Some(inspected(before)));
            }
            let mut session = before.clone();
            session.debug = debug;
            if !debug {
                session.traces.clear();
            }
            session.version = before.version + 1;
            session.updated_at = now;
            let record = record_of(&session, None, self.fast_paths);
            match self.repo.save(record, Some(before.version), None).await {
                Ok(_) => return Ok(Some(inspected(&session))),
                Err(StoreError::Conflict) => self.metrics.conflicts.inc(),
                Err(e) => return Err(e.into()),
            }
        }
        Err(SessionError::Conflict)
    }

    /// The session a segment is derived from: the token's session, or the session a create
    /// would make (nothing is stored).
    pub async fn preview(
        &self,
        account: &Account,
        tokens: &[&str],
        edit: &Edit,
        now: u64,
    ) -> Result<Arc<Snapshot>, SessionError> {
        Ok(
            match self.load(account, tokens, edit, now, Purpose::Read).await? {
                Some(Loaded { snapshot, .. }) => snapshot,
                None => Arc::new(Snapshot::new(
                    self.build(account, SessionId::random(), edit, now, true)
                        .await?,
                )),
            },
        )
    }
}
