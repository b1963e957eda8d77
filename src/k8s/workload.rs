//! The core objects, typed with k8s-openapi: the ConfigMap holding the container's config,
//! the pod template running `modeld serve`, and the Deployment, Service,
//! HorizontalPodAutoscaler and PodDisruptionBudget around it.
//!
//! Numbers from the deployment protocol: 3 to 10 replicas, scaling on CPU at 70 % and
//! memory at 80 % of requests, up at once (100 % per 30 s), down slowly (300 s
//! stabilisation, 50 % per minute); RollingUpdate with one surge pod and none unavailable.

use super::Plan;
use super::container::{self, Models, Resources};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ClientIPConfig, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    ExecAction, HTTPGetAction, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service, ServicePort,
    ServiceSpec, SessionAffinityConfig, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

pub const MIN_REPLICAS: i32 = 3;
pub const MAX_REPLICAS: i32 = 10;
const CPU_TARGET: i32 = 70;
const MEMORY_TARGET: i32 = 80;
/// The Service's port (the container listens on [`container::PORT`]).
pub const SERVICE_PORT: i32 = 80;
/// Readiness and startup probes poll this often.
const PROBE_PERIOD: i32 = 5;

pub type Labels = BTreeMap<String, String>;

/// Object metadata: a name in the plan's namespace, with labels.
pub fn meta(plan: &Plan, name: impl Into<String>, labels: &Labels) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(plan.namespace.clone()),
        labels: Some(labels.clone()),
        ..Default::default()
    }
}

pub fn config_map(plan: &Plan) -> ConfigMap {
    ConfigMap {
        metadata: meta(plan, &plan.config_map, &plan.labels),
        data: Some(BTreeMap::from([(container::CONFIG_FILE.to_string(), plan.config_text.clone())])),
        ..Default::default()
    }
}

/// Secrets a pod's files are read from, mode 0440 for the image's group.
const SECRET_MODE: i32 = 0o440;

/// The Secrets the pod mounts: (name, key, content) of the tokens file and of the probes'
/// token, where the config has them.
pub fn secrets(plan: &Plan) -> Vec<(String, &'static str, String)> {
    let mut secrets = Vec::new();
    if let Some(tokens) = &plan.tokens_file {
        secrets.push((tokens_secret_name(plan), container::TOKENS_FILE, tokens.clone()));
    }
    if let Some(token) = &plan.probe_token {
        secrets.push((probe_secret_name(plan), container::PROBE_TOKEN_FILE, format!("{token}\n")));
    }
    secrets
}

pub fn tokens_secret_name(plan: &Plan) -> String {
    format!("{}-tokens", plan.name)
}

pub fn probe_secret_name(plan: &Plan) -> String {
    format!("{}-probe-token", plan.name)
}

pub fn secret(plan: &Plan, name: &str, key: &str, content: String) -> Secret {
    Secret {
        metadata: meta(plan, name, &plan.labels),
        string_data: Some(BTreeMap::from([(key.to_string(), content)])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// The pod running `modeld serve` with `labels` (the plan's and its track's or slot's).
/// With probes closed, nothing invites an annotation-driven scrape (it would get 401).
pub fn pod_template(plan: &Plan, labels: &Labels) -> PodTemplateSpec {
    let annotations = match plan.probe_token {
        Some(_) => BTreeMap::new(),
        None => BTreeMap::from([
            ("prometheus.io/scrape".to_string(), "true".to_string()),
            ("prometheus.io/port".to_string(), container::PORT.to_string()),
            ("prometheus.io/path".to_string(), "/metrics".to_string()),
        ]),
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels.clone()),
            annotations: Some(annotations).filter(|a| !a.is_empty()),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![server_container(plan)],
            volumes: Some(volumes(plan)),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(container::UID),
                run_as_group: Some(container::UID),
                fs_group: Some(container::UID),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                ..Default::default()
            }),
            // In-flight requests get shutdown_grace after SIGTERM; the kubelet waits a little longer.
            termination_grace_period_seconds: Some(plan.shutdown_grace_seconds + 10),
            automount_service_account_token: Some(false),
            ..Default::default()
        }),
    }
}

fn server_container(plan: &Plan) -> Container {
    Container {
        name: "modeld".into(),
        image: Some(plan.image.clone()),
        args: Some(vec![
            "serve".into(),
            "--config".into(),
            format!("{}/{}", container::CONFIG_DIR, container::CONFIG_FILE),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(container::PORT),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        resources: Some(resources(&plan.resources)),
        // The daemon answers live as soon as it listens; restart it if it stops answering.
        liveness_probe: Some(probe(plan, Check::Live, 10, 5, 3)),
        readiness_probe: Some(probe(plan, Check::Ready, PROBE_PERIOD, 3, 3)),
        // Loading, warming up and checking golden examples may take worker_start_timeout:
        // liveness waits for that before it may restart the pod.
        startup_probe: Some(probe(
            plan,
            Check::Ready,
            PROBE_PERIOD,
            3,
            startup_failures(plan.worker_start_timeout_seconds),
        )),
        volume_mounts: Some(volume_mounts(plan)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What a probe asks.
#[derive(Clone, Copy)]
enum Check {
    Live,
    Ready,
}

/// An HTTP GET of the check's path on the `http` port; with probes closed, an exec of
/// `modeld probe` with the token from its Secret (the kubelet's httpGet could only carry
/// it in clear in the pod spec).
fn probe(plan: &Plan, check: Check, period: i32, timeout: i32, failures: i32) -> Probe {
    let (path, name) = match check {
        Check::Live => ("/v2/health/live", "live"),
        Check::Ready => ("/ready", "ready"),
    };
    let (http_get, exec) = match plan.probe_token {
        None => {
            let get = HTTPGetAction {
                path: Some(path.into()),
                port: IntOrString::String("http".into()),
                ..Default::default()
            };
            (Some(get), None)
        }
        Some(_) => {
            let token = format!("{}/probe/{}", container::SECRETS_DIR, container::PROBE_TOKEN_FILE);
            let command = [container::BINARY, "probe", name, "--address", &format!("127.0.0.1:{}", container::PORT)]
                .into_iter()
                .map(String::from)
                .chain(["--token-file".to_string(), token, "--timeout".to_string(), timeout.to_string()])
                .collect();
            (None, Some(ExecAction { command: Some(command) }))
        }
    };
    Probe {
        http_get,
        exec,
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// Startup probe failures that cover `seconds` of loading, at least one period more.
fn startup_failures(seconds: i64) -> i32 {
    i32::try_from(seconds / i64::from(PROBE_PERIOD) + 2).unwrap_or(i32::MAX)
}

/// CPU requested below its limit (see [`container::resources`]); memory and GPUs
/// requested as much as limited.
fn resources(r: &Resources) -> ResourceRequirements {
    let amounts = |millicores: u64| {
        let mut amounts = BTreeMap::from([("cpu".to_string(), Quantity(format!("{millicores}m")))]);
        if let Some(memory) = r.memory {
            amounts.insert("memory".into(), Quantity(container::quantity(memory)));
        }
        if r.gpus > 0 {
            amounts.insert("nvidia.com/gpu".into(), Quantity(r.gpus.to_string()));
        }
        amounts
    };
    ResourceRequirements {
        requests: Some(amounts(r.cpu_request)),
        limits: Some(amounts(r.cpu_limit)),
        ..Default::default()
    }
}

fn volumes(plan: &Plan) -> Vec<Volume> {
    let empty = |name: &str, medium: Option<&str>| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource { medium: medium.map(String::from), ..Default::default() }),
        ..Default::default()
    };
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource { name: plan.config_map.clone(), ..Default::default() }),
            ..Default::default()
        },
        // Worker sockets and the admin socket.
        empty("run", Some("Memory")),
        // Live versions and rollout history: the pod's own.
        empty("state", None),
    ];
    let secret = |name: &str, secret: String| Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            default_mode: Some(SECRET_MODE),
            ..Default::default()
        }),
        ..Default::default()
    };
    if plan.tokens_file.is_some() {
        volumes.push(secret("tokens", tokens_secret_name(plan)));
    }
    if plan.probe_token.is_some() {
        volumes.push(secret("probe-token", probe_secret_name(plan)));
    }
    if let Models::Claim(claim) = &plan.models {
        volumes.push(Volume {
            name: "models".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(true),
            }),
            ..Default::default()
        });
    }
    volumes
}

fn volume_mounts(plan: &Plan) -> Vec<VolumeMount> {
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let mut mounts = vec![
        mount("config", container::CONFIG_DIR, true),
        mount("run", container::RUN_DIR, false),
        mount("state", container::STATE_DIR, false),
    ];
    if let Models::Claim(_) = plan.models {
        mounts.push(mount("models", container::VOLUME_MODELS, true));
    }
    if plan.tokens_file.is_some() {
        mounts.push(mount("tokens", &format!("{}/tokens", container::SECRETS_DIR), true));
    }
    if plan.probe_token.is_some() {
        mounts.push(mount("probe-token", &format!("{}/probe", container::SECRETS_DIR), true));
    }
    mounts
}

pub fn selector(labels: &Labels) -> LabelSelector {
    LabelSelector { match_labels: Some(labels.clone()), ..Default::default() }
}

/// A Deployment of `replicas` pods labelled `labels`; `recreate` stops the old pods first.
pub fn deployment(plan: &Plan, name: &str, labels: &Labels, replicas: i32, recreate: bool) -> Deployment {
    let strategy = match recreate {
        true => DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None },
        false => DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(IntOrString::Int(1)),
                max_unavailable: Some(IntOrString::Int(0)),
            }),
        },
    };
    Deployment {
        metadata: meta(plan, name, labels),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: selector(labels),
            strategy: Some(strategy),
            template: pod_template(plan, labels),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Service on port 80 to the pods `selects` picks.
pub fn service(plan: &Plan, name: &str, selects: &Labels) -> Service {
    let affinity = plan.load_balancer;
    Service {
        metadata: meta(plan, name, &plan.labels),
        spec: Some(ServiceSpec {
            type_: Some(if affinity { "LoadBalancer" } else { "ClusterIP" }.into()),
            selector: Some(selects.clone()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            // The protocol's load balancer keeps a client on one pod for 3 hours.
            session_affinity: affinity.then(|| "ClientIP".into()),
            session_affinity_config: affinity
                .then_some(SessionAffinityConfig { client_ip: Some(ClientIPConfig { timeout_seconds: Some(10800) }) }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Scales `target` (a Deployment or Rollout) between 3 and 10 replicas.
pub fn autoscaler(plan: &Plan, name: &str, target: (&str, &str), labels: &Labels) -> HorizontalPodAutoscaler {
    autoscaler_from(plan, name, target, labels, MIN_REPLICAS)
}

/// Scales `target` between `min` and 10 replicas, on CPU (and memory where requested).
pub fn autoscaler_from(
    plan: &Plan,
    name: &str,
    target: (&str, &str),
    labels: &Labels,
    min: i32,
) -> HorizontalPodAutoscaler {
    let (api_version, kind) = match target.0 {
        "Rollout" => ("argoproj.io/v1alpha1", "Rollout"),
        _ => ("apps/v1", "Deployment"),
    };
    let utilization = |resource: &str, percent: i32| MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: resource.into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(percent),
                ..Default::default()
            },
        }),
        ..Default::default()
    };
    let mut metrics = vec![utilization("cpu", CPU_TARGET)];
    // Memory utilization needs a memory request, which only bounded workers give.
    if plan.resources.memory.is_some() {
        metrics.push(utilization("memory", MEMORY_TARGET));
    }
    let rules = |window: i32, percent: i32, period: i32| HPAScalingRules {
        stabilization_window_seconds: Some(window),
        policies: Some(vec![HPAScalingPolicy { type_: "Percent".into(), value: percent, period_seconds: period }]),
        ..Default::default()
    };
    HorizontalPodAutoscaler {
        metadata: meta(plan, name, labels),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(api_version.into()),
                kind: kind.into(),
                name: target.1.into(),
            },
            min_replicas: Some(min),
            max_replicas: MAX_REPLICAS,
            metrics: Some(metrics),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_up: Some(rules(0, 100, 30)),
                scale_down: Some(rules(300, 50, 60)),
            }),
        }),
        ..Default::default()
    }
}

/// At most one of the pods `labels` selects down at a time for voluntary disruptions.
pub fn disruption_budget(plan: &Plan, name: &str, labels: &Labels) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(plan, name, labels),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selector(labels)),
            ..Default::default()
        }),
        ..Default::default()
    }
}
