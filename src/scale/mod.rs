//! The host autoscaler: moves each autoscaled model's live version between its `min` and
//! `max` workers as its load asks, within what the host lends all models.
//!
//! Every [`SAMPLE`] it reads each autoscaled model's requests in flight; every model's
//! `[model.scale] interval` it decides that model's count ([`decide`], the HPA's rules),
//! then shares the budget among all of them ([`share`]) and applies the grants through the
//! supervisor: a worker added takes requests once it is ready (loaded, warmed, golden
//! examples passed); one removed is taken out of rotation and drained before it stops.
//! A model with a rollout in progress is left alone (the rollout sized its candidate from
//! the count it found); its workers, and every other pool it does not move (fixed models,
//! candidates, versions kept warm), count against the budget. A crashed worker is
//! replaced by the supervisor, not here, and is no scale event.
//!
//! Each decision is kept on the model's route ([`crate::router::ScaleStatus`]) for
//! `/health`, `modeld status` and the metrics, and each change is logged with its reason.

pub mod decide;
pub mod share;

use crate::config::{Budget, Config, ModelConfig};
use crate::metrics::Metrics;
use crate::rollout::Engine;
use crate::router::{Held, HeldBy, ModelRoute, Pool, Router, ScaleStatus};
use crate::supervisor::Supervisor;
use decide::{Decider, Decision, Load};
use share::{Claim, Room};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often requests in flight are sampled.
pub const SAMPLE: Duration = Duration::from_millis(100);

/// What the autoscaler works with.
pub struct Scaler {
    pub router: Arc<Router>,
    pub supervisor: Arc<Supervisor>,
    pub engine: Arc<Engine>,
    pub metrics: Arc<Metrics>,
}

/// One autoscaled model as the autoscaler follows it.
#[derive(Default)]
struct Followed {
    /// The live pool the readings are of (a new one starts them over).
    pool: u64,
    inflight: f64,
    samples: u32,
    since: Option<Instant>,
    decider: Decider,
    last: Option<Decision>,
    /// A change being applied (a drain can take the shutdown grace).
    applying: Arc<AtomicBool>,
    /// What the log last said of it, so that an unchanged decision is not logged again.
    logged: Option<(usize, Option<HeldBy>)>,
}

impl Scaler {
    /// Runs until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let mut followed: HashMap<String, Followed> = HashMap::new();
        let mut host = sysinfo::System::new()
            .inspect_err(|e| {
                tracing::error!(
                    "autoscaler: cannot read the host's memory ({e}); only a [server.budget] memory bounds it"
                )
            })
            .ok();
        let mut tick = tokio::time::interval(SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return,
            }
            if self.engine.is_frozen() {
                continue;
            }
            let config = self.engine.config();
            let now = Instant::now();
            let due = self.sample(&config, &mut followed, now);
            if due {
                if let Some(host) = &mut host {
                    host.refresh_memory();
                }
                self.decide_all(&config, &mut followed, now, host.as_ref());
            }
        }
    }

    /// Adds a sample of each autoscaled model's requests in flight; true when one is due
    /// for a decision.
    fn sample(&self, config: &Config, followed: &mut HashMap<String, Followed>, now: Instant) -> bool {
        let mut due = false;
        let models = self.router.models();
        followed.retain(|name, _| config.model(name).is_some_and(|m| m.workers.autoscaled()));
        // A model a reload fixed the count of has no autoscaler's account any more.
        for model in config.models.iter().filter(|m| !m.workers.autoscaled()) {
            if let Some(route) = models.get(&model.name).filter(|r| r.scale().is_some()) {
                route.set_scale(None);
            }
        }
        for model in config.models.iter().filter(|m| m.workers.autoscaled()) {
            let Some(route) = models.get(&model.name) else { continue };
            let Some(stable) = route.table().stable.clone() else { continue };
            let f = followed.entry(model.name.clone()).or_default();
            if f.pool != stable.id {
                // A new live version (a promotion, a settings change): readings start over.
                (f.pool, f.inflight, f.samples, f.since) = (stable.id, 0.0, 0, Some(now));
                let _ = stable.take_queue_time();
                if route.scale().is_none() {
                    route.set_scale(Some(measuring(model, &stable)));
                }
                continue;
            }
            f.inflight += stable.outstanding() as f64;
            f.samples += 1;
            due |= f.since.is_some_and(|t| now.duration_since(t) >= model.scale.interval);
        }
        due
    }

    /// Decides the models that are due, shares the budget among all, applies the grants.
    fn decide_all(
        &self,
        config: &Config,
        followed: &mut HashMap<String, Followed>,
        now: Instant,
        host: Option<&sysinfo::System>,
    ) {
        let rolling: HashSet<String> = self.engine.in_progress().into_iter().map(|p| p.model).collect();
        let models = self.router.models();
        let mut claims: Vec<(Claim, Arc<Pool>, &ModelConfig)> = Vec::new();
        let (mut held_cores, mut held_memory) = (0usize, 0u64);
        for (name, route) in models.iter() {
            let table = route.table();
            let model = config.model(name);
            let managed = model.filter(|m| m.workers.autoscaled() && !rolling.contains(name));
            let stable = table.stable.clone().filter(|p| p.is_ready());
            for pool in table.all_pools() {
                let ours = managed.is_some() && stable.as_ref().is_some_and(|s| Arc::ptr_eq(s, pool));
                if !ours {
                    held_cores += pool.active() * pool.cores_per_worker;
                    held_memory += pool.active() as u64 * worker_memory(pool);
                }
            }
            match (model, managed, stable) {
                (Some(m), None, _) if m.workers.autoscaled() => {
                    let why = "a rollout is in progress: the count stays as the rollout found it".to_string();
                    route.set_scale(Some(frozen(m, route, followed.get(name), why)));
                    // What the rollout's traffic split did to the readings is no measure.
                    if let Some(f) = followed.get_mut(name) {
                        (f.inflight, f.samples, f.since) = (0.0, 0, Some(now));
                    }
                }
                (Some(m), Some(_), Some(stable)) => {
                    let Some(f) = followed.get_mut(name) else { continue };
                    if f.pool == stable.id && f.since.is_some_and(|t| now.duration_since(t) >= m.scale.interval) {
                        decide(f, m, &stable, now);
                    }
                    let Some(decision) = &f.last else { continue };
                    let claim = Claim {
                        model: name.clone(),
                        min: m.workers.min,
                        desired: decision.desired,
                        proposal: decision.proposal.workers.clamp(m.workers.min, m.workers.max),
                        current: stable.active(),
                        cores: stable.cores_per_worker,
                        memory: worker_memory(&stable),
                    };
                    claims.push((claim, stable, m));
                }
                (Some(m), _, _) if !m.workers.autoscaled() => route.set_scale(None),
                _ => {}
            }
        }
        let budget = config.server.budget;
        let room = Room {
            cores: budget.cores.saturating_sub(held_cores),
            memory: budget_memory(&budget, host).saturating_sub(held_memory),
            free: free_memory(host),
        };
        let grants = share::share(&claims.iter().map(|(c, ..)| c.clone()).collect::<Vec<_>>(), room);
        for ((claim, stable, model), grant) in claims.into_iter().zip(grants) {
            let Some(route) = models.get(&claim.model) else { continue };
            let f = followed.get_mut(&claim.model).expect("claims are of followed models");
            let decision = f.last.clone().expect("claims have a decision");
            let held = match grant.limited {
                Some(why) => Some(Held { by: HeldBy::Budget, why }),
                None => decision.held.clone(),
            };
            let status = ScaleStatus {
                min: model.workers.min,
                max: model.workers.max,
                desired: grant.workers,
                actual: 0,
                reason: format!("{}: asks for {}", decision.proposal.why, decision.proposal.workers),
                held,
                frozen: None,
                decided_at: crate::rollout::now(),
            };
            if grant.workers != claim.current && !rolling.contains(&claim.model) {
                self.apply(f, &stable, claim.current, grant.workers, &status, now);
            }
            log_decision(f, &claim.model, &status);
            route.set_scale(Some(status));
        }
    }

    /// Moves the live pool from `from` to `to` workers in the background (one change at a
    /// time per model): started workers join once ready; removed ones drain first.
    fn apply(&self, f: &mut Followed, pool: &Arc<Pool>, from: usize, to: usize, status: &ScaleStatus, now: Instant) {
        if f.applying.swap(true, Ordering::SeqCst) {
            return;
        }
        let direction = if to > from { "up" } else { "down" };
        tracing::info!(
            model = %pool.model, version = pool.version, from, to,
            held = status.held.as_ref().map(|h| h.why.as_str()),
            "scaling {direction}: {}", status.reason
        );
        self.metrics.scale_events.with_label_values(&[pool.model.as_str(), direction]).inc();
        self.engine.remember_workers(&pool.model, to);
        f.decider.changed(now, to as isize - from as isize);
        let (supervisor, pool, applying) = (self.supervisor.clone(), pool.clone(), f.applying.clone());
        tokio::spawn(async move {
            supervisor.scale(&pool, to).await;
            applying.store(false, Ordering::SeqCst);
        });
    }
}

/// One decision for a model whose interval has passed; its readings start over.
fn decide(f: &mut Followed, model: &ModelConfig, stable: &Pool, now: Instant) {
    let load = Load {
        workers: stable.active(),
        threads: stable.threads,
        inflight: if f.samples == 0 { 0.0 } else { f.inflight / f64::from(f.samples) },
        queue: stable.take_queue_time(),
        cpu: stable.cpu(),
        memory: model.memory_limit.map(|limit| (stable.largest_rss(), limit)),
    };
    let proposal = decide::propose(&load, &model.scale);
    f.last = Some(f.decider.decide(now, stable.active(), proposal, model.workers, &model.scale));
    (f.inflight, f.samples, f.since) = (0.0, 0, Some(now));
}

/// The status of a model whose first interval of readings is under way.
fn measuring(model: &ModelConfig, stable: &Pool) -> ScaleStatus {
    ScaleStatus {
        min: model.workers.min,
        max: model.workers.max,
        desired: stable.active(),
        actual: 0,
        reason: format!("measuring: the first decision comes after {:?} of readings", model.scale.interval),
        held: None,
        frozen: None,
        decided_at: crate::rollout::now(),
    }
}

/// The status of a model the autoscaler leaves alone now.
fn frozen(model: &ModelConfig, route: &ModelRoute, f: Option<&Followed>, why: String) -> ScaleStatus {
    let current = route.table().stable.as_ref().map_or(model.workers.min, |p| p.active());
    let reason = f.and_then(|f| f.last.as_ref()).map_or("no decision yet".into(), |d| d.proposal.why.clone());
    ScaleStatus {
        min: model.workers.min,
        max: model.workers.max,
        desired: current,
        actual: 0,
        reason,
        held: None,
        frozen: Some(why),
        decided_at: crate::rollout::now(),
    }
}

/// Logs a decision when what it says changed: the count, or what holds it.
fn log_decision(f: &mut Followed, model: &str, status: &ScaleStatus) {
    let said = (status.desired, status.held.as_ref().map(|h| h.by));
    if f.logged == Some(said) {
        return;
    }
    f.logged = Some(said);
    if let Some(held) = &status.held {
        tracing::info!(model, desired = status.desired, "autoscaler: {}; {}", held.why, status.reason);
    }
}

/// Memory one worker of `pool` holds: its limit, else the largest measured (0 before a
/// sample: nothing is known to refuse it by).
fn worker_memory(pool: &Pool) -> u64 {
    pool.memory_limit.unwrap_or_else(|| pool.largest_rss())
}

/// The budget's memory: as configured, else [`Budget::HOST_MEMORY_SHARE`] of the host's
/// (or its cgroup's) memory; unbounded when neither is known.
fn budget_memory(budget: &Budget, host: Option<&sysinfo::System>) -> u64 {
    budget
        .memory
        .or_else(|| {
            let host = host?;
            let total = host.cgroup_limits().map_or(host.total_memory(), |c| c.total_memory.min(host.total_memory()));
            Some((total as f64 * Budget::HOST_MEMORY_SHARE) as u64)
        })
        .unwrap_or(u64::MAX)
}

/// Memory the host (or its cgroup) has free now; unbounded when it cannot be read.
fn free_memory(host: Option<&sysinfo::System>) -> u64 {
    host.map_or(u64::MAX, |host| {
        let available = host.available_memory();
        host.cgroup_limits().map_or(available, |c| c.free_memory.min(available))
    })
}
