//! HTTP routes: small handlers that read the request, call the session service and shape
//! the VTEX-compatible answer.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sessiond_core::Segment;

use crate::clock::Clock;
use crate::config::Limits;
use crate::cookies::{self, CookieStyle};
use crate::error::ApiError;
use crate::request::{
    public_writes, set_cookie, Query, RequestCookies, SEGMENT_COOKIE, SESSION_COOKIE,
};
use crate::service::{Edit, Outcome, SessionService};
use crate::tenancy::{Account, Tenancy};

/// Everything the handlers share.
pub struct AppState {
    /// Accounts and their apps.
    pub tenancy: Tenancy,
    /// The session service.
    pub service: SessionService,
    /// Request limits.
    pub limits: Limits,
    /// The attributes of the token cookies.
    pub cookies: CookieStyle,
    /// The time requests are served at.
    pub clock: Clock,
    /// Whether answers come from the stored answer (see `Settings::fast_paths`).
    pub fast_paths: bool,
}

/// The router of the public API, health probes and JSON fallbacks.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/api/sessions",
            get(get_session)
                .head(head_session)
                .post(edit_session)
                .patch(edit_session)
                .delete(reset_session),
        )
        .route(
            "/api/sessions/{token}",
            get(get_session_by_path)
                .head(head_session)
                .post(edit_session_by_path)
                .patch(edit_session_by_path),
        )
        .route("/api/segments", get(get_segment))
        .route("/api/segments/", get(empty_segment_token))
        .route("/api/segments/{*token}", get(decode_segment))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .with_state(state)
}

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

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.service.ping().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The request's account and the token it presents (path first, else cookie).
struct Context<'a> {
    account: &'a Arc<Account>,
    cookies: RequestCookies,
    query: Query,
    path_token: Option<String>,
}

impl<'a> Context<'a> {
    fn new(state: &'a AppState, headers: &HeaderMap, raw_query: Option<&str>) -> Self {
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

    fn with_path_token(mut self, token: Result<Path<String>, PathRejection>) -> Self {
        // A token that does not even decode is no token: the request gets a fresh session.
        self.path_token = Some(token.map(|Path(t)| t).unwrap_or_default());
        self
    }

    /// The session tokens to try, in order: the path's, else every `vtex_session` cookie.
    fn tokens(&self) -> Vec<&str> {
        match &self.path_token {
            Some(t) if t.is_empty() => Vec::new(),
            Some(t) => vec![t.as_str()],
            None => self.cookies.get_all(SESSION_COOKIE).collect(),
        }
    }

    /// The request's edit: `public` writes plus the cookies the account's apps watch.
    fn edit(&self, state: &AppState, public: sessiond_core::Changes) -> Edit {
        Edit::new(
            self.account,
            public,
            self.cookies.iter(),
            !self.cookies.only_session_token(),
            &state.limits,
        )
    }
}

/// The session answer for an `items` filter (none: no values).
fn session_json(
    state: &AppState,
    outcome: &Outcome,
    items: Option<&str>,
) -> Result<Body, ApiError> {
    Ok(Body::from(
        outcome.snapshot.answer(items, state.fast_paths)?,
    ))
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
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
fn add_token_cookies(state: &AppState, response: &mut Response, outcome: &Outcome) {
    let snapshot = &outcome.snapshot;
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        cookies::session_cookie(snapshot, &outcome.token, state.cookies),
    );
    h.append(
        header::SET_COOKIE,
        cookies::segment_cookie(snapshot, state.cookies),
    );
}

// Handlers take the whole request and borrow its headers and query: extracting a `HeaderMap`
// would copy every header of every request.

async fn get_session(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (headers, query) = (request.headers(), request.uri().query());
    read(&state, Context::new(&state, headers, query)).await
}

async fn get_session_by_path(
    State(state): State<Arc<AppState>>,
    token: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let (headers, query) = (request.headers(), request.uri().query());
    read(
        &state,
        Context::new(&state, headers, query).with_path_token(token),
    )
    .await
}

async fn read(state: &AppState, ctx: Context<'_>) -> Result<Response, ApiError> {
    // GET never stores its query string; only watched cookies go into a new session.
    let edit = ctx.edit(state, Default::default());
    let outcome = state
        .service
        .read(ctx.account, &ctx.tokens(), &edit, state.clock.now_ms())
        .await?;
    let mut response = json_response(
        StatusCode::OK,
        session_json(state, &outcome, ctx.query.items.as_deref())?,
    );
    add_token_cookies(state, &mut response, &outcome);
    Ok(response)
}

async fn edit_session(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let ctx = Context::new(&state, &parts.headers, parts.uri.query());
    edit(&state, ctx, &parts.headers, body).await
}

async fn edit_session_by_path(
    State(state): State<Arc<AppState>>,
    token: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let ctx = Context::new(&state, &parts.headers, parts.uri.query()).with_path_token(token);
    edit(&state, ctx, &parts.headers, body).await
}

async fn read_body(limits: &Limits, headers: &HeaderMap, body: Body) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::payload_too_large(format!(
            "the body is larger than the limit of {} bytes (max_body_bytes)",
            limits.max_body_bytes
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limits.max_body_bytes)
        .await
        .map(|b| b.to_vec())
        .map_err(|_| too_large())
}

async fn edit(
    state: &AppState,
    ctx: Context<'_>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(&state.limits, headers, body).await?;
    let (public, ignored) = public_writes(&ctx.query, headers, &body, &state.limits)?;
    if !ignored.is_empty() {
        tracing::debug!(namespaces = ?ignored, "ignored non-public namespaces in the body");
    }
    let edit = ctx.edit(state, public);
    let outcome = state
        .service
        .edit(ctx.account, &ctx.tokens(), &edit, state.clock.now_ms())
        .await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = match ctx.query.items.as_deref() {
        Some(items) => session_json(state, &outcome, Some(items))?,
        None => token_pair(&outcome),
    };
    let mut response = json_response(status, body);
    add_token_cookies(state, &mut response, &outcome);
    Ok(response)
}

/// The bytes of base64 (standard and URL-safe) and of JWTs: a token of only these needs no
/// JSON escaping.
static TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] =
            c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'-' | b'_' | b'.');
        b += 1;
    }
    table
};

/// `{"sessionToken","segmentToken"}`.
fn token_pair(outcome: &Outcome) -> Body {
    let (session, segment) = (outcome.token.as_str(), outcome.snapshot.segment_token());
    // Tokens are base64 (JWT parts, segment): written as they are, no escaping to look for.
    let plain = |t: &str| t.bytes().all(|b| TOKEN_BYTES[b as usize]);
    if plain(session) && plain(segment) {
        let mut out = Vec::with_capacity(session.len() + segment.len() + 36);
        for part in [
            r#"{"sessionToken":""#,
            session,
            r#"","segmentToken":""#,
            segment,
            r#""}"#,
        ] {
            out.extend_from_slice(part.as_bytes());
        }
        return Body::from(out);
    }
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct TokenPair<'a> {
        session_token: &'a str,
        segment_token: &'a str,
    }
    let pair = TokenPair {
        session_token: session,
        segment_token: segment,
    };
    Body::from(serde_json::to_vec(&pair).expect("answers serialize"))
}

async fn reset_session(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let ctx = Context::new(&state, request.headers(), request.uri().query());
    let outcome = state
        .service
        .reset(ctx.account, &ctx.tokens(), state.clock.now_ms())
        .await?;
    let mut response = json_response(StatusCode::OK, token_pair(&outcome));
    add_token_cookies(&state, &mut response, &outcome);
    Ok(response)
}

async fn get_segment(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let ctx = Context::new(&state, request.headers(), request.uri().query());
    let edit = ctx.edit(&state, Default::default());
    let snapshot = state
        .service
        .preview(ctx.account, &ctx.tokens(), &edit, state.clock.now_ms())
        .await?;
    let mut answer = Segment::of(snapshot.session()?);
    for (k, v) in &ctx.query.rest {
        if is_segment_override(k) {
            answer.override_field(k, v);
        }
    }
    let mut response = json_response(StatusCode::OK, answer.to_json());
    response.headers_mut().append(
        header::SET_COOKIE,
        cookies::segment_cookie(&snapshot, state.cookies),
    );
    Ok(response)
}

/// Query keys that override a segment answer (never stored): `utm*`, `utmi*`, `cultureInfo`.
fn is_segment_override(key: &str) -> bool {
    key.starts_with("utm") || key == "cultureInfo"
}

/// A decoded segment answer with the `vtex_segment` cookie of its canonical token.
fn segment_response(state: &AppState, body: Vec<u8>, token: &str) -> Response {
    let mut response = json_response(StatusCode::OK, body);
    let CookieStyle {
        max_age, secure, ..
    } = state.cookies;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SEGMENT_COOKIE, token, max_age, secure),
    );
    response
}

async fn decode_segment(
    State(state): State<Arc<AppState>>,
    token: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let Ok(Path(token)) = token else {
        return Err(ApiError::bad_request("the segment token is not valid text"));
    };
    let mut decoded = sessiond_core::segment::decode(&token)
        .map_err(|e| ApiError::bad_request(format!("malformed segment token: {e}")))?;
    let canonical = sessiond_core::segment::encode_map(&decoded);
    for (k, v) in Query::parse(raw.as_deref()).rest {
        if is_segment_override(&k) && decoded.contains_key(&k) {
            decoded.insert(k, serde_json::Value::String(v));
        }
    }
    let body = serde_json::to_vec(&decoded).expect("answers serialize");
    Ok(segment_response(&state, body, &canonical))
}

async fn empty_segment_token() -> ApiError {
    ApiError::bad_request("the segment token is missing: GET /api/segments/{segmentToken}")
}

/// HEAD of a session route: answers like a GET would, but never creates a session (crawlers
/// and probes send HEAD).
async fn head_session() -> Response {
    json_response(StatusCode::OK, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::Snapshot;

    async fn pair(token: &str) -> serde_json::Value {
        let outcome = Outcome {
            snapshot: Arc::new(Snapshot::new(sessiond_core::Session::new("demo", 0, 1))),
            created: true,
            token: token.to_owned(),
        };
        let body = axum::body::to_bytes(token_pair(&outcome), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn the_token_pair_is_json_whatever_the_tokens_hold() {
        let plain = pair("eyJh.eyJp-_.c2ln").await;
        assert_eq!(plain["sessionToken"], "eyJh.eyJp-_.c2ln");
        assert!(plain["segmentToken"].as_str().unwrap().starts_with("eyJ"));
        let odd = pair("a\"b\\c").await;
        assert_eq!(odd["sessionToken"], "a\"b\\c");
    }
}
