//! Files rendered from the config: Prometheus alerting rules (`alerts render`) and the
//! Kubernetes objects with their runbook (`k8s render`).

use super::config_failed;
use crate::DEFAULT_CONFIG;
use modeld::config::{self, Overrides};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct K8sRender {
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Write one file per object and RUNBOOK.md here instead of one stream to stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The modeld image (packaging/Dockerfile).
    #[arg(long, default_value = concat!("modeld:", env!("CARGO_PKG_VERSION")))]
    image: String,
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Name of the objects and of the Service clients use.
    #[arg(long, default_value = "modeld")]
    name: String,
    /// The model whose [model.deploy] the rollout follows (needed when the models' differ).
    #[arg(long)]
    model: Option<String>,
    /// Where the models come from: "image" (baked into a derived image) or "pvc:CLAIM".
    #[arg(long, default_value = "image", value_parser = parse_models)]
    models: modeld::k8s::Models,
    /// Who carries out rollouts: "kubernetes" (Deployments, Istio) or "argo" (Argo Rollouts
    /// with the health gate as an AnalysisTemplate).
    #[arg(long, value_enum, default_value = "kubernetes")]
    rollouts: RolloutsArg,
    /// A LoadBalancer Service with client-IP session affinity (default: ClusterIP).
    #[arg(long)]
    load_balancer: bool,
    /// The Prometheus the analysis queries (--rollouts argo).
    #[arg(long, default_value = "http://prometheus.monitoring.svc:9090")]
    prometheus: String,
    /// An Istio ingress gateway (NAMESPACE/NAME) to bind the VirtualService to, so outside
    /// requests follow the canary's weights too (canary and ab_test); needs --host.
    #[arg(long, value_name = "NAMESPACE/NAME", requires = "host")]
    istio_gateway: Option<String>,
    /// The host outside clients reach the model by, through --istio-gateway.
    #[arg(long, requires = "istio_gateway")]
    host: Option<String>,
    /// A file holding a token of the probes scope: needed when the config closes probes
    /// (`open_probes = false`); the kubelet's exec probes and the scrape read it from a Secret.
    #[arg(long)]
    probe_token_file: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RolloutsArg {
    Kubernetes,
    Argo,
}

fn parse_models(text: &str) -> Result<modeld::k8s::Models, String> {
    match text.split_once(':') {
        None if text == "image" => Ok(modeld::k8s::Models::Image),
        Some(("pvc", claim)) if !claim.is_empty() => Ok(modeld::k8s::Models::Claim(claim.to_string())),
        _ => Err(format!("'{text}': expected \"image\" or \"pvc:CLAIM\"")),
    }
}

pub fn alerts(path: &std::path::Path, job: &str, output: Option<PathBuf>) -> ExitCode {
    let config = match config::load(path, &Overrides::default()) {
        Ok((config, _)) => config,
        Err(e) => return config_failed(e),
    };
    let rules = modeld::alerts::render(&config, job);
    match output {
        None => print!("{rules}"),
        Some(file) => {
            if let Err(e) = std::fs::write(&file, rules) {
                eprintln!("modeld: could not write {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

pub fn k8s_render(args: K8sRender) -> ExitCode {
    use modeld::k8s::{self, Options, Rollouts};
    let config = match config::load(&args.config, &Overrides::default()) {
        Ok((config, _)) => config,
        Err(e) => return config_failed(e),
    };
    let probe_token = match &args.probe_token_file {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(token) => Some(token),
            Err(e) => {
                eprintln!("modeld: k8s render: --probe-token-file {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    let options = Options {
        name: args.name,
        namespace: args.namespace,
        image: args.image,
        model: args.model,
        models: args.models,
        rollouts: match args.rollouts {
            RolloutsArg::Kubernetes => Rollouts::Kubernetes,
            RolloutsArg::Argo => Rollouts::Argo,
        },
        load_balancer: args.load_balancer,
        prometheus: args.prometheus,
        out_hint: args.out.as_ref().map_or_else(|| "-".into(), |d| d.display().to_string()),
        probe_token,
        istio_gateway: match (args.istio_gateway, args.host) {
            (Some(gateway), Some(host)) => Some(modeld::k8s::IstioGateway { gateway, host }),
            _ => None,
        },
    };
    let rendered = match k8s::render(config, options) {
        Ok(rendered) => rendered,
        Err(e) => {
            eprintln!("modeld: k8s render: {e}");
            return ExitCode::FAILURE;
        }
    };
    for note in &rendered.notes {
        eprintln!("note: {note}");
    }
    match args.out {
        None => print!("{}", k8s::stream(&rendered)),
        Some(dir) => match k8s::write(&rendered, &dir) {
            Ok(files) => eprintln!("wrote {} files to {}: {}", files.len(), dir.display(), files.join(", ")),
            Err(e) => {
                eprintln!("modeld: could not write {}: {e}", dir.display());
                return ExitCode::FAILURE;
            }
        },
    }
    ExitCode::SUCCESS
}
