//! The supervisor: starts a pool of worker processes per live model version, keeps them
//! running ([`keeper`]), and stops them gracefully.
//!
//! It owns the processes ([`process`]) and fills the router's pools with their
//! connections; a version that cannot load, or whose workers crash-loop before getting
//! ready, is marked failed with the reason, and neither stops the daemon nor touches other
//! models. Workers that hang or lose their connection are found ([`liveness`]) and
//! replaced. Signals are mapped to intents in [`signals`].

pub mod cgroup;
pub mod keeper;
pub mod liveness;
pub mod process;
pub mod sampler;
pub mod signals;

// What the daemon builds a supervisor from and runs beside it.
pub use cgroup::Cgroups;
pub use process::{Exe, Launcher};
pub use sampler::run as sample;
pub use signals::{Intent, Signals};

use crate::config::ModelConfig;
use crate::metrics::Metrics;
use crate::repo::ModelDir;
use crate::router::pool::{Phase, Pool, PoolSpec};
use keeper::Keeper;
use process::WorkerSpec;
use std::sync::{Arc, Mutex};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// A started pool and the means to stop it.
struct Running {
    pool: Arc<Pool>,
    /// Cancels every slot (stop, or failure of the version).
    stop: CancellationToken,
    /// What each slot's keeper is made from.
    keeper: Keeper,
    spec: WorkerSpec,
    /// Per slot: its own stop token and its keeper's task, while it runs.
    slots: Vec<Option<(CancellationToken, JoinHandle<()>)>>,
}

impl Running {
    /// Starts keepers for the slots below `active` that have none. Workers added to a
    /// serving version are marked joining until ready.
    fn start_slots(&mut self, active: usize) {
        let serving = matches!(*self.pool.phase(), Phase::Running);
        for slot in 0..active.min(self.slots.len()) {
            if self.slots[slot].is_none() {
                self.pool.slots[slot].joining.store(serving, std::sync::atomic::Ordering::Relaxed);
                let stop = self.stop.child_token();
                let keeper = Keeper { stop: stop.clone(), ..self.keeper.clone() };
                let task = tokio::spawn(keeper.run(WorkerSpec { slot, ..self.spec.clone() }));
                self.slots[slot] = Some((stop, task));
            }
        }
    }

    /// Stops the slots at and above `active`; returns their tasks to await.
    fn stop_slots(&mut self, active: usize) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        for slot in (active..self.slots.len()).rev() {
            if let Some((stop, task)) = self.slots[slot].take() {
                self.pool.slots[slot].joining.store(false, std::sync::atomic::Ordering::Relaxed);
                stop.cancel();
                tasks.push(task);
            }
        }
        tasks
    }
}

pub struct Supervisor {
    launcher: Arc<Launcher>,
    metrics: Arc<Metrics>,
    running: Mutex<Vec<Running>>,
}

impl Supervisor {
    pub fn new(launcher: Launcher, metrics: Arc<Metrics>) -> Supervisor {
        Supervisor { launcher: Arc::new(launcher), metrics, running: Mutex::new(Vec::new()) }
    }

    /// Starts the model's least workers for `version` (its fixed count, or an autoscaled
    /// model's `min`). The pool is returned at once, in phase Starting; it moves to Running
    /// when a worker is ready, or Failed with the reason.
    pub fn start(&self, model: &ModelConfig, version: u64) -> Arc<Pool> {
        self.start_with(model, version, model.workers.min)
    }

    /// As [`Supervisor::start`], with `active` workers running; the pool has room for the
    /// model's most (a rolling update or the autoscaler moves it with [`Supervisor::scale`]).
    pub fn start_with(&self, model: &ModelConfig, version: u64, active: usize) -> Arc<Pool> {
        let dir = ModelDir::new(&model.dir);
        let manifest = dir.manifest(version);
        let pool = Arc::new(Pool::new(PoolSpec {
            model: model.name.clone(),
            version,
            workers: model.workers.max,
            predict: manifest.as_ref().map(|m| m.predict.clone()).unwrap_or_default(),
            kinds: manifest
                .as_ref()
                .map(|m| m.outputs.iter().filter_map(|(name, o)| Some((name.clone(), o.kind?))).collect())
                .unwrap_or_default(),
            threads: model.threads,
            health: model.health.clone(),
            memory_limit: model.memory_limit,
            cores_per_worker: model.cores_per_worker(),
        }));
        let stop = CancellationToken::new();
        let mut running = Running {
            keeper: Keeper {
                pool: pool.clone(),
                launcher: self.launcher.clone(),
                metrics: self.metrics.clone(),
                stop: stop.clone(),
                pool_stop: stop.clone(),
            },
            spec: WorkerSpec {
                model: model.name.clone(),
                version,
                pool: pool.id,
                slot: 0,
                dir: dir.version_dir(version),
                threads: model.threads,
                memory_limit: model.memory_limit,
                busy_poll: model.busy_poll,
                batching: model.batching.clone(),
                engine: process::EngineSpec::of(model),
            },
            slots: (0..model.workers.max).map(|_| None).collect(),
            pool: pool.clone(),
            stop,
        };
        pool.set_active(active);
        self.metrics.version_started(&model.name, version);
        match manifest {
            Err(e) => pool.set_phase(Phase::Failed { reason: e.to_string() }),
            Ok(_) => running.start_slots(active),
        }
        tracing::info!(model = %model.name, version, workers = active, "starting version");
        self.lock().push(running);
        pool
    }

    /// Runs `active` of the pool's workers: starts the missing ones, or drains and stops
    /// the extra ones (returning once they have exited).
    pub async fn scale(&self, pool: &Arc<Pool>, active: usize) {
        for task in self.resize(pool, active) {
            let _ = task.await;
        }
    }

    /// As [`Supervisor::scale`], at once: the workers to add are started (and marked
    /// joining before the pool counts them), the ones to remove are told to drain; their
    /// tasks are returned to await.
    pub fn resize(&self, pool: &Arc<Pool>, active: usize) -> Vec<JoinHandle<()>> {
        let mut all = self.lock();
        let Some(running) = all.iter_mut().find(|r| Arc::ptr_eq(&r.pool, pool)) else { return Vec::new() };
        let active = active.min(running.slots.len());
        running.start_slots(active);
        pool.set_active(active);
        running.stop_slots(active)
    }

    /// The signature `version` of `model` would serve with, loaded by a short-lived
    /// process; no worker starts.
    pub async fn describe(&self, model: &ModelConfig, version: u64) -> Result<crate::wire::ModelInfo, String> {
        self.launcher.describe(&ModelDir::new(&model.dir).version_dir(version), &process::EngineSpec::of(model)).await
    }

    /// Every pool the supervisor runs now.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.lock().iter().map(|r| r.pool.clone()).collect()
    }

    /// Drains and stops one pool's workers; returns when they have exited.
    pub async fn stop(&self, pool: &Arc<Pool>) {
        let running = {
            let mut all = self.lock();
            let i = all.iter().position(|r| Arc::ptr_eq(&r.pool, pool));
            i.map(|i| all.swap_remove(i))
        };
        if let Some(running) = running {
            Self::stop_running(running).await;
        }
    }

    /// Drains and stops every pool.
    pub async fn stop_all(&self) {
        let all: Vec<Running> = std::mem::take(&mut *self.lock());
        let stops = all.into_iter().map(Self::stop_running);
        futures_join_all(stops).await;
    }

    /// Kills every worker at once (fast stop); their keepers see them die and stop.
    pub fn kill_all(&self) {
        for running in self.lock().iter() {
            running.pool.set_phase(Phase::Stopping);
            running.stop.cancel();
            for slot in &running.pool.slots {
                let pid = slot.pid.load(std::sync::atomic::Ordering::Relaxed);
                if pid != 0 {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }

    async fn stop_running(mut running: Running) {
        if !matches!(*running.pool.phase(), Phase::Failed { .. }) {
            running.pool.set_phase(Phase::Stopping);
        }
        running.stop.cancel();
        for task in running.stop_slots(0) {
            let _ = task.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Awaits all futures concurrently.
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(futures: impl Iterator<Item = F>) {
    let mut set = JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    while set.join_next().await.is_some() {}
}
