//! One worker process: spawning `modeld worker …`, the Hello/Ready handshake over its
//! socket, and stopping it gracefully (SIGTERM, then SIGKILL after a grace period).

use super::cgroup::Cgroups;
use crate::config::BatchingConfig;
use crate::router::conn::WorkerConn;
use crate::wire::progress::Block;
use crate::wire::{self, Frame, ModelInfo, PROTOCOL_VERSION};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

/// The variables a worker inherits: where programs are, its locale and time zone,
/// backtraces when asked for, and the journal's stream (for its log format). Everything
/// else it needs comes on its command line.
/// `LD_LIBRARY_PATH`, `CUDA_HOME` and `CUDA_PATH` say where an operator's CUDA (or ONNX
/// Runtime) libraries are; `NVIDIA_TF32_OVERRIDE=0` keeps cuDNN and cuBLAS from using
/// TF32 arithmetic for float32 work.
pub const WORKER_ENV: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "RUST_BACKTRACE",
    "JOURNAL_STREAM",
    "LD_LIBRARY_PATH",
    "CUDA_HOME",
    "CUDA_PATH",
    "NVIDIA_TF32_OVERRIDE",
];

/// Under the state directory: tract-cuda's compiled kernels, kept across restarts so only
/// a host's first CUDA worker spends about a minute compiling them.
pub const KERNEL_CACHE_DIR: &str = "kernel-cache";

/// Longest path a Unix socket address holds (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// This binary, as workers and `modeld describe` are started from it.
#[derive(Debug, Clone)]
pub struct Exe {
    /// What is executed: the running daemon's own file (`/proc/self/exe`, where there is
    /// one), which stays this build after a package upgrade replaced the path on disk —
    /// a worker restarted after a crash then speaks this daemon's protocol, and a broken
    /// new binary cannot take down an old daemon's workers.
    pub run: PathBuf,
    /// The path it was started as: the workers' argv[0] and what messages name.
    pub name: PathBuf,
}

impl Exe {
    /// The running binary.
    pub fn this() -> std::io::Result<Exe> {
        let name = std::env::current_exe()?;
        let own = Path::new("/proc/self/exe");
        let run = if own.exists() { own.to_path_buf() } else { name.clone() };
        Ok(Exe { run, name })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.run);
        command.arg0(&self.name);
        command
    }
}

impl std::fmt::Display for Exe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.name.display().fmt(f)
    }
}

/// How every worker is started.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// This binary, re-executed as `modeld worker`.
    pub exe: Exe,
    pub sockets_dir: PathBuf,
    /// `[server]` in force: `worker_start_timeout`, `log_level` (for workers started from
    /// now on) and `shutdown_grace` are read at each use, so a reload applies them.
    pub server: crate::config::Live,
    /// Delegated cgroups for memory limits, when the system gives them.
    pub cgroups: Option<Cgroups>,
    /// The host's GPUs, as NVML counted them (`None`: no telemetry).
    pub host_gpus: Option<u32>,
}

/// What one worker process is asked to serve.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub model: String,
    pub version: u64,
    /// The pool's id: two pools of one version (a settings change) never share names.
    pub pool: u64,
    pub slot: usize,
    pub dir: PathBuf,
    pub threads: usize,
    pub memory_limit: Option<u64>,
    pub busy_poll: std::time::Duration,
    pub batching: BatchingConfig,
    pub engine: EngineSpec,
}

/// The engine a version runs on and its options, as the config gives them (the version's
/// model.toml may still name another engine, which the worker applies).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSpec {
    pub engine: crate::config::Engine,
    pub onnxruntime: crate::config::OnnxRuntimeOptions,
    pub intra_op_threads: usize,
    pub device: crate::config::Device,
}

impl EngineSpec {
    pub fn of(model: &crate::config::ModelConfig) -> EngineSpec {
        EngineSpec {
            engine: model.engine,
            onnxruntime: model.onnxruntime.clone(),
            intra_op_threads: model.intra_op_threads,
            device: model.device.clone(),
        }
    }
}

impl WorkerSpec {
    /// `<model>-<version>-<pool>-<slot>`: the worker within its daemon.
    pub fn name(&self) -> String {
        format!("{}-{}-{}-{}", self.model, self.version, self.pool, self.slot)
    }
}

/// A started worker process, the cgroup it was placed in, if any, and its progress
/// block (none when it could not be made: the worker is then watched by pings alone).
pub struct Spawned {
    pub child: Child,
    pub cgroup: Option<PathBuf>,
    pub progress: Option<Block>,
}

/// How a start attempt ended.
pub enum Started {
    Ready {
        conn: Arc<WorkerConn>,
        info: ModelInfo,
    },
    /// The worker loaded nothing and said why: a property of the model, not worth retrying.
    LoadFailed(String),
    /// The worker exited or could not be reached before reporting; may be transient.
    Lost {
        reason: String,
        status: Option<ExitStatus>,
    },
}

impl Launcher {
    /// Removes the sockets and progress blocks that daemons no longer running left in the
    /// sockets directory (a daemon killed, or one from before names carried its pid); a
    /// live daemon's, such as the one handing over to this one, are kept.
    pub fn remove_stale_files(&self) {
        let Ok(entries) = std::fs::read_dir(&self.sockets_dir) else { return };
        for path in entries.flatten().map(|e| e.path()) {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let owner = name.split_once('.').and_then(|(pid, _)| pid.parse::<i32>().ok());
            let alive = owner.is_some_and(|pid| kill(Pid::from_raw(pid), None) != Err(nix::errno::Errno::ESRCH));
            if !alive && (name.ends_with(".sock") || name.ends_with(".progress")) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// `<daemon pid>.<model>-<version>-<pool>-<slot>`: names the worker's socket, progress
    /// block and cgroup. The daemon's pid first: a daemon handed over to (`modeld upgrade`)
    /// shares the run directory and the cgroup with the one it replaces, and their
    /// workers' files and cgroups must not meet.
    fn worker_name(&self, spec: &WorkerSpec) -> String {
        format!("{}.{}", std::process::id(), spec.name())
    }

    /// Removes what a slot's workers left: its socket, progress block and cgroup (once its
    /// last process is gone).
    pub fn remove_files(&self, spec: &WorkerSpec, socket: &Path) {
        let _ = std::fs::remove_file(socket);
        let _ = std::fs::remove_file(self.progress_path(spec));
        if let Some(cgroups) = &self.cgroups {
            cgroups.remove_worker(&self.worker_name(spec));
        }
    }

    /// Beside the worker's socket: its progress block ([`crate::wire::progress`]).
    pub fn progress_path(&self, spec: &WorkerSpec) -> PathBuf {
        self.sockets_dir.join(format!("{}.progress", self.worker_name(spec)))
    }

    pub fn socket_path(&self, spec: &WorkerSpec) -> Result<PathBuf, String> {
        let path = self.sockets_dir.join(format!("{}.sock", self.worker_name(spec)));
        match path.as_os_str().len() <= MAX_SOCKET_PATH {
            true => Ok(path),
            false => Err(format!(
                "worker socket path {} is longer than {MAX_SOCKET_PATH} bytes; use a shorter run_dir",
                path.display()
            )),
        }
    }

    pub fn spawn(&self, spec: &WorkerSpec, socket: &Path) -> std::io::Result<Spawned> {
        let _ = std::fs::remove_file(socket);
        let mut command = self.exe.command();
        command
            .arg("worker")
            .args(["--model", &spec.model])
            .args(["--version", &spec.version.to_string()])
            .arg("--dir")
            .arg(&spec.dir)
            .arg("--socket")
            .arg(socket)
            .args(["--threads", &spec.threads.to_string()])
            .args(self.engine_args(&spec.engine))
            .args(["--device", spec.engine.device.worker_kind()])
            .args(["--busy-poll-us", &spec.busy_poll.as_micros().to_string()])
            .args(["--max-batch", &spec.batching.max_batch.to_string()])
            .args(["--batch-delay-us", &spec.batching.delay.as_micros().to_string()])
            .args(["--buckets", spec.batching.buckets.name()])
            .args(["--plan-sizes", &join(&spec.batching.plan_sizes)])
            .args(["--max-plans", &spec.batching.max_plans.to_string()])
            .args(["--parent-pid", &std::process::id().to_string()])
            // A minimal environment: nothing of the supervisor's (NOTIFY_SOCKET, secrets an
            // operator exported) reaches a process that parses models.
            .env_clear()
            .envs(std::env::vars_os().filter(|(k, _)| WORKER_ENV.iter().any(|w| k == *w)))
            .env("MODELD_LOG", &self.server.get().log_level)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if spec.engine.device.is_gpu() {
            self.show_gpu(&mut command, spec);
        }
        // SAFETY: prctl is async-signal-safe and touches only the child's own flags.
        unsafe {
            command.pre_exec(|| {
                // No setuid binary or file capability can raise what a worker may do.
                match libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
        // The worker joins its cgroup and binds its socket as root, then becomes this user.
        if let Some(user) = self.server.get().workers_switch_to() {
            command.args(["--user", &user.name]);
        }
        if !spec.batching.preferred.is_empty() {
            command.args(["--preferred", &join(&spec.batching.preferred)]);
        }
        let progress_path = self.progress_path(spec);
        let progress = match Block::create(&progress_path, spec.threads) {
            Ok(block) => {
                command.arg("--progress").arg(&progress_path);
                Some(block)
            }
            Err(e) => {
                tracing::warn!(model = %spec.model, version = spec.version, slot = spec.slot,
                    "no progress block at {} ({e}): the worker is watched by pings alone", progress_path.display());
                None
            }
        };
        let mut cgroup = None;
        if let Some(limit) = spec.memory_limit {
            command.args(["--memory-limit", &limit.to_string()]);
            if let Some(cgroups) = &self.cgroups {
                let dir = cgroups.worker(&self.worker_name(spec), limit)?;
                command.arg("--cgroup").arg(&dir);
                cgroup = Some(dir);
            }
        }
        Ok(Spawned { child: command.spawn()?, cgroup, progress })
    }

    /// A worker on a GPU sees only its own (numbered as NVML numbers them), and keeps
    /// compiled kernels in the state directory.
    fn show_gpu(&self, command: &mut Command, spec: &WorkerSpec) {
        command.env("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
        if let Some(gpu) = self.gpu_for(spec) {
            command.env("CUDA_VISIBLE_DEVICES", gpu.to_string());
        }
        // Absolute: tract ignores a relative XDG_CACHE_HOME (and would write under the
        // worker's working directory).
        let state = self.server.get().state_dir.join(KERNEL_CACHE_DIR);
        let cache = std::path::absolute(&state).unwrap_or(state);
        let cache = match self.kernel_cache(&cache) {
            Ok(()) => cache,
            Err(e) => {
                let scratch = std::env::temp_dir().join("modeld-kernel-cache");
                tracing::warn!(
                    "{} cannot hold CUDA kernels ({e}); workers compile them into {} instead, which may not outlive a restart",
                    cache.display(),
                    scratch.display()
                );
                scratch
            }
        };
        command.env("XDG_CACHE_HOME", &cache);
    }

    /// The GPU the worker of `spec` runs on, when it is on one and the GPU is known.
    pub fn gpu_for(&self, spec: &WorkerSpec) -> Option<u32> {
        spec.engine.device.gpu_for(spec.slot, self.host_gpus)
    }

    /// Creates the kernel cache, owned by the workers' user when they run as another.
    fn kernel_cache(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        if let Some(user) = self.server.get().workers_switch_to() {
            let (uid, gid) = (nix::unistd::Uid::from_raw(user.uid), nix::unistd::Gid::from_raw(user.gid));
            nix::unistd::chown(dir, Some(uid), Some(gid)).map_err(std::io::Error::from)?;
        }
        Ok(())
    }

    /// How long a worker of `spec` may take to become ready (on a GPU, long enough for the
    /// first kernel compilation).
    pub fn start_timeout_for(&self, spec: &WorkerSpec) -> Duration {
        spec.engine.device.start_timeout(self.start_timeout())
    }

    /// The signature a worker would report for the version in `dir`, read by a short-lived
    /// `modeld describe` process (the supervisor never loads a model itself).
    pub async fn describe(&self, dir: &Path, engine: &EngineSpec) -> Result<ModelInfo, String> {
        let mut command = self.exe.command();
        command.arg("describe").arg("--dir").arg(dir).args(self.engine_args(engine));
        // It parses the model as workers do: as the worker user.
        if let Some(user) = self.server.get().workers_switch_to() {
            command.args(["--user", &user.name]);
        }
        let child = command
            .env("MODELD_LOG", "error")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("could not start {} describe: {e}", self.exe))?;
        let timeout = self.start_timeout();
        let output = tokio::time::timeout(timeout, child.wait_with_output())
            .await
            .map_err(|_| format!("reading the signature of {} took over {timeout:?}", dir.display()))?
            .map_err(|e| format!("could not read the signature of {}: {e}", dir.display()))?;
        let body = output.stdout.get(4..).unwrap_or_default();
        match Frame::decode(body) {
            Ok(Frame::Ready(info)) => Ok(info),
            Ok(Frame::LoadFailed { reason }) => Err(reason),
            _ => Err(format!("describing {} {}", dir.display(), describe_exit(output.status))),
        }
    }

    /// The engine's command-line arguments, for a worker and for `describe` alike.
    fn engine_args(&self, engine: &EngineSpec) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "--engine".into(),
            engine.engine.name().into(),
            "--intra-op-threads".into(),
            engine.intra_op_threads.to_string().into(),
            "--ort-optimization".into(),
            engine.onnxruntime.optimization.clone().into(),
            format!("--ort-memory-arena={}", engine.onnxruntime.memory_arena).into(),
        ];
        if let Some(library) = &self.server.get().onnxruntime_library {
            args.extend(["--onnxruntime-library".into(), library.clone().into_os_string()]);
        }
        args
    }

    /// `server.worker_start_timeout` in force.
    pub fn start_timeout(&self) -> Duration {
        self.server.get().worker_start_timeout
    }

    /// `server.shutdown_grace` in force: how long a stopping worker may take.
    pub fn grace(&self) -> Duration {
        self.server.get().shutdown_grace
    }

    /// Connects to the worker's socket and waits for Ready (up to `timeout`), while
    /// watching the process.
    pub async fn handshake(&self, child: &mut Child, socket: &Path, timeout: Duration) -> Started {
        let attempt = async {
            let mut stream = connect(socket).await?;
            wire::send(&mut stream, &Frame::Hello { protocol: PROTOCOL_VERSION }).await?;
            let reply = wire::recv(&mut stream).await?;
            std::io::Result::Ok((stream, reply))
        };
        tokio::pin!(attempt);
        tokio::select! {
            // A reply already on the socket wins over the exit that followed it.
            biased;
            result = &mut attempt => answered(result),
            status = child.wait() => {
                // A worker that could not load says why, then exits: read its last words.
                match tokio::time::timeout(LAST_WORDS, &mut attempt).await {
                    Ok(result @ Ok((_, Frame::LoadFailed { .. }))) => answered(result),
                    _ => match status {
                        Ok(status) => Started::Lost {
                            reason: format!("worker {} before reporting ready", describe_exit(status)),
                            status: Some(status),
                        },
                        Err(e) => Started::Lost { reason: format!("could not wait for worker: {e}"), status: None },
                    },
                }
            }
            _ = tokio::time::sleep(timeout) => Started::Lost {
                reason: format!(
                    "worker did not report ready within {timeout:?} (server.worker_start_timeout; at least 10 minutes on a GPU)"
                ),
                status: None,
            },
        }
    }
}

/// How long to read a worker's socket after it exited, for a LoadFailed it sent first.
const LAST_WORDS: Duration = Duration::from_millis(200);

fn answered(result: std::io::Result<(UnixStream, Frame)>) -> Started {
    match result {
        Ok((stream, Frame::Ready(info))) => Started::Ready { conn: WorkerConn::start(stream), info },
        Ok((_, Frame::LoadFailed { reason })) => Started::LoadFailed(reason),
        Ok((_, other)) => Started::Lost { reason: format!("worker answered Hello with {other:?}"), status: None },
        Err(e) => Started::Lost { reason: format!("worker handshake failed: {e}"), status: None },
    }
}

fn join(sizes: &[usize]) -> String {
    sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(",")
}

/// Retries connecting while the worker starts up and binds its socket.
async fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => return Ok(stream),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => return Err(e),
        }
    }
}

/// SIGTERM, then SIGKILL if the worker has not exited within `grace`.
pub async fn stop(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            tracing::warn!("worker did not stop within {grace:?}; killing it");
            let _ = child.kill().await;
            child.wait().await.ok()
        }
    }
}

/// "exited with code 3", "was killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("was killed by signal {sig} ({})", s.as_str()),
            Err(_) => format!("was killed by signal {sig}"),
        },
        (None, None) => "ended".into(),
    }
}
