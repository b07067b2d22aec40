//! `/api/segments`: the segment of the current session (or of the session a create would
//! make), with the query's `utm*`/`cultureInfo` overrides; `/api/segments/{token}`: a segment
//! token decoded.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use sessiond_core::Segment;

use super::error::ApiError;
use super::request::{Query, SEGMENT_COOKIE};
use super::{json_response, AppState, Context};

pub(super) async fn get_segment(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let ctx = Context::new(&state, request.headers(), request.uri().query());
    let edit = ctx.edit(&state, Default::default());
    let snapshot = state
        .service
        .preview(&ctx.account, &ctx.tokens(), &edit, state.clock.now_ms())
        .await?;
    let mut answer = Segment::of(snapshot.session()?);
    for (k, v) in &ctx.query.rest {
        if is_segment_override(k) {
            answer.override_field(k, v);
        }
    }
    let mut response = json_response(StatusCode::OK, answer.to_json());
    response
        .headers_mut()
        .append(header::SET_COOKIE, state.cookies.segment(&snapshot));
    Ok(response)
}

/// Query keys that override a segment answer (never stored): `utm*`, `utmi*`, `cultureInfo`.
fn is_segment_override(key: &str) -> bool {
    key.starts_with("utm") || key == "cultureInfo"
}

/// A decoded segment answer with the `vtex_segment` cookie of its canonical token.
fn segment_response(state: &AppState, body: Vec<u8>, token: &str) -> Response {
    let mut response = json_response(StatusCode::OK, body);
    response.headers_mut().append(
        header::SET_COOKIE,
        state.cookies.style().line(SEGMENT_COOKIE, token),
    );
    response
}

pub(super) async fn decode_segment(
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

pub(super) async fn empty_segment_token() -> ApiError {
    ApiError::bad_request("the segment token is missing: GET /api/segments/{segmentToken}")
}
