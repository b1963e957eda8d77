//! Stage one: the config file as written, in serde structs that refuse unknown keys.
//!
//! Nothing here is checked beyond types; [`super::validate`] turns these into a
//! [`super::Config`] whose invariants hold. Durations are strings such as `"30s"` or
//! `"500ms"`; sizes are integers of bytes or strings such as `"16MiB"`.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin_socket: Option<String>,
    pub admin_group: Option<String>,
    pub worker_user: Option<String>,
    pub onnxruntime_library: Option<String>,
    pub run_dir: Option<String>,
    pub state_dir: Option<String>,
    pub repository: Option<String>,
    pub max_body: Option<RawSize>,
    pub request_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
    pub max_inflight_per_model: Option<i64>,
    pub shutdown_grace: Option<String>,
    pub worker_start_timeout: Option<String>,
    pub worker_hang_timeout: Option<String>,
    pub log_level: Option<String>,
    pub budget: Option<RawBudget>,
}

/// `[server.budget]`: what all models' workers may hold together.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub cores: Option<i64>,
    pub memory: Option<RawSize>,
}

/// `workers = 2` or `workers = { min = 1, max = 8 }` (the table's keys checked in
/// [`super::scale::workers`], so that a misspelt one is named).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawWorkers {
    Count(i64),
    Range(toml::Table),
}

/// `[model.scale]`: the autoscaler's targets and behaviour.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScale {
    pub target_inflight: Option<f64>,
    pub target_queue: Option<String>,
    pub max_cpu: Option<f64>,
    pub max_memory: Option<f64>,
    pub interval: Option<String>,
    pub tolerance: Option<f64>,
    pub up: Option<RawBehavior>,
    pub down: Option<RawBehavior>,
}

/// `[model.scale.up]` / `[model.scale.down]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBehavior {
    pub stabilization: Option<String>,
    pub policies: Option<Vec<RawPolicy>>,
    pub select: Option<String>,
}

/// `{ workers = 4, period = "15s" }` or `{ percent = 100, period = "15s" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub workers: Option<i64>,
    pub percent: Option<i64>,
    pub period: String,
}

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub tokens_file: Option<String>,
    pub open_probes: Option<bool>,
    pub token: Option<Vec<RawToken>>,
}

/// One `[[auth.token]]` (or `[[token]]` in a tokens file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub name: String,
    pub sha256: String,
    pub models: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub name: String,
    pub repository: Option<String>,
    pub version: Option<RawVersion>,
    pub workers: Option<RawWorkers>,
    pub threads: Option<i64>,
    pub memory_limit: Option<RawSize>,
    pub health: Option<RawHealth>,
    pub deploy: Option<RawDeploy>,
    pub scale: Option<RawScale>,
    pub batching: Option<RawBatching>,
    pub intra_op_threads: Option<i64>,
    pub busy_poll: Option<String>,
    pub hang_timeout: Option<String>,
    pub engine: Option<String>,
    pub onnxruntime: Option<RawOnnxRuntime>,
    pub device: Option<String>,
}

/// `[model.batching]`: dynamic batching and plan buckets in the worker.
/// `[model.onnxruntime]`: session options of the ONNX Runtime engine.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOnnxRuntime {
    pub optimization: Option<String>,
    pub memory_arena: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatching {
    pub max_batch: Option<i64>,
    pub delay: Option<String>,
    pub preferred: Option<Vec<i64>>,
    pub buckets: Option<String>,
    pub plan_sizes: Option<Vec<i64>>,
    pub max_plans: Option<i64>,
}

/// `[model.deploy]`: how new versions of the model roll out.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeploy {
    pub strategy: Option<String>,
    pub steps: Option<Vec<i64>>,
    pub bake: Option<String>,
    pub keep_previous: Option<String>,
    pub max_surge: Option<i64>,
    pub max_unavailable: Option<i64>,
    pub split: Option<i64>,
    pub duration: Option<String>,
    pub sticky_header: Option<String>,
    pub check_every: Option<String>,
    pub consecutive_breaches: Option<i64>,
    pub on_inconclusive: Option<String>,
    pub inconclusive_timeout: Option<String>,
    pub max_error_rate_increase: Option<f64>,
    pub max_latency_ratio: Option<f64>,
    pub max_client_error_increase: Option<f64>,
    pub allow_signature_change: Option<bool>,
    pub shadow: Option<String>,
    pub shadow_requests: Option<i64>,
    pub min_agreement: Option<f64>,
    pub agreement_tolerance: Option<f64>,
    pub max_output_drift: Option<f64>,
    pub drift_min_samples: Option<i64>,
    pub replay: Option<bool>,
    pub replay_sample: Option<i64>,
    pub replay_memory: Option<RawSize>,
    pub max_accuracy_drop: Option<f64>,
    pub max_validation_error_increase: Option<f64>,
}

/// `version = 3` or `version = "latest"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawVersion {
    Number(i64),
    Word(String),
}

/// `max_body = 1048576` or `max_body = "1MiB"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(i64),
    Text(String),
}

/// `[health]`, and `[model.health]` overriding it key by key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub window: Option<String>,
    pub min_samples: Option<i64>,
    pub error_rate: Option<RawLevels>,
    pub p95_latency: Option<RawLatencyLevels>,
    pub p99_latency: Option<RawLatencyLevels>,
    pub availability: Option<RawLevels>,
    pub memory: Option<RawLevels>,
    pub gpu_memory: Option<RawLevels>,
    pub cpu: Option<RawLevels>,
}

/// `{ warning = 1.0, critical = 5.0 }`, in percent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLevels {
    pub warning: Option<f64>,
    pub critical: Option<f64>,
}

/// `{ warning = "500ms", critical = "1s" }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLatencyLevels {
    pub warning: Option<String>,
    pub critical: Option<String>,
}
