//! Health: for each model and live version, its state, role and checks — model_loaded,
//! memory, cpu, error_rate, latency, availability, oom, and on a GPU gpu_memory and
//! gpu_errors ([`check`]) — rolled up into
//! healthy (all ok, or too few samples to judge) / unhealthy (any critical) / degraded
//! (any warning).
//!
//! Everything is read from live state at the moment of asking: the pools' workers, their
//! measured request windows ([`crate::window`]), the sampled resources ([`Host`] and each
//! worker's slot). Nothing is cached or assumed. The same [`evaluate`] feeds `/health`,
//! the health-check metrics and the rollout gate. The supervisor's event loop proves it is
//! alive by beating a [`Heartbeat`], which `/v2/health/live` checks.

pub mod check;

use crate::router::{ModelRoute, Phase, Pool, Router, RoutingTable, ShadowCounts};
use crate::window::Snapshot;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use crate::gpu::Readings as GpuReadings;
pub use check::{Check, Status, words};

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
    /// The host's GPUs as last read (absent without GPU telemetry).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<crate::gpu::GpuReading>,
}

#[derive(Debug, Serialize)]
pub struct ModelHealth {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// An autoscaled model's workers: desired vs actual, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale: Option<crate::router::ScaleStatus>,
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
    /// Where its workers run the model ("cpu", "cuda:0 (<GPU>)", or why a GPU was not used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub workers: Workers,
    /// What the measured window holds, beside the checks that judge it.
    pub window: WindowSummary,
    /// In the shadow phase: what was mirrored to it and how much agreed with stable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSummary>,
    pub checks: BTreeMap<&'static str, Check>,
}

#[derive(Debug, Serialize)]
pub struct ShadowSummary {
    #[serde(flatten)]
    pub counts: ShadowCounts,
    /// Share of compared requests on which it agreed with stable.
    pub agreement: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct WindowSummary {
    pub seconds: f64,
    pub requests: u64,
    pub throughput_per_second: f64,
    pub failed: u64,
    pub unavailable: u64,
    /// Requests refused as invalid for this version (its signature or worker did not
    /// take them), and their share: the rollout gate compares it with stable's.
    pub refused: u64,
    pub refusal_rate: f64,
}

#[derive(Debug, Serialize)]
pub struct Workers {
    /// Workers that should answer (the autoscaler's additions once ready).
    pub configured: usize,
    /// Workers the autoscaler added that are still starting.
    pub joining: usize,
    /// Workers that answer: connected (a hung worker's connection is dropped at once).
    pub ready: usize,
    pub restarts: u64,
    pub oom_kills: u64,
    /// Workers killed for hanging, and for a connection broken under a live process.
    pub hangs: u64,
    pub disconnects: u64,
}

fn summary(w: &Snapshot) -> WindowSummary {
    WindowSummary {
        seconds: w.covered.as_secs_f64(),
        requests: w.requests,
        throughput_per_second: w.throughput(),
        failed: w.failed,
        unavailable: w.unavailable,
        refused: w.invalid,
        refusal_rate: w.refusal_rate(),
    }
}

/// One check's verdict, with what was measured and the threshold it was held to.
/// The health of every model, read now.
pub fn report(router: &Router, host: &Host, started: Instant) -> Report {
    let models: BTreeMap<String, ModelHealth> =
        router.models().iter().map(|(name, route)| (name.clone(), model_health(route, host))).collect();
    // A warm previous version and a shadowing candidate serve no user: shown, but not
    // part of the verdict.
    let worst = models
        .values()
        .flat_map(|m| {
            let unserved = (!m.ready).then_some(Status::Critical);
            let serving = m.versions.values().filter(|v| v.role != "previous" && v.role != "shadow");
            serving.flat_map(|v| v.checks.values().map(|c| c.status)).chain(unserved)
        })
        .max()
        .unwrap_or(Status::Ok);
    // Too few samples is not a problem with a version: an idle daemon is healthy (the
    // check still says insufficient_data, and the rollout gate treats it as inconclusive).
    let status = match worst {
        Status::Ok | Status::InsufficientData => Overall::Healthy,
        Status::Warning => Overall::Degraded,
        Status::Critical => Overall::Unhealthy,
    };
    let gpus = host.gpus.readings().gpus.clone();
    Report { status, uptime_seconds: started.elapsed().as_secs_f64(), models, gpus }
}

fn model_health(route: &ModelRoute, host: &Host) -> ModelHealth {
    let table = &route.table();
    let versions = table.all_pools().map(|p| (version_key(table, p), version_health(table, p, host))).collect();
    let ready = table.stable.as_ref().is_some_and(|p| p.is_ready());
    let reason = match &table.stable {
        None => Some(table.problem.clone().unwrap_or_else(|| "no version is live".into())),
        Some(p) if !ready => Some(format!("version {} is {}", p.version, state(p))),
        Some(_) => None,
    };
    ModelHealth { ready, reason, scale: route.scale(), versions }
}

/// The state word for a pool.
fn state(pool: &Pool) -> &'static str {
    let (ready, configured) = (pool.ready_workers(), pool.settled());
    match &*pool.phase() {
        Phase::Starting => "loading",
        Phase::Running if pool.crash_loop().is_some() => "crash_looping",
        Phase::Running if ready == configured => "ready",
        Phase::Running if ready > 0 => "degraded",
        Phase::Running => "unavailable",
        Phase::Failed { .. } => "failed",
        Phase::Stopping => "stopping",
    }
}

/// Every check of one version, now.
pub fn evaluate(pool: &Pool, host: &Host) -> BTreeMap<&'static str, Check> {
    evaluate_window(pool, host, &pool.window.snapshot())
}

/// Every check of one version, its measured window read once by the caller.
fn evaluate_window(pool: &Pool, host: &Host, window: &Snapshot) -> BTreeMap<&'static str, Check> {
    let h = &*pool.health();
    // A version whose workers die on the requests they get fails its clients as surely as
    // one that cannot load.
    let failed = matches!(*pool.phase(), Phase::Failed { .. }) || pool.crash_loop().is_some();
    let max_rss = pool.largest_rss();
    let mut checks = BTreeMap::from([
        ("model_loaded", check::model_loaded(pool.ready_workers(), pool.settled(), failed)),
        ("memory", check::memory(max_rss, pool.memory_limit, host.total_memory(), h)),
        ("cpu", check::cpu(pool.cpu(), host.cpu_busy(), h)),
        ("error_rate", check::error_rate(window, h)),
        ("latency", check::latency(window, h)),
        ("availability", check::availability(window, h)),
        ("oom", check::oom(pool.ooms_within(h.window), h.window)),
    ]);
    // As its workers reported when ready.
    if pool.info().is_some_and(|info| info.on_gpu()) {
        let readings = host.gpus.readings();
        let usage = gpu_use(pool, &readings);
        let telemetry = host.gpus.inventory().map(|_| &usage);
        let errors = telemetry.map(|u| (readings.errors_within(&u.gpus, h.window), u));
        checks.insert("gpu_memory", check::gpu_memory(telemetry, h));
        checks.insert("gpu_errors", check::gpu_errors(errors, h.window));
    }
    checks
}

/// The GPUs the version's workers were started on (and, where NVML lists them, compute
/// on), and the largest GPU memory one of them holds. The GPU a worker was given counts even
/// while NVML does not list its process: an Xid that kills the worker is still the
/// version's, and in a PID namespace NVML's pids are not the workers'.
pub fn gpu_use(pool: &Pool, readings: &crate::gpu::Readings) -> check::GpuUse {
    let mut usage = check::GpuUse { largest: None, gpus: Default::default() };
    for worker in pool.workers() {
        usage.gpus.extend(worker.gpu);
        let Some(process) = readings.processes.get(&worker.pid) else { continue };
        usage.gpus.insert(process.gpu);
        // A GPU whose total NVML did not give cannot be judged by share.
        let Some(total) = readings.gpu(process.gpu).and_then(|g| g.memory_total_bytes) else { continue };
        if usage.largest.is_none_or(|(used, _)| process.memory_bytes > used) {
            usage.largest = Some((process.memory_bytes, total));
        }
    }
    usage
}

/// How `/health` and `modeld status` name a version: its number, and when a second pool
/// of the same version runs (a settings change rolling out), the number and role
/// (`"3"` stable, `"3-candidate"`).
pub fn version_key(table: &RoutingTable, pool: &Arc<Pool>) -> String {
    let first = table.all_pools().find(|p| p.version == pool.version).is_some_and(|p| Arc::ptr_eq(p, pool));
    match first {
        true => pool.version.to_string(),
        false => format!("{}-{}", pool.version, table.role(pool)),
    }
}

fn version_health(table: &RoutingTable, pool: &Arc<Pool>, host: &Host) -> VersionHealth {
    let role = table.role(pool);
    // One reading of the window: the summary and the checks judge the same requests.
    let window = pool.window.snapshot();
    let state = state(pool);
    let ready = pool.ready_workers();
    let reason = match &*pool.phase() {
        Phase::Failed { reason } => Some(reason.clone()),
        _ => pool.crash_loop().or_else(|| pool.down_reason()),
    };
    VersionHealth {
        state,
        role,
        reason,
        load_mode: pool.info().map(|i| i.load_mode.clone()),
        device: pool.info().map(|i| i.device.clone()),
        workers: workers(pool, ready),
        window: summary(&window),
        shadow: table.shadow.as_ref().filter(|m| Arc::ptr_eq(&m.pool, pool)).map(|m| {
            let counts = m.counts();
            ShadowSummary { counts, agreement: counts.agreement() }
        }),
        checks: evaluate_window(pool, host, &window),
    }
}

fn workers(pool: &Pool, ready: usize) -> Workers {
    let faults = pool.faults();
    Workers {
        configured: pool.settled(),
        joining: pool.joining(),
        ready,
        restarts: faults.restarts,
        oom_kills: faults.oom_kills,
        hangs: faults.hangs,
        disconnects: faults.disconnects,
    }
}

/// Names of the models that have no ready stable version, with why.
pub fn not_ready(router: &Router) -> Vec<String> {
    router
        .models()
        .iter()
        .filter_map(|(name, route)| {
            let table = route.table();
            let reason = match &table.stable {
                Some(p) if p.is_ready() => return None,
                Some(p) => format!("version {} is {}", p.version, state(p)),
                None => table.problem.clone().unwrap_or_else(|| "no version is live".into()),
            };
            Some(format!("{name}: {reason}"))
        })
        .collect()
}

/// Host-wide measurements, sampled by the supervisor.
pub struct Host {
    /// CPU busy share as f64 bits; NaN bits until two samples exist.
    cpu_busy: AtomicU64,
    total_memory: AtomicU64,
    /// The GPUs, read by their own thread (absent on a CPU host).
    pub gpus: Arc<crate::gpu::Telemetry>,
}

impl Host {
    pub fn new(gpus: Arc<crate::gpu::Telemetry>) -> Host {
        Host { cpu_busy: AtomicU64::new(f64::NAN.to_bits()), total_memory: AtomicU64::new(0), gpus }
    }

    pub fn set(&self, cpu_busy: f64, total_memory: u64) {
        self.cpu_busy.store(cpu_busy.to_bits(), Ordering::Relaxed);
        self.total_memory.store(total_memory, Ordering::Relaxed);
    }

    pub fn cpu_busy(&self) -> Option<f64> {
        Some(f64::from_bits(self.cpu_busy.load(Ordering::Relaxed))).filter(|v| !v.is_nan())
    }

    pub fn total_memory(&self) -> u64 {
        self.total_memory.load(Ordering::Relaxed)
    }
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
