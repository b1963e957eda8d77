//! The effective configuration of one model, written back as the config file would say it
//! (percentages in percent, durations as `"30s"`): what a rollout ran with, kept in its
//! evidence and shown in its report (`serving/serving-config.json`), and the health
//! thresholds in force (`monitoring/health-checks.yaml`).

use super::{DeployConfig, HealthConfig, Levels, ModelConfig};
use serde_json::{Value, json};
use std::time::Duration;

fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn percent(levels: &Levels<f64>) -> Value {
    json!({
        "warning": levels.warning.map(|w| w * 100.0),
        "critical": levels.critical.map(|c| c * 100.0),
    })
}

fn latency(levels: &Levels<Duration>) -> Value {
    json!({
        "warning": levels.warning.map(duration),
        "critical": levels.critical.map(duration),
    })
}

/// `[health]` as it applies to one model.
pub fn health(h: &HealthConfig) -> Value {
    json!({
        "window": duration(h.window),
        "min_samples": h.min_samples,
        "error_rate": percent(&h.error_rate),
        "p95_latency": latency(&h.p95_latency),
        "p99_latency": latency(&h.p99_latency),
        "availability": percent(&h.availability),
        "memory": percent(&h.memory),
        "cpu": percent(&h.cpu),
        "gpu_memory": percent(&h.gpu_memory),
    })
}

/// `[model.deploy]` as in force.
pub fn deploy(d: &DeployConfig) -> Value {
    json!({
        "strategy": d.strategy.name(),
        "steps": d.steps,
        "bake": duration(d.bake),
        "keep_previous": duration(d.keep_previous),
        "max_surge": d.max_surge,
        "max_unavailable": d.max_unavailable,
        "split": d.split,
        "duration": duration(d.duration),
        "sticky_header": d.sticky_header,
        "check_every": duration(d.check_every),
        "consecutive_breaches": d.consecutive_breaches,
        "on_inconclusive": match d.on_inconclusive {
            super::OnInconclusive::Fail => "fail",
            super::OnInconclusive::Pause => "pause",
        },
        "inconclusive_timeout": duration(d.inconclusive_timeout),
        "max_error_rate_increase": d.max_error_rate_increase * 100.0,
        "max_latency_ratio": d.max_latency_ratio,
        "max_client_error_increase": d.max_client_error_increase * 100.0,
        "allow_signature_change": d.allow_signature_change,
        "shadow": if d.shadow.is_zero() { "off".to_string() } else { duration(d.shadow) },
        "shadow_requests": d.shadow_requests,
        "min_agreement": d.min_agreement * 100.0,
        "agreement_tolerance": d.agreement_tolerance * 100.0,
        "max_output_drift": d.max_output_drift,
        "drift_min_samples": d.drift_min_samples,
        "replay": d.replay,
        "replay_sample": d.replay_sample,
        "replay_memory": d.replay_memory,
        "max_accuracy_drop": d.max_accuracy_drop * 100.0,
        "max_validation_error_increase": d.max_validation_error_increase * 100.0,
    })
}

/// One `[[model]]` table as in force, its `[model.health]` and `[model.deploy]` whole.
pub fn model(m: &ModelConfig, deploy_in_force: &DeployConfig) -> Value {
    json!({
        "name": m.name,
        "directory": m.dir.display().to_string(),
        "version": match m.version {
            super::VersionSpec::Latest => json!("latest"),
            super::VersionSpec::Exact(v) => json!(v),
        },
        "workers": super::scale::describe_workers(m),
        "threads": m.threads,
        "intra_op_threads": m.intra_op_threads,
        "memory_limit": m.memory_limit,
        "engine": m.engine.name(),
        "device": m.device.worker_kind(),
        "busy_poll": duration(m.busy_poll),
        "hang_timeout": m.health.hang_timeout.map_or("sized from the model".to_string(), duration),
        "batching": {
            "max_batch": m.batching.max_batch,
            "delay": duration(m.batching.delay),
            "preferred": m.batching.preferred,
            "buckets": m.batching.buckets.name(),
            "plan_sizes": m.batching.plan_sizes,
            "max_plans": m.batching.max_plans,
        },
        "health": health(&m.health),
        "deploy": deploy(deploy_in_force),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_read_as_the_file_writes_them() {
        let h = health(&HealthConfig::default());
        assert_eq!(h["error_rate"]["critical"], 5.0);
        assert_eq!(h["p95_latency"]["warning"], "500ms");
        assert_eq!(h["window"], "1m");
        let d = deploy(&DeployConfig::default());
        assert_eq!(d["strategy"], "canary");
        assert_eq!(d["min_agreement"], 50.0);
        assert_eq!(d["max_output_drift"], 0.25);
        assert_eq!(d["shadow"], "30s");
    }
}
