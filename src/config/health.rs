//! `[health]` thresholds, with the deployment protocol's defaults, and `[model.health]`
//! overriding them key by key for one model.
//!
//! One set of thresholds drives `/health`, readiness, the rollout gate and automatic revert.
//! Percentages are written as percent (`5.0` is 5 %) and held as fractions.

use super::raw::{RawHealth, RawLatencyLevels, RawLevels};
use super::report::{KeyPath, Locator, Problem};
use super::validate::parse_duration;
use std::time::Duration;

/// A warning and a critical threshold; either may be absent (that level never fires).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levels<T> {
    pub warning: Option<T>,
    pub critical: Option<T>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// How far back the measured windows reach.
    pub window: Duration,
    /// Below this many requests in the window, rate and latency checks say
    /// `insufficient_data`, never `ok`.
    pub min_samples: u64,
    /// Share of requests the version failed (5xx other than 503/504); above is bad.
    pub error_rate: Levels<f64>,
    pub p95_latency: Levels<Duration>,
    pub p99_latency: Levels<Duration>,
    /// Share of requests answered without 503/504; below is bad.
    pub availability: Levels<f64>,
    /// Worker RSS as a share of its memory limit (or of host memory without one).
    pub memory: Levels<f64>,
    /// The version's workers' busy cores, as a share of the cores they may use.
    pub cpu: Levels<f64>,
    /// On a GPU: the largest worker's GPU memory as a share of its GPU's.
    pub gpu_memory: Levels<f64>,
    /// `[[model]] hang_timeout`: how long a worker's inference may make no progress before
    /// the worker counts as hung. None: sized from the model (see
    /// [`crate::supervisor::liveness`]), never below `server.worker_hang_timeout`. Kept
    /// with the thresholds so that a reload applies it to running workers.
    pub hang_timeout: Option<Duration>,
}

impl Default for HealthConfig {
    /// The deployment protocol's numbers: error rate 1 % / 5 %, P95 500 ms / 1 s, P99 1 s,
    /// availability 95 % minimum (warning under its 99.9 % target).
    fn default() -> HealthConfig {
        HealthConfig {
            window: Duration::from_secs(60),
            min_samples: 20,
            error_rate: Levels { warning: Some(0.01), critical: Some(0.05) },
            p95_latency: Levels { warning: Some(Duration::from_millis(500)), critical: Some(Duration::from_secs(1)) },
            p99_latency: Levels { warning: None, critical: Some(Duration::from_secs(1)) },
            availability: Levels { warning: Some(0.999), critical: Some(0.95) },
            memory: Levels { warning: Some(0.80), critical: Some(0.95) },
            cpu: Levels { warning: Some(0.80), critical: None },
            gpu_memory: Levels { warning: Some(0.80), critical: Some(0.95) },
            hang_timeout: None,
        }
    }
}

/// `base` with the keys of `raw` applied, each checked; problems are recorded under `at`.
pub fn apply(
    base: &HealthConfig,
    raw: &RawHealth,
    path: &KeyPath,
    at: &Locator,
    problems: &mut Vec<Problem>,
) -> HealthConfig {
    let mut h = base.clone();
    if raw.window.is_some() {
        h.window = parse_duration(&raw.window, h.window).unwrap_or_else(|m| {
            problems.push(at.error(&path.key("window"), m));
            h.window
        });
    }
    if let Some(n) = raw.min_samples {
        match u64::try_from(n) {
            Ok(n) if n >= 1 => h.min_samples = n,
            _ => problems.push(at.error(&path.key("min_samples"), format!("must be at least 1, got {n}"))),
        }
    }
    let mut percents = |name: &str, raw: &Option<RawLevels>, levels: &mut Levels<f64>, higher_is_worse: bool| {
        if let Some(raw) = raw {
            *levels = percent_levels(raw, *levels, higher_is_worse).unwrap_or_else(|m| {
                problems.push(at.error(&path.key(name), m));
                *levels
            });
        }
    };
    percents("error_rate", &raw.error_rate, &mut h.error_rate, true);
    percents("availability", &raw.availability, &mut h.availability, false);
    percents("memory", &raw.memory, &mut h.memory, true);
    percents("cpu", &raw.cpu, &mut h.cpu, true);
    percents("gpu_memory", &raw.gpu_memory, &mut h.gpu_memory, true);
    if raw.cpu.as_ref().is_some_and(|c| c.critical.is_some()) {
        problems.push(at.warning(
            &path.key("cpu").key("critical"),
            "is ignored: the cpu check is never critical (a version busy at capacity still serves; latency and \
             availability judge whether it serves well), so it warns at most, from `warning`",
        ));
        h.cpu.critical = None;
    }
    for (name, raw, levels) in
        [("p95_latency", &raw.p95_latency, &mut h.p95_latency), ("p99_latency", &raw.p99_latency, &mut h.p99_latency)]
    {
        if let Some(raw) = raw {
            *levels = latency_levels(raw, *levels).unwrap_or_else(|m| {
                problems.push(at.error(&path.key(name), m));
                *levels
            });
        }
    }
    h
}

fn percent_levels(raw: &RawLevels, base: Levels<f64>, higher_is_worse: bool) -> Result<Levels<f64>, String> {
    let check = |name: &str, v: Option<f64>| match v {
        Some(p) if !(0.0..=100.0).contains(&p) => Err(format!("{name} must be a percent between 0 and 100, got {p}")),
        Some(p) => Ok(Some(p / 100.0)),
        None => Ok(None),
    };
    let levels = Levels {
        warning: check("warning", raw.warning)?.or(base.warning),
        critical: check("critical", raw.critical)?.or(base.critical),
    };
    if let (Some(w), Some(c)) = (levels.warning, levels.critical) {
        if higher_is_worse && w > c {
            return Err(format!("warning ({}%) must not be above critical ({}%)", w * 100.0, c * 100.0));
        }
        if !higher_is_worse && w < c {
            return Err(format!("warning ({}%) must not be below critical ({}%)", w * 100.0, c * 100.0));
        }
    }
    Ok(levels)
}

fn latency_levels(raw: &RawLatencyLevels, base: Levels<Duration>) -> Result<Levels<Duration>, String> {
    let parse = |v: &Option<String>, base: Option<Duration>| match v {
        Some(_) => parse_duration(v, Duration::ZERO).map(Some),
        None => Ok(base),
    };
    let levels = Levels { warning: parse(&raw.warning, base.warning)?, critical: parse(&raw.critical, base.critical)? };
    if let (Some(w), Some(c)) = (levels.warning, levels.critical)
        && w > c
    {
        return Err(format!("warning ({w:?}) must not be above critical ({c:?})"));
    }
    Ok(levels)
}
