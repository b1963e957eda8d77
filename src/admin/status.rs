//! `modeld status`: per model, the live versions with their role, traffic weight, state,
//! workers and health, as JSON for scripts and as a table for people.

use crate::health::{self, Host, Overall};
use crate::rollout::{Progress, now};
use crate::router::Router;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::time::Instant;

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub health: Overall,
    pub uptime_seconds: f64,
    pub models: Vec<ModelStatus>,
    /// Rollouts in progress.
    #[serde(default)]
    pub rollouts: Vec<Progress>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ModelStatus {
    pub name: String,
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub versions: Vec<VersionStatus>,
    /// An autoscaled model's workers: desired vs actual, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<crate::router::ScaleStatus>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct VersionStatus {
    pub version: u64,
    pub role: String,
    /// Percent of unpinned traffic this version receives.
    pub weight: u8,
    pub state: String,
    pub workers_ready: usize,
    pub workers: usize,
    pub restarts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Reads the status now.
pub fn collect(router: &Router, host: &Host, started: Instant) -> Status {
    let report = health::report(router, host, started);
    let models = router
        .models()
        .iter()
        .map(|(name, route)| {
            let table = route.table();
            let model_health = &report.models[name];
            let versions = table
                .all_pools()
                .map(|pool| {
                    let v = &model_health.versions[&health::version_key(&table, pool)];
                    VersionStatus {
                        version: pool.version,
                        role: v.role.to_string(),
                        weight: table.weight(pool),
                        state: v.state.to_string(),
                        workers_ready: v.workers.ready,
                        workers: v.workers.configured,
                        restarts: v.workers.restarts,
                        load_mode: v.load_mode.clone(),
                        reason: v.reason.clone(),
                    }
                })
                .collect();
            ModelStatus {
                name: name.clone(),
                ready: model_health.ready,
                reason: model_health.reason.clone(),
                versions,
                scale: model_health.scale.clone(),
            }
        })
        .collect();
    Status { health: report.status, uptime_seconds: report.uptime_seconds, models, rollouts: Vec::new() }
}

/// The status as a table.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let health =
        serde_json::to_value(status.health).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let _ = writeln!(out, "modeld: {health}, up {:.0}s", status.uptime_seconds);
    let _ = writeln!(
        out,
        "{:<20} {:>7}  {:<9} {:>6}  {:<11} {:>7}  {:>8}  LOADED AS",
        "MODEL", "VERSION", "ROLE", "WEIGHT", "STATE", "WORKERS", "RESTARTS"
    );
    for model in &status.models {
        if model.versions.is_empty() {
            let reason = model.reason.as_deref().unwrap_or("no version is live");
            let _ = writeln!(out, "{:<20} {:>7}  {reason}", model.name, "-");
        }
        for v in &model.versions {
            let _ = writeln!(
                out,
                "{:<20} {:>7}  {:<9} {:>5}%  {:<11} {:>7}  {:>8}  {}",
                model.name,
                v.version,
                v.role,
                v.weight,
                v.state,
                format!("{}/{}", v.workers_ready, v.workers),
                v.restarts,
                v.load_mode.as_deref().unwrap_or("-"),
            );
            if let Some(reason) = &v.reason {
                let _ = writeln!(out, "{:<20} {:>7}  reason: {reason}", "", "");
            }
        }
        if let Some(scale) = &model.scale {
            let _ = writeln!(out, "{:<20} {:>7}  {}", "", "", scale_line(scale));
        }
    }
    let now = now();
    for line in status.rollouts.iter().flat_map(|r| rollout_frame(r, now)) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// An autoscaled model's workers in one line: desired vs actual within its bounds, why,
/// and what holds the count.
pub fn scale_line(s: &crate::router::ScaleStatus) -> String {
    let mut line = format!("autoscaled {}..{}: desired {}, actual {}; {}", s.min, s.max, s.desired, s.actual, s.reason);
    if let Some(frozen) = &s.frozen {
        line.push_str(&format!("; frozen: {frozen}"));
    }
    if let Some(held) = &s.held {
        line.push_str(&format!("; {}", held.why));
    }
    line
}

/// A rollout in progress as the terminal views show it: the phase, the traffic split,
/// and the gate's lines.
pub fn rollout_frame(p: &Progress, now: f64) -> Vec<String> {
    let from = p.from.map_or("-".into(), |v| v.to_string());
    let mut lines = vec![format!(
        "rollout {} of {}: v{from} -> v{} by {}: {}",
        p.id,
        p.model,
        p.to,
        p.strategy,
        p.phase.describe()
    )];
    if let Some(w) = p.phase.weight() {
        let from = p.from.map_or_else(|| "old".to_string(), |v| format!("v{v}"));
        lines.push(format!("  traffic: {from} {}%, v{} {w}%", 100 - w, p.to));
    }
    lines.extend(gate_lines(p, now).into_iter().map(|l| format!("  {l}")));
    lines
}

/// What a rollout's gate saw last, one line each: the time left at `now`, every check with
/// its value and threshold (marked in words, not only colour), and what it waits for.
pub fn gate_lines(p: &Progress, now: f64) -> Vec<String> {
    let answers = p.sources.map(|s| {
        format!("the new version answered {} live requests, {} mirrored, {} replayed", s.live, s.mirrored, s.replayed)
    });
    let Some(gate) = p.gate.as_ref().filter(|_| !p.phase.is_done()) else {
        return answers.into_iter().collect();
    };
    let mut lines = vec![match gate.seconds_left(now) {
        Some(left) => format!(
            "gate: {} — {:.0}s of {:.0}s left in this phase",
            gate.verdict,
            left,
            gate.hold_seconds.unwrap_or(0.0)
        ),
        None => format!("gate: {} — held {:.0}s, until an operator decides", gate.verdict, gate.seconds_held(now)),
    }];
    for c in &gate.checks {
        let mark = match c.ok {
            Some(true) => "[ok]  ",
            Some(false) => "[FAIL]",
            None => "[wait]",
        };
        let threshold = if c.threshold.is_empty() { String::new() } else { format!("  [needs {}]", c.threshold) };
        lines.push(format!("{mark} {} {}{threshold}", c.name, c.value));
    }
    match (gate.verdict.as_str(), &gate.reason) {
        ("inconclusive", Some(why)) => lines.push(format!("waiting for: {why}")),
        ("fail", Some(why)) => lines.push(format!("breach: {why}")),
        _ => {}
    }
    lines.extend(answers);
    lines
}
