//! A response before it becomes an HTTP message ([`Reply`]), and the one place that turns
//! it into one: status, body (gzip when the client accepts it), and headers.

use super::error::ApiError;
use super::{INFERENCE_HEADER, VERSION_HEADER, compression, oip};
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use std::time::Duration;

/// A response before it becomes an HTTP message.
pub struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Bytes,
    pub(super) content_type: &'static str,
    pub(super) retry_after: Option<Duration>,
    pub(super) allow: Option<&'static str>,
    /// `WWW-Authenticate`, with 401 and 403.
    pub(super) challenge: Option<String>,
    /// The version that took an inference request, sent back as `x-modeld-version`.
    pub(super) version: Option<u64>,
    /// Where the JSON header ends when binary tensor data follows it.
    pub(super) json_len: Option<usize>,
    /// `Content-Security-Policy`, for pages.
    pub(super) policy: Option<&'static str>,
    /// `Cache-Control: no-store`: state that is stale a second later.
    pub(super) no_store: bool,
    /// `Connection: close`: the request's body was left unread, so the connection ends.
    pub(super) close: bool,
}

impl Reply {
    pub(super) fn json(status: StatusCode, body: String) -> Reply {
        Reply {
            status,
            body: Bytes::from(body),
            content_type: "application/json",
            retry_after: None,
            allow: None,
            challenge: None,
            version: None,
            json_len: None,
            policy: None,
            no_store: false,
            close: false,
        }
    }

    /// An OIP infer answer: plain JSON, or a JSON header and binary outputs.
    pub(super) fn infer(encoded: oip::Encoded) -> Reply {
        let content_type = match encoded.json_len {
            Some(_) => "application/octet-stream",
            None => "application/json",
        };
        Reply { body: Bytes::from(encoded.body), content_type, json_len: encoded.json_len, ..Reply::ok(String::new()) }
    }

    pub(super) fn ok(body: String) -> Reply {
        Reply::json(StatusCode::OK, body)
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        let status = e.status();
        let body = e.body();
        Reply {
            retry_after: e.retry_after,
            allow: e.allow,
            challenge: e.challenge,
            close: e.close,
            ..Reply::json(status, body)
        }
    }
}

/// The HTTP message for `reply`: its body gzipped when the client accepts it (none for
/// HEAD), and its headers.
pub(super) fn respond(reply: Reply, head_only: bool, gzip: bool) -> Response<Full<Bytes>> {
    let compress = || compression::encode_response(&reply.body);
    let compressed = (gzip && !head_only).then(|| super::offload::cpu(reply.body.len(), compress)).flatten();
    let encoded = compressed.is_some();
    let body = match (head_only, compressed) {
        (true, _) => Bytes::new(),
        (false, Some(gz)) => gz,
        (false, None) => reply.body,
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    if encoded {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    if let Some(after) = reply.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
    }
    if let Some(challenge) = reply.challenge.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert(header::WWW_AUTHENTICATE, challenge);
    }
    if let Some(allow) = reply.allow {
        headers.insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    if let Some(version) = reply.version {
        headers.insert(VERSION_HEADER, HeaderValue::from(version));
    }
    if let Some(json_len) = reply.json_len {
        headers.insert(INFERENCE_HEADER, HeaderValue::from(json_len));
    }
    if let Some(policy) = reply.policy {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    if reply.no_store {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if reply.close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
