//! What a cycle did: rounds, apps called, inputs, outputs, durations, errors, dropped writes.

use serde::Serialize;

use crate::items::{REDACTED, SECRET_NAMESPACE};
use crate::session::{Delta, Key, Namespaces, Value};

/// The trace of one cycle.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Trace {
    /// The rounds, in order.
    pub rounds: Vec<Round>,
    /// Whether the cycle stopped at `max_rounds` with keys still changing.
    pub loop_warning: bool,
    /// Wall time of the whole cycle, microseconds.
    pub micros: u64,
    /// Every key changed by the request (what the cycle started from) or by the cycle.
    #[serde(skip)]
    pub changed: Delta,
    /// The request's cookie keys that an app watching them could not decide on
    /// ([`crate::AppError::Unavailable`]): the caller leaves them as they were before the
    /// request, so the next request sending those cookies calls the app again.
    #[serde(skip)]
    pub unrecorded: Vec<Key>,
}

/// One round of a cycle.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Round {
    /// 1-based round number.
    pub number: u32,
    /// The apps called, in installation order.
    pub calls: Vec<AppCall>,
    /// The conditional apps not called because a condition did not hold.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// Keys whose value changed when the round's answers were merged.
    #[serde(serialize_with = "keys")]
    pub changed: Vec<Key>,
}

/// A conditional app that a round did not call, because one of its conditions did not hold.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Skipped {
    /// The app.
    pub app: String,
    /// The first condition that did not hold, as written in `when`.
    pub condition: String,
    /// Its declared outputs that were set, removed in this round.
    #[serde(serialize_with = "keys")]
    pub removed: Vec<Key>,
}

/// One app call within a round.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AppCall {
    /// The app.
    pub app: String,
    /// What it was sent.
    pub input: Namespaces,
    /// What it answered (declared outputs only); `None` deletes.
    #[serde(serialize_with = "writes")]
    pub output: Vec<(Key, Option<Value>)>,
    /// Keys it answered but did not declare (not applied).
    #[serde(serialize_with = "keys")]
    pub dropped: Vec<Key>,
    /// Why it produced nothing, if it failed or rejected the request.
    pub error: Option<String>,
    /// Whether the app rejected the request (401/403) rather than failed.
    pub rejected: bool,
    /// The status of that rejection (401 or 403).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejection_status: Option<u16>,
    /// Whether the call failed because it took longer than its timeout.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// Whether the app could not decide yet ([`crate::AppError::Unavailable`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub undecided: bool,
    /// Duration of the call, microseconds.
    pub micros: u64,
}

impl Trace {
    /// The trace with the values of the secret namespace (identity cookies) replaced by
    /// `"[redacted]"`, for logs and operators.
    pub fn redacted(&self) -> Trace {
        let mut trace = self.clone();
        let secret = |key: &Key| key.namespace == SECRET_NAMESPACE;
        for call in trace.rounds.iter_mut().flat_map(|r| r.calls.iter_mut()) {
            if let Some(values) = call.input.get_mut(SECRET_NAMESPACE) {
                for (_, v) in std::sync::Arc::make_mut(values).iter_mut() {
                    v.value = serde_json::Value::String(REDACTED.to_owned());
                }
            }
            for (key, value) in call.output.iter_mut() {
                if let (true, Some(v)) = (secret(key), value.as_mut()) {
                    v.value = serde_json::Value::String(REDACTED.to_owned());
                }
            }
        }
        trace
    }

    /// The names of the apps called in each round (for tests and logs).
    pub fn calls_by_round(&self) -> Vec<Vec<&str>> {
        self.rounds
            .iter()
            .map(|r| r.calls.iter().map(|c| c.app.as_str()).collect())
            .collect()
    }
}

fn keys<S: serde::Serializer>(keys: &[Key], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(keys.iter().map(|k| k.to_string()))
}

fn writes<S: serde::Serializer>(w: &[(Key, Option<Value>)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(w.iter().map(|(k, v)| (k.to_string(), v)))
}
