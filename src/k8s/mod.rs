//! `modeld k8s render`: Kubernetes manifests from the same config that drives the host
//! daemon, with the same strategy, steps, bakes and health thresholds.
//!
//! A render is a [`Plan`] (the config rewritten for the container, the pinned versions,
//! names, labels and resources) turned into objects: the ConfigMap always, then either
//! Deployments with Istio for weighted traffic ([`plain`], `--rollouts kubernetes`) or an
//! Argo Rollouts `Rollout` with an `AnalysisTemplate` over modeld's own metrics
//! ([`argo`], `--rollouts argo`), and a runbook with the exact `kubectl` commands to roll
//! out and back. Core objects are k8s-openapi types, Istio and Argo ones typed structs of
//! ours ([`crd`]); all print as YAML ([`crate::yaml`]). What a cluster cannot express of the
//! host's policy is said in notes, never dropped silently.

mod argo;
mod container;
mod crd;
mod istio;
mod plain;
mod workload;

pub use container::Models;

use crate::config::{Config, DeployConfig, ModelConfig};
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;
use workload::Labels;

/// Which controller carries out rollouts in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollouts {
    /// Deployments, Services and Istio: what plain Kubernetes expresses.
    Kubernetes,
    /// Argo Rollouts, with the health gate as an AnalysisTemplate.
    Argo,
}

/// What the operator chose on the command line.
pub struct Options {
    /// Name of the objects (and the Service clients use).
    pub name: String,
    pub namespace: String,
    pub image: String,
    /// The model whose `[model.deploy]` drives the rollout objects (needed when models differ).
    pub model: Option<String>,
    pub models: Models,
    pub rollouts: Rollouts,
    /// A LoadBalancer Service with client-IP session affinity instead of a ClusterIP one.
    pub load_balancer: bool,
    /// The Prometheus the analysis queries (Argo).
    pub prometheus: String,
    /// Where the files go, for the runbook's `kubectl apply -f` (stdout: `-`).
    pub out_hint: String,
    /// An Istio ingress gateway (`NAMESPACE/NAME`) and the outside host it serves the model
    /// on: the VirtualService binds to it too, so outside requests follow the steps.
    pub istio_gateway: Option<IstioGateway>,
    /// A token of the probes scope (`--probe-token-file`), for the kubelet's probes and the
    /// Prometheus scrape when the config closes probes (`open_probes = false`).
    pub probe_token: Option<String>,
}

/// An Istio ingress gateway and the host outside clients use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IstioGateway {
    /// `NAMESPACE/NAME` of the Gateway object.
    pub gateway: String,
    pub host: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Unsupported(String),
}

/// Everything a render needs, derived once from the config and options.
pub struct Plan {
    pub name: String,
    pub namespace: String,
    pub image: String,
    pub labels: Labels,
    pub config: Config,
    /// The model whose deploy policy the rollout objects follow.
    pub model: ModelConfig,
    /// Each model's version, pinned.
    pub versions: Vec<(String, u64)>,
    pub config_map: String,
    pub config_text: String,
    pub resources: container::Resources,
    pub models: Models,
    pub load_balancer: bool,
    pub prometheus: String,
    pub shutdown_grace_seconds: i64,
    pub worker_start_timeout_seconds: i64,
    pub out_hint: String,
    pub istio_gateway: Option<IstioGateway>,
    /// The tokens file's content, for the Secret mounted in its place.
    pub tokens_file: Option<String>,
    /// The probes' token when probes are closed: exec probes and the scrape read it from
    /// a Secret.
    pub probe_token: Option<String>,
}

impl Plan {
    pub fn new(config: Config, options: Options) -> Result<Plan, RenderError> {
        check_name(&options.name)?;
        check_name(&options.namespace)?;
        let model = rollout_model(&config, options.model.as_deref())?.clone();
        let versions = config
            .models
            .iter()
            .map(|m| container::pinned_version(m).map(|v| (m.name.clone(), v)))
            .collect::<Result<Vec<_>, _>>()?;
        let config_text = container::config_file(&config, &options.models, &versions)?;
        let tokens_file = container::tokens_file(&config)?;
        let probe_token = probe_token(&config.server.auth, options.probe_token)?;
        let weighted =
            matches!(model.deploy.strategy, crate::config::Strategy::Canary | crate::config::Strategy::AbTest);
        if options.istio_gateway.is_some() && !weighted {
            return Err(RenderError::Config(format!(
                "--istio-gateway: only canary and ab_test route through Istio; model '{}' rolls out by {}",
                model.name, model.deploy.strategy
            )));
        }
        let labels = Labels::from([
            ("app.kubernetes.io/name".to_string(), "modeld".to_string()),
            ("app.kubernetes.io/instance".to_string(), options.name.clone()),
        ]);
        let server = config.server.clone();
        // The slowest model's: a GPU's first kernel compilation gets its 10 minutes.
        let start_timeout = config
            .models
            .iter()
            .map(|m| m.device.start_timeout(server.worker_start_timeout))
            .max()
            .unwrap_or(server.worker_start_timeout);
        Ok(Plan {
            // The ConfigMap's name follows its content, so a new config rolls the pods.
            config_map: format!("{}-config-{:08x}", options.name, fnv1a(config_text.as_bytes()) as u32),
            config_text,
            resources: container::resources(&config),
            name: options.name,
            namespace: options.namespace,
            image: options.image,
            labels,
            model,
            versions,
            config,
            models: options.models,
            load_balancer: options.load_balancer,
            prometheus: options.prometheus,
            shutdown_grace_seconds: server.shutdown_grace.as_secs() as i64,
            worker_start_timeout_seconds: start_timeout.as_secs() as i64,
            out_hint: options.out_hint,
            tokens_file,
            probe_token,
            istio_gateway: options.istio_gateway,
        })
    }

    pub fn deploy(&self) -> &DeployConfig {
        &self.model.deploy
    }
}

/// The token the kubelet and Prometheus send when the config closes probes: required then,
/// and it must be one of the config's with the probes scope; unused otherwise.
fn probe_token(auth: &crate::config::Auth, given: Option<String>) -> Result<Option<String>, RenderError> {
    if !auth.enabled() || auth.open_probes {
        return Ok(None);
    }
    let Some(token) = given.map(|t| t.trim().to_string()) else {
        return Err(RenderError::Config(
            "[auth] open_probes = false: the kubelet's probes and Prometheus' scrape need a token of the probes scope, which the pod reads from a Secret. Make one (`modeld token new kubelet --models '*' --scopes probes`, its table added to the config) and pass its file: --probe-token-file FILE; or set open_probes = true".into(),
        ));
    };
    let known = crate::front::auth::find(auth, &token).is_some_and(|t| t.allows(crate::config::Scope::Probes, None));
    match known {
        true => Ok(Some(token)),
        false => Err(RenderError::Config(
            "--probe-token-file: that token is not one of the config's with the probes scope (its hash matches no [[auth.token]] whose scopes hold \"probes\")".into(),
        )),
    }
}

/// The model whose deploy policy the rollout follows: the one named, or the only policy
/// the config has.
fn rollout_model<'c>(config: &'c Config, named: Option<&str>) -> Result<&'c ModelConfig, RenderError> {
    let names = || config.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ");
    match named {
        Some(name) => {
            config.models.iter().find(|m| m.name == name).ok_or_else(|| {
                RenderError::Config(format!("--model {name}: the config has no such model ({})", names()))
            })
        }
        None => {
            let first =
                config.models.first().ok_or_else(|| RenderError::Config("the config has no [[model]]".into()))?;
            match config.models.iter().all(|m| m.deploy.strategy == first.deploy.strategy) {
                true => Ok(first),
                false => Err(RenderError::Config(format!(
                    "the models' [model.deploy] strategies differ ({}); one pod serves them all, so pass --model NAME to say whose policy the cluster rolls out by",
                    config
                        .models
                        .iter()
                        .map(|m| format!("{}: {}", m.name, m.deploy.strategy))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
    }
}

/// A DNS-1123 label: what Kubernetes takes as an object name or namespace.
fn check_name(name: &str) -> Result<(), RenderError> {
    let ok = !name.is_empty()
        && name.len() <= 50
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    match ok {
        true => Ok(()),
        false => Err(RenderError::Config(format!(
            "'{name}' is not a Kubernetes name: lowercase letters, digits and '-', at most 50, not starting or ending with '-'"
        ))),
    }
}

/// FNV-1a: a stable content hash for the ConfigMap's name (std's hasher may change).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// One object: the file it goes to and its JSON form.
pub struct Object {
    pub file: String,
    pub value: serde_json::Value,
}

impl Object {
    fn of(kind: &str, name: &str, object: &impl Serialize) -> Object {
        let value = serde_json::to_value(object).expect("objects serialize");
        Object { file: format!("{kind}-{name}.yaml"), value }
    }
}

/// A render: its objects, what it could not express, and the runbook.
#[derive(Default)]
pub struct Rendered {
    pub objects: Vec<Object>,
    pub notes: Vec<String>,
    pub runbook: String,
}

impl Rendered {
    fn push(&mut self, object: Object) {
        self.objects.push(object);
    }

    fn note(&mut self, note: &str) {
        self.notes.push(note.to_string());
    }
}

/// Renders the manifests for `config`.
pub fn render(config: Config, options: Options) -> Result<Rendered, RenderError> {
    let rollouts = options.rollouts;
    let notes = what_the_image_needs(&config);
    let plan = Plan::new(config, options)?;
    let mut rendered = match rollouts {
        Rollouts::Kubernetes => plain::render(&plan),
        Rollouts::Argo => argo::render(&plan)?,
    };
    for note in &notes {
        rendered.note(note);
    }
    rendered.objects.insert(0, Object::of("configmap", &plan.config_map, &workload::config_map(&plan)));
    for (name, key, content) in workload::secrets(&plan) {
        rendered.objects.insert(1, Object::of("secret", &name, &workload::secret(&plan, &name, key, content)));
    }
    if plan.probe_token.is_some() {
        rendered.runbook.push_str(&closed_probes_runbook(&plan));
    }
    rendered.runbook = runbook(&plan, &rendered);
    Ok(rendered)
}

/// A note for each thing some models need that the image does not carry: the ONNX Runtime
/// library, the CUDA libraries (and GPUs on the nodes).
fn what_the_image_needs(config: &Config) -> Vec<String> {
    let models = |needs: fn(&ModelConfig) -> bool| {
        config.models.iter().filter(|m| needs(m)).map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
    };
    let mut notes = Vec::new();
    let onnxruntime = models(|m| m.engine == crate::config::Engine::OnnxRuntime);
    if !onnxruntime.is_empty() {
        notes.push(format!(
            "engine onnxruntime ({onnxruntime}): the image must carry libonnxruntime.so at server.onnxruntime_library's path (packaging/Dockerfile does not); without it those versions fail to load, with the reason in /health"
        ));
    }
    let cuda = models(|m| m.device.is_gpu());
    if !cuda.is_empty() {
        notes.push(format!(
            "device cuda ({cuda}): the pod asks for nvidia.com/gpu (the NVIDIA device plugin must run on the nodes) and the image must carry the CUDA 13 libraries (cudart, nvrtc, cublas, cudnn; packaging/Dockerfile does not); the node's driver provides libcuda"
        ));
    }
    notes
}

/// What closed probes need beyond the pod: Prometheus scraping with the probes token.
fn closed_probes_runbook(plan: &Plan) -> String {
    let secret = workload::probe_secret_name(plan);
    format!(
        "\n## Probes and the scrape with tokens (open_probes = false)\n\n         The kubelet probes by `{bin} probe live|ready`, an exec probe that reads the token from the Secret {secret}          (mounted read-only, mode 0440, group {uid}); an httpGet probe would need the token in clear in the pod spec.          The pods carry no prometheus.io annotations: an annotation-driven scrape would get 401.          Prometheus scrapes with the same token: mount the Secret into it (Prometheus Operator: `spec.secrets: [{secret}]`,          which mounts it at /etc/prometheus/secrets/{secret}/) and add this job:\n\n         ```yaml\n         - job_name: {name}\n             kubernetes_sd_configs:\n    - role: pod\n      namespaces: {{names: [{ns}]}}\n             relabel_configs:\n               - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_instance]\n      regex: {name}\n      action: keep\n               - source_labels: [__meta_kubernetes_pod_container_port_name]\n      regex: http\n      action: keep\n             authorization:\n    type: Bearer\n    credentials_file: /etc/prometheus/secrets/{secret}/{file}\n         ```\n\n         The Secret holds the token itself: keep the rendered {secret} file out of version control.\n",
        bin = container::BINARY,
        uid = container::UID,
        name = plan.name,
        ns = plan.namespace,
        file = container::PROBE_TOKEN_FILE,
    )
}

fn runbook(plan: &Plan, rendered: &Rendered) -> String {
    let mut text = format!(
        "# {name}: rollout runbook\n\nRendered by `modeld k8s render` for model '{model}' ({strategy}) in namespace {ns}, image {image}.\n\
         Versions: {versions}.\n\n",
        name = plan.name,
        model = plan.model.name,
        strategy = plan.deploy().strategy,
        ns = plan.namespace,
        image = plan.image,
        versions = plan.versions.iter().map(|(m, v)| format!("{m} {v}")).collect::<Vec<_>>().join(", "),
    );
    text.push_str(&rendered.runbook);
    if !rendered.notes.is_empty() {
        text.push_str("\n## What the cluster does not do as the host does\n\n");
        for note in &rendered.notes {
            let _ = writeln!(text, "- {note}");
        }
    }
    text
}

/// All objects as one YAML stream, the runbook as leading comments.
pub fn stream(rendered: &Rendered) -> String {
    let mut out: String = rendered.runbook.lines().map(|l| format!("# {l}\n").replace("# \n", "#\n")).collect();
    for object in &rendered.objects {
        out.push_str("---\n");
        out.push_str(&crate::yaml::document(&object.value));
    }
    out
}

/// Writes one file per object and `RUNBOOK.md` into `dir`.
pub fn write(rendered: &Rendered, dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    for object in &rendered.objects {
        std::fs::write(dir.join(&object.file), crate::yaml::document(&object.value))?;
        files.push(object.file.clone());
    }
    std::fs::write(dir.join("RUNBOOK.md"), &rendered.runbook)?;
    files.push("RUNBOOK.md".into());
    Ok(files)
}
