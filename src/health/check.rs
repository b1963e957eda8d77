//! The checks: each turns one measurement and its thresholds into a verdict, with the
//! measured value and the threshold it was held to, so a reader can see why.
//!
//! A rate or latency check on fewer requests than `min_samples` says
//! `insufficient_data` — never `ok`: no traffic proves nothing.

use crate::config::{HealthConfig, Levels};
use crate::window::Snapshot;
use serde::Serialize;
use serde_json::{Value, json};
use std::time::Duration;

/// A check's verdict, from best to worst (insufficient data sorts between ok and warning:
/// it is not a problem, but not proof of health either).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    InsufficientData,
    Warning,
    Critical,
}

impl Status {
    /// The value `modeld_health_check_status` exports.
    pub fn gauge(self) -> i64 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::InsufficientData => -1,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub status: Status,
    pub value: Value,
    pub threshold: Value,
}

/// The check names, in the order reports list them; the last two only for a version on a
/// GPU.
pub const NAMES: [&str; 9] =
    ["model_loaded", "memory", "cpu", "error_rate", "latency", "availability", "oom", "gpu_memory", "gpu_errors"];

fn above<T: PartialOrd>(value: T, levels: &Levels<T>) -> Status {
    match (levels.critical.as_ref(), levels.warning.as_ref()) {
        (Some(c), _) if value > *c => Status::Critical,
        (_, Some(w)) if value > *w => Status::Warning,
        _ => Status::Ok,
    }
}

fn below<T: PartialOrd>(value: T, levels: &Levels<T>) -> Status {
    match (levels.critical.as_ref(), levels.warning.as_ref()) {
        (Some(c), _) if value < *c => Status::Critical,
        (_, Some(w)) if value < *w => Status::Warning,
        _ => Status::Ok,
    }
}

fn levels_json(levels: &Levels<f64>) -> Value {
    json!({ "warning": levels.warning, "critical": levels.critical })
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

/// Workers ready out of those configured; a failed or unserved version is critical.
pub fn model_loaded(ready: usize, configured: usize, failed: bool) -> Check {
    let status = match (failed, ready) {
        (true, _) | (false, 0) => Status::Critical,
        _ if ready < configured => Status::Warning,
        _ => Status::Ok,
    };
    Check { status, value: json!(ready), threshold: json!(configured) }
}

/// The share of requests the version failed.
pub fn error_rate(w: &Snapshot, h: &HealthConfig) -> Check {
    let value = w.error_rate();
    let status = if w.requests < h.min_samples { Status::InsufficientData } else { above(value, &h.error_rate) };
    Check { status, value: json!(value), threshold: with_samples(levels_json(&h.error_rate), w, h) }
}

/// The share of requests answered without being unavailable (503/504).
pub fn availability(w: &Snapshot, h: &HealthConfig) -> Check {
    let value = w.availability();
    let status = if w.requests < h.min_samples { Status::InsufficientData } else { below(value, &h.availability) };
    Check { status, value: json!(value), threshold: with_samples(levels_json(&h.availability), w, h) }
}

/// P95 against its warning and critical thresholds, P99 against its own.
pub fn latency(w: &Snapshot, h: &HealthConfig) -> Check {
    let served = w.p95.is_some();
    let status = match (w.requests < h.min_samples || !served, w.p95, w.p99) {
        (true, ..) => Status::InsufficientData,
        (false, Some(p95), Some(p99)) => above(p95, &h.p95_latency).max(above(p99, &h.p99_latency)),
        _ => Status::InsufficientData,
    };
    let value = json!({ "p50_seconds": secs(w.p50), "p95_seconds": secs(w.p95), "p99_seconds": secs(w.p99) });
    let threshold = json!({
        "p95_warning_seconds": secs(h.p95_latency.warning),
        "p95_critical_seconds": secs(h.p95_latency.critical),
        "p99_warning_seconds": secs(h.p99_latency.warning),
        "p99_critical_seconds": secs(h.p99_latency.critical),
        "min_samples": h.min_samples,
        "samples": w.requests,
    });
    Check { status, value, threshold }
}

fn with_samples(mut threshold: Value, w: &Snapshot, h: &HealthConfig) -> Value {
    threshold["min_samples"] = json!(h.min_samples);
    threshold["samples"] = json!(w.requests);
    threshold
}

/// The largest worker's resident memory as a share of the limit (or of host memory).
pub fn memory(max_rss: u64, limit: Option<u64>, host_total: u64, h: &HealthConfig) -> Check {
    let of = limit.unwrap_or(host_total).max(1);
    let share = max_rss as f64 / of as f64;
    let status = if max_rss == 0 { Status::InsufficientData } else { above(share, &h.memory) };
    let mut threshold = levels_json(&h.memory);
    threshold["of_bytes"] = json!(of);
    threshold["of"] = json!(if limit.is_some() { "memory_limit" } else { "host_memory" });
    Check { status, value: json!({ "rss_bytes": max_rss, "share": share }), threshold }
}

/// The version's own CPU: the cores its workers kept busy over the cores they may use
/// (workers × inference threads × intra-op threads), `None` before a sample. The host's
/// busy share is shown beside it as context, never judged: an unrelated build saturating
/// the host says nothing about this version. Never critical: a version busy at capacity
/// still serves (latency and availability say whether it serves well), and a `/health`
/// that answered 503 at a host's peak would take it out when it is most needed.
pub fn cpu(used: Option<(f64, f64)>, host_busy: Option<f64>, h: &HealthConfig) -> Check {
    let share = used.map(|(cores, allowed)| cores / allowed);
    let status = share.map_or(Status::InsufficientData, |s| above(s, &h.cpu).min(Status::Warning));
    let value = json!({
        "share": share,
        "cores_used": used.map(|u| u.0),
        "cores_allowed": used.map(|u| u.1),
        "host_busy": host_busy,
    });
    Check { status, value, threshold: levels_json(&h.cpu) }
}

/// OOM kills within the window: any one is critical.
pub fn oom(kills: usize, window: Duration) -> Check {
    let status = if kills > 0 { Status::Critical } else { Status::Ok };
    Check { status, value: json!(kills), threshold: json!({ "critical": 1, "window_seconds": window.as_secs_f64() }) }
}

/// What the version's workers hold on their GPUs, as NVML reads it.
pub struct GpuUse {
    /// The largest worker's GPU memory and its GPU's total, in bytes.
    pub largest: Option<(u64, u64)>,
    /// The GPUs its workers run on.
    pub gpus: std::collections::BTreeSet<u32>,
}

/// The largest worker's GPU memory as a share of its GPU's: a candidate that exhausts GPU
/// memory fails the gate as one killed for memory does. Without telemetry (or before the
/// workers hold memory) there is nothing to judge.
pub fn gpu_memory(usage: Result<&GpuUse, &str>, h: &HealthConfig) -> Check {
    let threshold = levels_json(&h.gpu_memory);
    match usage.map(|u| u.largest) {
        Ok(Some((used, total))) => {
            let share = used as f64 / total.max(1) as f64;
            let value = json!({ "bytes": used, "share": share, "gpu_total_bytes": total });
            Check { status: above(share, &h.gpu_memory), value, threshold }
        }
        Ok(None) => Check { status: Status::InsufficientData, value: json!({ "bytes": null }), threshold },
        Err(why) => Check { status: Status::InsufficientData, value: json!({ "telemetry": why }), threshold },
    }
}

/// Xid errors and new uncorrected ECC errors on the version's GPUs within the window: any
/// one is critical (the GPU's results can no longer be trusted).
pub fn gpu_errors(errors: Result<(usize, &GpuUse), &str>, window: Duration) -> Check {
    let threshold = json!({ "critical": 1, "window_seconds": window.as_secs_f64() });
    match errors {
        Ok((count, usage)) if !usage.gpus.is_empty() => {
            let status = if count > 0 { Status::Critical } else { Status::Ok };
            Check { status, value: json!({ "errors": count, "gpus": usage.gpus }), threshold }
        }
        Ok(_) => Check { status: Status::InsufficientData, value: json!({ "gpus": [] }), threshold },
        Err(why) => Check { status: Status::InsufficientData, value: json!({ "telemetry": why }), threshold },
    }
}

/// A health check's JSON value as words: "rss_bytes 123, share 0.4".
pub fn words(v: &Value) -> String {
    match v {
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k} {}", words(v)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_words() {
        let v = json!({"rss_bytes": 10, "share": 0.5, "gone": null, "of": "host_memory"});
        assert_eq!(words(&v), "of host_memory, rss_bytes 10, share 0.5");
    }

    fn snapshot(requests: u64, failed: u64, unavailable: u64, p95_ms: u64) -> Snapshot {
        let p = Some(Duration::from_millis(p95_ms));
        Snapshot { covered: Duration::from_secs(60), requests, failed, unavailable, invalid: 0, p50: p, p95: p, p99: p }
    }

    #[test]
    fn rates_follow_the_protocol_thresholds() {
        let h = HealthConfig::default();
        assert_eq!(error_rate(&snapshot(1000, 5, 0, 1), &h).status, Status::Ok);
        assert_eq!(error_rate(&snapshot(1000, 20, 0, 1), &h).status, Status::Warning);
        assert_eq!(error_rate(&snapshot(1000, 60, 0, 1), &h).status, Status::Critical);
        assert_eq!(availability(&snapshot(1000, 0, 0, 1), &h).status, Status::Ok);
        assert_eq!(availability(&snapshot(1000, 0, 10, 1), &h).status, Status::Warning);
        assert_eq!(availability(&snapshot(1000, 0, 60, 1), &h).status, Status::Critical);
    }

    #[test]
    fn latency_uses_p95_and_p99() {
        let h = HealthConfig::default();
        assert_eq!(latency(&snapshot(100, 0, 0, 100), &h).status, Status::Ok);
        assert_eq!(latency(&snapshot(100, 0, 0, 700), &h).status, Status::Warning);
        assert_eq!(latency(&snapshot(100, 0, 0, 1500), &h).status, Status::Critical);
    }

    #[test]
    fn too_few_samples_are_never_ok() {
        let h = HealthConfig::default();
        let few = snapshot(h.min_samples - 1, 0, 0, 1);
        for check in [error_rate(&few, &h), availability(&few, &h), latency(&few, &h)] {
            assert_eq!(check.status, Status::InsufficientData);
        }
        assert_eq!(cpu(None, Some(0.99), &h).status, Status::InsufficientData);
    }

    #[test]
    fn cpu_is_the_versions_own_workers_not_the_host() {
        let h = HealthConfig::default();
        // Idle workers on a saturated host: fine.
        let idle = cpu(Some((0.01, 2.0)), Some(1.0), &h);
        assert_eq!(idle.status, Status::Ok);
        assert_eq!(idle.value["host_busy"], 1.0);
        // Two workers of one core each, both pegged: busy, not failing — a warning.
        assert_eq!(cpu(Some((1.98, 2.0)), Some(0.5), &h).status, Status::Warning);
        assert_eq!(cpu(Some((1.7, 2.0)), None, &h).status, Status::Warning);
        assert_eq!(cpu(Some((1.5, 2.0)), None, &h).status, Status::Ok);
        // Even with a critical level set in code, never critical.
        let strict = HealthConfig { cpu: crate::config::Levels { warning: Some(0.5), critical: Some(0.6) }, ..h };
        assert_eq!(cpu(Some((2.0, 2.0)), None, &strict).status, Status::Warning);
    }

    #[test]
    fn gpu_memory_and_errors_judge_the_versions_own_gpus() {
        let h = HealthConfig::default();
        let usage = |used: u64| GpuUse { largest: Some((used, 100)), gpus: [1].into() };
        assert_eq!(gpu_memory(Ok(&usage(50)), &h).status, Status::Ok);
        assert_eq!(gpu_memory(Ok(&usage(85)), &h).status, Status::Warning);
        let exhausted = gpu_memory(Ok(&usage(99)), &h);
        assert_eq!(exhausted.status, Status::Critical);
        assert_eq!(exhausted.value["bytes"], 99);
        let idle = GpuUse { largest: None, gpus: Default::default() };
        assert_eq!(gpu_memory(Ok(&idle), &h).status, Status::InsufficientData);
        let absent = gpu_memory(Err("NVML not available"), &h);
        assert_eq!(absent.status, Status::InsufficientData);
        assert_eq!(absent.value["telemetry"], "NVML not available");
        let window = Duration::from_secs(60);
        assert_eq!(gpu_errors(Ok((0, &usage(1))), window).status, Status::Ok);
        assert_eq!(gpu_errors(Ok((1, &usage(1))), window).status, Status::Critical);
        assert_eq!(gpu_errors(Ok((0, &idle)), window).status, Status::InsufficientData);
    }

    #[test]
    fn memory_is_a_share_of_the_limit_or_the_host() {
        let h = HealthConfig::default();
        assert_eq!(memory(90, Some(100), 1000, &h).status, Status::Warning);
        assert_eq!(memory(96, Some(100), 1000, &h).status, Status::Critical);
        assert_eq!(memory(96, None, 1000, &h).status, Status::Ok);
        assert_eq!(oom(1, Duration::from_secs(60)).status, Status::Critical);
        assert_eq!(model_loaded(1, 2, false).status, Status::Warning);
        assert_eq!(model_loaded(0, 2, false).status, Status::Critical);
    }
}
