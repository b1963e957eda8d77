//! Bearer tokens on the HTTP API ([`crate::config::Auth`]): which scope each endpoint
//! needs, and the check of a request's `Authorization: Bearer T` against the configured
//! tokens' SHA-256 (compared in constant time, every token each time, so timing tells
//! nothing of how close a guess was).
//!
//! Without tokens every endpoint is open. With tokens: no or an unknown token is 401 with
//! `WWW-Authenticate: Bearer realm="modeld"` (and `error="invalid_token"` for an unknown
//! one); a token without the scope or model is 403 with `error="insufficient_scope"`.
//! Probes and /metrics stay open unless `open_probes = false`.

use super::error::ApiError;
use super::routes::Endpoint;
use crate::config::{Auth, Scope, Token};
use hyper::HeaderMap;
use sha2::{Digest, Sha256};

/// What an endpoint needs of a token.
pub enum Need<'a> {
    /// Static assets without data.
    Open,
    /// Liveness, readiness, /health, /metrics: open unless `open_probes = false`.
    Probe,
    /// A scope, on a model when the endpoint names one. `/predict` names its model in the
    /// body: it is checked again once the body is read.
    Scope(Scope, Option<&'a str>),
}

pub fn need(endpoint: &Endpoint) -> Need<'_> {
    match endpoint {
        Endpoint::Live
        | Endpoint::ServerReady
        | Endpoint::ModelReady { .. }
        | Endpoint::Health
        | Endpoint::Ready
        | Endpoint::Metrics => Need::Probe,
        // The live view's page holds no data: it asks for a token when its state does.
        Endpoint::Ui(_) => Need::Open,
        // Filtered to the models the token may see.
        Endpoint::ServerMetadata | Endpoint::OpenApi | Endpoint::UiState => Need::Scope(Scope::Metadata, None),
        Endpoint::UiReport { model, .. } => Need::Scope(Scope::Metadata, Some(model)),
        Endpoint::ModelMetadata { model, .. }
        | Endpoint::TfStatus { model, .. }
        | Endpoint::TfMetadata { model, .. } => Need::Scope(Scope::Metadata, Some(model)),
        Endpoint::Infer { model, .. } | Endpoint::TfInfer { model, .. } => Need::Scope(Scope::Infer, Some(model)),
        Endpoint::Predict { .. } => Need::Scope(Scope::Infer, None),
    }
}

/// Lets the request through for `need`, or says why not.
pub fn admit(auth: &Auth, headers: &HeaderMap, need: &Need) -> Result<(), ApiError> {
    match need {
        _ if !auth.enabled() => Ok(()),
        Need::Open => Ok(()),
        Need::Probe if auth.open_probes => Ok(()),
        Need::Probe => authorize(auth, headers, Scope::Probes, None),
        Need::Scope(scope, model) => authorize(auth, headers, *scope, *model),
    }
}

/// Whether a probe's answer may name models and say why they are not ready: always
/// without tokens; with tokens, to a token of the probes scope (open probes tell others
/// only their status).
pub fn sees_detail(auth: &Auth, headers: &HeaderMap) -> bool {
    authorize(auth, headers, Scope::Probes, None).is_ok()
}

/// The request's token, which must allow `scope` on `model`.
pub fn authorize(auth: &Auth, headers: &HeaderMap, scope: Scope, model: Option<&str>) -> Result<(), ApiError> {
    if !auth.enabled() {
        return Ok(());
    }
    let header = headers.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let presented = match header.map(|h| h.split_once(' ')) {
        None => {
            return Err(ApiError::unauthorized(
                "this endpoint needs a token: send Authorization: Bearer <token>",
                r#"Bearer realm="modeld""#.into(),
            ));
        }
        Some(Some((scheme, token))) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            token.trim()
        }
        Some(_) => {
            return Err(ApiError::unauthorized(
                "the Authorization header must be: Bearer <token>",
                r#"Bearer realm="modeld", error="invalid_request""#.into(),
            ));
        }
    };
    let token = find(auth, presented).ok_or_else(|| {
        ApiError::unauthorized("the token is not known", r#"Bearer realm="modeld", error="invalid_token""#.into())
    })?;
    if token.allows(scope, model) {
        return Ok(());
    }
    let what = match model {
        Some(m) => format!("{}:{m}", scope.name()),
        None => scope.name().to_string(),
    };
    Err(ApiError::forbidden(
        format!("token '{}' does not allow {what}", token.name),
        format!(r#"Bearer realm="modeld", error="insufficient_scope", scope="{what}""#),
    ))
}

/// The models an admitted request's token is limited to (none: every model, as without
/// tokens or with a token for all models).
pub fn limited_to(auth: &Auth, headers: &HeaderMap) -> Option<Vec<String>> {
    if !auth.enabled() {
        return None;
    }
    let header = headers.get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let presented = header.and_then(|h| h.split_once(' ')).map(|(_, token)| token.trim());
    match presented.and_then(|p| find(auth, p)) {
        Some(token) => token.models.clone(),
        // Refused before it got here; were it not, it would see nothing.
        None => Some(Vec::new()),
    }
}

/// The configured token whose hash the presented one has, comparing with every token.
pub fn find<'a>(auth: &'a Auth, presented: &str) -> Option<&'a Token> {
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    for token in &auth.tokens {
        if constant_time_eq(&token.sha256, &digest) {
            found = Some(token);
        }
    }
    found
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// SHA-256 of a token, in hex, as `[[auth.token]] sha256` takes it.
pub fn hash_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let token = |name: &str, secret: &str, models: Option<Vec<&str>>, scopes: Vec<Scope>| Token {
            name: name.into(),
            sha256: Sha256::digest(secret.as_bytes()).into(),
            models: models.map(|m| m.into_iter().map(String::from).collect()),
            scopes,
        };
        Auth {
            tokens: vec![
                token("front", "s3cret", Some(vec!["iris"]), vec![Scope::Infer]),
                token("scraper", "metrics-only", None, vec![Scope::Probes]),
            ],
            open_probes: false,
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(hyper::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        h
    }

    #[test]
    fn a_token_for_some_models_limits_what_the_live_view_shows() {
        let a = auth();
        assert_eq!(limited_to(&a, &bearer("s3cret")), Some(vec!["iris".to_string()]));
        assert_eq!(limited_to(&a, &bearer("metrics-only")), None);
        assert_eq!(limited_to(&a, &bearer("guess")), Some(vec![]));
        assert_eq!(limited_to(&Auth::default(), &HeaderMap::new()), None);
    }

    #[test]
    fn the_matrix_of_tokens_and_scopes() {
        let a = auth();
        let status = |r: Result<(), ApiError>| r.map_or_else(|e| e.status().as_u16(), |_| 200);
        assert_eq!(status(authorize(&a, &HeaderMap::new(), Scope::Infer, Some("iris"))), 401);
        assert_eq!(status(authorize(&a, &bearer("guess"), Scope::Infer, Some("iris"))), 401);
        assert_eq!(status(authorize(&a, &bearer("s3cret"), Scope::Infer, Some("iris"))), 200);
        assert_eq!(status(authorize(&a, &bearer("s3cret"), Scope::Infer, Some("mlp"))), 403);
        assert_eq!(status(authorize(&a, &bearer("s3cret"), Scope::Metadata, Some("iris"))), 403);
        assert_eq!(status(admit(&a, &bearer("metrics-only"), &Need::Probe)), 200);
        assert_eq!(status(admit(&a, &HeaderMap::new(), &Need::Probe)), 401);
        let open = Auth { open_probes: true, ..auth() };
        assert_eq!(status(admit(&open, &HeaderMap::new(), &Need::Probe)), 200);
        assert_eq!(status(admit(&Auth::default(), &HeaderMap::new(), &Need::Scope(Scope::Infer, Some("x")))), 200);
    }

    #[test]
    fn refusals_carry_their_challenge() {
        let a = auth();
        let e = authorize(&a, &bearer("s3cret"), Scope::Infer, Some("mlp")).unwrap_err();
        assert_eq!(
            e.challenge.as_deref(),
            Some(r#"Bearer realm="modeld", error="insufficient_scope", scope="infer:mlp""#)
        );
        assert!(e.message.contains("token 'front' does not allow infer:mlp"));
        let mut basic = HeaderMap::new();
        basic.insert(hyper::header::AUTHORIZATION, "Basic dTpw".parse().unwrap());
        assert!(authorize(&a, &basic, Scope::Infer, None).unwrap_err().challenge.unwrap().contains("invalid_request"));
    }

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(hash_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
