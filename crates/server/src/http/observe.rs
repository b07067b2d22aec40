//! What every request leaves behind: its request id (the client's `x-request-id` when it
//! sent a usable one, else a new one, [`new_id`]) in its log lines and in the answer's `x-request-id`,
//! its count and time in the metrics (by route, method and status), and one log line at
//! `debug` (method, route, status, duration, account, request id; never a token or a cookie).
//!
//! A service around the whole router (not a layer of each route): with the metrics and the
//! answer's header it adds about 1,600 instructions to a GET, where `axum::middleware::from_fn`
//! as a route layer added 4,600 (a boxed future, a cloned route service). So it names the route itself ([`route_of`]), by
//! the same templates as the router ([`ROUTES`]; a test holds the two together).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use prometheus::{Histogram, IntCounter};
use tokio::task::futures::TaskLocalFuture;

use super::request::Query;
use super::{AppState, ROUTES};
use crate::telemetry::{metrics, REQUEST_ID as CURRENT_ID};

/// The request id header, read and answered.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client.
const MAX_REQUEST_ID: usize = 128;

/// The service around the router: see the module documentation.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    state: Arc<AppState>,
}

impl<S> Observe<S> {
    /// Observes the requests `inner` serves; `state` names a request's account for its log
    /// line.
    pub fn new(inner: S, state: Arc<AppState>) -> Self {
        Observe { inner, state }
    }
}

impl<S> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Observed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let id = request
            .headers()
            .get(&REQUEST_ID)
            .filter(|v| usable_id(v.as_bytes()))
            .cloned()
            .unwrap_or_else(new_id);
        let route = route_of(request.uri().path());
        let method = METHODS.iter().position(|m| m == request.method());
        // The account and path only for the log line, when it is written.
        let log = tracing::enabled!(tracing::Level::DEBUG).then(|| {
            let host = request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok());
            let query = Query::parse(request.uri().query());
            Box::new(LogLine {
                account: self
                    .state
                    .tenancy
                    .resolve(host, query.an.as_deref())
                    .name
                    .clone(),
                method: request.method().clone(),
                path: request.uri().path().to_owned(),
            })
        });
        Observed {
            inner: CURRENT_ID.scope(id, self.inner.call(request)),
            seen: Some(Seen {
                route,
                method,
                started,
                log,
            }),
        }
    }
}

/// What the log line says besides the answer.
struct LogLine {
    account: String,
    method: Method,
    path: String,
}

/// What is known of a request before its answer (its id is the inner future's task-local
/// value, taken back at the end).
struct Seen {
    route: Option<usize>,
    method: Option<usize>,
    started: Instant,
    log: Option<Box<LogLine>>,
}

pin_project_lite::pin_project! {
    /// The answer of [`Observe`]: the inner one, counted, logged and given its request id.
    pub struct Observed<F: Future> {
        #[pin]
        inner: TaskLocalFuture<HeaderValue, F>,
        seen: Option<Seen>,
    }
}

impl<F, E> Future for Observed<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut result = std::task::ready!(this.inner.as_mut().poll(cx));
        if let (Some(seen), Some(id), Ok(response)) =
            (this.seen.take(), this.inner.take_value(), result.as_mut())
        {
            seen.answered(id, response);
        }
        Poll::Ready(result)
    }
}

impl Seen {
    fn answered(self, id: HeaderValue, response: &mut Response) {
        let elapsed = self.started.elapsed();
        let status = response.status();
        let handles = handles();
        handles.count(self.route, self.method, status);
        handles
            .duration(self.route, self.method)
            .observe(elapsed.as_secs_f64());
        if let Some(log) = self.log {
            let route = self.route.map_or(log.path.as_str(), |r| ROUTES[r]);
            tracing::debug!(
                request_id = %id.to_str().unwrap_or("-"),
                method = %log.method,
                route,
                status = status.as_u16(),
                micros = elapsed.as_micros() as u64,
                account = %log.account,
                "request"
            );
        }
        response.headers_mut().insert(REQUEST_ID.clone(), id);
    }
}

/// The route template (index in [`ROUTES`]) the router takes `path` to; `None` when it takes
/// it to no route (a 404).
pub fn route_of(path: &str) -> Option<usize> {
    let route = match path {
        "/api/sessions" => "/api/sessions",
        "/api/segments" => "/api/segments",
        "/api/segments/" => "/api/segments/",
        p if p.starts_with("/api/segments/") => "/api/segments/{*token}",
        p if p
            .strip_prefix("/api/sessions/")
            .is_some_and(|token| !token.is_empty() && !token.contains('/')) =>
        {
            "/api/sessions/{token}"
        }
        p if p.starts_with("/_admin/") => return admin_route(p),
        other => other,
    };
    ROUTES.iter().position(|r| *r == route)
}

/// The admin route of `path` (`/_admin/accounts/{account}/…`), by its segments.
fn admin_route(path: &str) -> Option<usize> {
    let console = match path.strip_prefix("/_admin/ui") {
        Some("") => Some("/_admin/ui"),
        Some(asset) => asset
            .strip_prefix('/')
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .map(|_| "/_admin/ui/{asset}"),
        None => None,
    };
    if let Some(route) = console {
        return ROUTES.iter().position(|r| *r == route);
    }
    let mut segments = path.strip_prefix("/_admin/accounts/")?.split('/');
    let _account = segments.next().filter(|s| !s.is_empty())?;
    let route = match (
        segments.next()?,
        segments.next(),
        segments.next(),
        segments.next(),
    ) {
        ("apps", None, None, None) => "/_admin/accounts/{account}/apps",
        ("apps", Some(name), None, None) if !name.is_empty() => {
            "/_admin/accounts/{account}/apps/{name}"
        }
        ("sessions", Some(id), None, None) if !id.is_empty() => {
            "/_admin/accounts/{account}/sessions/{id}"
        }
        ("sessions", Some(id), Some("debug"), None) if !id.is_empty() => {
            "/_admin/accounts/{account}/sessions/{id}/debug"
        }
        _ => return None,
    };
    ROUTES.iter().position(|r| *r == route)
}

/// A client's request id is used when it is 1 to 128 visible ASCII characters.
fn usable_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(|b| b.is_ascii_graphic())
}

/// A new request id: this process's random prefix and the count of ids it made, in hex
/// (`5f0c2a9e81d4b7c3-000000000000002a`): unique across processes, and cheaper to make than
/// a random UUID.
fn new_id() -> HeaderValue {
    static PREFIX: OnceLock<[u8; 17]> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut prefix = [b'-'; 17];
        hex_into(&mut prefix[..16], uuid::Uuid::new_v4().as_u64_pair().0);
        prefix
    });
    let mut text = [0u8; 33];
    text[..17].copy_from_slice(prefix);
    hex_into(&mut text[17..], COUNT.fetch_add(1, Ordering::Relaxed));
    HeaderValue::from_bytes(&text).expect("hex digits are a header value")
}

/// Writes `value` as 16 lower-case hex digits into `out`.
fn hex_into(out: &mut [u8], value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = DIGITS[(value >> (60 - 4 * i)) as usize & 0xf];
    }
}

/// The methods counted by name; any other is `OTHER`.
static METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PATCH,
    Method::DELETE,
    Method::PUT,
    Method::OPTIONS,
];

/// The statuses this server answers, counted through a handle made once; any other is
/// looked up per request.
const STATUSES: [u16; 17] = [
    200, 201, 204, 304, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 431, 500, 503,
];

/// Route label of a request no route matched.
const UNMATCHED: &str = "unmatched";

/// The request metrics' handles, by route (or unmatched), method (or other) and status, made
/// on first use.
struct Handles {
    requests: Vec<OnceLock<IntCounter>>,
    durations: Vec<OnceLock<Histogram>>,
}

fn handles() -> &'static Handles {
    static HANDLES: OnceLock<Handles> = OnceLock::new();
    HANDLES.get_or_init(|| Handles {
        requests: (0..(ROUTES.len() + 1) * (METHODS.len() + 1) * STATUSES.len())
            .map(|_| OnceLock::new())
            .collect(),
        durations: (0..(ROUTES.len() + 1) * (METHODS.len() + 1))
            .map(|_| OnceLock::new())
            .collect(),
    })
}

fn route_label(route: Option<usize>) -> &'static str {
    route.map_or(UNMATCHED, |r| ROUTES[r])
}

fn method_label(method: Option<usize>) -> &'static str {
    method.map_or("OTHER", |m| METHODS[m].as_str())
}

impl Handles {
    fn slot(route: Option<usize>, method: Option<usize>) -> usize {
        route.unwrap_or(ROUTES.len()) * (METHODS.len() + 1) + method.unwrap_or(METHODS.len())
    }

    fn count(&self, route: Option<usize>, method: Option<usize>, status: StatusCode) {
        let make = || {
            metrics().http_requests.with_label_values(&[
                route_label(route),
                method_label(method),
                status.as_str(),
            ])
        };
        match STATUSES.iter().position(|s| *s == status.as_u16()) {
            Some(i) => self.requests[Self::slot(route, method) * STATUSES.len() + i]
                .get_or_init(make)
                .inc(),
            None => make().inc(),
        }
    }

    fn duration(&self, route: Option<usize>, method: Option<usize>) -> &Histogram {
        self.durations[Self::slot(route, method)].get_or_init(|| {
            metrics()
                .http_duration
                .with_label_values(&[route_label(route), method_label(method)])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_ids_are_taken_only_when_usable() {
        assert!(usable_id(b"abc-123"));
        assert!(usable_id(&[b'a'; 128]));
        assert!(!usable_id(&[b'a'; 129]));
        assert!(!usable_id(b""));
        assert!(!usable_id(b"has space"));
        assert!(!usable_id("é".as_bytes()));
        let (a, b) = (new_id(), new_id());
        assert_eq!(a.len(), 33);
        assert_ne!(a, b);
        assert_eq!(
            a.as_bytes()[..17],
            b.as_bytes()[..17],
            "one prefix per process"
        );
        let mut out = [0u8; 16];
        hex_into(&mut out, 0x0123_4567_89ab_cdef);
        assert_eq!(&out, b"0123456789abcdef");
    }
}
