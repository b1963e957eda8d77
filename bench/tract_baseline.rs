//! The performance baseline: the same model run in-process by tract behind a minimal hyper
//! server, answering the same Open Inference Protocol JSON as modeld.
//!
//! It uses modeld's own loader, plan cache and JSON code, so what it leaves out is exactly
//! what modeld adds: the worker processes, the Unix-socket hop, routing, health windows
//! and metrics. Tuned as one would tune it by hand for the fastest answers: one tokio
//! runtime thread per core, each running inference inline in the request's task (no
//! hand-off to another thread: the process serves nothing else, and a core is busy
//! either way), keep-alive, TCP_NODELAY, no logging on the hot path.
//!
//!     cargo run --release --example tract_baseline -- MODEL_DIR 127.0.0.1:9000 [THREADS [INTRA_OP]]
//!
//! THREADS (runtime threads) defaults to the number of cores; INTRA_OP (threads one
//! inference may use in tract's matrix products, as modeld's `intra_op_threads`) to 1.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use modeld::front::oip;
use modeld::repo::Manifest;
use modeld::tensor::Tensor;
use modeld::wire::Buckets;
use modeld::worker::engine::Engine;
use std::path::PathBuf;
use std::sync::Arc;

struct Baseline {
    engine: Arc<Engine>,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().expect("usage: tract_baseline MODEL_VERSION_DIR ADDR [THREADS [INTRA_OP]]"));
    let addr: std::net::SocketAddr = args.next().unwrap_or_else(|| "127.0.0.1:9000".into()).parse()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = args.next().map_or(Ok(cores), |t| t.parse())?;
    let intra_op: usize = args.next().map_or(Ok(1), |t| t.parse())?;
    modeld::worker::tract::use_intra_op_threads(intra_op);
    let manifest = Manifest::read(&dir.join("model.toml"))?;
    let model = modeld::worker::loader::load(&dir.join("model.onnx"), &manifest)?;
    let engine = Arc::new(Engine::new(
        modeld::worker::tract::TractBackend::loaded(model, modeld::worker::device::Placement::Cpu, 64),
        Buckets::Exact,
    ));
    let baseline = Arc::new(Baseline { engine });
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?
        .block_on(serve(baseline, addr))
}

async fn serve(baseline: Arc<Baseline>, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let baseline = baseline.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let baseline = baseline.clone();
                async move { Ok::<_, std::convert::Infallible>(baseline.handle(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

impl Baseline {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() == "/ready" {
            return Response::new(Full::new(Bytes::from_static(b"ready")));
        }
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return reply(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let info = &self.engine.info;
        let request = match oip::parse_infer(&body, &info.inputs, &info.outputs) {
            Ok(r) => r,
            Err(e) => return reply(e.status(), e.body()),
        };
        match self.engine.infer(request.inputs) {
            Ok(outputs) => reply(StatusCode::OK, respond(&outputs)),
            Err(failure) => reply(StatusCode::INTERNAL_SERVER_ERROR, failure.message),
        }
    }
}

fn respond(outputs: &[Tensor]) -> String {
    oip::encode_response("baseline", "1", None, &outputs.iter().collect::<Vec<_>>()).unwrap_or_else(|e| e.body())
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
