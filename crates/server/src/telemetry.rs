//! What the server tells its operators: log lines (text for a terminal, JSON for a log
//! collector), the request id that a request carries into its log lines and its answer, and the
//! Prometheus metrics (`GET /metrics`): their names, buckets and registration.

use std::io::IsTerminal as _;
use std::sync::LazyLock;

use axum::http::HeaderValue;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (colours only on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// `text` or `json`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

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
    /// Client connections open now.
    pub const HTTP_CONNECTIONS: &str = "sessiond_http_connections";
    /// Time to answer a request, by `route` and `method`.
    pub const HTTP_DURATION: &str = "sessiond_http_request_duration_seconds";
    /// Sessions created.
    pub const SESSIONS_CREATED: &str = "sessiond_sessions_created_total";
    /// Sessions created without a write: they hold only what the create cycle derives.
    pub const SESSIONS_UNSAVED: &str = "sessiond_sessions_unsaved_total";
    /// Sessions not saved yet derived again for a request presenting their token.
    pub const SESSIONS_DERIVED: &str = "sessiond_sessions_derived_total";
    /// Log-ins: a session moved to a new id because a visitor became authenticated.
    pub const LOGINS: &str = "sessiond_logins_total";
    /// Log-outs: a session moved to a new id because its visitor stopped being authenticated.
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
    /// Session tokens this process had not seen, checked by `by`: `signature` (ES256) or
    /// `record` (the digest kept in their session's record).
    pub const TOKEN_CHECKS: &str = "sessiond_token_checks_total";
    /// Session loads answered by the session cache.
    pub const CACHE_HITS: &str = "sessiond_cache_hits_total";
    /// Session loads the session cache could not answer (read from the store).
    pub const CACHE_MISSES: &str = "sessiond_cache_misses_total";
    // The embedded store's own two, `sessiond_store_commit_batch_size` and
    // `sessiond_store_fsync_duration_seconds`, are named and registered by the store
    // (`sessiond_store::metrics`).
}

/// Buckets of durations, seconds: 50 µs to 10 s.
const SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Buckets of counts: rounds per cycle.
const COUNTS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Every metric of the process, in the default Prometheus registry (where the store's
/// group-commit histograms are too). A histogram here counts into its buckets as it records:
/// a few atomic additions, no allocation.
pub struct Metrics {
    /// [`names::HTTP_REQUESTS`].
    pub http_requests: IntCounterVec,
    /// [`names::HTTP_CONNECTIONS`].
    pub http_connections: IntGauge,
    /// [`names::HTTP_DURATION`].
    pub http_duration: HistogramVec,
    /// [`names::SESSIONS_CREATED`].
    pub sessions_created: IntCounter,
    /// [`names::SESSIONS_UNSAVED`].
    pub sessions_unsaved: IntCounter,
    /// [`names::SESSIONS_DERIVED`].
    pub sessions_derived: IntCounter,
    /// [`names::LOGINS`].
    pub logins: IntCounter,
    /// [`names::LOGOUTS`].
    pub logouts: IntCounter,
    /// [`names::CYCLES`].
    pub cycles: IntCounter,
    /// [`names::CYCLE_ROUNDS`].
    pub cycle_rounds: Histogram,
    /// [`names::CYCLE_LOOP_LIMIT`].
    pub cycle_loop_limit: IntCounter,
    /// [`names::APP_CALLS`].
    pub app_calls: IntCounterVec,
    /// [`names::TOKEN_CHECKS`].
    pub token_checks: IntCounterVec,
    /// [`names::APP_DURATION`].
    pub app_duration: HistogramVec,
    /// [`names::APP_FAILURES`].
    pub app_failures: IntCounterVec,
    /// [`names::APP_TIMEOUTS`].
    pub app_timeouts: IntCounterVec,
    /// [`names::APP_REJECTIONS`].
    pub app_rejections: IntCounterVec,
    /// [`names::CAS_CONFLICTS`].
    pub cas_conflicts: IntCounter,
    /// [`names::CAS_RETRIES`].
    pub cas_retries: IntCounter,
    /// [`names::STORE_DURATION`].
    pub store_duration: HistogramVec,
    /// [`names::CACHE_HITS`].
    pub cache_hits: IntCounter,
    /// [`names::CACHE_MISSES`].
    pub cache_misses: IntCounter,
}

/// The process's metrics, registered on first use (once per process: the registry is global,
/// so servers of one process, as in the tests, count together).
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
        use names::*;
        fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
            // Registered once (this is its only place); a failure leaves it unexported.
            let _ = prometheus::register(Box::new(c.clone()));
            c
        }
        let counter = |name: &str, help: &str| {
            register(IntCounter::new(name, help).expect("a valid counter"))
        };
        let counters = |name: &str, help: &str, labels: &[&str]| {
            register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid counters"))
        };
        let histograms = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            register(
                HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                    labels,
                )
                .expect("valid histograms"),
            )
        };
        Metrics {
            http_connections: register(
                IntGauge::new(HTTP_CONNECTIONS, "Client connections open now.")
                    .expect("a valid gauge"),
            ),
            http_requests: counters(
                HTTP_REQUESTS,
                "Requests answered, by route, method and status.",
                &["route", "method", "status"],
            ),
            http_duration: histograms(
                HTTP_DURATION,
                "Time to answer a request, by route and method.",
                &["route", "method"],
                SECONDS,
            ),
            sessions_created: counter(SESSIONS_CREATED, "Sessions created."),
            sessions_unsaved: counter(
                SESSIONS_UNSAVED,
                "Sessions created without a write (holding only what the create cycle derives).",
            ),
            sessions_derived: counter(
                SESSIONS_DERIVED,
                "Sessions not saved yet, derived again for a request presenting their token.",
            ),
            logins: counter(
                LOGINS,
                "Log-ins (identity rotations to an authenticated visitor).",
            ),
            logouts: counter(
                LOGOUTS,
                "Log-outs (identity rotations away from an authenticated visitor).",
            ),
            cycles: counter(CYCLES, "Transform cycles run."),
            cycle_rounds: register(
                Histogram::with_opts(
                    HistogramOpts::new(CYCLE_ROUNDS, "Rounds per transform cycle.")
                        .buckets(COUNTS.to_vec()),
                )
                .expect("a valid histogram"),
            ),
            cycle_loop_limit: counter(
                CYCLE_LOOP_LIMIT,
                "Cycles stopped at max_rounds with keys still changing.",
            ),
            app_calls: counters(APP_CALLS, "Session app calls.", &["account", "app"]),
            token_checks: counters(
                TOKEN_CHECKS,
                "Session tokens not seen before, checked by signature or by their record.",
                &["by"],
            ),
            app_duration: histograms(
                APP_DURATION,
                "Time of a session app call.",
                &["account", "app"],
                SECONDS,
            ),
            app_failures: counters(
                APP_FAILURES,
                "Session app calls that failed (timeouts included).",
                &["account", "app"],
            ),
            app_timeouts: counters(
                APP_TIMEOUTS,
                "Session app calls that took longer than their timeout.",
                &["account", "app"],
            ),
            app_rejections: counters(
                APP_REJECTIONS,
                "Session app calls answered with 401 or 403.",
                &["account", "app", "status"],
            ),
            cas_conflicts: counter(
                CAS_CONFLICTS,
                "Compare-and-swap saves lost to another save of the same session.",
            ),
            cas_retries: counter(
                CAS_RETRIES,
                "Edits tried again after a lost compare-and-swap.",
            ),
            store_duration: histograms(
                STORE_DURATION,
                "Time of a store call, by operation.",
                &["operation"],
                SECONDS,
            ),
            cache_hits: counter(CACHE_HITS, "Session loads answered by the session cache."),
            cache_misses: counter(CACHE_MISSES, "Session loads read from the store."),
        }
    });
    &METRICS
}

/// Every metric of the process in the Prometheus text format (`GET /metrics`).
pub fn render() -> String {
    prometheus::TextEncoder::new()
        .encode_to_string(&prometheus::gather())
        .unwrap_or_default()
}
