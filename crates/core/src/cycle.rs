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
//! A 401/403 rejection from an app is that app's verdict on its inputs. If a later round calls
//! the same app again (its inputs changed, e.g. the profile arrived) its new answer replaces the
//! verdict; a rejection still standing at the end fails the whole request.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::{AppIndex, AppSpec, KeyPattern};
use crate::session::{Changes, Delta, Namespace, Namespaces, Session};
use crate::trace::{AppCall, Round, Trace};

/// A boxed, sendable future (what [`Transformer::transform`] returns).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One call of an app.
#[derive(Debug)]
pub struct Call<'a> {
    /// The app's declaration.
    pub app: &'a AppSpec,
    /// The account the session belongs to.
    pub account: &'a str,
    /// The app's declared inputs that are set, and nothing else.
    pub input: Namespaces,
    /// Every key changed so far in this cycle (the request's changes and earlier rounds).
    pub changed: &'a Delta,
}

/// Why an app call produced no output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    /// The app did not answer within its timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connection error, non-2xx answer, or malformed answer.
    #[error("{0}")]
    Failed(String),
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
            .field("apps", &self.index.apps().iter().map(|a| &a.name).collect::<Vec<_>>())
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
            out.insert(ns.clone(), picked);
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
    let started = Instant::now();
    let mut trace = Trace::default();
    let mut all_changed = changed.clone();
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
        let calls = callees.iter().map(|&i| {
            let spec = &apps.index.apps()[i];
            let input = inputs_of(spec, &session.namespaces);
            let call = Call {
                app: spec,
                account,
                input: input.clone(),
                changed: &all_changed,
            };
            let timeout = apps.timeouts[i];
            let transformer = &apps.transformers[i];
            async move {
                let t0 = Instant::now();
                let result = match tokio::time::timeout(timeout, transformer.transform(call)).await
                {
                    Ok(r) => r,
                    Err(_) => Err(AppError::Timeout(timeout)),
                };
                (i, input, result, t0.elapsed())
            }
        });
        let answers = futures::future::join_all(calls).await;
        let mut merged = Changes::new();
        let mut round = Round {
            number: round_no,
            ..Round::default()
        };
        for (i, input, result, elapsed) in answers {
            let spec = &apps.index.apps()[i];
            let mut call = AppCall {
                app: spec.name.clone(),
                input,
                output: Vec::new(),
                dropped: Vec::new(),
                error: None,
                micros: elapsed.as_micros() as u64,
            };
            match result {
                Ok(output) => {
                    rejected.remove(&i);
                    for (key, value) in output.iter() {
                        if spec.writes(key) {
                            call.output.push((key.clone(), value.clone()));
                            match value {
                                Some(v) => merged.set(key.clone(), v.clone()),
                                None => merged.remove(key.clone()),
                            }
                        } else {
                            call.dropped.push(key.clone());
                        }
                    }
                }
                Err(AppError::Rejected {
                    status,
                    kind,
                    message,
                }) => {
                    call.error = Some(format!("rejected with {status}: {kind}: {message}"));
                    rejected.insert(i, (status, kind, message));
                }
                Err(e) => call.error = Some(e.to_string()),
            }
            round.calls.push(call);
        }
        delta = session.apply(&merged);
        round.changed = delta.iter().cloned().collect();
        all_changed.extend(delta.iter().cloned());
        trace.rounds.push(round);
    }
    trace.micros = started.elapsed().as_micros() as u64;
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
