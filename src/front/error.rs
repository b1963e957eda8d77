//! The one mapping from what went wrong to an HTTP status and a JSON error body
//! (`{"error": "...", "error_type": "..."}`: `error` as the Open Inference Protocol and TF
//! Serving specify, `error_type` for clients that branch on it), so every endpoint answers
//! the same problem the same way. Both derive from the error's [`Kind`].

use crate::router::{CallError, Fault, RouteError};
use hyper::StatusCode;
use std::time::Duration;

/// What kind of problem an error is. Its HTTP status and the machine-readable
/// `error_type` of the body derive from it here, and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed whatever version takes it (JSON, datatype names, shapes).
    BadRequest,
    /// The version the request reached does not take it (names, datatypes, shapes of its
    /// signature, or its worker's checks): counted in that version's refusals.
    InvalidForVersion,
    /// No token, or an unknown one (with a `WWW-Authenticate` challenge).
    Unauthorized,
    /// A token without the scope or model asked for.
    Forbidden,
    NotFound,
    MethodNotAllowed,
    TooLarge,
    UnsupportedEncoding,
    /// Not ready, overloaded, or the version went away: retry later.
    Unavailable,
    Timeout,
    Internal,
}

impl Kind {
    pub fn status(self) -> StatusCode {
        match self {
            Kind::BadRequest | Kind::InvalidForVersion => StatusCode::BAD_REQUEST,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Forbidden => StatusCode::FORBIDDEN,
            Kind::NotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::UnsupportedEncoding => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Kind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body's `error_type`, for clients that branch on the kind of error.
    pub fn error_type(self) -> &'static str {
        match self {
            Kind::BadRequest => "bad_request",
            Kind::InvalidForVersion => "invalid_input",
            Kind::Unauthorized => "unauthorized",
            Kind::Forbidden => "forbidden",
            Kind::NotFound => "not_found",
            Kind::MethodNotAllowed => "method_not_allowed",
            Kind::TooLarge => "payload_too_large",
            Kind::UnsupportedEncoding => "unsupported_encoding",
            Kind::Unavailable => "unavailable",
            Kind::Timeout => "timeout",
            Kind::Internal => "internal",
        }
    }
}

/// An error answered to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub kind: Kind,
    pub message: String,
    /// Sent as `Retry-After` (whole seconds) with 503s the client may retry.
    pub retry_after: Option<Duration>,
    /// Sent as `Allow` with 405s.
    pub allow: Option<&'static str>,
    /// Sent as `WWW-Authenticate` with 401s and 403s.
    pub challenge: Option<String>,
    /// `Connection: close`: the request's body was left unread.
    pub close: bool,
}

impl ApiError {
    fn new(kind: Kind, message: impl Into<String>) -> ApiError {
        ApiError { kind, message: message.into(), retry_after: None, allow: None, challenge: None, close: false }
    }

    /// The same error, its connection closed after it when `close`.
    pub fn closing(self, close: bool) -> ApiError {
        ApiError { close, ..self }
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// Whether the version's signature or worker refused it (see [`Kind::InvalidForVersion`]).
    pub fn invalid_for_version(&self) -> bool {
        self.kind == Kind::InvalidForVersion
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::BadRequest, message)
    }

    /// A 400 because the version the request reached does not take it.
    pub fn not_for_version(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::InvalidForVersion, message)
    }

    pub fn unauthorized(message: impl Into<String>, challenge: String) -> ApiError {
        ApiError { challenge: Some(challenge), ..ApiError::new(Kind::Unauthorized, message) }
    }

    pub fn forbidden(message: impl Into<String>, challenge: String) -> ApiError {
        ApiError { challenge: Some(challenge), ..ApiError::new(Kind::Forbidden, message) }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::NotFound, message)
    }

    pub fn method_not_allowed(method: &hyper::Method, path: &str, allow: &'static str) -> ApiError {
        ApiError {
            allow: Some(allow),
            ..ApiError::new(Kind::MethodNotAllowed, format!("{method} is not allowed on {path}; use {allow}"))
        }
    }

    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(Kind::TooLarge, format!("request body exceeds the {limit}-byte limit (server.max_body)"))
    }

    pub fn unsupported_encoding(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::UnsupportedEncoding, message)
    }

    pub fn timeout(after: Duration) -> ApiError {
        ApiError::new(Kind::Timeout, format!("request timed out after {after:?} (server.request_timeout)"))
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError { retry_after: Some(Duration::from_secs(1)), ..ApiError::new(Kind::Unavailable, message) }
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(Kind::Internal, message)
    }

    /// The JSON body: `{"error": message, "error_type": kind}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.message, "error_type": self.kind.error_type() }).to_string()
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
            RouteError::Call(CallError::Failed { fault: Fault::BadInput, .. }) => ApiError::not_for_version(message),
            RouteError::Call(CallError::Failed {
                fault: Fault::Internal | Fault::NonFinite { .. } | Fault::Contract { .. },
                ..
            }) => ApiError::internal(message),
        }
    }
}
