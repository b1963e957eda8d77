//! Stage two: checks every value of the raw config and builds the typed [`Config`].
//!
//! Each check records a [`Problem`] naming the key and goes on, so one run reports them
//! all. Defaults live here, next to the checks that would refuse them.

use super::health::{self, HealthConfig};
use super::raw::{RawHealth, RawModel, RawServer, RawSize, RawVersion};
use super::report::{KeyPath, Locator, Problem};
use super::{AdminGroup, BatchingConfig, Config, DeployConfig, ModelConfig, SERVICE_USER, ServerConfig, WorkerUser};
use super::{VersionCheck, VersionSpec, resolve_path};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY: usize = 64 << 20;
pub const DEFAULT_MAX_INFLIGHT: usize = 1024;
const MAX_THREADS: i64 = 1024;
/// Off unless asked for: a polling worker shows as busy CPU (in `top` and in /health's
/// host cpu check) while it waits, which an operator would not expect by default.
pub const DEFAULT_BUSY_POLL: Duration = Duration::ZERO;
const MAX_BUSY_POLL: Duration = Duration::from_millis(10);
/// The shortest `hang_timeout`: the supervisor looks at workers every 50 ms.
const MIN_HANG_TIMEOUT: Duration = Duration::from_millis(100);

/// Builds the [`Config`], recording every problem; a value with a problem is replaced by
/// its default so the rest can still be checked (the caller refuses a config with errors).
pub fn config(
    path: &Path,
    base: &Path,
    server: &RawServer,
    health: &RawHealth,
    models: &[(KeyPath, RawModel)],
    at: &Locator,
    problems: &mut Vec<Problem>,
) -> Config {
    let server = server_config(base, server, at, problems);
    let health = health::apply(&HealthConfig::default(), health, &KeyPath::default().key("health"), at, problems);
    let models = model_configs(&server, &health, models, base, at, problems);
    check_cores(&models, at, problems);
    super::scale::check_budget(&models, &server.budget, at, problems);
    Config { path: path.to_path_buf(), server, health, models }
}

fn server_config(base: &Path, raw: &RawServer, at: &Locator, problems: &mut Vec<Problem>) -> ServerConfig {
    let key = |k: &str| KeyPath::default().key("server").key(k);
    let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text.parse().unwrap_or_else(|_| {
        problems
            .push(at.error(&key("listen"), format!("'{listen_text}' is not an IP:PORT address (e.g. 127.0.0.1:8080)")));
        DEFAULT_LISTEN.parse().expect("default address parses")
    });
    let path_or =
        |value: &Option<String>, default: &str| resolve_path(base, Path::new(value.as_deref().unwrap_or(default)));
    let run_dir = path_or(&raw.run_dir, "/run/modeld");
    let state_dir = path_or(&raw.state_dir, "/var/lib/modeld");
    let admin_group = raw.admin_group.as_ref().and_then(|name| match nix::unistd::Group::from_name(name) {
        Ok(Some(group)) => Some(AdminGroup { name: name.clone(), gid: group.gid.as_raw() }),
        Ok(None) => {
            problems.push(at.error(&key("admin_group"), format!("group '{name}' does not exist")));
            None
        }
        Err(e) => {
            problems.push(at.error(&key("admin_group"), format!("could not look up group '{name}': {e}")));
            None
        }
    });
    let worker_user = worker_user(raw.worker_user.as_deref(), &key("worker_user"), at, problems);
    let onnxruntime_library = match &raw.onnxruntime_library {
        Some(p) => Some(resolve_path(base, Path::new(p))),
        None => std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()).map(Into::into),
    };
    let admin_socket = match &raw.admin_socket {
        Some(p) => resolve_path(base, Path::new(p)),
        None => run_dir.join("admin.sock"),
    };
    let mut duration = |name: &str, value: &Option<String>, default: Duration| {
        parse_duration(value, default).unwrap_or_else(|message| {
            problems.push(at.error(&key(name), message));
            default
        })
    };
    let request_timeout = duration("request_timeout", &raw.request_timeout, Duration::from_secs(30));
    let header_read_timeout = duration("header_read_timeout", &raw.header_read_timeout, Duration::from_secs(10));
    let shutdown_grace = duration("shutdown_grace", &raw.shutdown_grace, Duration::from_secs(30));
    let worker_start_timeout = duration("worker_start_timeout", &raw.worker_start_timeout, Duration::from_secs(300));
    let worker_hang_timeout = duration("worker_hang_timeout", &raw.worker_hang_timeout, Duration::from_secs(1));
    let max_body_bytes = match &raw.max_body {
        None => DEFAULT_MAX_BODY,
        Some(size) => parse_size(size).unwrap_or_else(|m| {
            problems.push(at.error(&key("max_body"), m));
            DEFAULT_MAX_BODY
        }),
    };
    let max_inflight_per_model = raw
        .max_inflight_per_model
        .map_or(DEFAULT_MAX_INFLIGHT, |n| at_least(n, 1, 1 << 20, &key("max_inflight_per_model"), at, problems));
    let log_level = raw.log_level.clone().unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
        problems.push(at.error(
            &key("log_level"),
            format!("'{log_level}' is not a level (error, warn, info, debug, trace) or filter"),
        ));
    }
    ServerConfig {
        listen,
        admin_socket,
        admin_group,
        worker_user,
        onnxruntime_library,
        run_dir,
        state_dir,
        repository: path_or(&raw.repository, "/var/lib/modeld/models"),
        max_body_bytes,
        request_timeout,
        header_read_timeout,
        max_inflight_per_model,
        shutdown_grace,
        worker_start_timeout,
        worker_hang_timeout,
        log_level,
        auth: super::Auth::default(),
        budget: super::scale::budget(raw.budget.as_ref(), &key("budget"), at, problems),
    }
}

fn engine(name: Option<&str>, key: &KeyPath, at: &Locator, problems: &mut Vec<Problem>) -> super::Engine {
    let Some(name) = name else { return super::Engine::default() };
    match super::Engine::NAMES.iter().find(|(n, _)| *n == name) {
        Some((_, engine)) => *engine,
        None => {
            problems.push(at.error(key, format!("'{name}' is not an engine (tract or onnxruntime)")));
            super::Engine::default()
        }
    }
}

fn device(
    text: Option<&str>,
    engine: super::Engine,
    key: &KeyPath,
    at: &Locator,
    problems: &mut Vec<Problem>,
) -> super::Device {
    let device = match text.map(super::Device::parse) {
        None => return super::Device::Cpu,
        Some(Ok(device)) => device,
        Some(Err(message)) => {
            problems.push(at.error(key, message));
            return super::Device::Cpu;
        }
    };
    // `cuda-or-cpu` on ONNX Runtime would always be the CPU: allowed, the worker says so.
    if matches!(device, super::Device::Cuda { or_cpu: false, .. }) && engine == super::Engine::OnnxRuntime {
        problems.push(at.error(
            key,
            format!(
                "'{}' needs engine = \"tract\": the onnxruntime engine runs on the CPU only",
                text.unwrap_or_default()
            ),
        ));
    }
    device
}

fn onnxruntime(
    raw: Option<&super::raw::RawOnnxRuntime>,
    key: &KeyPath,
    at: &Locator,
    problems: &mut Vec<Problem>,
) -> super::OnnxRuntimeOptions {
    let mut options = super::OnnxRuntimeOptions::default();
    let Some(raw) = raw else { return options };
    if let Some(level) = &raw.optimization {
        match super::OPTIMIZATION_LEVELS.contains(&level.as_str()) {
            true => options.optimization = level.clone(),
            false => problems.push(at.error(
                &key.key("optimization"),
                format!("'{level}' is not an optimization level ({})", super::OPTIMIZATION_LEVELS.join(", ")),
            )),
        }
    }
    options.memory_arena = raw.memory_arena.unwrap_or(options.memory_arena);
    options
}

/// `worker_user`, looked up now: a name given that does not exist is an error; without
/// one, the service user if the host has it. A root supervisor with no user to hand its
/// workers to is warned of (they would parse models as root).
fn worker_user(name: Option<&str>, key: &KeyPath, at: &Locator, problems: &mut Vec<Problem>) -> Option<WorkerUser> {
    let root = nix::unistd::geteuid().is_root();
    let wanted = name.unwrap_or(SERVICE_USER);
    let user = match nix::unistd::User::from_name(wanted) {
        Ok(user) => user,
        Err(e) => {
            problems.push(at.error(key, format!("could not look up user '{wanted}': {e}")));
            return None;
        }
    };
    let Some(user) = user else {
        match name {
            Some(_) => problems.push(at.error(key, format!("user '{wanted}' does not exist"))),
            None if root => problems.push(at.warning(
                key,
                format!("workers will run as root: there is no user '{SERVICE_USER}' to run them as; create it or name another user here"),
            )),
            None => {}
        }
        return None;
    };
    let user = WorkerUser { name: wanted.to_string(), uid: user.uid.as_raw(), gid: user.gid.as_raw() };
    if name.is_some() && !root && user.uid != nix::unistd::geteuid().as_raw() {
        problems.push(at.warning(
            key,
            format!("ignored: workers run as the supervisor's own user; only a supervisor started as root hands them to '{wanted}'"),
        ));
    }
    Some(user)
}

fn model_configs(
    server: &ServerConfig,
    health: &HealthConfig,
    raw: &[(KeyPath, RawModel)],
    base: &Path,
    at: &Locator,
    problems: &mut Vec<Problem>,
) -> Vec<ModelConfig> {
    if raw.is_empty() {
        problems
            .push(at.error(&KeyPath::default().key("model"), "no [[model]] is configured; modeld needs at least one"));
    }
    let mut seen = HashSet::new();
    raw.iter()
        .map(|(path, m)| {
            if let Err(message) = check_name(&m.name) {
                problems.push(at.error(&path.key("name"), message));
            } else if !seen.insert(m.name.clone()) {
                problems.push(at.error(&path.key("name"), format!("model '{}' is configured twice", m.name)));
            }
            let repository =
                m.repository.as_ref().map_or(server.repository.clone(), |r| resolve_path(base, Path::new(r)));
            let version = version_spec(m.version.as_ref()).unwrap_or_else(|message| {
                problems.push(at.error(&path.key("version"), message));
                VersionSpec::Latest
            });
            let engine = engine(m.engine.as_deref(), &path.key("engine"), at, problems);
            let device = device(m.device.as_deref(), engine, &path.key("device"), at, problems);
            let workers = super::scale::workers(m.workers.as_ref(), &path.key("workers"), at, problems);
            let model = ModelConfig {
                name: m.name.clone(),
                dir: repository.join(&m.name),
                version,
                workers,
                scale: super::scale::build(m.scale.as_ref(), workers, &path.key("scale"), at, problems),
                threads: m.threads.map_or(1, |n| at_least(n, 1, MAX_THREADS, &path.key("threads"), at, problems)),
                memory_limit: m
                    .memory_limit
                    .as_ref()
                    .and_then(|size| memory_limit(size, &path.key("memory_limit"), at, problems)),
                health: HealthConfig {
                    hang_timeout: hang_timeout(&m.hang_timeout, &path.key("hang_timeout"), at, problems),
                    ..match &m.health {
                        Some(raw) => health::apply(health, raw, &path.key("health"), at, problems),
                        None => health.clone(),
                    }
                },
                deploy: DeployConfig::default(),
                batching: match &m.batching {
                    Some(raw) => {
                        super::batching::build(raw, BatchingConfig::default(), &path.key("batching"), at, problems)
                    }
                    None => BatchingConfig::default(),
                },
                intra_op_threads: m
                    .intra_op_threads
                    .map_or(1, |n| at_least(n, 1, MAX_THREADS, &path.key("intra_op_threads"), at, problems)),
                busy_poll: busy_poll(&m.busy_poll, &path.key("busy_poll"), at, problems),
                engine,
                onnxruntime: onnxruntime(m.onnxruntime.as_ref(), &path.key("onnxruntime"), at, problems),
                device,
            };
            ModelConfig {
                deploy: super::deploy::build(
                    &m.deploy.clone().unwrap_or_default(),
                    model.workers.max,
                    &path.key("deploy"),
                    at,
                    problems,
                ),
                ..model
            }
        })
        .collect()
}

/// A missing model directory or version is a warning: the daemon still serves the other
/// models and reports this one failed, and the files may arrive later. `raw` are the
/// `[[model]]` tables the models were built from, in the same order.
pub fn check_repositories(
    models: &[ModelConfig],
    raw: &[(KeyPath, RawModel)],
    versions: VersionCheck,
    at: &Locator,
    problems: &mut Vec<Problem>,
) {
    for (model, (path, _)) in models.iter().zip(raw) {
        if let Err(e) = versions(&model.dir, model.version) {
            let key = if model.version == VersionSpec::Latest { path.key("name") } else { path.key("version") };
            problems.push(at.warning(&key, e));
        }
    }
}

/// Warns when the workers could run more inferences (and intra-op threads) at once than
/// the host has cores: they would only take turns, adding latency. Autoscaled models count
/// their `min` (what they always hold); [`check_budget`] holds those to the budget.
fn check_cores(models: &[ModelConfig], at: &Locator, problems: &mut Vec<Problem>) {
    let cores = super::Budget::host_cores();
    let (wanted, per_model) = super::scale::least_cores(models);
    if wanted > cores {
        problems.push(at.warning(
            &KeyPath::default().key("model"),
            format!(
                "workers x cores per worker (threads x intra_op_threads) add up to {wanted} ({per_model}) on {cores} cores: inferences will wait for each other"
            ),
        ));
    }
}

/// A worker needs room for the runtime and the model: less than 16 MiB cannot work.
const MIN_MEMORY_LIMIT: u64 = 16 << 20;

fn memory_limit(size: &RawSize, key: &KeyPath, at: &Locator, problems: &mut Vec<Problem>) -> Option<u64> {
    match parse_size(size) {
        Ok(bytes) if (bytes as u64) < MIN_MEMORY_LIMIT => {
            problems.push(at.error(key, format!("{bytes} bytes is too little for a worker (at least 16MiB)")));
            None
        }
        Ok(bytes) => Some(bytes as u64),
        Err(m) => {
            problems.push(at.error(key, m));
            None
        }
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        && !name.starts_with('.');
    match ok {
        true => Ok(()),
        false => Err(format!("'{name}' is not a valid model name (1-64 of A-Z a-z 0-9 _ - ., not starting with '.')")),
    }
}

fn version_spec(raw: Option<&RawVersion>) -> Result<VersionSpec, String> {
    match raw {
        None => Ok(VersionSpec::Latest),
        Some(RawVersion::Word(w)) if w == "latest" => Ok(VersionSpec::Latest),
        Some(RawVersion::Word(w)) => Err(format!("'{w}' is not a version: use a positive integer or \"latest\"")),
        Some(RawVersion::Number(n)) if *n >= 1 => Ok(VersionSpec::Exact(*n as u64)),
        Some(RawVersion::Number(n)) => Err(format!("must be a positive integer or \"latest\", got {n}")),
    }
}

pub(super) fn at_least(
    value: i64,
    min: i64,
    max: i64,
    key: &KeyPath,
    at: &Locator,
    problems: &mut Vec<Problem>,
) -> usize {
    if value < min || value > max {
        problems.push(at.error(key, format!("must be between {min} and {max}, got {value}")));
        return min as usize;
    }
    value as usize
}

/// `busy_poll`: zero turns it off; past [`MAX_BUSY_POLL`] a worker would mostly burn CPU.
fn busy_poll(value: &Option<String>, key: &KeyPath, at: &Locator, problems: &mut Vec<Problem>) -> Duration {
    let Some(text) = value else {
        return DEFAULT_BUSY_POLL;
    };
    parse_duration_up_to(text, MAX_BUSY_POLL, "a worker may poll").unwrap_or_else(|message| {
        problems.push(at.error(key, message));
        DEFAULT_BUSY_POLL
    })
}

/// `hang_timeout`: at least [`MIN_HANG_TIMEOUT`] (a worker's steps are timed by a
/// supervisor that looks every 50 ms).
fn hang_timeout(value: &Option<String>, key: &KeyPath, at: &Locator, problems: &mut Vec<Problem>) -> Option<Duration> {
    let text = value.as_ref()?;
    match parse_duration(value, Duration::ZERO) {
        Ok(d) if d >= MIN_HANG_TIMEOUT => Some(d),
        Ok(_) => {
            problems.push(at.error(key, format!("'{text}' is too short: at least {MIN_HANG_TIMEOUT:?}")));
            None
        }
        Err(message) => {
            problems.push(at.error(key, message));
            None
        }
    }
}

/// Parses `"30s"`, `"500ms"`, `"2m"`; must be more than zero.
pub fn parse_duration(value: &Option<String>, default: Duration) -> Result<Duration, String> {
    let Some(text) = value else {
        return Ok(default);
    };
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(format!("'{text}' must be more than zero")),
        Ok(d) => Ok(d),
        Err(e) => Err(not_a_duration(text, e)),
    }
}

/// Parses a duration that may be zero, up to `max`; past it the error ends with `what`
/// ("a batch may wait").
pub fn parse_duration_up_to(text: &str, max: Duration, what: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d <= max => Ok(d),
        Ok(_) => Err(format!("'{text}' is over the {} {what}", humantime::format_duration(max))),
        Err(e) => Err(not_a_duration(text, e)),
    }
}

fn not_a_duration(text: &str, e: humantime::DurationError) -> String {
    format!("'{text}' is not a duration ({e}); write e.g. \"30s\" or \"500ms\"")
}

/// Parses a byte count: an integer, or a string with a unit (`B`, `KiB`, `MiB`, `GiB`,
/// `KB`, `MB`, `GB`).
pub fn parse_size(size: &RawSize) -> Result<usize, String> {
    let bytes = match size {
        RawSize::Bytes(n) => u64::try_from(*n).map_err(|_| format!("must not be negative, got {n}"))?,
        RawSize::Text(text) => parse_size_text(text)?,
    };
    match bytes {
        0 => Err("must be more than zero".into()),
        n => usize::try_from(n).map_err(|_| format!("{n} bytes is too large")),
    }
}

fn parse_size_text(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !c.is_ascii_digit()).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!("'{text}': unknown unit '{other}' (use B, KiB, MiB, GiB, KB, MB or GB)"));
        }
    };
    let number: u64 = number.parse().map_err(|_| format!("'{text}' is not a size such as \"16MiB\""))?;
    number.checked_mul(multiplier).ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size(&RawSize::Text("16MiB".into())), Ok(16 << 20));
        assert_eq!(parse_size(&RawSize::Text("2 KB".into())), Ok(2000));
        assert_eq!(parse_size(&RawSize::Bytes(512)), Ok(512));
        assert!(parse_size(&RawSize::Text("12 parsecs".into())).unwrap_err().contains("unknown unit"));
        assert!(parse_size(&RawSize::Bytes(0)).is_err());
        assert!(parse_size(&RawSize::Bytes(-1)).is_err());
    }

    #[test]
    fn durations_must_be_positive() {
        assert_eq!(parse_duration(&Some("250ms".into()), Duration::ZERO), Ok(Duration::from_millis(250)));
        assert!(parse_duration(&Some("0s".into()), Duration::ZERO).is_err());
        assert!(parse_duration(&Some("soon".into()), Duration::ZERO).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("iris_v2-a.b").is_ok());
        for bad in ["", "a/b", ".hidden", "sp ace"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
