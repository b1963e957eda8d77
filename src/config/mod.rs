//! modeld's configuration: `modeld.toml`, read in two stages.
//!
//! Stage one ([`raw`]) is serde structs that refuse unknown keys; each section is read on
//! its own so one bad `[[model]]` does not hide the problems of the next. Stage two
//! ([`validate`]) checks values and builds the typed [`Config`] whose invariants the rest
//! of the daemon relies on. Every problem is reported with its key and line
//! ([`report`]); `modeld config check` prints them all and `modeld serve` refuses a config
//! that has any error.
//!
//! Relative paths in the file resolve against the directory of the file itself, as
//! Prometheus does, so the same config works from any working directory.
//! This module depends on nothing else of ours.

pub mod auth;
pub mod batching;
pub mod deploy;
pub mod describe;
pub mod health;
pub mod raw;
pub mod report;
pub mod scale;
pub mod validate;

pub use auth::{Auth, Scope, Token};
pub use batching::{BatchingConfig, Buckets};
pub use deploy::{DeployConfig, OnInconclusive, Strategy};
pub use health::{HealthConfig, Levels};
use raw::{RawHealth, RawModel, RawServer};
use report::{KeyPath, Locator, Problem, Report, Severity};
pub use scale::{Budget, ScaleConfig, Workers};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// Where the packages install the config, and where the CLI looks by default.
pub const DEFAULT_PATH: &str = "/etc/modeld/modeld.toml";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    pub server: ServerConfig,
    /// `[health]`: the thresholds every model starts from.
    pub health: HealthConfig,
    pub models: Vec<ModelConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_socket: PathBuf,
    /// The group given the admin socket (its members may run operator commands).
    pub admin_group: Option<AdminGroup>,
    /// The user workers run as when the supervisor is started as root (`None`: no such
    /// user, so they stay root; see [`ServerConfig::workers_switch_to`]).
    pub worker_user: Option<WorkerUser>,
    /// The ONNX Runtime shared library (`onnxruntime_library`, else `ORT_DYLIB_PATH` when
    /// the config was read); `None`: `libonnxruntime.so` from the system's library path.
    pub onnxruntime_library: Option<PathBuf>,
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    pub repository: PathBuf,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub header_read_timeout: Duration,
    pub max_inflight_per_model: usize,
    pub shutdown_grace: Duration,
    pub worker_start_timeout: Duration,
    /// A worker holding requests without a word for this long is pinged; hung (killed and
    /// replaced) if it answers no ping and uses no CPU meanwhile.
    pub worker_hang_timeout: Duration,
    pub log_level: String,
    /// `[auth]`: the tokens the HTTP API asks for (none: open).
    pub auth: Auth,
    /// `[server.budget]`: the cores and memory all models' workers may hold together.
    pub budget: Budget,
}

/// `[server]` as in force now, shared by the parts that read it at each use (the front's
/// limits, the supervisor's timeouts and grace) and swapped whole by a reload.
#[derive(Debug, Clone)]
pub struct Live(std::sync::Arc<arc_swap::ArcSwap<ServerConfig>>);

impl Live {
    pub fn new(server: ServerConfig) -> Live {
        Live(std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(server)))
    }

    /// The settings in force now (a cheap guard for the request path; no reference count
    /// is taken).
    pub fn get(&self) -> arc_swap::Guard<std::sync::Arc<ServerConfig>> {
        self.0.load()
    }

    pub fn set(&self, server: ServerConfig) {
        self.0.store(std::sync::Arc::new(server));
    }
}

/// A user by name, with the ids it had when the config was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The service user the packages create: workers of a root supervisor run as it unless
/// `worker_user` names another.
pub const SERVICE_USER: &str = "modeld";

impl ServerConfig {
    /// The user a worker is started as, when it differs from the supervisor's: only a
    /// supervisor running as root can (and must) hand workers to an unprivileged user.
    pub fn workers_switch_to(&self) -> Option<&WorkerUser> {
        match nix::unistd::geteuid().is_root() {
            true => self.worker_user.as_ref().filter(|user| user.uid != 0),
            false => None,
        }
    }
}

/// A group by name, with the id it had when the config was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminGroup {
    pub name: String,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub name: String,
    /// `<repository>/<name>`: the directory holding the version directories.
    pub dir: PathBuf,
    pub version: VersionSpec,
    /// A fixed count, or the bounds the autoscaler keeps to (`[model.scale]`).
    pub workers: Workers,
    pub scale: ScaleConfig,
    pub threads: usize,
    /// Most memory one worker may use, in bytes; past it the worker is killed (an OOM kill).
    pub memory_limit: Option<u64>,
    /// `[health]` with this model's `[model.health]` applied.
    pub health: HealthConfig,
    /// `[model.deploy]`: how new versions roll out.
    pub deploy: DeployConfig,
    /// `[model.batching]`: request merging and plan buckets in the workers.
    pub batching: BatchingConfig,
    /// Threads one inference may use inside tract (matrix products), per worker.
    pub intra_op_threads: usize,
    /// How long a worker polls its socket after answering before it sleeps, while requests
    /// come that close together (zero: never).
    pub busy_poll: Duration,
    /// The engine that runs the model (a version's model.toml may name another).
    pub engine: Engine,
    /// `[model.onnxruntime]`: session options when the engine is ONNX Runtime.
    pub onnxruntime: OnnxRuntimeOptions,
    /// `device`: the CPU, or GPUs through tract's CUDA backend.
    pub device: Device,
}

/// `engine`: which engine runs a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// tract: pure Rust, nothing to install.
    #[default]
    Tract,
    /// ONNX Runtime, its shared library loaded by each worker at start.
    OnnxRuntime,
}

impl Engine {
    pub const NAMES: [(&'static str, Engine); 2] = [("tract", Engine::Tract), ("onnxruntime", Engine::OnnxRuntime)];

    pub fn name(self) -> &'static str {
        Engine::NAMES.iter().find(|(_, e)| *e == self).map_or("tract", |(n, _)| n)
    }
}

/// The least time a worker on a GPU gets to become ready: a host's first CUDA worker
/// compiles tract's kernels (about a minute on an H200), more on a busy host.
pub const GPU_START_TIMEOUT: Duration = Duration::from_secs(600);

/// `device`: where a model's workers run it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// `cuda` (every GPU of the host), `cuda:N` or `cuda:N,M…`: worker `i` runs on
    /// `gpus[i % gpus.len()]`, seeing only that GPU. `or_cpu` (`cuda-or-cpu`): a worker that
    /// finds no usable GPU runs on the CPU instead of failing the version.
    Cuda { gpus: Vec<u32>, or_cpu: bool },
}

impl Device {
    /// Parses `cpu`, `cuda`, `cuda:N`, `cuda:N,M…` or `cuda-or-cpu`.
    pub fn parse(text: &str) -> Result<Device, String> {
        let usage = "cpu, cuda, cuda:N, cuda:N,M… or cuda-or-cpu";
        match text {
            "cpu" => return Ok(Device::Cpu),
            "cuda" => return Ok(Device::Cuda { gpus: vec![], or_cpu: false }),
            "cuda-or-cpu" => return Ok(Device::Cuda { gpus: vec![], or_cpu: true }),
            _ => {}
        }
        let Some(list) = text.strip_prefix("cuda:") else {
            return Err(format!("'{text}' is not a device ({usage})"));
        };
        let mut gpus = Vec::new();
        for item in list.split(',') {
            let gpu = item.trim().parse::<u32>().ok().filter(|n| *n < 256);
            match gpu {
                Some(gpu) if !gpus.contains(&gpu) => gpus.push(gpu),
                Some(gpu) => return Err(format!("'{text}' names GPU {gpu} twice")),
                None => return Err(format!("'{text}': '{item}' is not a GPU index from 0 to 255 ({usage})")),
            }
        }
        Ok(Device::Cuda { gpus, or_cpu: false })
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Cuda { .. })
    }

    /// How long a worker may take to become ready: `worker_start_timeout`, and on a GPU at
    /// least [`GPU_START_TIMEOUT`].
    pub fn start_timeout(&self, worker_start_timeout: Duration) -> Duration {
        match self.is_gpu() {
            true => worker_start_timeout.max(GPU_START_TIMEOUT),
            false => worker_start_timeout,
        }
    }

    /// What the worker is told: `cpu`, `cuda` or `cuda-or-cpu`.
    pub fn worker_kind(&self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda { or_cpu: false, .. } => "cuda",
            Device::Cuda { or_cpu: true, .. } => "cuda-or-cpu",
        }
    }

    /// The GPU worker `slot` runs on, out of the `host_gpus` the host has (`None`: the
    /// CPU, or a host whose GPUs are not known, where the worker sees them all).
    pub fn gpu_for(&self, slot: usize, host_gpus: Option<u32>) -> Option<u32> {
        match self {
            Device::Cpu => None,
            Device::Cuda { gpus, .. } if !gpus.is_empty() => Some(gpus[slot % gpus.len()]),
            Device::Cuda { .. } => host_gpus.filter(|n| *n > 0).map(|n| (slot % n as usize) as u32),
        }
    }
}

/// `[model.onnxruntime]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxRuntimeOptions {
    /// Graph optimization level: "disable", "basic", "extended" or "all".
    pub optimization: String,
    /// Whether sessions use ONNX Runtime's CPU memory arena.
    pub memory_arena: bool,
}

impl Default for OnnxRuntimeOptions {
    fn default() -> OnnxRuntimeOptions {
        OnnxRuntimeOptions { optimization: "all".into(), memory_arena: true }
    }
}

/// The optimization levels `[model.onnxruntime] optimization` takes.
pub const OPTIMIZATION_LEVELS: [&str; 4] = ["disable", "basic", "extended", "all"];

impl ModelConfig {
    /// Cores one worker holds: its inference threads × intra-op threads.
    pub fn cores_per_worker(&self) -> usize {
        self.threads * self.intra_op_threads
    }
}

impl Config {
    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }
}

/// Values given on the command line, which win over the file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub run_dir: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

/// A config that could not be used: unreadable, or with errors (the report lists them).
/// Which version of a model to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSpec {
    Latest,
    Exact(u64),
}

impl std::fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionSpec::Latest => f.write_str("latest"),
            VersionSpec::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// `path` relative to `base` when it is relative (config paths resolve against the
/// directory of the file that names them).
pub fn resolve_path(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_path_buf() } else { base.join(path) }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read config {path}: {error}")]
    Unreadable { path: PathBuf, error: std::io::Error },
    #[error("{0}")]
    Invalid(Report),
}

/// Asks the model repository whether a model's directory holds the version the config
/// names, and which (answered by `crate::repo::check_version`: config reads no repository).
pub type VersionCheck<'a> = &'a dyn Fn(&Path, VersionSpec) -> Result<u64, String>;

/// Reads and validates `path`, without looking into the model repository. On success the
/// report holds the warnings, if any.
pub fn load(path: &Path, overrides: &Overrides) -> Result<(Config, Report), ConfigError> {
    load_checked(path, overrides, None)
}

/// As [`load`], and with `versions` warns of each model whose directory lacks the version
/// it names (what `config check`, `serve` and a reload report).
pub fn load_checked(
    path: &Path,
    overrides: &Overrides,
    versions: Option<VersionCheck>,
) -> Result<(Config, Report), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Unreadable { path: path.to_path_buf(), error: source })?;
    let mut report = Report { file: path.display().to_string(), problems: Vec::new() };
    let config = parse(path, &text, overrides, versions, &mut report.problems);
    match config {
        Some(config) if !report.has_errors() => Ok((config, report)),
        _ => Err(ConfigError::Invalid(report)),
    }
}

fn parse(
    path: &Path,
    text: &str,
    overrides: &Overrides,
    versions: Option<VersionCheck>,
    problems: &mut Vec<Problem>,
) -> Option<Config> {
    let root = match DeTable::parse(text) {
        Ok(root) => root,
        Err(e) => {
            let line = e.span().map(|s| Locator::new(text, &DeTable::default()).line_at(s.start));
            problems.push(Problem {
                key: String::new(),
                line,
                message: format!("not valid TOML: {}", e.message()),
                severity: Severity::Error,
            });
            return None;
        }
    };
    let root = root.into_inner();
    let locator = Locator::new(text, &root);
    let mut server = RawServer::default();
    let mut health = RawHealth::default();
    let mut auth = raw::RawAuth::default();
    let mut models = Vec::new();
    for (key, value) in root.iter() {
        match key.get_ref().as_ref() {
            "server" => server = section::<RawServer>(value, &locator, problems).unwrap_or_default(),
            "health" => health = section::<RawHealth>(value, &locator, problems).unwrap_or_default(),
            "auth" => auth = section::<raw::RawAuth>(value, &locator, problems).unwrap_or_default(),
            "model" => models = model_sections(value, &locator, problems),
            other => problems.push(Problem {
                key: other.to_string(),
                line: Some(locator.line_at(key.span().start)),
                message: "unknown section (expected [server], [health], [auth] or [[model]])".into(),
                severity: Severity::Error,
            }),
        }
    }
    apply_overrides(&mut server, overrides);
    let base = path.parent().unwrap_or(Path::new("."));
    let mut config = validate::config(path, base, &server, &health, &models, &locator, problems);
    config.server.auth = auth::build(&auth, base, &locator, problems);
    if !config.server.listen.ip().is_loopback() && !config.server.auth.enabled() {
        problems.push(locator.warning(
            &report::KeyPath::default().key("server").key("listen"),
            format!(
                "{} is not a loopback address and no [[auth.token]] is configured: anyone who reaches the port may predict; add tokens (`modeld token new`) or put an authenticating proxy in front",
                config.server.listen
            ),
        ));
    }
    if let Some(versions) = versions {
        validate::check_repositories(&config.models, &models, versions, &locator, problems);
    }
    Some(config)
}

fn apply_overrides(server: &mut RawServer, overrides: &Overrides) {
    if let Some(listen) = &overrides.listen {
        server.listen = Some(listen.clone());
    }
    // Command-line paths are relative to the working directory, not the config file.
    let absolute = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone()).display().to_string();
    if let Some(dir) = &overrides.run_dir {
        server.run_dir = Some(absolute(dir));
    }
    if let Some(dir) = &overrides.state_dir {
        server.state_dir = Some(absolute(dir));
    }
}

/// Deserializes one section, recording its first problem with the line serde points at.
fn section<'a, T: Deserialize<'a>>(
    value: &toml::Spanned<DeValue<'a>>,
    locator: &Locator,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    T::deserialize(ValueDeserializer::from(value.clone()))
        .map_err(|e| {
            let line = e.span().or(Some(value.span())).map(|s| locator.line_at(s.start));
            problems.push(Problem {
                key: String::new(),
                line,
                message: e.message().to_string(),
                severity: Severity::Error,
            });
        })
        .ok()
}

fn model_sections(
    value: &toml::Spanned<DeValue<'_>>,
    locator: &Locator,
    problems: &mut Vec<Problem>,
) -> Vec<(KeyPath, RawModel)> {
    let DeValue::Array(items) = value.get_ref() else {
        problems.push(locator.error(&KeyPath::default().key("model"), "must be an array of tables: write [[model]]"));
        return Vec::new();
    };
    let mut models = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = KeyPath::default().key("model").index(i);
        if let Some(model) = section::<RawModel>(item, locator, problems) {
            models.push((path, model));
        } else if let Some(last) = problems.last_mut() {
            last.key = path.to_string();
        }
    }
    models
}

#[cfg(test)]
mod tests;
