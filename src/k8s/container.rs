//! The modeld config as a container runs it, and what the container needs from the
//! cluster: the config file with its paths rewritten for the image's layout, the model
//! versions pinned, and CPU and memory derived from the models' workers.
//!
//! The image (packaging/Dockerfile) runs as uid 10001 on a read-only root filesystem:
//! the config is mounted at `/etc/modeld`, `/run/modeld` and `/var/lib/modeld/state` are
//! empty volumes, and the models are baked into `/var/lib/modeld/models` or come from a
//! volume claim mounted at `/models`.

use super::RenderError;
use crate::config::VersionSpec;
use crate::config::{Config, ModelConfig};
use crate::repo::ModelDir;

pub const CONFIG_DIR: &str = "/etc/modeld";
pub const CONFIG_FILE: &str = "modeld.toml";
pub const RUN_DIR: &str = "/run/modeld";
pub const STATE_DIR: &str = "/var/lib/modeld/state";
pub const IMAGE_MODELS: &str = "/var/lib/modeld/models";
pub const VOLUME_MODELS: &str = "/models";
pub const PORT: u16 = 8080;
/// Where the pod mounts its Secrets: the tokens file, the probes' token.
pub const SECRETS_DIR: &str = "/var/run/secrets/modeld";
pub const TOKENS_FILE: &str = "tokens.toml";
pub const PROBE_TOKEN_FILE: &str = "token";
/// The binary in the image (packaging/Dockerfile), for exec probes.
pub const BINARY: &str = "/usr/bin/modeld";
/// The image's user and group (packaging/Dockerfile).
pub const UID: i64 = 10001;
/// Memory the supervisor itself may use beside its workers (its RSS is ~10-60 MiB).
const SUPERVISOR_MEMORY: u64 = 256 << 20;
/// CPU for the supervisor (HTTP, JSON) beside the workers' threads, in millicores.
const SUPERVISOR_MILLICORES: u64 = 500;

/// Where the pod's models come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Models {
    /// Baked into the image (a derived image copies them into `/var/lib/modeld/models`).
    Image,
    /// A PersistentVolumeClaim of this name, mounted read-only at `/models`.
    Claim(String),
}

impl Models {
    pub fn repository(&self) -> &'static str {
        match self {
            Models::Image => IMAGE_MODELS,
            Models::Claim(_) => VOLUME_MODELS,
        }
    }
}

/// The most CPU a pod requests, in millicores: what a 4-vCPU node has left for pods
/// once the kubelet and system daemons took theirs, so a pod fits on the nodes most
/// clusters run.
pub const MAX_CPU_REQUEST: u64 = 3500;
/// The least CPU a pod requests, in millicores.
const MIN_CPU_REQUEST: u64 = 250;

/// The container's CPU (millicores: its request and its limit), memory (bytes, when every
/// model bounds its workers'; request and limit alike) and NVIDIA GPUs (`nvidia.com/gpu`).
pub struct Resources {
    pub cpu_request: u64,
    pub cpu_limit: u64,
    pub memory: Option<u64>,
    pub gpus: u64,
}

/// Requests and limits from the config. CPU limit: every inference thread busy at once
/// (workers × threads × intra-op threads of each model, a core each) plus the
/// supervisor's half core; CPU request: half of that (inference is bursty: a pod rarely
/// keeps every thread busy, and the HPA adds pods at 70 % of the request), between a
/// quarter core and [`MAX_CPU_REQUEST`]. Memory: each worker's memory_limit plus the
/// supervisor's share, requested as much as limited (memory cannot be taken back). GPUs:
/// as many as the model that names most of them (`cuda:N,M` two, `cuda` one), numbered
/// from 0 in the pod.
pub fn resources(config: &Config) -> Resources {
    let cores: u64 = config.models.iter().map(|m| (m.workers.max * m.cores_per_worker()) as u64).sum();
    let memory: Option<u64> = config.models.iter().map(|m| m.memory_limit.map(|l| l * m.workers.max as u64)).sum();
    let gpus = config.models.iter().map(|m| gpus_wanted(&m.device)).max().unwrap_or(0);
    let cpu_limit = cores * 1000 + SUPERVISOR_MILLICORES;
    Resources {
        cpu_request: (cpu_limit / 2).clamp(MIN_CPU_REQUEST, MAX_CPU_REQUEST),
        cpu_limit,
        memory: memory.map(|m| m + SUPERVISOR_MEMORY),
        gpus,
    }
}

fn gpus_wanted(device: &crate::config::Device) -> u64 {
    match device {
        crate::config::Device::Cpu => 0,
        crate::config::Device::Cuda { gpus, .. } => gpus.len().max(1) as u64,
    }
}

/// The version each model serves, resolved now when the config says `latest`: a cluster
/// rolls out what a config names, so the rendered config pins it.
pub fn pinned_version(model: &ModelConfig) -> Result<u64, RenderError> {
    match model.version {
        VersionSpec::Exact(v) => Ok(v),
        VersionSpec::Latest => ModelDir::new(&model.dir).resolve(VersionSpec::Latest).map_err(|e| {
            RenderError::Config(format!(
                "model '{}' has version = \"latest\", which a cluster cannot roll out by (its pods would each pick what they find); resolving it in {} failed: {e}; set version = N",
                model.name,
                model.dir.display()
            ))
        }),
    }
}

/// The config file for the container: the operator's, with [server]'s paths and address
/// set for the image and each model's version pinned.
/// `versions` are the models' pinned versions, in the config's order ([`pinned_version`]).
pub fn config_file(config: &Config, models: &Models, versions: &[(String, u64)]) -> Result<String, RenderError> {
    let mut table = source(config)?;
    let server = table.entry("server").or_insert_with(|| toml::Value::Table(Default::default()));
    let server = server.as_table_mut().ok_or_else(|| RenderError::Config("[server] is not a table".into()))?;
    server.insert("listen".into(), format!("0.0.0.0:{PORT}").into());
    server.insert("run_dir".into(), RUN_DIR.into());
    server.insert("state_dir".into(), STATE_DIR.into());
    server.insert("repository".into(), models.repository().into());
    // The admin socket lives in run_dir and belongs to the container's one user.
    server.remove("admin_socket");
    server.remove("admin_group");
    // The container starts as its unprivileged user: there is no other to hand workers to.
    server.remove("worker_user");
    // In a pod the autoscaler's budget is the container's: its CPU limit and cgroup memory
    // (the host's figures would let workers outgrow the pod).
    server.remove("budget");
    // The tokens file becomes a Secret the pod mounts ([`tokens_file`]): never the ConfigMap.
    if let Some(auth) = table.get_mut("auth").and_then(toml::Value::as_table_mut)
        && auth.contains_key("tokens_file")
    {
        auth.insert("tokens_file".into(), format!("{SECRETS_DIR}/tokens/{TOKENS_FILE}").into());
    }
    let entries = table.get_mut("model").and_then(toml::Value::as_array_mut);
    for ((entry, model), (_, version)) in entries.into_iter().flatten().zip(&config.models).zip(versions) {
        let entry = entry.as_table_mut().expect("config::load checked [[model]] entries are tables");
        if entry.contains_key("repository") {
            return Err(RenderError::Config(format!(
                "model '{}' has its own repository: in a container every model comes from {}; remove the key (and put the model beside the others) to render it",
                model.name,
                models.repository()
            )));
        }
        entry.insert("version".into(), toml::Value::Integer(*version as i64));
        // The pod sees only the GPUs the device plugin gave it, numbered from 0: the host's
        // indices mean nothing there, so `cuda:N,M` spreads over all of them.
        if let crate::config::Device::Cuda { gpus, or_cpu: false } = &model.device
            && !gpus.is_empty()
        {
            entry.insert("device".into(), "cuda".into());
        }
    }
    let body = toml::to_string(&table).map_err(|e| RenderError::Config(format!("cannot write the config: {e}")))?;
    Ok(format!(
        "# Rendered by `modeld k8s render` from {}: paths and listen set for the container,\n# versions pinned. Edit the source and render again.\n{body}",
        config.path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ))
}

/// The config's tokens file as it is on this host, for the pod's Secret (none without one).
pub fn tokens_file(config: &Config) -> Result<Option<String>, RenderError> {
    let table = source(config)?;
    let Some(file) = table.get("auth").and_then(|a| a.get("tokens_file")).and_then(toml::Value::as_str) else {
        return Ok(None);
    };
    let base = config.path.parent().unwrap_or(std::path::Path::new("."));
    let path = base.join(file);
    std::fs::read_to_string(&path)
        .map(Some)
        .map_err(|e| RenderError::Config(format!("[auth] tokens_file {}: {e}", path.display())))
}

/// The operator's config file as a TOML table (what the container's config is made from).
fn source(config: &Config) -> Result<toml::Table, RenderError> {
    let text = std::fs::read_to_string(&config.path)
        .map_err(|e| RenderError::Config(format!("cannot read {}: {e}", config.path.display())))?;
    text.parse().map_err(|e| RenderError::Config(format!("{} is not TOML: {e}", config.path.display())))
}

/// `1536Mi`, `2Gi`: a byte count as a Kubernetes quantity, rounded up to a MiB.
pub fn quantity(bytes: u64) -> String {
    let mib = bytes.div_ceil(1 << 20);
    match mib % 1024 {
        0 => format!("{}Gi", mib / 1024),
        _ => format!("{mib}Mi"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_are_asked_for_as_many_as_a_model_names() {
        use crate::config::Device;
        assert_eq!(gpus_wanted(&Device::Cpu), 0);
        assert_eq!(gpus_wanted(&Device::parse("cuda").unwrap()), 1);
        assert_eq!(gpus_wanted(&Device::parse("cuda-or-cpu").unwrap()), 1);
        assert_eq!(gpus_wanted(&Device::parse("cuda:2,3").unwrap()), 2);
    }

    #[test]
    fn quantities_round_up_to_mebibytes() {
        assert_eq!(quantity(256 << 20), "256Mi");
        assert_eq!(quantity(2 << 30), "2Gi");
        assert_eq!(quantity((1 << 20) + 1), "2Mi");
    }
}
