//! The one mapping from what went wrong to an HTTP status and a JSON error body
//! (`{"error": "..."}`, as the Open Inference Protocol specifies), so every endpoint
//! answers the same problem the same way.

use crate::router::{CallError, Fault, RouteError};
use hyper::StatusCode;
use std::time::Duration;

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds) with 503s the client may retry.
    pub retry_after: Option<Duration>,
    /// Sent as `Allow` with 405s.
    pub allow: Option<&'static str>,
    /// A 400 decided by the version's signature or worker (names, datatypes, shapes), not
    /// by the body's form: counted in that version's refusals.
    pub invalid_for_version: bool,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), retry_after: None, allow: None, invalid_for_version: false }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 400 because the version the request reached does not take it.
    pub fn invalid_for_version(message: impl Into<String>) -> ApiError {
        ApiError { invalid_for_version: true, ..ApiError::bad_request(message) }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn method_not_allowed(method: &hyper::Method, path: &str, allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{method} is not allowed on {path}; use {allow}"))
        }
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body exceeds the {limit}-byte limit (server.max_body)"),
        )
    }

    pub fn unsupported_encoding(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, message)
    }

    pub fn timeout(after: Duration) -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("request timed out after {after:?} (server.request_timeout)"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(Duration::from_secs(1)),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.message }).to_string()
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> ApiError {
        let message = e.to_string();
        match e {
            RouteError::UnknownModel(_) | RouteError::UnknownVersion { .. } => ApiError::not_found(message),
            RouteError::NotReady { .. }
            | RouteError::Overloaded { .. }
            | RouteError::Retired { .. }
            | RouteError::Call(CallError::Gone) => ApiError::unavailable(message),
            RouteError::Call(CallError::Failed { fault: Fault::BadInput, .. }) => {
                ApiError::invalid_for_version(message)
            }
            RouteError::Call(CallError::Failed { fault: Fault::Internal | Fault::NonFinite { .. }, .. }) => {
                ApiError::internal(message)
            }
        }
    }
}
