//! The HTTP front: hyper 1 over TCP (HTTP/1.1 keep-alive), the protocol adapters and the
//! probes.
//!
//! A request is routed to an [`routes::Endpoint`] and admitted by its bearer token when
//! `[auth]` configures tokens ([`auth`]); inference endpoints (`inference`) admit the
//! request against the model's in-flight bound, parse and check the body against the
//! model's signature ([`oip`], [`predict`]), run it through the router (`call`) and
//! encode the answer (`reply`). Everything a request does runs under
//! `server.request_timeout`; every inference request is counted in the metrics with the
//! version that answered it (`served`). Errors all go through [`error::ApiError`]. The
//! front only reads routing state; it never changes it.

pub mod auth;
mod call;
mod classification;
mod compression;
pub mod error;
mod floats;
mod infer_body;
mod inference;
pub mod json;
mod offload;
pub mod oip;
pub mod predict;
mod probes;
mod reader;
mod reply;
pub mod routes;
mod served;
pub mod tfserving;
pub mod ui;

pub use call::{CANARY_HEADER, VERSION_HEADER};
pub use error::ApiError;
pub use inference::INFERENCE_HEADER;
pub use reply::Reply;
pub use ui::Board;

use crate::health::{Heartbeat, Host};
use crate::metrics::Metrics;
use crate::router::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use reply::respond;
use routes::Endpoint;
use served::Served;
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
    /// Set once the daemon stops: every answer then closes its connection.
    pub stopping: std::sync::atomic::AtomicBool,
}

impl Front {
    /// Serves connections until `stop` is cancelled, then lets open requests finish for up
    /// to `server.shutdown_grace` while refusing new connections.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        let graceful = GracefulShutdown::new();
        crate::accept::until(&listener, "HTTP", stop.cancelled(), |stream| self.clone().connection(stream, &graceful))
            .await;
        drop(listener);
        // Connections taken just before the stop may not have sent their request yet, and
        // a graceful shutdown closes a connection it finds idle: they get a moment to send
        // it, answered with `Connection: close` like every request from now on (the next
        // ones wait in the socket's backlog when a service manager holds it).
        self.stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        let grace = self.server.get().shutdown_grace;
        tokio::time::sleep(LINGER.min(grace)).await;
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
        let close = reply.close || self.stopping.load(std::sync::atomic::Ordering::Relaxed);
        respond(Reply { version, close, ..reply }, head_only, gzip)
    }

    async fn dispatch(&self, req: Request<Incoming>, served: &mut Served) -> Result<Reply, ApiError> {
        let (head, body) = req.into_parts();
        // A request for no route, or whose headers fail the token check, is answered
        // without its body being kept: a stranger's body costs no memory. A route's
        // refusal reads the body through (up to max_body, thrown away as it comes) so the
        // keep-alive connection goes on; a token's refusal reads at most a little of it,
        // so a small one's sender still sees the answer, and past that the connection
        // closes after the answer.
        // The settings in force for the whole request (an Arc, not a guard held across awaits).
        let server = Arc::clone(&self.server.get());
        let endpoint = match routes::route(&head.method, head.uri.path()) {
            Ok(endpoint) => endpoint,
            Err(refused) => return Err(refused.closing(!discard(body, server.max_body_bytes, None).await)),
        };
        let auth = &server.auth;
        if let Err(refused) = auth::admit(auth, &head.headers, &auth::need(&endpoint)) {
            return Err(refused.closing(!discard(body, DISCARD_BYTES, Some(DISCARD_TIME)).await));
        }
        // An admitted body is read whole before any answer, refusals too: a client still
        // sending when the answer comes sees a broken pipe instead of it. What the read
        // found is judged where the body is used, so each refusal keeps its precedence.
        let body = self.read_body(&head.headers, body).await;
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
                let shown = auth::limited_to(auth, headers);
                ui::state(self.board.as_ref(), head.uri.query(), shown.as_deref())
            }
            Endpoint::UiReport { model, id } => ui::report(self.board.as_ref(), &model, id),
            Endpoint::Ui(asset) => Ok(ui::asset(asset)),
            other => self.probe(other, auth, headers),
        }
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
                let (encoding, body) = (headers.get(header::CONTENT_ENCODING), collected.to_bytes());
                offload::cpu(body.len(), || compression::decode_request(encoding, body, limit))
            }
            Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(ApiError::too_large(limit)),
            Err(e) => Err(ApiError::bad_request(format!("could not read request body: {e}"))),
        }
    }
}

/// How long a stopping daemon still reads the first request of connections it took just
/// before the stop, before closing the idle ones.
const LINGER: Duration = Duration::from_millis(250);

/// How much of the body of a request refused for its token is read and thrown away, and
/// for how long, before the answer: enough for a small request, nothing a stranger grows.
const DISCARD_BYTES: usize = 64 * 1024;
const DISCARD_TIME: Duration = Duration::from_millis(200);

/// Reads and drops at most `bytes` of `body` (within `time`, when given): whether it
/// ended within them (else its connection must close after the answer).
async fn discard(mut body: Incoming, bytes: usize, time: Option<Duration>) -> bool {
    if body.is_end_stream() {
        return true;
    }
    let drained = async {
        let mut seen = 0;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > bytes {
                return false;
            }
        }
        true
    };
    match time {
        Some(time) => tokio::time::timeout(time, drained).await.unwrap_or(false),
        None => drained.await,
    }
}
