//! The one error type handlers return, and how it becomes a response: the status of its
//! kind, `{"error": {"kind", "message"}, "request_id"}`, and `Retry-After` where retrying
//! helps. Handlers never build error responses by hand.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use palisade_api::{ApiErrorKind, ErrorBody, ErrorDetail};
use palisade_store::StoreError;

use crate::telemetry;

/// An API error: a kind callers match on, a message for people, and what to send besides.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ApiError {
    pub kind: ErrorKindText,
    pub status: StatusCode,
    pub message: String,
    pub retry_after: Option<Duration>,
    pub invocation_id: Option<String>,
}

/// The `kind` string: an [`ApiErrorKind`] or an invocation error kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKindText {
    Api(ApiErrorKind),
    Invocation(palisade_model::ErrorKind),
}

impl std::fmt::Display for ErrorKindText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Api(kind) => f.write_str(kind.as_str()),
            Self::Invocation(kind) => f.write_str(kind.as_str()),
        }
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl ApiError {
    pub fn new(kind: ApiErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKindText::Api(kind),
            status: status(kind.status()),
            message: message.into(),
            retry_after: None,
            invocation_id: None,
        }
    }

    /// An invocation that failed, with the status `:invoke` gives its kind.
    pub fn invocation(error: &palisade_model::InvocationError) -> Self {
        Self {
            kind: ErrorKindText::Invocation(error.kind),
            status: status(palisade_api::invocation_status(error.kind)),
            message: error.message.clone(),
            retry_after: None,
            invocation_id: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ApiErrorKind::InvalidRequest, message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(ApiErrorKind::NotFound, format!("{what} does not exist"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ApiErrorKind::Forbidden, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ApiErrorKind::Conflict, message)
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(ApiErrorKind::Internal, message.to_string())
    }

    /// A call admission refused: `429 rate_limited` for the tenant's own quota, `503
    /// overloaded` for the server's capacity, with `Retry-After` either way.
    pub fn refused(refused: palisade_host::Refused) -> Self {
        let kind = match refused.reason {
            palisade_host::Rejection::Rate | palisade_host::Rejection::Concurrency => {
                ApiErrorKind::RateLimited
            }
            palisade_host::Rejection::Overloaded => ApiErrorKind::Overloaded,
        };
        Self::new(kind, refused.message).retry_after(refused.retry_after)
    }

    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn with_invocation(mut self, invocation_id: &str) -> Self {
        self.invocation_id = Some(invocation_id.to_owned());
        self
    }
}

impl IntoResponse for ApiError {
    /// The status of the kind and the error body, carrying the id of the request being served.
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind.to_string(),
                message: self.message,
            },
            request_id: telemetry::current_request_id(),
            invocation_id: self.invocation_id,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(after) = self.retry_after {
            let seconds = after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => Self::not_found(what),
            StoreError::Conflict(message) => Self::conflict(message),
            StoreError::Invalid(message) => Self::invalid(message),
            other => {
                tracing::error!(error = %other, "store failure");
                Self::internal(format!("the store failed: {other}"))
            }
        }
    }
}

/// Handler results.
pub type ApiResult<T> = Result<T, ApiError>;
