//! The create and transform cycles: apps re-run round after round until nothing they watch
//! changes.
//!
//! A round calls, concurrently, every app watching a key that changed in the previous round
//! (the request's own changes for round 1) and, on creation, every `runOnCreate` app. Answers are
//! merged in installation order, whatever order they arrive in, so the result is deterministic:
//! an omitted key is unchanged, `null` deletes, undeclared outputs are dropped, and the app
//! installed later wins a same-key write. The cycle stops when a round changes nothing, or at
//! `max_rounds` with a loop warning; it never hangs, because every call has its own timeout.
//!
//! A conditional app (`when`) is called only while all its conditions hold; a change of a
//! condition's key re-evaluates it in the next round, and in a round where it would be called
//! but its condition does not hold, its declared outputs that are set are removed (merged in its
//! place in the installation order), so an app's outputs exist only while its condition holds.
//!
//! A 401/403 rejection from an app is that app's verdict on its inputs. If a later round calls
//! the same app again (its inputs changed, e.g. the profile arrived) its new answer replaces the
//! verdict; a rejection still standing at the end fails the whole request.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::{AppIndex, AppSpec, KeyPattern};
use crate::items::SECRET_NAMESPACE;
use crate::session::{Changes, Delta, Key, Namespace, Namespaces, Session, SessionId};
use crate::trace::{AppCall, Round, Skipped, Trace};

/// A boxed, sendable future (what [`Transformer::transform`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One call of an app.
#[derive(Debug)]
pub struct Call<'a> {
    /// The app's declaration.
    pub app: &'a AppSpec,
    /// The account the session belongs to.
    pub account: &'a str,
    /// The session's id: what an app derives from it is the same every time the session is
    /// derived (a session is derived again until it is first saved).
    pub session: SessionId,
    /// The app's declared inputs that are set, and nothing else.
    pub input: Namespaces,
    /// Every key changed so far in this cycle (the request's changes and earlier rounds).
    pub changed: &'a Delta,
}

/// Why an app call produced no output.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AppError {
    /// The app did not answer within its timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connection error, non-2xx answer, or malformed answer.
    #[error("{0}")]
    Failed(String),
    /// The app cannot decide on some of its inputs yet: something it depends on is out of
    /// reach (an identity provider's keys, say). What it could decide (`decided`) is merged as
    /// an answer; the outputs that depend on the `pending` inputs stay unchanged, and the
    /// request's changes of those inputs (cookies) are not recorded ([`Trace::unrecorded`]),
    /// so the next request sending them asks it again.
    #[error("cannot decide yet: {why}")]
    Undecided {
        /// Why.
        why: String,
        /// The outputs it could decide.
        decided: Changes,
        /// The inputs it could not decide on.
        pending: Vec<Key>,
    },
    /// The app refused the request (401/403): it fails the whole request with this error.
    #[error("rejected with {status}: {kind}: {message}")]
    Rejected {
        /// 401 or 403.
        status: u16,
        /// The error's `type`.
        kind: String,
        /// The error's `message`.
        message: String,
    },
}

/// A session app: reads its declared inputs, answers some of its declared outputs.
pub trait Transformer: Send + Sync {
    /// Computes the app's outputs: `Some` writes a value, `None` deletes the key, keys not in
    /// the answer stay unchanged.
    fn transform<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Changes, AppError>>;
}

/// The installed apps of an account: declarations (indexed), implementations, timeouts.
#[derive(Clone, Default)]
pub struct Apps {
    index: AppIndex,
    transformers: Vec<Arc<dyn Transformer>>,
    timeouts: Vec<Duration>,
}

impl std::fmt::Debug for Apps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apps")
            .field(
                "apps",
                &self
                    .index
                    .apps()
                    .iter()
                    .map(|a| &a.name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Apps {
    /// Installs apps in precedence order (a later app wins a same-key write).
    pub fn new(apps: Vec<(AppSpec, Arc<dyn Transformer>, Duration)>) -> Self {
        let mut specs = Vec::with_capacity(apps.len());
        let mut transformers = Vec::with_capacity(apps.len());
        let mut timeouts = Vec::with_capacity(apps.len());
        for (spec, t, timeout) in apps {
            specs.push(spec);
            transformers.push(t);
            timeouts.push(timeout);
        }
        Apps {
            index: AppIndex::new(specs),
            transformers,
            timeouts,
        }
    }

    /// The declarations, indexed by watched key.
    pub fn index(&self) -> &AppIndex {
        &self.index
    }
}

/// A cycle that failed because an app rejected the request.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// The rejecting app.
    pub app: String,
    /// 401 or 403.
    pub status: u16,
    /// The error's `type`.
    pub kind: String,
    /// The error's `message`.
    pub message: String,
    /// What the cycle did up to the end.
    pub trace: Trace,
}

/// The declared inputs of `app` that are set in `namespaces`.
pub fn inputs_of(app: &AppSpec, namespaces: &Namespaces) -> Namespaces {
    let mut out = Namespaces::new();
    for (ns, patterns) in &app.input {
        let Some(values) = namespaces.get(ns) else {
            continue;
        };
        let mut picked = Namespace::new();
        for p in patterns {
            match p {
                KeyPattern::Exact(name) => {
                    if let Some(v) = values.get(name) {
                        picked.insert(name.clone(), v.clone());
                    }
                }
                KeyPattern::Regex { .. } => picked.extend(
                    values
                        .iter()
                        .filter(|(k, _)| p.matches(k))
                        .map(|(k, v)| (k.clone(), v.clone())),
                ),
            }
        }
        if !picked.is_empty() {
            out.insert(ns.clone(), Arc::new(picked));
        }
    }
    out
}

/// Runs the cycle on `session`, starting from the keys the request changed (`changed`).
/// On creation (`created`), the `runOnCreate` apps join round 1. Returns the trace; the
/// session holds the last merged state (also when the round limit was reached).
pub async fn run(
    apps: &Apps,
    account: &str,
    session: &mut Session,
    changed: Delta,
    created: bool,
    max_rounds: u32,
) -> Result<Trace, Rejection> {
    run_with(apps, account, session, changed, created, max_rounds, true).await
}

/// [`run`], keeping each call's inputs and outputs and each round's changed keys in the trace
/// only when `detail` is set (a debug session, a debug log): without them the cycle copies
/// nothing for the trace ([`Trace::changed`] is always there).
pub async fn run_with(
    apps: &Apps,
    account: &str,
    session: &mut Session,
    changed: Delta,
    created: bool,
    max_rounds: u32,
    detail: bool,
) -> Result<Trace, Rejection> {
    let started = Instant::now();
    let mut trace = Trace::default();
    let mut all_changed = changed.clone();
    // The request's cookie changes: an app that cannot decide on them leaves them unrecorded.
    let request_cookies: Vec<Key> = changed
        .iter()
        .filter(|k| k.namespace == SECRET_NAMESPACE)
        .cloned()
        .collect();
    let mut delta = changed;
    // Standing rejections, by app position: cleared when the app answers again.
    let mut rejected: BTreeMap<usize, (u16, String, String)> = BTreeMap::new();
    let mut round_no = 0u32;
    loop {
        let mut callees = apps.index.affected(&delta);
        if round_no == 0 && created {
            callees.extend(
                apps.index
                    .apps()
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a.run_on_create)
                    .map(|(i, _)| i),
            );
        }
        if callees.is_empty() {
            break;
        }
        if round_no >= max_rounds {
            trace.loop_warning = true;
            break;
        }
        round_no += 1;
        // Conditional apps whose condition does not hold are not called: why, by position.
        let failing: BTreeMap<usize, String> = callees
            .iter()
            .filter_map(|&i| {
                let spec = &apps.index.apps()[i];
                spec.failing_condition(&session.namespaces)
                    .map(|c| (i, c.describe()))
            })
            .collect();
        let calls = callees
            .iter()
            .filter(|i| !failing.contains_key(i))
            .map(|&i| {
                let spec = &apps.index.apps()[i];
                let input = inputs_of(spec, &session.namespaces);
                let (input, kept) = if detail {
                    (input.clone(), input)
                } else {
                    (input, Namespaces::new())
                };
                let call = Call {
                    app: spec,
                    account,
                    session: session.id,
                    input,
                    changed: &all_changed,
                };
                let timeout = apps.timeouts[i];
                let transformer = &apps.transformers[i];
                async move {
                    let t0 = Instant::now();
                    let result =
                        match tokio::time::timeout(timeout, transformer.transform(call)).await {
                            Ok(r) => r,
                            Err(_) => Err(AppError::Timeout(timeout)),
                        };
                    (i, kept, result, t0.elapsed())
                }
            });
        let mut answers = futures::future::join_all(calls)
            .await
            .into_iter()
            .peekable();
        let mut m = Merge {
            merged: Changes::new(),
            round: Round {
                number: round_no,
                ..Round::default()
            },
            trace: &mut trace,
            rejected: &mut rejected,
            request_cookies: &request_cookies,
            detail,
        };
        for (&i, condition) in &failing {
            // Its outputs that are set go, merged in its place in the installation order.
            while let Some(answer) = answers.next_if(|a| a.0 < i) {
                m.answer(apps, answer);
            }
            m.rejected.remove(&i);
            let removed = set_outputs(&apps.index.apps()[i], &session.namespaces);
            for key in &removed {
                m.merged.remove(key.clone());
            }
            m.round.skipped.push(Skipped {
                app: apps.index.apps()[i].name.clone(),
                condition: condition.clone(),
                removed,
            });
        }
        for answer in answers {
            m.answer(apps, answer);
        }
        let (merged, mut round) = (m.merged, m.round);
        delta = session.apply_owned(merged);
        if detail {
            round.changed = delta.iter().cloned().collect();
        }
        all_changed.extend(delta.iter().cloned());
        trace.rounds.push(round);
    }
    trace.micros = started.elapsed().as_micros() as u64;
    trace.changed = all_changed;
    if let Some((&i, (status, kind, message))) = rejected.iter().next_back() {
        return Err(Rejection {
            app: apps.index.apps()[i].name.clone(),
            status: *status,
            kind: kind.clone(),
            message: message.clone(),
            trace,
        });
    }
    Ok(trace)
}

/// The declared outputs of `app` that are set in `namespaces`.
fn set_outputs(app: &AppSpec, namespaces: &Namespaces) -> Vec<Key> {
    app.output
        .iter()
        .filter_map(|(ns, keys)| namespaces.get(ns).map(|values| (ns, keys, values)))
        .flat_map(|(ns, keys, values)| {
            keys.iter()
                .filter(|k| values.get(k.as_str()).is_some())
                .map(move |k| Key::new(ns.as_str(), k.as_str()))
        })
        .collect()
}

/// One app's answer in a round: its position, what it was sent (kept for the trace), what it
/// answered, and how long it took.
type Answer = (usize, Namespaces, Result<Changes, AppError>, Duration);

/// Where one round's answers are merged.
struct Merge<'a> {
    merged: Changes,
    round: Round,
    trace: &'a mut Trace,
    /// Standing rejections, by app position.
    rejected: &'a mut BTreeMap<usize, (u16, String, String)>,
    request_cookies: &'a [Key],
    detail: bool,
}

impl Merge<'_> {
    /// Merges one app's answer into the round.
    fn answer(&mut self, apps: &Apps, (i, input, result, elapsed): Answer) {
        let spec = &apps.index.apps()[i];
        let mut call = AppCall {
            app: spec.name.clone(),
            input,
            output: Vec::new(),
            dropped: Vec::new(),
            error: None,
            rejected: false,
            rejection_status: None,
            timed_out: false,
            undecided: false,
            micros: elapsed.as_micros() as u64,
        };
        let result = match result {
            Err(AppError::Undecided {
                why,
                decided,
                pending,
            }) => {
                call.undecided = true;
                call.error = Some(format!("cannot decide yet: {why}"));
                for key in self.request_cookies.iter().filter(|k| pending.contains(k)) {
                    if !self.trace.unrecorded.contains(key) {
                        self.trace.unrecorded.push(key.clone());
                    }
                }
                Ok(decided)
            }
            other => other,
        };
        match result {
            Ok(output) => {
                self.rejected.remove(&i);
                for (key, value) in output {
                    if !spec.writes(&key) {
                        call.dropped.push(key);
                        continue;
                    }
                    if self.detail {
                        call.output.push((key.clone(), value.clone()));
                    }
                    match value {
                        Some(v) => self.merged.set(key, v),
                        None => self.merged.remove(key),
                    }
                }
            }
            Err(AppError::Rejected {
                status,
                kind,
                message,
            }) => {
                call.error = Some(format!("rejected with {status}: {kind}: {message}"));
                call.rejected = true;
                call.rejection_status = Some(status);
                self.rejected.insert(i, (status, kind, message));
            }
            Err(e) => {
                call.timed_out = matches!(e, AppError::Timeout(_));
                call.error = Some(e.to_string());
            }
        }
        self.round.calls.push(call);
    }
}

/// Keys that identify the visitor: when one changes, the session gets a new id.
pub const IDENTITY_KEYS: [(&str, &str); 3] = [
    ("authentication", "storeUserId"),
    ("authentication", "adminUserId"),
    ("impersonate", "storeUserId"),
];

/// Whether the visitor's identity differs between two states of a session.
pub fn identity_changed(before: &Session, after: &Session) -> bool {
    IDENTITY_KEYS
        .iter()
        .any(|(ns, k)| before.get(ns, k) != after.get(ns, k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Value;
    use serde_json::json;
    use std::sync::Mutex;

    type Logic = dyn Fn(&Namespaces) -> Result<Changes, AppError> + Send + Sync;

    /// A test app: a function of its input, optionally slow.
    struct Fake {
        logic: Box<Logic>,
        delay: Duration,
        seen: Mutex<Vec<Namespaces>>,
    }

    impl Transformer for Fake {
        fn transform<'a>(&'a self, call: Call<'a>) -> BoxFuture<'a, Result<Changes, AppError>> {
            Box::pin(async move {
                self.seen.lock().unwrap().push(call.input.clone());
                if !self.delay.is_zero() {
                    tokio::time::sleep(self.delay).await;
                }
                (self.logic)(&call.input)
            })
        }
    }

    fn spec(name: &str, decl: serde_json::Value) -> AppSpec {
        AppSpec::from_declaration(name, &decl).unwrap()
    }

    fn writes(pairs: &[(&str, &str, &str)]) -> Changes {
        let mut c = Changes::new();
        for (ns, k, v) in pairs {
            c.set(Key::new(*ns, *k), Value::new(*v));
        }
        c
    }

    fn fake(
        logic: impl Fn(&Namespaces) -> Result<Changes, AppError> + Send + Sync + 'static,
    ) -> Arc<Fake> {
        Arc::new(Fake {
            logic: Box::new(logic),
            delay: Duration::ZERO,
            seen: Mutex::new(Vec::new()),
        })
    }

    fn slow(
        delay: Duration,
        logic: impl Fn(&Namespaces) -> Result<Changes, AppError> + Send + Sync + 'static,
    ) -> Arc<Fake> {
        Arc::new(Fake {
            logic: Box::new(logic),
            delay,
            seen: Mutex::new(Vec::new()),
        })
    }

    fn install(apps: Vec<(AppSpec, Arc<Fake>)>) -> Apps {
        Apps::new(
            apps.into_iter()
                .map(|(s, f)| (s, f as Arc<dyn Transformer>, Duration::from_millis(100)))
                .collect(),
        )
    }

    fn text(ns: &Namespaces, n: &str, k: &str) -> Option<String> {
        ns.get(n)?.get(k)?.as_str().map(str::to_owned)
    }

    fn session_with(pairs: &[(&str, &str, &str)]) -> (Session, Delta) {
        let mut s = Session::new("demo", 0, 1000);
        let delta = s.apply(&writes(pairs));
        (s, delta)
    }

    #[tokio::test]
    async fn the_seeds_worked_example() {
        // X -> A -> Y; Y -> B -> Z and Y -> C; Z -> C. C runs in rounds 2 and 3.
        let a = fake(|_| Ok(writes(&[("n", "Y", "y")])));
        let b = fake(|_| Ok(writes(&[("n", "Z", "z")])));
        let c = fake(|i| Ok(writes(&[("n", "W", &format!("{:?}", text(i, "n", "Z")))])));
        let apps = install(vec![
            (
                spec("A", json!({"input": {"n": ["X"]}, "output": {"n": ["Y"]}})),
                a.clone(),
            ),
            (
                spec("B", json!({"input": {"n": ["Y"]}, "output": {"n": ["Z"]}})),
                b.clone(),
            ),
            (
                spec(
                    "C",
                    json!({"input": {"n": ["Y", "Z"]}, "output": {"n": ["W"]}}),
                ),
                c.clone(),
            ),
        ]);
        let (mut s, delta) = session_with(&[("n", "X", "x")]);
        let trace = run(&apps, "demo", &mut s, delta, false, 10).await.unwrap();
        assert_eq!(
            trace.calls_by_round(),
            vec![vec!["A"], vec!["B", "C"], vec!["C"]]
        );
        assert!(!trace.loop_warning);
        assert_eq!(s.get_str("n", "W"), Some("Some(\"z\")"));
        // C saw Y only in round 2, and Y and Z in round 3.
        let seen = c.seen.lock().unwrap();
        assert_eq!(text(&seen[0], "n", "Z"), None);
        assert_eq!(text(&seen[1], "n", "Z"), Some("z".into()));
    }

    #[tokio::test]
    async fn a_conditional_app_runs_only_while_its_condition_holds() {
        // `auth` sets profile.isAuthenticated from public.user; `b2b` (runOnCreate, when
        // authenticated) derives a contract from profile.email, which `auth` also writes.
        let auth = fake(|i| {
            let mut c = Changes::new();
            match text(i, "public", "user") {
                Some(user) => {
                    c.set(Key::new("profile", "isAuthenticated"), Value::new("true"));
                    c.set(Key::new("profile", "email"), Value::new(user));
                }
                None => {
                    c.set(Key::new("profile", "isAuthenticated"), Value::new("false"));
                    c.remove(Key::new("profile", "email"));
                }
            }
            Ok(c)
        });
        let b2b = fake(|i| {
            let email = text(i, "profile", "email").unwrap_or_default();
            Ok(writes(&[(
                "b2b",
                "contract",
                &format!("contract of {email}"),
            )]))
        });
        let apps = install(vec![
            (
                spec(
                    "auth",
                    json!({"input": {"public": ["user"]},
                           "output": {"profile": ["isAuthenticated", "email"]}}),
                ),
                auth,
            ),
            (
                spec(
                    "b2b",
                    json!({"input": {"profile": ["email"]}, "output": {"b2b": ["contract"]},
                           "runOnCreate": true,
                           "when": {"profile.isAuthenticated": "true"}}),
                ),
                b2b.clone(),
            ),
        ]);
        // Created anonymous: b2b is not called, not even on create.
        let mut s = Session::new("demo", 0, 1000);
        let trace = run(&apps, "demo", &mut s, Delta::default(), true, 10)
            .await
            .unwrap();
        assert!(b2b.seen.lock().unwrap().is_empty());
        assert_eq!(trace.rounds[0].skipped.len(), 1);
        assert_eq!(
            trace.rounds[0].skipped[0].condition,
            "profile.isAuthenticated = \"true\""
        );
        assert!(trace.rounds[0].skipped[0].removed.is_empty());
        assert_eq!(s.get_str("b2b", "contract"), None);
        // Logged in: the condition holds once auth answered, and b2b runs in the next round,
        // sent only its declared inputs (not the condition's key).
        let delta = s.apply(&writes(&[("public", "user", "alice@example.com")]));
        let trace = run(&apps, "demo", &mut s, delta, false, 10).await.unwrap();
        assert_eq!(trace.calls_by_round(), vec![vec!["auth"], vec!["b2b"]]);
        assert_eq!(
            s.get_str("b2b", "contract"),
            Some("contract of alice@example.com")
        );
        let seen = b2b.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert!(seen[0]
            .get("profile")
            .unwrap()
            .get("isAuthenticated")
            .is_none());
        // Logged out: b2b is not called, and its output is removed in that round.
        let delta = s.apply(&{
            let mut c = Changes::new();
            c.remove(Key::new("public", "user"));
            c
        });
        let trace = run(&apps, "demo", &mut s, delta, false, 10).await.unwrap();
        assert_eq!(trace.calls_by_round(), vec![vec!["auth"], vec![]]);
        let skipped = &trace.rounds[1].skipped;
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].app, "b2b");
        assert_eq!(skipped[0].removed, vec![Key::new("b2b", "contract")]);
        assert_eq!(trace.rounds.len(), 2, "the removal triggers nothing more");
        assert_eq!(s.get_str("b2b", "contract"), None);
        assert_eq!(b2b.seen.lock().unwrap().len(), 1, "not called again");
        let json = serde_json::to_value(&trace).unwrap();
        assert_eq!(
            json["rounds"][1]["skipped"][0]["removed"],
            json!(["b2b.contract"])
        );
    }

    #[tokio::test]
    async fn without_detail_the_outcome_is_the_same_and_the_trace_has_no_values() {
        let apps = || {
            install(vec![
                (
                    spec("A", json!({"input": {"n": ["X"]}, "output": {"n": ["Y"]}})),
                    fake(|_| Ok(writes(&[("n", "Y", "y"), ("n", "undeclared", "1")]))),
                ),
                (
                    spec("B", json!({"input": {"n": ["Y"]}, "output": {"n": ["Z"]}})),
                    fake(|i| Ok(writes(&[("n", "Z", &format!("{:?}", text(i, "n", "Y")))]))),
                ),
            ])
        };
        let (mut full, delta) = session_with(&[("n", "X", "x")]);
        let (mut lean, _) = session_with(&[("n", "X", "x")]);
        lean.id = full.id;
        let detailed = run(&apps(), "demo", &mut full, delta.clone(), false, 10)
            .await
            .unwrap();
        let plain = run_with(&apps(), "demo", &mut lean, delta, false, 10, false)
            .await
            .unwrap();
        assert_eq!(lean, full);
        assert_eq!(lean.get_str("n", "Z"), Some("Some(\"y\")"));
        assert_eq!(plain.calls_by_round(), detailed.calls_by_round());
        // Each round's keys only with detail; all of them always.
        let changed = |t: &Trace| {
            t.rounds
                .iter()
                .flat_map(|r| r.changed.clone())
                .collect::<Vec<_>>()
        };
        assert!(changed(&plain).is_empty());
        assert_eq!(changed(&detailed), [Key::new("n", "Y"), Key::new("n", "Z")]);
        assert_eq!(plain.changed, detailed.changed);
        assert_eq!(
            plain.changed.into_iter().collect::<Vec<_>>(),
            [Key::new("n", "X"), Key::new("n", "Y"), Key::new("n", "Z")]
        );
        let first = &plain.rounds[0].calls[0];
        assert!(first.input.is_empty() && first.output.is_empty());
        assert_eq!(first.dropped, vec![Key::new("n", "undeclared")]);
        let first = &detailed.rounds[0].calls[0];
        assert!(!first.input.is_empty() && first.output.len() == 1);
    }

    #[tokio::test]
    async fn create_calls_run_on_create_apps_with_what_is_set() {
        let on_create = fake(|_| Ok(writes(&[("store", "channel", "1")])));
        let other = fake(|_| Ok(writes(&[("x", "y", "1")])));
        let apps = install(vec![
            (
                spec(
                    "store",
                    json!({"runOnCreate": true, "input": {"public": ["sc"]}, "output": {"store": ["channel"]}}),
                ),
                on_create.clone(),
            ),
            (
                spec(
                    "other",
                    json!({"input": {"public": ["q"]}, "output": {"x": ["y"]}}),
                ),
                other.clone(),
            ),
        ]);
        let mut s = Session::new("demo", 0, 1000);
        let trace = run(&apps, "demo", &mut s, Delta::new(), true, 10)
            .await
            .unwrap();
        assert_eq!(trace.calls_by_round(), vec![vec!["store"]]);
        assert_eq!(
            on_create.seen.lock().unwrap()[0],
            Namespaces::new(),
            "a bare create sends {{}}"
        );
        assert!(other.seen.lock().unwrap().is_empty());
        assert_eq!(s.get_str("store", "channel"), Some("1"));
        // Not a create: runOnCreate apps are not called without a watched change.
        let trace = run(&apps, "demo", &mut s, Delta::new(), false, 10)
            .await
            .unwrap();
        assert!(trace.rounds.is_empty());
    }

    #[tokio::test]
    async fn an_app_watching_its_own_output_settles() {
        let app = fake(|i| {
            let n: u32 = text(i, "n", "count")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            Ok(writes(&[
                ("n", "count", &n.clamp(1, 3).to_string()),
                ("n", "done", "yes"),
            ]))
        });
        let apps = install(vec![(
            spec(
                "self",
                json!({"input": {"n": ["count", "go"]}, "output": {"n": ["count", "done"]}}),
            ),
            app,
        )]);
        let (mut s, delta) = session_with(&[("n", "go", "1")]);
        let trace = run(&apps, "demo", &mut s, delta, false, 10).await.unwrap();
        assert_eq!(trace.rounds.len(), 2, "round 2 changes nothing");
        assert!(!trace.loop_warning);
        assert_eq!(s.get_str("n", "count"), Some("1"));
    }

    #[tokio::test]
    async fn apps_feeding_each_other_stop_at_max_rounds() {
        let bump = |from: &'static str, to: &'static str| {
            fake(move |i| {
                let n: u64 = text(i, "n", from).and_then(|c| c.parse().ok()).unwrap_or(0);
                Ok(writes(&[("n", to, &(n + 1).to_string())]))
            })
        };
        let apps = install(vec![
            (
                spec(
                    "ping",
                    json!({"input": {"n": ["a"]}, "output": {"n": ["b"]}}),
                ),
                bump("a", "b"),
            ),
            (
                spec(
                    "pong",
                    json!({"input": {"n": ["b"]}, "output": {"n": ["a"]}}),
                ),
                bump("b", "a"),
            ),
        ]);
        let (mut s, delta) = session_with(&[("n", "a", "0")]);
        let trace = run(&apps, "demo", &mut s, delta, false, 5).await.unwrap();
        assert!(trace.loop_warning);
        assert_eq!(trace.rounds.len(), 5);
        // The last merged state is kept: a=0 → b=1 → a=2 → b=3 → a=4 → b=5.
        assert_eq!(s.get_str("n", "b"), Some("5"));
        assert_eq!(s.get_str("n", "a"), Some("4"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_app_times_out_and_the_others_are_kept() {
        let sleepy = slow(Duration::from_secs(30), |_| {
            Ok(writes(&[("s", "late", "1")]))
        });
        let quick = fake(|_| Ok(writes(&[("q", "fast", "1")])));
        let apps = install(vec![
            (
                spec(
                    "sleepy",
                    json!({"input": {"public": ["go"]}, "output": {"s": ["late"]}}),
                ),
                sleepy,
            ),
            (
                spec(
                    "quick",
                    json!({"input": {"public": ["go"]}, "output": {"q": ["fast"]}}),
                ),
                quick,
            ),
        ]);
        let (mut s, delta) = session_with(&[("public", "go", "1")]);
        let trace = run(&apps, "demo", &mut s, delta, false, 10).await.unwrap();
        assert_eq!(s.get_str("q", "fast"), Some("1"));
        assert_eq!(s.get("s", "late"), None);
        let error = trace.rounds[0].calls[0].error.as_deref().unwrap();
        assert!(error.contains("timed out"), "{error}");
    }

    #[tokio::test]
    async fn failures_are_isolated_and_undeclared_writes_dropped() {
        let broken = fake(|_| Err(AppError::Failed("answered HTTP 500".into())));
        let greedy = fake(|_| Ok(writes(&[("g", "ok", "1"), ("profile", "email", "evil")])));
        let apps = install(vec![
            (
                spec(
                    "broken",
                    json!({"input": {"public": ["go"]}, "output": {"b": ["x"]}}),
                ),
                broken,
            ),
            (
                spec(
                    "greedy",
                    json!({"input": {"public": ["go"]}, "output": {"g": ["ok"]}}),
                ),
                greedy,
            ),
        ]);
        let (mut s, delta) = session_with(&[("public", "go", "1")]);
        let trace = run(&apps, "demo", &mut s, delta, false, 10).await.unwrap();
        assert_eq!(s.get_str("g", "ok"), Some("1"));
        assert_eq!(s.get("profile", "email"), None);
        assert_eq!(
            trace.rounds[0].calls[1].dropped,
            vec![Key::new("profile", "email")]
        );
        assert_eq!(
            trace.rounds[0].calls[0].error.as_deref(),
            Some("answered HTTP 500")
        );
    }

    #[tokio::test]
    async fn cookies_an_app_cannot_decide_on_are_left_unrecorded() {
        let undecided = fake(|_| {
            Err(AppError::Undecided {
                why: "no keys yet".into(),
                decided: writes(&[("a", "admin", "decided")]),
                pending: vec![
                    Key::new("cookie", "id_demo"),
                    Key::new("cookie", "id_other"),
                ],
            })
        });
        let broken = fake(|_| Err(AppError::Failed("answered HTTP 500".into())));
        let apps = install(vec![
            (
                spec(
                    "auth",
                    json!({"input": {"cookie": ["id_.*", "admin"]}, "output": {"a": ["user", "admin"]}}),
                ),
                undecided,
            ),
            (
                spec(
                    "loyalty",
                    json!({"input": {"cookie": ["card"], "public": ["go"]}, "output": {"l": ["tier"]}}),
                ),
                broken,
            ),
        ]);
        let (mut s, delta) = session_with(&[
            ("cookie", "id_demo", "t1"),
            ("cookie", "admin", "t2"),
            ("cookie", "card", "c"),
            ("public", "go", "1"),
        ]);
        let trace = run(&apps, "demo", &mut s, delta, false, 10).await.unwrap();
        // Only the cookies the app could not decide on, and only those the request changed; a
        // plain failure records what it was sent; what the app decided is applied.
        assert_eq!(trace.unrecorded, vec![Key::new("cookie", "id_demo")]);
        assert_eq!(s.get_str("a", "admin"), Some("decided"));
        let error = trace.rounds[0].calls[0].error.as_deref().unwrap();
        assert!(error.contains("cannot decide yet: no keys yet"), "{error}");
    }

    #[tokio::test]
    async fn a_rejection_fails_the_cycle_unless_answered_again() {
        let gate = fake(|i| match text(i, "profile", "email") {
            Some(_) => Ok(writes(&[("store", "channel", "3")])),
            None => Err(AppError::Rejected {
                status: 403,
                kind: "Forbidden".into(),
                message: "channel 3 is private".into(),
            }),
        });
        let profile = fake(|_| Ok(writes(&[("profile", "email", "a@b.c")])));
        let gate_spec = spec(
            "gate",
            json!({"input": {"public": ["sc"], "profile": ["email"]}, "output": {"store": ["channel"]}}),
        );
        let apps = install(vec![(gate_spec.clone(), gate.clone())]);
        let (mut s, delta) = session_with(&[("public", "sc", "3")]);
        let err = run(&apps, "demo", &mut s, delta, false, 10)
            .await
            .unwrap_err();
        assert_eq!(
            (err.status, err.kind.as_str(), err.app.as_str()),
            (403, "Forbidden", "gate")
        );
        // The profile arrives in round 1: the gate's round-2 answer replaces its rejection.
        let apps = install(vec![
            (gate_spec, gate),
            (
                spec(
                    "profile",
                    json!({"input": {"public": ["sc"]}, "output": {"profile": ["email"]}}),
                ),
                profile,
            ),
        ]);
        let (mut s, delta) = session_with(&[("public", "sc", "3")]);
        let trace = run(&apps, "demo", &mut s, delta, false, 10).await.unwrap();
        assert_eq!(
            trace.calls_by_round(),
            vec![vec!["gate", "profile"], vec!["gate"]]
        );
        assert_eq!(s.get_str("store", "channel"), Some("3"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_result_does_not_depend_on_finishing_order() {
        for (first_delay, second_delay) in [(20, 1), (1, 20)] {
            let first = slow(Duration::from_millis(first_delay), |_| {
                Ok(writes(&[("n", "k", "first"), ("n", "only_first", "1")]))
            });
            let second = slow(Duration::from_millis(second_delay), |_| {
                Ok(writes(&[("n", "k", "second")]))
            });
            let apps = install(vec![
                (
                    spec(
                        "first",
                        json!({"input": {"public": ["go"]}, "output": {"n": ["k", "only_first"]}}),
                    ),
                    first,
                ),
                (
                    spec(
                        "second",
                        json!({"input": {"public": ["go"]}, "output": {"n": ["k"]}}),
                    ),
                    second,
                ),
            ]);
            let (mut s, delta) = session_with(&[("public", "go", "1")]);
            run(&apps, "demo", &mut s, delta, false, 10).await.unwrap();
            assert_eq!(
                s.get_str("n", "k"),
                Some("second"),
                "the later-installed app wins"
            );
            assert_eq!(s.get_str("n", "only_first"), Some("1"));
        }
    }

    #[tokio::test]
    async fn inputs_are_only_the_declared_ones_patterns_included() {
        let app = fake(|_| Ok(Changes::new()));
        let apps = install(vec![(
            spec(
                "auth",
                json!({"input": {"cookie": ["VtexIdclientAutCookie_.*"], "public": ["a"]}, "output": {}}),
            ),
            app.clone(),
        )]);
        let (mut s, delta) = session_with(&[
            ("cookie", "VtexIdclientAutCookie_demo", "t"),
            ("cookie", "other", "o"),
            ("public", "a", "1"),
            ("public", "b", "2"),
        ]);
        run(&apps, "demo", &mut s, delta, false, 10).await.unwrap();
        let seen = app.seen.lock().unwrap();
        assert_eq!(
            serde_json::to_value(&seen[0]).unwrap(),
            json!({"cookie": {"VtexIdclientAutCookie_demo": {"value": "t"}}, "public": {"a": {"value": "1"}}})
        );
    }
}
