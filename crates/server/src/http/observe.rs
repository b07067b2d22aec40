//! What every request leaves behind: its request id (the client's `x-request-id` when it
//! sent a usable one, else a new UUID) in its log lines and in the answer's `x-request-id`,
//! its count and time in the metrics (by route, method and status), and one log line at
//! `debug` (method, route, status, duration, account, request id; never a token or a cookie).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram};

use super::request::Query;
use super::{AppState, ROUTES};
use crate::telemetry::{names, with_request_id};

/// The request id header, read and answered.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest request id taken from a client.
const MAX_REQUEST_ID: usize = 128;

/// The middleware: see the module documentation.
pub(crate) async fn observe(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| usable_id(v.as_bytes()))
        .cloned()
        .unwrap_or_else(new_id);
    let route = request.extensions().get::<MatchedPath>().map(|p| {
        let route = ROUTES.iter().position(|r| *r == p.as_str());
        debug_assert!(
            route.is_some(),
            "{} is routed but not in ROUTES",
            p.as_str()
        );
        route
    });
    let route = route.flatten();
    let method = METHODS.iter().position(|m| m == request.method());
    // The account only for the log line, when it is written.
    let account = tracing::enabled!(tracing::Level::DEBUG).then(|| {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let query = Query::parse(request.uri().query());
        state
            .tenancy
            .resolve(host, query.an.as_deref())
            .name
            .clone()
    });
    let log = account.as_ref().map(|a| {
        (
            a.clone(),
            request.method().clone(),
            request.uri().path().to_owned(),
        )
    });
    let mut response = with_request_id(id.clone(), next.run(request)).await;
    let elapsed = started.elapsed();
    let status = response.status();
    let handles = handles();
    handles.count(route, method, status);
    handles.duration(route, method).record(elapsed);
    if let Some((account, method, path)) = log {
        let route = route.map_or(path.as_str(), |r| ROUTES[r]);
        tracing::debug!(
            request_id = %id.to_str().unwrap_or("-"),
            %method,
            route,
            status = status.as_u16(),
            micros = elapsed.as_micros() as u64,
            account,
            "request"
        );
    }
    response.headers_mut().insert(REQUEST_ID.clone(), id);
    response
}

/// A client's request id is used when it is 1 to 128 visible ASCII characters.
fn usable_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(|b| b.is_ascii_graphic())
}

fn new_id() -> HeaderValue {
    let mut buf = uuid::Uuid::encode_buffer();
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).expect("a UUID is a header value")
}

/// The methods counted by name; any other is `OTHER`.
const METHODS: [Method; 7] = [
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
    requests: Vec<OnceLock<Counter>>,
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
    method.map_or("OTHER", |m| METHODS[m].as_str_static())
}

impl Handles {
    fn slot(route: Option<usize>, method: Option<usize>) -> usize {
        route.unwrap_or(ROUTES.len()) * (METHODS.len() + 1) + method.unwrap_or(METHODS.len())
    }

    fn count(&self, route: Option<usize>, method: Option<usize>, status: StatusCode) {
        let make = || {
            metrics::counter!(
                names::HTTP_REQUESTS,
                "route" => route_label(route),
                "method" => method_label(method),
                "status" => status.as_u16().to_string()
            )
        };
        match STATUSES.iter().position(|s| *s == status.as_u16()) {
            Some(i) => self.requests[Self::slot(route, method) * STATUSES.len() + i]
                .get_or_init(make)
                .increment(1),
            None => make().increment(1),
        }
    }

    fn duration(&self, route: Option<usize>, method: Option<usize>) -> &Histogram {
        self.durations[Self::slot(route, method)].get_or_init(|| {
            metrics::histogram!(
                names::HTTP_DURATION,
                "route" => route_label(route),
                "method" => method_label(method)
            )
        })
    }
}

/// `Method::as_str` with the `'static` lifetime the standard methods have.
trait StaticName {
    fn as_str_static(&self) -> &'static str;
}

impl StaticName for Method {
    fn as_str_static(&self) -> &'static str {
        match *self {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::PUT => "PUT",
            Method::OPTIONS => "OPTIONS",
            _ => "OTHER",
        }
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
        assert_eq!(new_id().len(), 36);
        assert_ne!(new_id(), new_id());
    }
}
