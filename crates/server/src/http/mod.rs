//! The HTTP layer: small handlers that parse the request (`request`: the one place each limit
//! is checked), call the session service and render the VTEX-compatible answer (the session
//! JSON or the token pair, the `Set-Cookie` lines of `cookies`), with errors mapped to
//! statuses (`error`). Routes per resource: `sessions` (`/api/sessions`), `segments`
//! (`/api/segments`); health probes and fallbacks here.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::clock::Clock;
use crate::config::Limits;
use crate::service::{Edit, Outcome, SessionService};
use crate::tenancy::{Account, Tenancy};
use cookies::CookieLines;
use error::ApiError;
use request::{Filters, Query, RequestCookies, SESSION_COOKIE};

pub mod admin;
pub mod connections;
pub mod cookies;
pub mod error;
mod observe;
pub mod request;
mod segments;
mod sessions;

pub use observe::{route_of, Observe};

/// Every routed path (axum's syntax), the labels of the request metrics and the paths of
/// `/openapi.json` (the admin ones routed only with an `admin_token`).
pub const ROUTES: [&str; 16] = [
    "/api/sessions",
    "/api/sessions/{token}",
    "/api/segments",
    "/api/segments/",
    "/api/segments/{*token}",
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/.well-known/jwks.json",
    admin::ROUTES[0],
    admin::ROUTES[1],
    admin::ROUTES[2],
    admin::ROUTES[3],
    admin::ROUTES[4],
    admin::ROUTES[5],
];

/// Everything the handlers share.
pub struct AppState {
    /// Accounts and their apps.
    pub tenancy: Arc<Tenancy>,
    /// The apps installed at run time.
    pub catalog: Arc<crate::catalog::Catalog>,
    /// The admin API's bearer token (`None`: no admin API).
    pub admin_token: Option<admin::AdminToken>,
    /// The session service.
    pub service: SessionService,
    /// Request limits.
    pub limits: Limits,
    /// The token cookie lines.
    pub cookies: CookieLines,
    /// The `items` filters asked for lately, parsed.
    pub filters: Filters,
    /// The time requests are served at.
    pub clock: Clock,
    /// Whether answers come from the stored answer (see `Settings::fast_paths`).
    pub fast_paths: bool,
    /// The public keys that verify session tokens, as a JWK set (`/.well-known/jwks.json`).
    pub jwks: axum::body::Bytes,
    /// Whether `/metrics` is served here too (false when `metrics_listen` has it).
    pub metrics_here: bool,
}

/// The router of the public API, health probes and JSON fallbacks.
pub fn router(state: Arc<AppState>) -> Router {
    let admin = match &state.admin_token {
        Some(token) => admin::router(token.clone()),
        None => Router::new(),
    };
    Router::new()
        .route(
            "/api/sessions",
            get(sessions::get_session)
                .head(sessions::head_session)
                .post(sessions::edit_session)
                .patch(sessions::edit_session)
                .delete(sessions::reset_session),
        )
        .route(
            "/api/sessions/{token}",
            get(sessions::get_session_by_path)
                .head(sessions::head_session)
                .post(sessions::edit_session_by_path)
                .patch(sessions::edit_session_by_path),
        )
        .route("/api/segments", get(segments::get_segment))
        .route("/api/segments/", get(segments::empty_segment_token))
        .route("/api/segments/{*token}", get(segments::decode_segment))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(public_metrics))
        .route("/openapi.json", get(openapi))
        .route("/.well-known/jwks.json", get(jwks))
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .with_state(state)
}

/// The router of the public API with every request observed (request id, metrics, log line):
/// what the server serves.
pub fn service(state: Arc<AppState>) -> Observe<Router> {
    Observe::new(router(state.clone()), state)
}

/// The router of the metrics address (`metrics_listen`): `GET /metrics` alone.
pub fn metrics_router() -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// The OpenAPI document of this server's routes.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// A bug must still answer `{"type","message"}` (and leave stored data alone: nothing is saved
/// after a panic, because saving is the last step of a request).
fn on_panic(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("the request failed unexpectedly", "a handler panicked").into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed("this route does not answer that method")
}

async fn health() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

/// `GET /metrics` on the public address: the metrics, unless `metrics_listen` serves them
/// (then 404, so that a public address does not show them).
async fn public_metrics(State(state): State<Arc<AppState>>) -> Response {
    if state.metrics_here {
        metrics().await
    } else {
        ApiError::not_found("the metrics are served on the metrics_listen address").into_response()
    }
}

/// `GET /metrics`: the Prometheus text format.
async fn metrics() -> Response {
    let text = crate::telemetry::render();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=300"),
            ),
        ],
        state.jwks.clone(),
    )
        .into_response()
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.service.ping().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The request's account and the token it presents (path first, else cookie).
pub(crate) struct Context {
    pub(crate) account: Arc<Account>,
    pub(crate) cookies: RequestCookies,
    pub(crate) query: Query,
    pub(crate) path_token: Option<String>,
}

impl Context {
    pub(crate) fn new(state: &AppState, headers: &HeaderMap, raw_query: Option<&str>) -> Self {
        let query = Query::parse(raw_query);
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let account = state.tenancy.resolve(host, query.an.as_deref());
        Context {
            account,
            cookies: RequestCookies::parse(headers),
            query,
            path_token: None,
        }
    }

    pub(crate) fn with_path_token(mut self, token: Result<Path<String>, PathRejection>) -> Self {
        // A token that does not even decode is no token: the request gets a fresh session.
        self.path_token = Some(token.map(|Path(t)| t).unwrap_or_default());
        self
    }

    /// The session tokens to try, in order: the path's, else every `vtex_session` cookie.
    pub(crate) fn tokens(&self) -> Vec<&str> {
        match &self.path_token {
            Some(t) if t.is_empty() => Vec::new(),
            Some(t) => vec![t.as_str()],
            None => self.cookies.get_all(SESSION_COOKIE).collect(),
        }
    }

    /// The request's edit: `public` writes plus the cookies the account's apps watch.
    pub(crate) fn edit(&self, state: &AppState, public: sessiond_core::Changes) -> Edit {
        Edit::new(
            &self.account,
            public,
            self.cookies.iter(),
            !self.cookies.only_session_token(),
            &state.limits,
        )
    }
}

pub(crate) fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = (status, body.into()).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Both token cookies, on every session answer, even unchanged: VTEX's own clients read the
/// session token from the first `Set-Cookie` line of every session answer.
pub(crate) fn add_token_cookies(state: &AppState, response: &mut Response, outcome: &Outcome) {
    let snapshot = &outcome.snapshot;
    let h = response.headers_mut();
    h.append(header::SET_COOKIE, state.cookies.session(&outcome.token));
    h.append(header::SET_COOKIE, state.cookies.segment(snapshot));
}
