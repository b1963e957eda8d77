//! Health as the routing state shows it: for each model and live version, its state, role,
//! workers and the reason it is not serving, rolled up into healthy / degraded / unhealthy.
//!
//! Everything here is read from the live pools at the moment of the request — there is no
//! cached or assumed status — and the supervisor's event loop proves it is alive by
//! beating a [`Heartbeat`], which `/v2/health/live` checks.

use crate::router::Router;
use crate::router::pool::{Phase, Pool};
use crate::router::table::RoutingTable;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Overall and per-check status, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warning,
    Critical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub status: Overall,
    pub uptime_seconds: f64,
    pub models: BTreeMap<String, ModelHealth>,
}

#[derive(Debug, Serialize)]
pub struct ModelHealth {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub versions: BTreeMap<String, VersionHealth>,
}

#[derive(Debug, Serialize)]
pub struct VersionHealth {
    pub state: &'static str,
    pub role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_mode: Option<String>,
    pub workers: Workers,
    pub checks: BTreeMap<&'static str, Check>,
}

#[derive(Debug, Serialize)]
pub struct Workers {
    pub configured: usize,
    pub ready: usize,
    pub restarts: u64,
}

/// One check's verdict, with what was measured and the threshold it was held to.
#[derive(Debug, Serialize)]
pub struct Check {
    pub status: Status,
    pub value: serde_json::Value,
    pub threshold: serde_json::Value,
}

/// The health of every model, read now.
pub fn report(router: &Router, started: Instant) -> Report {
    let models: BTreeMap<String, ModelHealth> =
        router.models().iter().map(|(name, route)| (name.clone(), model_health(&route.table()))).collect();
    let worst = models
        .values()
        .flat_map(|m| {
            let unserved = (!m.ready).then_some(Status::Critical);
            m.versions.values().flat_map(|v| v.checks.values().map(|c| c.status)).chain(unserved)
        })
        .max()
        .unwrap_or(Status::Ok);
    let status = match worst {
        Status::Ok => Overall::Healthy,
        Status::Warning => Overall::Degraded,
        Status::Critical => Overall::Unhealthy,
    };
    Report { status, uptime_seconds: started.elapsed().as_secs_f64(), models }
}

fn model_health(table: &RoutingTable) -> ModelHealth {
    let mut versions = BTreeMap::new();
    if let Some(stable) = &table.stable {
        versions.insert(stable.version.to_string(), version_health(stable, "stable"));
    }
    if let Some(candidate) = &table.candidate {
        versions.insert(candidate.pool.version.to_string(), version_health(&candidate.pool, "candidate"));
    }
    let ready = table.stable.as_ref().is_some_and(|p| p.is_ready());
    let reason = match &table.stable {
        None => Some(table.problem.clone().unwrap_or_else(|| "no version is live".into())),
        Some(p) if !ready => Some(format!("version {} is {}", p.version, state(p).0)),
        Some(_) => None,
    };
    ModelHealth { ready, reason, versions }
}

/// The state word for a pool, and how bad it is.
fn state(pool: &Pool) -> (&'static str, Status) {
    let (ready, configured) = (pool.ready_workers(), pool.slots.len());
    match &*pool.phase() {
        Phase::Starting => ("loading", Status::Warning),
        Phase::Running if ready == configured => ("ready", Status::Ok),
        Phase::Running if ready > 0 => ("degraded", Status::Warning),
        Phase::Running => ("unavailable", Status::Critical),
        Phase::Failed { .. } => ("failed", Status::Critical),
        Phase::Stopping => ("stopping", Status::Warning),
    }
}

fn version_health(pool: &Pool, role: &'static str) -> VersionHealth {
    let (state, status) = state(pool);
    let ready = pool.ready_workers();
    let reason = match &*pool.phase() {
        Phase::Failed { reason } => Some(reason.clone()),
        _ => pool
            .slots
            .iter()
            .filter(|s| s.conn().is_none())
            .find_map(|s| s.last_exit.lock().unwrap_or_else(|e| e.into_inner()).clone()),
    };
    let loaded = Check { status, value: serde_json::json!(ready), threshold: serde_json::json!(pool.slots.len()) };
    VersionHealth {
        state,
        role,
        reason,
        load_mode: pool.info().map(|i| i.load_mode.clone()),
        workers: Workers {
            configured: pool.slots.len(),
            ready,
            restarts: pool.slots.iter().map(|s| s.restarts.load(Ordering::Relaxed)).sum(),
        },
        checks: BTreeMap::from([("model_loaded", loaded)]),
    }
}

/// Names of the models that have no ready stable version, with why.
pub fn not_ready(router: &Router) -> Vec<String> {
    router
        .models()
        .iter()
        .filter_map(|(name, route)| {
            let health = model_health(&route.table());
            (!health.ready).then(|| format!("{name}: {}", health.reason.unwrap_or_default()))
        })
        .collect()
}

/// Proof of life from the supervisor's event loop.
pub struct Heartbeat {
    origin: Instant,
    last_ms: AtomicU64,
}

/// A loop that has not beaten for this long is considered stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(5);

impl Heartbeat {
    pub fn new() -> Heartbeat {
        Heartbeat { origin: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    pub fn beat(&self) {
        self.last_ms.store(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        self.origin.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }

    pub fn is_alive(&self) -> bool {
        self.age() < STALL_AFTER
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat::new()
    }
}
