//! The one error type of the HTTP boundary: every failure is `{"type", "message"}`.

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sessiond_core::record::RecordError;

use crate::service::SessionError;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The `type` field: the error's kind.
    pub kind: Cow<'static, str>,
    /// The `message` field: what and why.
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            kind: Cow::Borrowed(kind),
            message: message.into(),
        }
    }

    /// 401/403 from a session app: its own `type` and `message`, as it answered them.
    pub fn rejected(status: u16, kind: String, message: String) -> Self {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
            kind: Cow::Owned(kind),
            message,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 401: the request lacks the credentials it needs.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
    }

    /// 404: no such route or resource.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NotFound", message)
    }

    /// 405: the route exists but not with this method.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
    }

    /// 409: the session kept changing under this request.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", message)
    }

    /// 408: the body did not arrive in time.
    pub fn request_timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "RequestTimeout", message)
    }

    /// 413: the body is over the configured limit.
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", message)
    }

    /// 415: the body is not JSON.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            message,
        )
    }

    /// 503: the store did not answer in time or failed.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", message)
    }

    /// 500: a bug or an unexpected state; details go to the log, not the client.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            format!("{context}; see the server log"),
        )
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Conflict => ApiError::conflict(e.to_string()),
            SessionError::Unavailable(m) => {
                tracing::warn!(error = %m, "session store unavailable");
                ApiError::unavailable("the session store is unavailable")
            }
            SessionError::Corrupt(m) => ApiError::internal("a stored session could not be read", m),
            SessionError::TooManyPublicKeys { .. } => ApiError::bad_request(e.to_string()),
            SessionError::Rejected {
                status,
                kind,
                message,
            } => ApiError::rejected(status, kind, message),
        }
    }
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        ApiError::internal("a stored session could not be read", e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"type": self.kind, "message": self.message});
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().insert(
            axum::http::header::CACHE_CONTROL,
            axum::http::HeaderValue::from_static("no-store"),
        );
        response
    }
}
