//! A pool: the workers of one model version, and the pick among them.
//!
//! Each worker has a [`Slot`] holding its live connection (or none while it restarts).
//! A request goes to the open connection with the fewest outstanding requests, never one
//! already holding [`MAX_OUTSTANDING`]; if that worker dies mid-request (or is found hung,
//! or its connection breaks), the request is retried once on another worker of the same
//! version (inference is idempotent), waiting for one to come back if none is up. The
//! supervisor fills and empties the slots, samples their workers' resources and sets the
//! pool's [`Phase`]; the front records each request's outcome in the pool's measured
//! [`Window`]; health and the rollout gate read all of it.

use super::conn::{CallError, WorkerConn};
use crate::config::HealthConfig;
use crate::repo::{PredictKind, PredictSpec};
use crate::tensor::Tensor;
use crate::window::Window;
use crate::wire::{Fault, ModelInfo};
use arc_swap::{ArcSwap, ArcSwapOption};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Requests one worker may hold at once; past it, requests wait in the supervisor for
/// room (bounded by the request timeout) rather than pile up behind one worker.
pub const MAX_OUTSTANDING: usize = 256;

/// How often a request waiting for room on full workers looks again.
const FULL_RECHECK: Duration = Duration::from_millis(2);

/// Where a version's pool is in its life. The supervisor moves it along.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Workers are starting; none has reported ready yet.
    Starting,
    /// At least one worker has been ready; requests are served while any worker is up.
    Running,
    /// Loading failed or the workers crash-loop; the reason says which. Terminal.
    Failed { reason: String },
    /// Draining and stopping its workers. Terminal.
    Stopping,
}

/// One worker's place in the pool, and what is measured of its worker.
pub struct Slot {
    conn: ArcSwapOption<WorkerConn>,
    pub pid: AtomicU32,
    /// The GPU its worker was started on, as NVML numbers them ([`Slot::NO_GPU`]: none
    /// or unknown).
    pub gpu: AtomicU32,
    pub restarts: AtomicU64,
    pub oom_kills: AtomicU64,
    /// Workers of this slot killed for hanging (holding requests without a word).
    pub hangs: AtomicU64,
    /// Workers of this slot whose connection broke while the process lived.
    pub disconnects: AtomicU64,
    pub last_exit: Mutex<Option<String>>,
    /// Why this slot's workers are crash-looping while serving (each dies soon after it
    /// gets ready, on requests), until one proves it serves again.
    pub crash_loop: Mutex<Option<String>>,
    /// Resident memory of the current worker process, sampled (0 when none runs).
    pub rss_bytes: AtomicU64,
    /// CPU time of the current worker process, in milliseconds, sampled.
    pub cpu_ms: AtomicU64,
    /// Cores the current worker process kept busy over the last sample, as f64 bits
    /// (NaN before the first sample).
    cpu_cores: AtomicU64,
    /// Started to add a worker to a serving version (the autoscaler growing it), and not
    /// ready yet: not yet missed by the health checks.
    pub joining: std::sync::atomic::AtomicBool,
}

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            conn: ArcSwapOption::empty(),
            pid: AtomicU32::new(0),
            gpu: AtomicU32::new(Slot::NO_GPU),
            restarts: AtomicU64::new(0),
            oom_kills: AtomicU64::new(0),
            hangs: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            last_exit: Mutex::new(None),
            crash_loop: Mutex::new(None),
            rss_bytes: AtomicU64::new(0),
            cpu_ms: AtomicU64::new(0),
            cpu_cores: AtomicU64::new(f64::NAN.to_bits()),
            joining: Default::default(),
        }
    }
}

impl Slot {
    pub const NO_GPU: u32 = u32::MAX;

    /// The GPU its worker was started on, if any is known.
    pub fn gpu(&self) -> Option<u32> {
        Some(self.gpu.load(Ordering::Relaxed)).filter(|g| *g != Slot::NO_GPU)
    }

    pub fn conn(&self) -> Option<Arc<WorkerConn>> {
        self.conn.load_full().filter(|c| c.is_open())
    }

    /// Why the slot's workers crash-loop while serving, if they do.
    pub fn crash_loop(&self) -> Option<String> {
        self.crash_loop.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_crash_loop(&self, reason: Option<String>) {
        *self.crash_loop.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// Records the cores the worker kept busy since the last sample.
    pub fn set_cpu_cores(&self, cores: f64) {
        self.cpu_cores.store(cores.to_bits(), Ordering::Relaxed);
    }

    /// Cores the worker kept busy over the last sample (None before one).
    pub fn cpu_cores(&self) -> Option<f64> {
        Some(f64::from_bits(self.cpu_cores.load(Ordering::Relaxed))).filter(|c| !c.is_nan())
    }
}

/// Watches the answers a version gives its users while a rollout judges it (the gate's
/// view of what the answers say). Called on the request path: it must be quick.
pub trait AnswerTap: Send + Sync {
    fn answered(&self, outputs: &[Tensor]);
}

/// What a pick found.
enum Pick {
    Found(Arc<WorkerConn>),
    /// Workers answer, but every one holds [`MAX_OUTSTANDING`] requests.
    Full,
    /// No worker answers now.
    None,
}

/// Why the pool could not answer a request.
#[derive(Debug, Clone, PartialEq)]
pub enum PoolError {
    /// The version cannot serve (failed, or never became ready).
    Unavailable(String),
    /// The version is being stopped (replaced or reverted).
    Stopping,
    /// The worker answered with a failure.
    Call(CallError),
}

/// What a pool is made for: one model version, its workers and its thresholds.
#[derive(Debug, Clone, Default)]
pub struct PoolSpec {
    pub model: String,
    pub version: u64,
    pub workers: usize,
    /// How `/predict` reads this version's outputs (from its model.toml).
    pub predict: PredictSpec,
    /// What model.toml declares each output's rows are (`[outputs.<name>] kind`).
    pub kinds: BTreeMap<String, PredictKind>,
    /// Inference threads per worker: requests one worker runs at once.
    pub threads: usize,
    pub health: HealthConfig,
    /// Most memory one worker may use, in bytes.
    pub memory_limit: Option<u64>,
    /// Cores one worker may keep busy: its inference threads × intra-op threads.
    pub cores_per_worker: usize,
}

pub struct Pool {
    /// Unique among the pools of this process: two pools of one version (a settings
    /// change rolling out) never share a worker socket or cgroup.
    pub id: u64,
    pub model: String,
    pub version: u64,
    pub predict: PredictSpec,
    /// What model.toml declares each output's rows are.
    pub kinds: BTreeMap<String, PredictKind>,
    /// Inference threads per worker.
    pub threads: usize,
    /// While a rollout judges this version: what watches its answers to users.
    tap: ArcSwapOption<Box<dyn AnswerTap>>,
    /// The thresholds this version is judged by; a reload swaps them without a restart.
    health: ArcSwap<HealthConfig>,
    pub memory_limit: Option<u64>,
    /// Cores one worker may keep busy (the cpu check's measure).
    pub cores_per_worker: usize,
    pub slots: Vec<Slot>,
    /// How many of the slots are meant to run (fewer than all during a rolling update).
    active: AtomicUsize,
    /// Outcomes and latencies of this version's requests over `health.window`.
    pub window: Window,
    /// The lowest slot whose added worker could not get ready, and why (for the
    /// autoscaler, which takes the count back below it).
    join_failure: Mutex<Option<(usize, String)>>,
    /// When this version's workers were OOM-killed, within the last window or so.
    ooms: Mutex<VecDeque<Instant>>,
    /// What the worker said of the last request it failed (not a bad input), so that a
    /// gate failing the version on its error rate can say what the errors were.
    last_failure: ArcSwapOption<String>,
    info: ArcSwapOption<ModelInfo>,
    phase: ArcSwap<Phase>,
    /// Woken whenever a slot fills or the phase changes.
    changed: Notify,
}

/// Hands out pool ids.
static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// One slot's current worker, as sampled (pid 0 and no memory when none runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerUse {
    pub pid: u32,
    pub rss_bytes: u64,
    pub gpu: Option<u32>,
}

/// A version's worker faults since it started, over all its workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    pub restarts: u64,
    pub oom_kills: u64,
    pub hangs: u64,
    pub disconnects: u64,
}

impl Pool {
    pub fn new(spec: PoolSpec) -> Pool {
        Pool {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            window: Window::new(spec.health.window),
            join_failure: Mutex::new(None),
            model: spec.model,
            version: spec.version,
            predict: spec.predict,
            kinds: spec.kinds,
            threads: spec.threads.max(1),
            tap: ArcSwapOption::empty(),
            health: ArcSwap::from_pointee(spec.health),
            memory_limit: spec.memory_limit,
            cores_per_worker: spec.cores_per_worker.max(1),
            ooms: Mutex::new(VecDeque::new()),
            last_failure: ArcSwapOption::empty(),
            active: AtomicUsize::new(spec.workers),
            slots: (0..spec.workers).map(|_| Slot::default()).collect(),
            info: ArcSwapOption::empty(),
            phase: ArcSwap::from_pointee(Phase::Starting),
            changed: Notify::new(),
        }
    }

    /// The thresholds this version is judged by now.
    pub fn health(&self) -> Arc<HealthConfig> {
        self.health.load_full()
    }

    /// Judges this version by new thresholds from now on (a reload); a new window span
    /// starts an empty window.
    pub fn set_health(&self, health: HealthConfig) {
        self.window.resize(health.window);
        self.health.store(Arc::new(health));
    }

    /// The model's signature, once a worker has reported it.
    pub fn info(&self) -> Option<Arc<ModelInfo>> {
        self.info.load_full()
    }

    pub fn phase(&self) -> Arc<Phase> {
        self.phase.load_full()
    }

    /// Workers meant to run now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub fn set_active(&self, active: usize) {
        self.active.store(active.min(self.slots.len()), Ordering::Relaxed);
    }

    /// Workers that should answer now: the active ones, less those just added to a
    /// serving version that are still starting (what the health checks expect ready).
    pub fn settled(&self) -> usize {
        let joining = self.slots.iter().take(self.active()).filter(|s| s.joining.load(Ordering::Relaxed)).count();
        self.active() - joining
    }

    /// Active workers still starting after the autoscaler added them.
    pub fn joining(&self) -> usize {
        self.active() - self.settled()
    }

    /// Records that the worker added in `slot` could not get ready.
    pub fn join_failed(&self, slot: usize, reason: String) {
        let mut failure = self.join_failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.as_ref().is_none_or(|(s, _)| slot < *s) {
            *failure = Some((slot, reason));
        }
    }

    /// The lowest slot whose added worker could not get ready since the last call, and why.
    pub fn take_join_failure(&self) -> Option<(usize, String)> {
        self.join_failure.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Workers that answer: connected (a hung one's connection is abandoned at once).
    pub fn ready_workers(&self) -> usize {
        self.slots.iter().filter(|s| s.conn().is_some()).count()
    }

    /// Cores this version's workers kept busy over the last sample, and the cores they may
    /// use (workers × inference threads × intra-op threads); None before a sample.
    pub fn cpu(&self) -> Option<(f64, f64)> {
        let samples: Vec<f64> = self.slots.iter().take(self.active()).filter_map(Slot::cpu_cores).collect();
        let allowed = (self.active() * self.cores_per_worker).max(1) as f64;
        (!samples.is_empty()).then(|| (samples.iter().sum(), allowed))
    }

    /// What the version's workers went through, summed over its slots.
    pub fn faults(&self) -> Faults {
        let sum =
            |counter: fn(&Slot) -> &AtomicU64| self.slots.iter().map(|s| counter(s).load(Ordering::Relaxed)).sum();
        Faults {
            restarts: sum(|s| &s.restarts),
            oom_kills: sum(|s| &s.oom_kills),
            hangs: sum(|s| &s.hangs),
            disconnects: sum(|s| &s.disconnects),
        }
    }

    /// Each slot's current worker as measured: pid, resident memory, GPU.
    pub fn workers(&self) -> impl Iterator<Item = WorkerUse> + '_ {
        self.slots.iter().map(|s| WorkerUse {
            pid: s.pid.load(Ordering::Relaxed),
            rss_bytes: s.rss_bytes.load(Ordering::Relaxed),
            gpu: s.gpu(),
        })
    }

    /// The largest resident memory of one of the version's workers (0 before sampling).
    pub fn largest_rss(&self) -> u64 {
        self.workers().map(|w| w.rss_bytes).max().unwrap_or(0)
    }

    /// How the first worker that is down last ended, if one is down.
    pub fn down_reason(&self) -> Option<String> {
        self.slots
            .iter()
            .filter(|s| s.conn().is_none())
            .find_map(|s| s.last_exit.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Why the version's workers crash-loop while serving, if any slot's do.
    pub fn crash_loop(&self) -> Option<String> {
        self.slots.iter().take(self.active()).find_map(Slot::crash_loop)
    }

    /// Watches this version's answers to users with `tap` from now on (none: stops).
    pub fn set_tap(&self, tap: Option<Box<dyn AnswerTap>>) {
        self.tap.store(tap.map(Arc::new));
    }

    /// Shows an answer this version gave a user to the tap, if one watches.
    pub fn tap(&self, outputs: &[Tensor]) {
        if let Some(tap) = &*self.tap.load() {
            tap.answered(outputs);
        }
    }

    /// Requests all of this version's ready workers can run at once.
    pub fn capacity(&self) -> usize {
        self.ready_workers() * self.threads
    }

    /// Whether every inference thread of the version is busy now: what a copy for a
    /// shadow would compete with.
    pub fn is_saturated(&self) -> bool {
        self.outstanding() >= self.capacity()
    }

    /// Whether a request sent now would find a worker.
    pub fn is_ready(&self) -> bool {
        matches!(*self.phase(), Phase::Running) && self.ready_workers() > 0
    }

    /// Requests sent to the workers and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.slots.iter().filter_map(|s| s.conn.load_full()).map(|c| c.outstanding()).sum()
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(Arc::new(phase));
        self.changed.notify_waiters();
    }

    /// Puts a worker that reported ready into its slot.
    pub fn fill(&self, slot: usize, conn: Arc<WorkerConn>, info: ModelInfo) {
        if self.info.load().is_none() {
            self.info.store(Some(Arc::new(info)));
        }
        self.slots[slot].conn.store(Some(conn));
        self.slots[slot].joining.store(false, Ordering::Relaxed);
        if matches!(*self.phase(), Phase::Starting) {
            self.phase.store(Arc::new(Phase::Running));
        }
        self.changed.notify_waiters();
    }

    /// Takes a worker out of rotation; returns its connection so it can be drained.
    pub fn empty(&self, slot: usize) -> Option<Arc<WorkerConn>> {
        self.slots[slot].conn.swap(None)
    }

    /// The signature, once a worker has reported it; waits while the version starts (a
    /// recreate's new version, a daemon still loading), bounded by the caller's timeout.
    pub async fn wait_info(&self) -> Result<Arc<ModelInfo>, PoolError> {
        loop {
            let changed = self.changed.notified();
            match &*self.phase() {
                Phase::Failed { reason } => return Err(PoolError::Unavailable(format!("version failed: {reason}"))),
                Phase::Stopping => return Err(PoolError::Stopping),
                Phase::Starting | Phase::Running => {}
            }
            if let Some(info) = self.info() {
                return Ok(info);
            }
            changed.await;
        }
    }

    /// Counts an OOM kill of one of this version's workers, now.
    pub fn record_oom(&self, slot: usize) {
        self.slots[slot].oom_kills.fetch_add(1, Ordering::Relaxed);
        self.ooms.lock().unwrap_or_else(|e| e.into_inner()).push_back(Instant::now());
    }

    /// OOM kills within the last `span`.
    pub fn ooms_within(&self, span: Duration) -> usize {
        let mut ooms = self.ooms.lock().unwrap_or_else(|e| e.into_inner());
        while ooms.front().is_some_and(|t| t.elapsed() > span.max(self.health().window)) {
            ooms.pop_front();
        }
        ooms.iter().filter(|t| t.elapsed() <= span).count()
    }

    /// Runs a request, retrying once on another worker if its worker dies.
    pub async fn infer(&self, inputs: &[Tensor]) -> Result<(Vec<Tensor>, crate::wire::Timing), PoolError> {
        let first = self.pick_or_wait(None).await?;
        let answer = match first.infer(inputs).await {
            Err(CallError::Gone) => {
                tracing::warn!(model = %self.model, version = self.version, "worker died mid-request; retrying on another");
                let second = self.pick_or_wait(Some(&first)).await?;
                second.infer(inputs).await
            }
            other => other,
        };
        if let Err(CallError::Failed { fault, message }) = &answer
            && *fault != Fault::BadInput
        {
            self.last_failure.store(Some(Arc::new(message.clone())));
        }
        answer.map_err(PoolError::Call)
    }

    /// What the worker said of the last request this version failed, if any.
    pub fn last_failure(&self) -> Option<Arc<String>> {
        self.last_failure.load_full()
    }

    /// The least-busy open worker, never the connection `avoid`; waits for one to come up
    /// while the version is starting or running.
    async fn pick_or_wait(&self, avoid: Option<&Arc<WorkerConn>>) -> Result<Arc<WorkerConn>, PoolError> {
        loop {
            let changed = self.changed.notified();
            match &*self.phase() {
                Phase::Failed { reason } => {
                    return Err(PoolError::Unavailable(format!("version failed: {reason}")));
                }
                Phase::Stopping => return Err(PoolError::Stopping),
                Phase::Starting | Phase::Running => {}
            }
            match self.pick(avoid) {
                Pick::Found(found) => return Ok(found),
                // Room comes as replies arrive, which nothing announces: look again soon.
                Pick::Full => {
                    tokio::select! {
                        _ = changed => {}
                        _ = tokio::time::sleep(FULL_RECHECK) => {}
                    }
                }
                Pick::None => changed.await,
            }
        }
    }

    /// Ties go to the first worker in slot order: at low load one worker takes the
    /// requests and stays hot (its caches, and its busy-polling, which pays only while
    /// requests come close together); under load the outstanding counts spread them.
    fn pick(&self, avoid: Option<&Arc<WorkerConn>>) -> Pick {
        let mut best: Option<Arc<WorkerConn>> = None;
        let mut full = false;
        for slot in self.slots.iter() {
            let Some(conn) = slot.conn() else { continue };
            if avoid.is_some_and(|a| Arc::ptr_eq(a, &conn)) {
                continue;
            }
            if conn.outstanding() >= MAX_OUTSTANDING {
                full = true;
                continue;
            }
            if best.as_ref().is_none_or(|b| conn.outstanding() < b.outstanding()) {
                best = Some(conn);
            }
        }
        match (best, full) {
            (Some(conn), _) => Pick::Found(conn),
            (None, true) => Pick::Full,
            (None, false) => Pick::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixStream;

    fn pool(workers: usize) -> Pool {
        Pool::new(PoolSpec {
            model: "m".into(),
            version: 1,
            workers,
            predict: PredictSpec::default(),
            health: Default::default(),
            memory_limit: None,
            cores_per_worker: 1,
            ..PoolSpec::default()
        })
    }

    fn info() -> ModelInfo {
        ModelInfo {
            load_mode: "test".into(),
            plans_built: 0,
            device: "cpu".into(),
            inputs: vec![],
            outputs: vec![],
            labels: None,
        }
    }

    /// A connection to a worker that reads requests and never answers, so each one sent
    /// stays outstanding; the worker's end is returned to keep it open.
    fn silent_worker() -> (Arc<WorkerConn>, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        (WorkerConn::start(ours), theirs)
    }

    async fn outstanding_reaches(conn: &WorkerConn, n: usize) {
        while conn.outstanding() < n {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn ties_go_to_the_first_worker_and_load_spreads_by_outstanding_requests() {
        let pool = pool(2);
        let (first, _a) = silent_worker();
        let (second, _b) = silent_worker();
        pool.fill(0, first.clone(), info());
        pool.fill(1, second.clone(), info());
        for _ in 0..3 {
            assert!(Arc::ptr_eq(&picked(&pool, None), &first), "idle workers: the first one");
        }
        let waiting = tokio::spawn({
            let first = first.clone();
            async move { first.infer(&[]).await }
        });
        outstanding_reaches(&first, 1).await;
        assert!(Arc::ptr_eq(&picked(&pool, None), &second), "the busy one is passed over");
        assert!(Arc::ptr_eq(&picked(&pool, Some(&second)), &first), "unless the other is avoided");
        waiting.abort();
    }

    fn picked(pool: &Pool, avoid: Option<&Arc<WorkerConn>>) -> Arc<WorkerConn> {
        match pool.pick(avoid) {
            Pick::Found(conn) => conn,
            _ => panic!("no worker picked"),
        }
    }

    #[tokio::test]
    async fn an_abandoned_worker_is_out_of_rotation_and_a_full_worker_is_passed_over() {
        let pool = pool(2);
        let (first, _a) = silent_worker();
        let (second, _b) = silent_worker();
        pool.fill(0, first.clone(), info());
        pool.fill(1, second.clone(), info());
        // A worker whose connection was abandoned (found hung) takes nothing more.
        let (hung, _c) = silent_worker();
        pool.fill(0, hung.clone(), info());
        hung.abandon();
        assert!(Arc::ptr_eq(&picked(&pool, None), &second));
        assert_eq!(pool.ready_workers(), 1, "an abandoned worker does not count as ready");
        assert!(matches!(pool.pick(Some(&second)), Pick::None));
        pool.fill(0, first.clone(), info());
        // Fill the second worker to its bound: the first takes the next request.
        let calls: Vec<_> = (0..MAX_OUTSTANDING)
            .map(|_| {
                let second = second.clone();
                tokio::spawn(async move { second.infer(&[]).await })
            })
            .collect();
        outstanding_reaches(&second, MAX_OUTSTANDING).await;
        assert!(Arc::ptr_eq(&picked(&pool, None), &first));
        assert!(matches!(pool.pick(Some(&first)), Pick::Full));
        calls.iter().for_each(|c| c.abort());
    }
}
