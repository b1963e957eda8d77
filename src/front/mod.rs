//! The HTTP front: hyper 1 over TCP (HTTP/1.1 keep-alive), the protocol adapters and the
//! probes.
//!
//! A request is routed to an [`routes::Endpoint`] and admitted by its bearer token when
//! `[auth]` configures tokens ([`auth`]); inference endpoints admit the request
//! against the model's in-flight bound, parse and check the body against the model's
//! signature ([`oip`], [`predict`]), run it through the router and encode the answer.
//! Everything a request does runs under `server.request_timeout`; every inference request
//! is counted in the metrics with the version that answered it. Errors all go through
//! [`error::ApiError`]. The front only reads routing state; it never changes it.

pub mod auth;
mod classification;
mod compression;
pub mod error;
mod floats;
mod infer_body;
pub mod json;
pub mod oip;
pub mod predict;
mod probes;
mod reader;
pub mod routes;
pub mod tfserving;
pub mod ui;

pub use error::ApiError;
pub use ui::Board;

use crate::health::{Heartbeat, Host};
use crate::metrics::Metrics;
use crate::router::{self, CallError, Copy, Fault, Hint, ModelInfo, ModelRoute, Pool, RouteError, Router, Timing};
use crate::tensor::Tensor;
use crate::window::Outcome;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use routes::Endpoint;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub struct Front {
    pub router: Arc<Router>,
    pub metrics: Arc<Metrics>,
    pub heartbeat: Arc<Heartbeat>,
    pub host: Arc<Host>,
    /// `[server]` in force: the body limit, request and header timeouts and shutdown
    /// grace are read from it at each use, so a reload applies them at once.
    pub server: crate::config::Live,
    pub started: Instant,
    /// What the live view at `/ui` shows.
    pub board: Arc<dyn ui::Board>,
}

/// A response before it becomes an HTTP message.
pub struct Reply {
    status: StatusCode,
    body: Bytes,
    content_type: &'static str,
    retry_after: Option<Duration>,
    allow: Option<&'static str>,
    /// `WWW-Authenticate`, with 401 and 403.
    challenge: Option<String>,
    /// The version that took an inference request, sent back as `x-modeld-version`.
    version: Option<u64>,
    /// Where the JSON header ends when binary tensor data follows it.
    json_len: Option<usize>,
    /// `Content-Security-Policy`, for pages.
    policy: Option<&'static str>,
    /// `Cache-Control: no-store`: state that is stale a second later.
    no_store: bool,
}

impl Reply {
    fn json(status: StatusCode, body: String) -> Reply {
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
        }
    }

    /// An OIP infer answer: plain JSON, or a JSON header and binary outputs.
    fn infer(encoded: oip::Encoded) -> Reply {
        let content_type = match encoded.json_len {
            Some(_) => "application/octet-stream",
            None => "application/json",
        };
        Reply { body: Bytes::from(encoded.body), content_type, json_len: encoded.json_len, ..Reply::ok(String::new()) }
    }

    fn ok(body: String) -> Reply {
        Reply::json(StatusCode::OK, body)
    }
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        let status = e.status();
        let body = e.body();
        Reply { retry_after: e.retry_after, allow: e.allow, challenge: e.challenge, ..Reply::json(status, body) }
    }
}

/// What an inference request touched, for its metrics and its version's window.
#[derive(Default)]
struct Served {
    protocol: &'static str,
    model: Option<String>,
    /// The version that took the request, once picked.
    pool: Option<Arc<Pool>>,
    timing: Option<Timing>,
    /// Refused as invalid for the version it reached (its signature or worker).
    invalid: bool,
    /// Why the worker failed the request for the values of an output (NaN, a broken
    /// output contract).
    wrong: Option<Fault>,
    /// Offered to a candidate in its shadow phase: its version, and whether the copy was
    /// queued (or dropped, the queue being full).
    mirrored: Option<(u64, bool)>,
}

impl Served {
    /// Notes the pool a request went to.
    fn on(&mut self, pool: &Arc<Pool>) {
        self.pool = Some(pool.clone());
    }
}

impl Front {
    /// Serves connections until `stop` is cancelled, then lets open requests finish for up
    /// to `server.shutdown_grace` while refusing new connections.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        let graceful = GracefulShutdown::new();
        crate::accept::until(&listener, "HTTP", stop.cancelled(), |stream| self.clone().connection(stream, &graceful))
            .await;
        drop(listener);
        let grace = self.server.get().shutdown_grace;
        tokio::select! {
            _ = graceful.shutdown() => tracing::info!("all HTTP requests answered"),
            _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace of {grace:?} ran out with requests open"),
        }
    }

    fn connection(self: Arc<Self>, stream: tokio::net::TcpStream, graceful: &GracefulShutdown) {
        let _ = stream.set_nodelay(true);
        let timeout = self.server.get().header_read_timeout;
        let service = hyper::service::service_fn(move |req| {
            let front = self.clone();
            async move { Ok::<_, std::convert::Infallible>(front.handle(req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Some(timeout))
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("HTTP connection ended: {e}");
            }
        });
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let head_only = req.method() == hyper::Method::HEAD;
        let gzip = compression::accepts_gzip(req.headers());
        let mut served = Served::default();
        let timeout = self.server.get().request_timeout;
        let reply = match tokio::time::timeout(timeout, self.dispatch(req, &mut served)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) => {
                served.invalid = e.invalid_for_version();
                e.into()
            }
            Err(_) => ApiError::timeout(timeout).into(),
        };
        self.record(&served, &reply, started.elapsed());
        let version = served.pool.as_ref().map(|p| p.version);
        respond(Reply { version, ..reply }, head_only, gzip)
    }

    async fn dispatch(&self, req: Request<Incoming>, served: &mut Served) -> Result<Reply, ApiError> {
        let (head, body) = req.into_parts();
        // Every body is read before any answer, refusals too: a client still sending when
        // the answer comes sees a broken pipe instead of it. What the read found is judged
        // where the body is used, so each refusal keeps its precedence.
        let body = self.read_body(&head.headers, body).await;
        let endpoint = routes::route(&head.method, head.uri.path())?;
        auth::admit(&self.server.get().auth, &head.headers, &auth::need(&endpoint))?;
        let headers = &head.headers;
        match endpoint {
            Endpoint::Infer { model, version } => {
                served.protocol = crate::metrics::OIP;
                served.model = Some(model.clone());
                self.infer(headers, body, &model, version, served).await
            }
            Endpoint::Predict { batch } => {
                served.protocol = crate::metrics::PREDICT;
                self.predict(headers, body, batch, served).await
            }
            Endpoint::TfInfer { model, version, verb } => {
                served.protocol = crate::metrics::TFSERVING;
                served.model = Some(model.clone());
                self.tf_infer(headers, body, &model, version, verb, served).await
            }
            Endpoint::UiState => {
                let shown = auth::limited_to(&self.server.get().auth, headers);
                ui::state(self.board.as_ref(), head.uri.query(), shown.as_deref())
            }
            Endpoint::UiReport { model, id } => ui::report(self.board.as_ref(), &model, id),
            Endpoint::Ui(asset) => Ok(ui::asset(asset)),
            other => self.probe(other),
        }
    }

    async fn infer(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, ApiError>,
        model: &str,
        version: Option<u64>,
        served: &mut Served,
    ) -> Result<Reply, ApiError> {
        let route = self.router.model(model)?;
        let wants = Wants::of(headers, version, &route)?;
        let json_len = inference_header_len(headers)?;
        let body = body?;
        let (json, binary) = split_binary(&body, json_len)?;
        let mut request = oip::parse_body(json, binary)?;
        let _admission = admit(&route, &wants, served)?;
        // The tensors move to the worker; the answer needs only the rest of the request.
        let mut parsed = Some(std::mem::take(&mut request.inputs));
        let ran = run(&route, &wants, served, |info, retried| {
            let inputs = retried.or_else(|| parsed.take()).expect("one attempt holds the inputs at a time");
            oip::check_inputs(&inputs, request.outputs.as_deref(), &info.inputs, &info.outputs)?;
            Ok(inputs)
        })
        .await?;
        let version = ran.pool.version.to_string();
        Ok(Reply::infer(oip::infer_response(&ran.pool.model, &version, &request, &ran.outputs, &ran.info)?))
    }

    /// TF Serving's `:predict`, `:classify` and `:regress`.
    async fn tf_infer(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, ApiError>,
        model: &str,
        version: Option<u64>,
        verb: tfserving::Verb,
        served: &mut Served,
    ) -> Result<Reply, ApiError> {
        let route = self.router.model(model)?;
        let wants = Wants::of(headers, version, &route)?;
        let body = body?;
        let read = tfserving::parse_body(&body, verb)?;
        let _admission = admit(&route, &wants, served)?;
        let mut rows = 0;
        let ran = run(&route, &wants, served, |info, _| {
            let tensors = read.tensors(info)?;
            rows = tensors.first().map_or(0, |t| t.rows());
            Ok(tensors)
        })
        .await?;
        let body = match verb {
            tfserving::Verb::Predict => tfserving::predictions(&ran.outputs, read.layout()),
            verb => tfserving::results(&ran.pool, &ran.info, &ran.outputs, rows, verb)?,
        };
        Ok(Reply::ok(body))
    }

    async fn predict(
        &self,
        headers: &HeaderMap,
        body: Result<Bytes, ApiError>,
        batch: bool,
        served: &mut Served,
    ) -> Result<Reply, ApiError> {
        let body = body?;
        let examples = predict::parse_body(&body, batch)?;
        let names: Vec<String> = self.router.models().keys().cloned().collect();
        let model = predict::model_name(&examples, &names)?;
        auth::authorize(&self.server.get().auth, headers, crate::config::Scope::Infer, Some(&model))?;
        served.model = Some(model.clone());
        let route: Arc<ModelRoute> = self.router.model(&model)?;
        let wants = Wants::of(headers, None, &route)?;
        let _admission = admit(&route, &wants, served)?;
        let ran = run(&route, &wants, served, |info, _| Ok(vec![predict::batch_tensor(&examples, info)?])).await?;
        let answers = predict::answers(&ran.pool, &ran.info, &ran.outputs, examples.len())?;
        let body = match batch {
            true => serde_json::to_string(&answers),
            false => serde_json::to_string(&answers[0]),
        };
        Ok(Reply::ok(body.expect("answers serialize")))
    }

    /// Reads the whole body, refusing it past `max_body` (by its declared length at once,
    /// else as it streams in).
    async fn read_body(&self, headers: &HeaderMap, body: Incoming) -> Result<Bytes, ApiError> {
        let limit = self.server.get().max_body_bytes;
        let declared =
            headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::too_large(limit));
        }
        match Limited::new(body, limit).collect().await {
            Ok(collected) => {
                compression::decode_request(headers.get(header::CONTENT_ENCODING), collected.to_bytes(), limit)
            }
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(ApiError::too_large(limit)),
            Err(e) => Err(ApiError::bad_request(format!("could not read request body: {e}"))),
        }
    }

    /// Counts an inference request in the metrics and, once it reached a version, in that
    /// version's measured window.
    fn record(&self, served: &Served, reply: &Reply, elapsed: Duration) {
        if served.protocol.is_empty() {
            return;
        }
        if let Some(pool) = &served.pool {
            let outcome = match served.invalid {
                true => Outcome::Invalid,
                false => Outcome::of_status(reply.status.as_u16()),
            };
            pool.window.record(outcome, elapsed);
        }
        let model = served.model.as_deref().unwrap_or("");
        let version = served.pool.as_ref().map(|p| p.version.to_string()).unwrap_or_default();
        let m = &self.metrics;
        if let (Some(fault), Some(pool)) = (&served.wrong, &served.pool) {
            let output = fault.output().unwrap_or_default();
            m.wrong_answer(model, pool.version, output, matches!(fault, Fault::Contract { .. }));
        }
        if let Some((candidate, queued)) = served.mirrored {
            let outcome = if queued { "mirrored" } else { "dropped" };
            m.shadow_requests.with_label_values(&[model, &candidate.to_string(), outcome]).inc();
        }
        m.requests.with_label_values(&[model, &version, served.protocol, reply.status.as_str()]).inc();
        m.request_duration.with_label_values(&[model, &version, served.protocol]).observe(elapsed.as_secs_f64());
        if let Some(t) = served.timing {
            m.queue_duration.with_label_values(&[model, &version]).observe(t.queued.as_secs_f64());
            m.inference_duration.with_label_values(&[model, &version]).observe(t.computed.as_secs_f64());
            if t.leads {
                m.batch_size.with_label_values(&[model, &version]).observe(f64::from(t.batch));
            }
            if t.plans_built > 0 {
                m.plan_builds.with_label_values(&[model, &version]).inc_by(u64::from(t.plans_built));
            }
        }
    }
}

/// The binary tensor extension's header: the length of the JSON part of the body.
pub const INFERENCE_HEADER: &str = "inference-header-content-length";

/// The JSON header's length a binary request declares, if it does.
fn inference_header_len(headers: &hyper::HeaderMap) -> Result<Option<usize>, ApiError> {
    let Some(value) = headers.get(INFERENCE_HEADER) else { return Ok(None) };
    let text = value.to_str().unwrap_or_default().trim();
    text.parse()
        .map(Some)
        .map_err(|_| ApiError::bad_request(format!("Inference-Header-Content-Length: '{text}' is not a byte count")))
}

/// The body's JSON header and the binary data after it.
fn split_binary(body: &[u8], json_len: Option<usize>) -> Result<(&[u8], &[u8]), ApiError> {
    match json_len {
        None => Ok((body, &[])),
        Some(n) if n <= body.len() => Ok(body.split_at(n)),
        Some(n) => Err(ApiError::bad_request(format!(
            "Inference-Header-Content-Length is {n} but the body has only {} bytes",
            body.len()
        ))),
    }
}

/// Header asking for one version, as a path's `/versions/{v}` does.
pub const VERSION_HEADER: &str = "x-modeld-version";
/// Header asking for the candidate (`canary: true`), as the protocol's Istio rule does.
pub const CANARY_HEADER: &str = "canary";

/// What a request's headers (and URL) ask of the routing.
struct Wants {
    version: Option<u64>,
    canary: bool,
    sticky_key: Option<String>,
}

impl Wants {
    fn of(headers: &hyper::HeaderMap, path_version: Option<u64>, route: &ModelRoute) -> Result<Wants, ApiError> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
        let header_version = match text(VERSION_HEADER) {
            None => None,
            Some(v) => Some(crate::repo::parse_version(v).ok_or_else(|| {
                ApiError::bad_request(format!("{VERSION_HEADER}: '{v}' is not a version (a positive integer)"))
            })?),
        };
        let version = match (path_version, header_version) {
            (Some(p), Some(h)) if p != h => {
                return Err(ApiError::bad_request(format!(
                    "the URL asks for version {p} but {VERSION_HEADER} for {h}"
                )));
            }
            (p, h) => p.or(h),
        };
        let canary = text(CANARY_HEADER).is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let sticky_key = route.sticky_header().and_then(|h| text(&h).map(String::from));
        Ok(Wants { version, canary, sticky_key })
    }

    fn hint(&self) -> Hint<'_> {
        Hint { version: self.version, canary: self.canary, sticky_key: self.sticky_key.as_deref() }
    }
}

/// Admits a request against the model's in-flight bound; a refusal is counted against
/// the version it would have gone to.
fn admit(route: &ModelRoute, wants: &Wants, served: &mut Served) -> Result<router::Admission, ApiError> {
    route.admit().map_err(|e| {
        if let Ok(pool) = route.pick(&wants.hint()) {
            served.on(&pool);
        }
        e.into()
    })
}

/// A request that ran: where, with which signature, and what came out.
struct Ran {
    pool: Arc<Pool>,
    info: Arc<ModelInfo>,
    outputs: Vec<Tensor>,
}

/// Picks the pool, waits for its signature (while it starts), builds the inputs against
/// it and runs them. A pool retired by a routing swap between the pick and the run is
/// not the request's problem: it is picked again from the new table, once.
async fn run(
    route: &ModelRoute,
    wants: &Wants,
    served: &mut Served,
    mut inputs_for: impl FnMut(&ModelInfo, Option<Vec<Tensor>>) -> Result<Vec<Tensor>, ApiError>,
) -> Result<Ran, ApiError> {
    let mut attempts = 0;
    // The inputs of an attempt whose version retired, handed to the next one.
    let mut retried = None;
    loop {
        attempts += 1;
        let pool = route.pick(&wants.hint())?;
        served.on(&pool);
        let outcome = match pool.wait_info().await {
            Ok(info) => {
                let inputs = inputs_for(&info, retried.take())?;
                match router::infer(&pool, &inputs).await {
                    Ok((outputs, timing)) => Ok((info, inputs, outputs, timing)),
                    Err(e) => {
                        retried = Some(inputs);
                        Err(e)
                    }
                }
            }
            Err(e) => Err(router::pool_error(&pool, e)),
        };
        match outcome {
            Ok((info, inputs, outputs, timing)) => {
                served.timing = Some(timing);
                pool.tap(&outputs);
                share_answer(route, &pool, inputs, &outputs, served);
                return Ok(Ran { pool, info, outputs });
            }
            Err(RouteError::Retired { .. }) if attempts < 2 => continue,
            Err(e) => {
                if let RouteError::Call(CallError::Failed { fault, .. }) = &e
                    && fault.output().is_some()
                {
                    served.wrong = Some(fault.clone());
                }
                return Err(e.into());
            }
        }
    }
}

/// Hands what the stable version answered to whoever judges a rollout with it: a copy to
/// the shadow's mirror (dropped when the stable version is saturated, so mirroring never
/// slows live requests), and now and then a copy to the model's sample of live requests.
fn share_answer(
    route: &ModelRoute,
    pool: &Arc<Pool>,
    mut inputs: Vec<Tensor>,
    outputs: &[Tensor],
    served: &mut Served,
) {
    if !route.is_stable(pool) {
        return;
    }
    let mirror = route.mirror_for(pool);
    if route.sample.wants() {
        let kept = match mirror {
            Some(_) => inputs.clone(),
            None => std::mem::take(&mut inputs),
        };
        route.sample.keep(kept, outputs.to_vec(), pool.version);
    }
    if let Some(mirror) = mirror {
        let queued = mirror.offer(pool.is_saturated(), || Copy { inputs, answer: outputs.to_vec() });
        served.mirrored = Some((mirror.pool.version, queued));
    }
}

fn respond(reply: Reply, head_only: bool, gzip: bool) -> Response<Full<Bytes>> {
    let compressed = (gzip && !head_only).then(|| compression::encode_response(&reply.body)).flatten();
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
    response
}
