//! The HTTP surface: which method and path reach which endpoint. Unknown paths are 404,
//! known paths with the wrong method 405 with `Allow`. `openapi.json` beside this file
//! documents every route; a test holds the two to each other, both ways.

use super::error::ApiError;
use super::tfserving::Verb;
use hyper::Method;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v2`: server metadata.
    ServerMetadata,
    /// `GET /v2/health/live`.
    Live,
    /// `GET /v2/health/ready`.
    ServerReady,
    /// `GET /v2/models/{m}[/versions/{v}]`.
    ModelMetadata {
        model: String,
        version: Option<u64>,
    },
    /// `GET /v2/models/{m}[/versions/{v}]/ready`.
    ModelReady {
        model: String,
        version: Option<u64>,
    },
    /// `POST /v2/models/{m}[/versions/{v}]/infer`.
    Infer {
        model: String,
        version: Option<u64>,
    },
    /// `POST /predict`, `POST /batch_predict`.
    Predict {
        batch: bool,
    },
    /// `POST /v1/models/{m}[/versions/{v}]:{predict,classify,regress}` (TF Serving REST).
    TfInfer {
        model: String,
        version: Option<u64>,
        verb: Verb,
    },
    /// `GET /v1/models/{m}[/versions/{v}]`: TF Serving's model status.
    TfStatus {
        model: String,
        version: Option<u64>,
    },
    /// `GET /v1/models/{m}[/versions/{v}]/metadata`.
    TfMetadata {
        model: String,
        version: Option<u64>,
    },
    /// `GET /health`, `/ready`, `/metrics`.
    Health,
    Ready,
    Metrics,
    /// `GET /openapi.json`: the API's OpenAPI 3 document.
    OpenApi,
    /// `GET /ui`, `/ui/app.js`, `/ui/app.css`: the live view's page and its assets
    /// (static, embedded in the binary; the data comes from `/ui/state`).
    Ui(super::ui::Asset),
    /// `GET /ui/state`: what the live view shows, as JSON.
    UiState,
    /// `GET /ui/report/{model}/{id}`: a rollout's report, as HTML.
    UiReport {
        model: String,
        id: u64,
    },
}

impl Endpoint {
    /// The documented method and path template of this endpoint (as `openapi.json` names
    /// it).
    pub fn template(&self) -> (&'static str, &'static str) {
        let versioned = |v: &Option<u64>, without: &'static str, with: &'static str| match v {
            None => without,
            Some(_) => with,
        };
        match self {
            Endpoint::ServerMetadata => ("get", "/v2"),
            Endpoint::Live => ("get", "/v2/health/live"),
            Endpoint::ServerReady => ("get", "/v2/health/ready"),
            Endpoint::ModelMetadata { version, .. } => {
                ("get", versioned(version, "/v2/models/{model}", "/v2/models/{model}/versions/{version}"))
            }
            Endpoint::ModelReady { version, .. } => {
                ("get", versioned(version, "/v2/models/{model}/ready", "/v2/models/{model}/versions/{version}/ready"))
            }
            Endpoint::Infer { version, .. } => {
                ("post", versioned(version, "/v2/models/{model}/infer", "/v2/models/{model}/versions/{version}/infer"))
            }
            Endpoint::Predict { batch: false } => ("post", "/predict"),
            Endpoint::Predict { batch: true } => ("post", "/batch_predict"),
            Endpoint::TfInfer { version, verb, .. } => (
                "post",
                match (version, verb) {
                    (None, Verb::Predict) => "/v1/models/{model}:predict",
                    (None, Verb::Classify) => "/v1/models/{model}:classify",
                    (None, Verb::Regress) => "/v1/models/{model}:regress",
                    (Some(_), Verb::Predict) => "/v1/models/{model}/versions/{version}:predict",
                    (Some(_), Verb::Classify) => "/v1/models/{model}/versions/{version}:classify",
                    (Some(_), Verb::Regress) => "/v1/models/{model}/versions/{version}:regress",
                },
            ),
            Endpoint::TfStatus { version, .. } => {
                ("get", versioned(version, "/v1/models/{model}", "/v1/models/{model}/versions/{version}"))
            }
            Endpoint::TfMetadata { version, .. } => (
                "get",
                versioned(version, "/v1/models/{model}/metadata", "/v1/models/{model}/versions/{version}/metadata"),
            ),
            Endpoint::Health => ("get", "/health"),
            Endpoint::Ready => ("get", "/ready"),
            Endpoint::Metrics => ("get", "/metrics"),
            Endpoint::OpenApi => ("get", "/openapi.json"),
            Endpoint::Ui(asset) => ("get", asset.path()),
            Endpoint::UiState => ("get", "/ui/state"),
            Endpoint::UiReport { .. } => ("get", "/ui/report/{model}/{id}"),
        }
    }
}

/// The API's OpenAPI 3 document, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Resolves a request line to an endpoint.
pub fn route(method: &Method, path: &str) -> Result<Endpoint, ApiError> {
    let (endpoint, allow) = match_path(path)?;
    let allowed = match allow {
        "POST" => method == Method::POST,
        _ => method == Method::GET || method == Method::HEAD,
    };
    match allowed {
        true => Ok(endpoint),
        false => Err(ApiError::method_not_allowed(method, path, allow)),
    }
}

fn match_path(path: &str) -> Result<(Endpoint, &'static str), ApiError> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let get = |e| Ok((e, "GET"));
    match segments.as_slice() {
        ["v2"] => get(Endpoint::ServerMetadata),
        ["v2", "health", "live"] => get(Endpoint::Live),
        ["v2", "health", "ready"] => get(Endpoint::ServerReady),
        ["v2", "models", model, rest @ ..] => model_path(model, rest),
        ["v1", "models", rest @ ..] => tf_path(rest, path),
        ["predict"] => Ok((Endpoint::Predict { batch: false }, "POST")),
        ["batch_predict"] => Ok((Endpoint::Predict { batch: true }, "POST")),
        ["health"] => get(Endpoint::Health),
        ["ready"] => get(Endpoint::Ready),
        ["metrics"] => get(Endpoint::Metrics),
        ["openapi.json"] => get(Endpoint::OpenApi),
        ["ui"] => get(Endpoint::Ui(super::ui::Asset::Page)),
        ["ui", "app.js"] => get(Endpoint::Ui(super::ui::Asset::Script)),
        ["ui", "app.css"] => get(Endpoint::Ui(super::ui::Asset::Style)),
        ["ui", "state"] => get(Endpoint::UiState),
        ["ui", "report", model, id] => {
            let id = id.parse().map_err(|_| ApiError::bad_request(format!("'{id}' is not a rollout id")))?;
            get(Endpoint::UiReport { model: model.to_string(), id })
        }
        _ => Err(ApiError::not_found(format!("no endpoint at {path}"))),
    }
}

fn model_path(model: &str, rest: &[&str]) -> Result<(Endpoint, &'static str), ApiError> {
    let (version, rest) = match rest {
        ["versions", v, rest @ ..] => (Some(parse_version(v)?), rest),
        rest => (None, rest),
    };
    let model = model.to_string();
    match rest {
        [] => Ok((Endpoint::ModelMetadata { model, version }, "GET")),
        ["ready"] => Ok((Endpoint::ModelReady { model, version }, "GET")),
        ["infer"] => Ok((Endpoint::Infer { model, version }, "POST")),
        _ => Err(ApiError::not_found(format!("no endpoint at /v2/models/{model}/{}", rest.join("/")))),
    }
}

/// TF Serving's paths: `{m}[/versions/{v}]` with `:verb` on the last segment for
/// inference, or `/metadata` after it.
fn tf_path(rest: &[&str], path: &str) -> Result<(Endpoint, &'static str), ApiError> {
    let not_found = || ApiError::not_found(format!("no endpoint at {path}"));
    let (model, version, tail) = match rest {
        [model, "versions", v, tail @ ..] => {
            let (v, verb) = split_verb(v);
            (*model, Some((v, verb)), tail)
        }
        [model, tail @ ..] => (*model, None, tail),
        [] => return Err(not_found()),
    };
    let (model, verb) = match version {
        Some(_) => (model.to_string(), version.and_then(|(_, verb)| verb)),
        None => {
            let (m, verb) = split_verb(model);
            (m.to_string(), verb)
        }
    };
    let version = version.map(|(v, _)| parse_version(v)).transpose()?;
    match (verb, tail) {
        (Some(verb), []) => {
            let verb = Verb::parse(verb).ok_or_else(|| {
                ApiError::not_found(format!(
                    "no endpoint at {path}: ':{verb}' is not one of :predict, :classify, :regress"
                ))
            })?;
            Ok((Endpoint::TfInfer { model, version, verb }, "POST"))
        }
        (None, []) => Ok((Endpoint::TfStatus { model, version }, "GET")),
        (None, ["metadata"]) => Ok((Endpoint::TfMetadata { model, version }, "GET")),
        _ => Err(not_found()),
    }
}

/// `name:verb` → (`name`, `verb`).
fn split_verb(segment: &str) -> (&str, Option<&str>) {
    match segment.split_once(':') {
        Some((name, verb)) => (name, Some(verb)),
        None => (segment, None),
    }
}

fn parse_version(v: &str) -> Result<u64, ApiError> {
    crate::repo::parse_version(v)
        .ok_or_else(|| ApiError::bad_request(format!("'{v}' is not a version: versions are positive integers")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every documented operation, with sample values in its path.
    fn documented() -> Vec<(String, String, String)> {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        let mut out = Vec::new();
        for (path, operations) in doc["paths"].as_object().unwrap() {
            for method in operations.as_object().unwrap().keys() {
                let sample = path.replace("{model}", "m").replace("{version}", "2").replace("{id}", "7");
                out.push((method.clone(), path.clone(), sample));
            }
        }
        out
    }

    #[test]
    fn every_documented_operation_is_routed_to_the_endpoint_it_documents() {
        for (method, path, sample) in documented() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let endpoint = route(&method, &sample).unwrap_or_else(|e| panic!("{method} {path}: {}", e.message));
            let (m, p) = endpoint.template();
            assert_eq!((m, p), (method.as_str().to_lowercase().as_str(), path.as_str()), "{method} {sample}");
        }
    }

    #[test]
    fn every_endpoint_is_documented() {
        let documented: Vec<(String, String)> = documented().into_iter().map(|(m, p, _)| (m, p)).collect();
        let v = Some(2);
        let every = [
            Endpoint::ServerMetadata,
            Endpoint::Live,
            Endpoint::ServerReady,
            Endpoint::ModelMetadata { model: "m".into(), version: None },
            Endpoint::ModelMetadata { model: "m".into(), version: v },
            Endpoint::ModelReady { model: "m".into(), version: None },
            Endpoint::ModelReady { model: "m".into(), version: v },
            Endpoint::Infer { model: "m".into(), version: None },
            Endpoint::Infer { model: "m".into(), version: v },
            Endpoint::Predict { batch: false },
            Endpoint::Predict { batch: true },
            Endpoint::TfStatus { model: "m".into(), version: None },
            Endpoint::TfStatus { model: "m".into(), version: v },
            Endpoint::TfMetadata { model: "m".into(), version: None },
            Endpoint::TfMetadata { model: "m".into(), version: v },
            Endpoint::Health,
            Endpoint::Ready,
            Endpoint::Metrics,
            Endpoint::OpenApi,
            Endpoint::Ui(super::super::ui::Asset::Page),
            Endpoint::Ui(super::super::ui::Asset::Script),
            Endpoint::Ui(super::super::ui::Asset::Style),
            Endpoint::UiState,
            Endpoint::UiReport { model: "m".into(), id: 7 },
        ]
        .into_iter()
        .chain([None, v].into_iter().flat_map(|version| {
            [Verb::Predict, Verb::Classify, Verb::Regress].map(|verb| Endpoint::TfInfer {
                model: "m".into(),
                version,
                verb,
            })
        }));
        let mut seen = 0;
        for endpoint in every {
            let (method, path) = endpoint.template();
            assert!(documented.contains(&(method.to_string(), path.to_string())), "{method} {path} is not documented");
            seen += 1;
        }
        assert_eq!(seen, documented.len(), "openapi.json documents an operation no endpoint serves");
    }

    #[test]
    fn tf_serving_paths_route_by_verb_and_version() {
        let tf = |m: &Method, p: &str| route(m, p).unwrap();
        assert_eq!(
            tf(&Method::POST, "/v1/models/iris:predict"),
            Endpoint::TfInfer { model: "iris".into(), version: None, verb: Verb::Predict }
        );
        assert_eq!(
            tf(&Method::POST, "/v1/models/iris/versions/2:classify"),
            Endpoint::TfInfer { model: "iris".into(), version: Some(2), verb: Verb::Classify }
        );
        assert_eq!(tf(&Method::GET, "/v1/models/iris"), Endpoint::TfStatus { model: "iris".into(), version: None });
        assert_eq!(
            tf(&Method::GET, "/v1/models/iris/versions/3/metadata"),
            Endpoint::TfMetadata { model: "iris".into(), version: Some(3) }
        );
        assert_eq!(route(&Method::POST, "/v1/models/iris:explain").unwrap_err().status(), 404);
        assert_eq!(route(&Method::GET, "/v1/models/iris:predict").unwrap_err().status(), 405);
    }

    #[test]
    fn oip_paths_resolve() {
        assert_eq!(route(&Method::GET, "/v2").unwrap(), Endpoint::ServerMetadata);
        assert_eq!(
            route(&Method::POST, "/v2/models/iris/versions/2/infer").unwrap(),
            Endpoint::Infer { model: "iris".into(), version: Some(2) }
        );
        assert_eq!(
            route(&Method::GET, "/v2/models/iris/ready").unwrap(),
            Endpoint::ModelReady { model: "iris".into(), version: None }
        );
    }

    #[test]
    fn wrong_methods_and_paths_are_refused() {
        let e = route(&Method::GET, "/v2/models/iris/infer").unwrap_err();
        assert_eq!((e.status().as_u16(), e.allow), (405, Some("POST")));
        assert_eq!(route(&Method::POST, "/health").unwrap_err().status().as_u16(), 405);
        assert_eq!(route(&Method::GET, "/nope").unwrap_err().status().as_u16(), 404);
        assert_eq!(route(&Method::POST, "/v2/models/iris/versions/x/infer").unwrap_err().status().as_u16(), 400);
    }
}
