//! gzip on the wire: request bodies sent with `Content-Encoding: gzip` are inflated (never
//! past `server.max_body`, so a small bomb cannot blow up), and responses are deflated
//! when the client's `Accept-Encoding` takes gzip and the body is worth it.
//! `tritonclient.http` offers both (`request_compression_algorithm`,
//! `response_compression_algorithm`), as do curl (`--compressed`) and browsers.

use super::error::ApiError;
use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use hyper::HeaderMap;
use hyper::header::{ACCEPT_ENCODING, HeaderValue};
use std::io::{Read, Write};

/// Smaller bodies are sent as they are: gzip's header and a round trip through it cost
/// more than the bytes saved.
const MIN_COMPRESSED: usize = 1024;

/// The body as the endpoint reads it: inflated when its `Content-Encoding` is gzip, at
/// most `limit` bytes once inflated.
pub fn decode_request(encoding: Option<&HeaderValue>, body: Bytes, limit: usize) -> Result<Bytes, ApiError> {
    let encoding = encoding.map(|v| v.to_str().unwrap_or("(not text)").trim());
    match encoding {
        None | Some("identity") => Ok(body),
        Some(e) if e.eq_ignore_ascii_case("gzip") => {
            let mut inflated = Vec::with_capacity(body.len() * 4);
            // One byte past the limit tells a body at the limit from one over it.
            let read = GzDecoder::new(body.as_ref()).take(limit as u64 + 1).read_to_end(&mut inflated);
            match read {
                Ok(n) if n > limit => Err(ApiError::too_large(limit)),
                Ok(_) => Ok(Bytes::from(inflated)),
                Err(e) => {
                    Err(ApiError::bad_request(format!("the body is not valid gzip (Content-Encoding: gzip): {e}")))
                }
            }
        }
        Some(other) => Err(ApiError::unsupported_encoding(format!(
            "Content-Encoding '{other}' is not supported; send gzip or no encoding"
        ))),
    }
}

/// Whether the client takes a gzip-encoded response.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    let Some(accepted) = headers.get(ACCEPT_ENCODING).and_then(|v| v.to_str().ok()) else { return false };
    accepted.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or_default().trim();
        let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

/// `body` gzip-encoded when it is large enough to be worth it; `None` to send it as is.
pub fn encode_response(body: &[u8]) -> Option<Bytes> {
    if body.len() < MIN_COMPRESSED {
        return None;
    }
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    encoder.write_all(body).ok()?;
    encoder.finish().ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: hyper::header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn gzip_bodies_inflate_within_the_limit() {
        let json = br#"{"inputs": []}"#.repeat(100);
        let gz = encode_response(&json).unwrap();
        let gzip = HeaderValue::from_static("gzip");
        assert_eq!(decode_request(Some(&gzip), gz.clone(), 1 << 20).unwrap(), Bytes::from(json.clone()));
        assert_eq!(decode_request(Some(&gzip), gz, 100).unwrap_err().status(), 413, "a bomb stops at the limit");
        assert_eq!(decode_request(Some(&gzip), Bytes::from_static(b"nope"), 100).unwrap_err().status(), 400);
        let br = HeaderValue::from_static("br");
        assert_eq!(decode_request(Some(&br), Bytes::new(), 100).unwrap_err().status(), 415);
        assert_eq!(decode_request(None, Bytes::from_static(b"x"), 100).unwrap(), "x");
    }

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        assert!(accepts_gzip(&headers(ACCEPT_ENCODING, "gzip, deflate")));
        assert!(accepts_gzip(&headers(ACCEPT_ENCODING, "br;q=1.0, gzip;q=0.5")));
        assert!(!accepts_gzip(&headers(ACCEPT_ENCODING, "gzip;q=0")));
        assert!(!accepts_gzip(&headers(ACCEPT_ENCODING, "identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
        assert!(encode_response(b"small").is_none());
    }
}
