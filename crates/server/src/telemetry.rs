//! What the server tells its operators: log lines (text for a terminal, JSON for a log
//! collector), the request id that a request carries into its log lines and its answer, and the
//! Prometheus metrics (`GET /metrics`): their names, buckets and the recorder.

use std::io::IsTerminal as _;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::HeaderValue;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::LogFormat;

/// The log filter when `SESSIOND_LOG` is not set.
const DEFAULT_FILTER: &str = "info,fjall=warn,lsm_tree=warn";

/// Starts writing log lines to stderr in `format`, filtered by `SESSIOND_LOG` (default
/// `info`); colours only when stderr is a terminal.
pub fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SESSIOND_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

tokio::task_local! {
    /// The id of the request being served (set around each request by the HTTP layer).
    pub static REQUEST_ID: HeaderValue;
}

/// The id of the request being served, for its log lines (`-` outside a request).
pub fn request_id() -> RequestId {
    RequestId
}

/// Shows the current request's id (see [`request_id`]).
pub struct RequestId;

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        REQUEST_ID
            .try_with(|id| f.write_str(id.to_str().unwrap_or("-")))
            .unwrap_or_else(|_| f.write_str("-"))
    }
}

/// The metric names, one place for the code and the README's table.
pub mod names {
    /// Requests answered, by `route`, `method` and `status`.
    pub const HTTP_REQUESTS: &str = "sessiond_http_requests_total";
    /// Time to answer a request, by `route` and `method`.
    pub const HTTP_DURATION: &str = "sessiond_http_request_duration_seconds";
    /// Sessions created.
    pub const SESSIONS_CREATED: &str = "sessiond_sessions_created_total";
    /// Log-ins: a session moved to a new id because a visitor became authenticated.
    pub const LOGINS: &str = "sessiond_logins_total";
    /// Log-outs: a session moved to a new id because its visitor stopped being authenticated
    /// (or changed to another user).
    pub const LOGOUTS: &str = "sessiond_logouts_total";
    /// Transform cycles run (a request whose changes some app watches).
    pub const CYCLES: &str = "sessiond_cycles_total";
    /// Rounds per cycle.
    pub const CYCLE_ROUNDS: &str = "sessiond_cycle_rounds";
    /// Cycles stopped at `max_rounds` with keys still changing.
    pub const CYCLE_LOOP_LIMIT: &str = "sessiond_cycle_loop_limit_total";
    /// Session app calls, by `account` and `app`.
    pub const APP_CALLS: &str = "sessiond_app_calls_total";
    /// Time of a session app call, by `account` and `app`.
    pub const APP_DURATION: &str = "sessiond_app_call_duration_seconds";
    /// Session app calls that failed (timeouts included), by `account` and `app`.
    pub const APP_FAILURES: &str = "sessiond_app_failures_total";
    /// Session app calls that took longer than their timeout, by `account` and `app`.
    pub const APP_TIMEOUTS: &str = "sessiond_app_timeouts_total";
    /// Session app calls answered with 401 or 403, by `account`, `app` and `status`.
    pub const APP_REJECTIONS: &str = "sessiond_app_rejections_total";
    /// Compare-and-swap saves that lost to another request's save of the same session.
    pub const CAS_CONFLICTS: &str = "sessiond_cas_conflicts_total";
    /// Edits tried again after a lost compare-and-swap.
    pub const CAS_RETRIES: &str = "sessiond_cas_retries_total";
    /// Time of a store call, by `operation`.
    pub const STORE_DURATION: &str = "sessiond_store_call_duration_seconds";
    /// Writes committed together by one fsync, and the time of that durable write (embedded
    /// store; recorded by the store itself).
    pub use crate::repo::metric_names::{COMMIT_BATCH, FSYNC_DURATION};
    /// Session loads answered by the session cache.
    pub const CACHE_HITS: &str = "sessiond_cache_hits_total";
    /// Session loads the session cache could not answer (read from the store).
    pub const CACHE_MISSES: &str = "sessiond_cache_misses_total";
}

/// Buckets of durations, seconds: 50 µs to 10 s.
const SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Buckets of counts: rounds per cycle, writes per group commit.
const COUNTS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// How often recorded histogram samples are folded into their buckets between scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's metrics recorder (one per process: the `metrics` facade is global), installed
/// by the first call. `None` when another recorder was installed first.
pub fn metrics() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(names::CYCLE_ROUNDS.into()), COUNTS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(names::COMMIT_BATCH.into()), COUNTS)
                })
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                })
                .ok()?;
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    use names::*;
    describe_counter!(
        HTTP_REQUESTS,
        "Requests answered, by route, method and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time to answer a request, by route and method."
    );
    describe_counter!(SESSIONS_CREATED, "Sessions created.");
    describe_counter!(
        LOGINS,
        "Log-ins (identity rotations to an authenticated visitor)."
    );
    describe_counter!(
        LOGOUTS,
        "Log-outs (identity rotations away from an authenticated visitor)."
    );
    describe_counter!(CYCLES, "Transform cycles run.");
    describe_histogram!(CYCLE_ROUNDS, Unit::Count, "Rounds per transform cycle.");
    describe_counter!(
        CYCLE_LOOP_LIMIT,
        "Cycles stopped at max_rounds with keys still changing."
    );
    describe_counter!(APP_CALLS, "Session app calls, by account and app.");
    describe_histogram!(
        APP_DURATION,
        Unit::Seconds,
        "Time of a session app call, by account and app."
    );
    describe_counter!(
        APP_FAILURES,
        "Session app calls that failed (timeouts included)."
    );
    describe_counter!(
        APP_TIMEOUTS,
        "Session app calls that took longer than their timeout."
    );
    describe_counter!(
        APP_REJECTIONS,
        "Session app calls answered with 401 or 403."
    );
    describe_counter!(
        CAS_CONFLICTS,
        "Compare-and-swap saves lost to another save of the same session."
    );
    describe_counter!(
        CAS_RETRIES,
        "Edits tried again after a lost compare-and-swap."
    );
    describe_histogram!(
        STORE_DURATION,
        Unit::Seconds,
        "Time of a store call, by operation."
    );
    describe_histogram!(
        COMMIT_BATCH,
        Unit::Count,
        "Writes committed together by one fsync (embedded store)."
    );
    describe_histogram!(
        FSYNC_DURATION,
        Unit::Seconds,
        "Time of the fsync of one group commit (embedded store)."
    );
    describe_counter!(CACHE_HITS, "Session loads answered by the session cache.");
    describe_counter!(CACHE_MISSES, "Session loads read from the store.");
}
