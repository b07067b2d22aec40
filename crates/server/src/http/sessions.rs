//! `/api/sessions` and `/api/sessions/{token}`: read (GET), edit or create (POST, PATCH),
//! reset (DELETE); HEAD answers without creating anything.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;

use super::error::ApiError;
use super::request::public_writes;
use super::{add_token_cookies, json_response, AppState, Context};
use crate::config::Limits;
use crate::service::Outcome;

/// The session answer for an `items` filter (none: no values).
fn session_json(
    state: &AppState,
    outcome: &Outcome,
    items: Option<&str>,
) -> Result<Body, ApiError> {
    let filter = items.map(|raw| state.filters.get(raw));
    Ok(Body::from(
        outcome.snapshot.answer(filter.as_ref(), state.fast_paths)?,
    ))
}

// Handlers take the whole request and borrow its headers and query: extracting a `HeaderMap`
// would copy every header of every request.

pub(super) async fn get_session(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (headers, query) = (request.headers(), request.uri().query());
    read(&state, Context::new(&state, headers, query)).await
}

pub(super) async fn get_session_by_path(
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

async fn read(state: &AppState, ctx: Context) -> Result<Response, ApiError> {
    // GET never stores its query string; only watched cookies go into a new session.
    let edit = ctx.edit(state, Default::default());
    let outcome = state
        .service
        .read(&ctx.account, &ctx.tokens(), &edit, state.clock.now_ms())
        .await?;
    let mut response = json_response(
        StatusCode::OK,
        session_json(state, &outcome, ctx.query.items.as_deref())?,
    );
    add_token_cookies(state, &mut response, &outcome);
    Ok(response)
}

pub(super) async fn edit_session(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let ctx = Context::new(&state, &parts.headers, parts.uri.query());
    edit(&state, ctx, &parts.headers, body).await
}

pub(super) async fn edit_session_by_path(
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
    // A body trickled in (or promised by `Content-Length` and never sent) holds the request
    // for `request_timeout` at most.
    match tokio::time::timeout(
        limits.request_timeout,
        axum::body::to_bytes(body, limits.max_body_bytes),
    )
    .await
    {
        Ok(read) => read.map(|b| b.to_vec()).map_err(|_| too_large()),
        Err(_) => Err(ApiError::request_timeout(format!(
            "the body did not arrive within {} (request_timeout)",
            humantime::format_duration(limits.request_timeout)
        ))),
    }
}

async fn edit(
    state: &AppState,
    ctx: Context,
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
        .edit(&ctx.account, &ctx.tokens(), &edit, state.clock.now_ms())
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

/// Whether `text` goes into a JSON string as it is: it holds no quote, backslash or control
/// character, the bytes JSON escapes. Every byte is looked at, without stopping at the first
/// such, so that the check runs on vectors (a token pair is over a kilobyte).
fn needs_no_escape(text: &str) -> bool {
    !text.bytes().fold(false, |found, b| {
        found | (b == b'"') | (b == b'\\') | (b < 0x20)
    })
}

/// `{"sessionToken","segmentToken"}`.
fn token_pair(outcome: &Outcome) -> Body {
    let (session, segment) = (outcome.token.as_str(), outcome.snapshot.segment_token());
    // Tokens are base64 (JWT parts, segment): written as they are, nothing to escape.
    if needs_no_escape(session) && needs_no_escape(segment) {
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

pub(super) async fn reset_session(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let ctx = Context::new(&state, request.headers(), request.uri().query());
    let outcome = state
        .service
        .reset(&ctx.account, &ctx.tokens(), state.clock.now_ms())
        .await?;
    let mut response = json_response(StatusCode::OK, token_pair(&outcome));
    add_token_cookies(&state, &mut response, &outcome);
    Ok(response)
}

/// HEAD of a session route: answers like a GET would, but never creates a session (crawlers
/// and probes send HEAD).
pub(super) async fn head_session() -> Response {
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
        for text in ["a\u{1}b", "\n", "\u{1f}", "ação", "\u{7f}"] {
            assert_eq!(pair(text).await["sessionToken"], text, "{text:?}");
        }
    }
}
