//! The worker: one model version behind a Unix socket, in its own process.
//!
//! `modeld worker …` is re-executed by the supervisor (never run by hand). It binds its
//! socket at once, loads the model with tract ([`loader`]), runs the warm-up and golden
//! examples ([`checks`]), then answers the supervisor's Hello with Ready or LoadFailed and
//! serves Infer frames ([`server`]) with plans per concrete shape ([`plans`]).
//!
//! It is a leaf: it knows the wire and tract, never the front, router or rollouts. It dies
//! with its parent (PR_SET_PDEATHSIG) and on SIGTERM stops after its in-flight requests.

pub mod batcher;
pub mod checks;
pub mod contract;
pub mod device;
pub mod direct;
pub mod engine;
pub mod in_flight;
pub mod loader;
pub mod memory;
pub mod onnxruntime;
pub mod plans;
pub mod privileges;
pub mod progress;
pub mod rewrite;
pub mod server;
pub mod tract;

use crate::wire::Buckets;
use crate::wire::engine::{DeviceKind, EngineKind, GraphOptimization};
use crate::wire::manifest::Manifest;
use in_flight::InFlight;
use server::{LoadState, Server};
use std::os::unix::net::UnixListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

/// What the supervisor tells a worker on its command line.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Model name (for logs).
    #[arg(long)]
    pub model: String,
    /// Version number (for logs).
    #[arg(long)]
    pub version: u64,
    /// The version directory holding model.onnx and model.toml.
    #[arg(long)]
    pub dir: PathBuf,
    /// The Unix socket to listen on.
    #[arg(long)]
    pub socket: PathBuf,
    /// Requests run at once.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The supervisor's pid: the worker exits if it is not its parent any more.
    #[arg(long)]
    pub parent_pid: i32,
    /// Most memory this worker may use, in bytes (see [`memory`]).
    #[arg(long)]
    pub memory_limit: Option<u64>,
    /// The cgroup to join, whose memory.max the supervisor set.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Rows per inference run (1: requests are never merged).
    #[arg(long, default_value_t = 1)]
    pub max_batch: usize,
    /// How long the first request of a batch may wait for others, in microseconds.
    #[arg(long, default_value_t = 0)]
    pub batch_delay_us: u64,
    /// Batch sizes that dispatch at once when reached.
    #[arg(long, value_delimiter = ',')]
    pub preferred: Vec<usize>,
    /// Plan buckets: pow2 or exact (anything else is refused).
    #[arg(long, default_value = "pow2", value_parser = Buckets::parse)]
    pub buckets: Buckets,
    /// Batch sizes whose plans are built at load.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub plan_sizes: Vec<usize>,
    /// Plans kept in the cache.
    #[arg(long, default_value_t = 32)]
    pub max_plans: usize,
    /// How long to poll the socket after answering before sleeping, in microseconds.
    #[arg(long, default_value_t = 0)]
    pub busy_poll_us: u64,
    /// The user to become once the socket is bound, before the model is read (given by a
    /// supervisor running as root).
    #[arg(long)]
    pub user: Option<String>,
    /// The progress block the supervisor made for this worker ([`crate::wire::progress`]).
    #[arg(long)]
    pub progress: Option<PathBuf>,
}

/// The engine and its settings, on the command line of a worker and of `describe` alike
/// (a version's model.toml may name another engine, which wins).
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// tract or onnxruntime.
    #[arg(long = "engine", default_value = "tract")]
    pub kind: String,
    /// Threads one inference may use inside the engine.
    #[arg(long, default_value_t = 1)]
    pub intra_op_threads: usize,
    /// ONNX Runtime's graph optimization level: disable, basic, extended or all.
    #[arg(long, default_value = "all")]
    pub ort_optimization: String,
    /// Whether ONNX Runtime sessions use its CPU memory arena.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub ort_memory_arena: bool,
    /// The ONNX Runtime shared library (default: libonnxruntime.so from the library path).
    #[arg(long)]
    pub onnxruntime_library: Option<PathBuf>,
    /// cpu, cuda (the one GPU CUDA_VISIBLE_DEVICES shows) or cuda-or-cpu.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl EngineArgs {
    fn kind(&self) -> Result<EngineKind, String> {
        EngineKind::from_name(&self.kind).ok_or_else(|| format!("unknown engine '{}'", self.kind))
    }

    fn device(&self) -> Result<DeviceKind, String> {
        DeviceKind::from_name(&self.device).ok_or_else(|| format!("unknown device '{}'", self.device))
    }

    fn onnxruntime(&self, sessions: usize) -> Result<onnxruntime::Settings, String> {
        let optimization = GraphOptimization::from_name(&self.ort_optimization)
            .ok_or_else(|| format!("unknown ONNX Runtime optimization level '{}'", self.ort_optimization))?;
        Ok(onnxruntime::Settings {
            library: self.onnxruntime_library.clone(),
            optimization,
            memory_arena: self.ort_memory_arena,
            intra_op_threads: self.intra_op_threads,
            sessions,
        })
    }
}

impl WorkerArgs {
    fn policy(&self) -> batcher::Policy {
        batcher::Policy {
            max_batch: self.max_batch.max(1),
            delay: std::time::Duration::from_micros(self.batch_delay_us),
            preferred: self.preferred.clone(),
        }
    }
}

/// Runs the worker until SIGTERM, its parent's death, or a failed load.
pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    // What may need root comes first: the cgroup and the socket in the supervisor's
    // directory. Then the worker user, before any byte of the model is read.
    if let Some(limit) = args.memory_limit {
        let how = memory::enforce(limit, args.cgroup.as_deref())?;
        tracing::debug!(limit, ?how, "memory limit applied");
    }
    let listener = bind(&args.socket)?;
    if let Some(path) = &args.progress {
        let block = crate::wire::progress::Block::open(path)
            .map_err(|e| anyhow::anyhow!("could not map the progress block {}: {e}", path.display()))?;
        progress::install(block);
    }
    if let Some(user) = &args.user {
        privileges::become_user(user)?;
    }
    // After the change of user, which clears the parent-death signal.
    die_with_parent(args.parent_pid)?;
    tract::use_intra_op_threads(args.engine.intra_op_threads);
    crate::trim::trim_every(std::time::Duration::from_secs(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(args.threads + 2)
        .enable_all()
        .build()?;
    let span = tracing::info_span!("worker", model = %args.model, version = args.version);
    let code = runtime.block_on(serve(args, listener, span.clone()).instrument(span))?;
    std::process::exit(code)
}

/// PR_SET_PDEATHSIG makes the kernel send SIGTERM when the supervisor dies; checking the
/// parent pid afterwards closes the race where it died before the call.
fn die_with_parent(parent_pid: i32) -> anyhow::Result<()> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
    if nix::unistd::getppid().as_raw() != parent_pid {
        anyhow::bail!("supervisor (pid {parent_pid}) is gone");
    }
    Ok(())
}

async fn serve(args: WorkerArgs, listener: StdListener, span: tracing::Span) -> anyhow::Result<i32> {
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener)?;
    let mut term = signal(SignalKind::terminate())?;
    let (load_tx, load_rx) = watch::channel(LoadState::Loading);
    let server = Arc::new(Server {
        load: load_rx.clone(),
        slots: Arc::new(Semaphore::new(args.threads.max(1))),
        in_flight: Arc::new(InFlight::default()),
        told: Arc::new(tokio::sync::Notify::new()),
        policy: args.policy(),
        batcher: std::sync::OnceLock::new(),
        direct: args.threads <= 1,
        busy_poll: std::time::Duration::from_micros(args.busy_poll_us),
        supervisor: u32::try_from(args.parent_pid).ok(),
    });
    let load_args = args.clone();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        // A panic inside an engine (tract-cuda's context, a library's assertion) fails the
        // load with its message instead of leaving the supervisor waiting for an answer.
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load_and_check(&load_args)));
        let state = match loaded {
            Ok(Ok(engine)) => LoadState::Ready(Arc::new(engine)),
            Ok(Err(reason)) => LoadState::Failed(reason),
            Err(panic) => LoadState::Failed(format!("loading panicked: {}", engine::panic_text(&panic))),
        };
        let _ = load_tx.send(state);
    });

    let stop = async {
        tokio::select! {
            _ = term.recv() => Stop::Terminated,
            reason = failed_and_told(load_rx, server.told.clone()) => Stop::LoadFailed(reason),
        }
    };
    match server.clone().accept_until(listener, stop).await {
        Stop::Terminated => {
            tracing::info!("SIGTERM: finishing in-flight requests");
            server.in_flight.wait_idle().await;
            cleanup(&args.socket);
            Ok(0)
        }
        Stop::LoadFailed(reason) => {
            tracing::error!("model failed to load: {reason}");
            cleanup(&args.socket);
            Ok(3)
        }
    }
}

/// Why the worker stops.
enum Stop {
    Terminated,
    LoadFailed(String),
}

/// Resolves once loading failed and the supervisor has been told why (or has not asked
/// within a few seconds: it may be gone).
async fn failed_and_told(load: watch::Receiver<LoadState>, told: Arc<tokio::sync::Notify>) -> String {
    let reason = wait_failed(load).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), told.notified()).await;
    reason
}

async fn wait_failed(mut load: watch::Receiver<LoadState>) -> String {
    match load.wait_for(|s| matches!(s, LoadState::Failed(_))).await {
        Ok(state) => match &*state {
            LoadState::Failed(reason) => reason.clone(),
            _ => unreachable!("waited for Failed"),
        },
        // The sender is gone after Ready: never resolve.
        Err(_) => std::future::pending().await,
    }
}

/// Loads the model, builds the plans asked for ahead, runs the warm-up and golden checks.
fn load_and_check(args: &WorkerArgs) -> Result<engine::Engine, String> {
    let started = std::time::Instant::now();
    let (manifest, model) = load_model(&args.dir, &args.engine, args.threads.max(1), args.max_plans)?;
    let mut engine = engine::Engine::new(model, args.buckets);
    engine.contract = contract::Contract::new(&manifest, &engine.info)?;
    let hints = manifest.inputs.iter().map(|(name, hint)| (name.clone(), hint.shape.clone())).collect();
    engine.build_plans(&args.plan_sizes, &hints);
    checks::run_all(&engine, &manifest)?;
    engine.info.plans_built = engine.plan_builds() as u32;
    tracing::info!(
        mode = %engine.info.load_mode,
        elapsed_ms = started.elapsed().as_millis() as u64,
        plans = engine.plan_builds(),
        batchable = engine.batchable,
        "model loaded and checked"
    );
    Ok(engine)
}

/// Reads a version directory's model.toml and loads its model on the engine it names, else
/// on the one given (no plans, no checks run). `sessions`: inferences that may run at once.
fn load_model(
    dir: &Path,
    engine: &EngineArgs,
    sessions: usize,
    max_plans: usize,
) -> Result<(Manifest, engine::Loaded), String> {
    let manifest = Manifest::read(&dir.join(crate::wire::manifest::MANIFEST_FILE)).map_err(|e| e.to_string())?;
    let path = dir.join(crate::wire::manifest::MODEL_FILE);
    let kind = match manifest.engine {
        Some(kind) => kind,
        None => engine.kind()?,
    };
    let device = device::resolve(engine.device()?, kind)?;
    let mut loaded = match kind {
        EngineKind::Tract => {
            let model = loader::load(&path, &manifest).map_err(|e| e.to_string())?;
            tract::TractBackend::loaded(model, device.placement, max_plans)
        }
        EngineKind::OnnxRuntime => onnxruntime::load(&path, &manifest, &engine.onnxruntime(sessions)?)?,
    };
    loaded.info.device = device.described;
    check_declared_outputs(&loaded.info, &manifest)?;
    contract::Contract::new(&manifest, &loaded.info)?;
    Ok((manifest, loaded))
}

/// `modeld describe`: the signature a worker would report for a version directory,
/// written to stdout as a Ready frame (or a LoadFailed frame, exiting 3), so the
/// supervisor can compare signatures without loading a model itself (`modeld plan`, and
/// recreate before it stops the old version).
pub fn describe(dir: &Path, user: Option<&str>, engine: &EngineArgs) -> i32 {
    use std::io::Write;
    let loaded = match user.map(privileges::become_user).transpose() {
        Ok(_) => load_model(dir, engine, 1, 1),
        Err(e) => Err(e.to_string()),
    };
    let (frame, code) = match loaded {
        Ok((_, model)) => (crate::wire::Frame::Ready(model.info), 0),
        Err(reason) => (crate::wire::Frame::LoadFailed { reason }, 3),
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(&frame.encode()).and_then(|()| out.flush()) {
        Ok(()) => code,
        Err(_) => 1,
    }
}

/// `[outputs.<name>]` in model.toml must name outputs the model has: a typo would
/// otherwise silently allow nothing.
fn check_declared_outputs(info: &crate::wire::ModelInfo, manifest: &Manifest) -> Result<(), String> {
    for name in manifest.outputs.keys() {
        if !info.outputs.iter().any(|o| &o.name == name) {
            let have: Vec<&str> = info.outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(format!("model.toml [outputs.{name}]: the model has no output '{name}' (it has {have:?})"));
        }
    }
    Ok(())
}

fn bind(socket: &Path) -> anyhow::Result<StdListener> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("could not remove stale socket {}: {e}", socket.display()),
    }
    StdListener::bind(socket).map_err(|e| anyhow::anyhow!("could not bind worker socket {}: {e}", socket.display()))
}

/// Removes the socket, where the worker may (after a change of user the supervisor does).
fn cleanup(socket: &Path) {
    let _ = std::fs::remove_file(socket);
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: WorkerArgs,
    }

    fn parse(extra: &[&str]) -> Result<WorkerArgs, String> {
        let base = ["worker", "--model", "m", "--version", "1", "--dir", "/d", "--socket", "/s", "--parent-pid", "1"];
        Command::try_parse_from(base.iter().chain(extra)).map(|c| c.args).map_err(|e| e.to_string())
    }

    #[test]
    fn an_unknown_bucket_policy_is_refused_not_defaulted() {
        assert_eq!(parse(&[]).unwrap().buckets, Buckets::Pow2);
        assert_eq!(parse(&["--buckets", "exact"]).unwrap().buckets, Buckets::Exact);
        let refused = parse(&["--buckets", "pow3"]).unwrap_err();
        assert!(refused.contains("'pow3' is not a bucket policy (exact, pow2)"), "{refused}");
    }
}
