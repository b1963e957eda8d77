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

/// How long a model whose added worker could not get ready is not grown again.
pub const JOIN_BACKOFF: Duration = Duration::from_secs(60);

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
    /// `modeld_queue_duration_seconds`'s sum and count for the pool at the last decision.
    queued: (f64, u64),
    decider: Decider,
    last: Option<Decision>,
    /// A change being applied (a drain can take the shutdown grace); none overlaps it.
    applying: Arc<AtomicBool>,
    /// After an added worker could not get ready: no growth until then, and why.
    no_growth: Option<(Instant, String)>,
    /// What the log last said of it, so that an unchanged decision is not logged again.
    logged: Option<(usize, Option<HeldBy>)>,
}

impl Followed {
    /// Readings start over from `now`.
    fn restart_readings(&mut self, now: Instant) {
        (self.inflight, self.samples, self.since) = (0.0, 0, Some(now));
    }

    fn due(&self, now: Instant, interval: Duration) -> bool {
        self.since.is_some_and(|t| now.duration_since(t) >= interval)
    }
}

/// What the workers the autoscaler does not move hold of the budget.
#[derive(Default)]
struct Taken {
    cores: usize,
    memory: u64,
}

impl Taken {
    fn add(&mut self, pool: &Pool) {
        self.cores += pool.active() * pool.cores_per_worker;
        self.memory += pool.active() as u64 * worker_memory(pool);
    }
}

/// A model whose count the autoscaler decides this round.
struct Claimant<'a> {
    claim: Claim,
    stable: Arc<Pool>,
    model: &'a ModelConfig,
    route: Arc<ModelRoute>,
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
            if self.sample(&config, &mut followed, now) {
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
            if let Some(route) = models.get(&model.name) {
                route.set_scale(None);
            }
        }
        for model in config.models.iter().filter(|m| m.workers.autoscaled()) {
            let Some(route) = models.get(&model.name) else { continue };
            let Some(stable) = route.table().stable.clone() else { continue };
            let f = followed.entry(model.name.clone()).or_default();
            if f.pool != stable.id {
                // A new live version (a start, a promotion, a settings change): readings
                // start over, and the count it starts with is held by the down window.
                f.pool = stable.id;
                f.restart_readings(now);
                f.decider.seed(now, stable.active());
                f.queued = self.metrics.queued_so_far(&model.name, stable.version);
                if route.scale().is_none() {
                    route.set_scale(Some(measuring(model, &stable)));
                }
                continue;
            }
            if stable.joining() > 0 {
                // Workers still loading: what the load does meanwhile is no measure of
                // what the count will be.
                f.restart_readings(now);
                continue;
            }
            f.inflight += stable.outstanding() as f64;
            f.samples += 1;
            due |= f.due(now, model.scale.interval);
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
        let mut taken = Taken::default();
        let mut claimants = Vec::new();
        for (name, route) in self.router.models().iter() {
            let claimant = self.claimant(config, name, route, followed, &rolling, now);
            // Every pool but a claimant's live one holds its share: fixed models, models
            // rolling out or not decided yet, candidates, versions kept warm.
            let moved = |p: &Arc<Pool>| claimant.as_ref().is_some_and(|c| Arc::ptr_eq(p, &c.stable));
            route.table().all_pools().filter(|p| !moved(p)).for_each(|p| taken.add(p));
            claimants.extend(claimant);
        }
        let budget = config.server.budget;
        let room = Room {
            cores: budget.cores.saturating_sub(taken.cores),
            memory: budget_memory(&budget, host).saturating_sub(taken.memory),
            free: free_memory(host),
        };
        let grants = share::share(&claimants.iter().map(|c| c.claim.clone()).collect::<Vec<_>>(), room);
        for (c, grant) in claimants.into_iter().zip(grants) {
            let f = followed.get_mut(&c.claim.model).expect("claimants are followed");
            let status = self.grant(f, &c, grant, now);
            log_decision(f, &c.claim.model, &status);
            c.route.set_scale(Some(status));
        }
    }

    /// The model's claim on the budget this round, deciding it if due; None when the
    /// autoscaler does not move it now (fixed, rolling out, not serving, no decision yet).
    fn claimant<'a>(
        &self,
        config: &'a Config,
        name: &str,
        route: &Arc<ModelRoute>,
        followed: &mut HashMap<String, Followed>,
        rolling: &HashSet<String>,
        now: Instant,
    ) -> Option<Claimant<'a>> {
        let model = config.model(name).filter(|m| m.workers.autoscaled())?;
        let f = followed.get_mut(name)?;
        if rolling.contains(name) {
            let why = "a rollout is in progress: the count stays as the rollout found it".to_string();
            route.set_scale(Some(frozen(model, route, f, why)));
            // What the rollout's traffic split did to the readings is no measure.
            f.restart_readings(now);
            return None;
        }
        let stable = route.table().stable.clone().filter(|p| p.is_ready() && p.id == f.pool)?;
        if let Some((slot, why)) = stable.take_join_failure() {
            f.no_growth = Some((now + JOIN_BACKOFF, format!("an added worker could not get ready: {why}")));
            let back = slot.max(model.workers.min);
            if back < stable.active() {
                self.apply(f, &stable, stable.active(), back, "an added worker could not get ready", now);
            }
        }
        if stable.joining() == 0 && f.due(now, model.scale.interval) {
            let queued = self.metrics.queued_so_far(name, stable.version);
            decide(f, model, &stable, queued, now);
        }
        let decision = f.last.as_ref()?;
        let mut desired = decision.desired;
        if let Some((until, _)) = &f.no_growth {
            match now < *until {
                true => desired = desired.min(stable.active()),
                false => f.no_growth = None,
            }
        }
        let claim = Claim {
            model: name.to_string(),
            min: model.workers.min,
            desired,
            proposal: decision.proposal.workers.clamp(model.workers.min, model.workers.max),
            current: stable.active(),
            cores: stable.cores_per_worker,
            memory: worker_memory(&stable),
        };
        Some(Claimant { claim, stable, model, route: route.clone() })
    }

    /// What a claimant was granted: its status, and the change applied when the count
    /// moves.
    fn grant(&self, f: &mut Followed, c: &Claimant, grant: share::Grant, now: Instant) -> ScaleStatus {
        let decision = f.last.clone().expect("a claimant has a decision");
        let held = match (grant.limited, &f.no_growth) {
            (Some(why), _) => Some(Held { by: HeldBy::Budget, why }),
            (None, Some((_, why))) if grant.workers < decision.desired => {
                Some(Held { by: HeldBy::StartFailed, why: format!("not grown for {JOIN_BACKOFF:?}: {why}") })
            }
            (None, _) => decision.held.clone(),
        };
        let reason = format!("{}: asks for {}", decision.proposal.why, decision.proposal.workers);
        let status = ScaleStatus { held, ..status(c.model, grant.workers, reason) };
        if grant.workers != c.claim.current {
            self.apply(f, &c.stable, c.claim.current, grant.workers, &status.reason, now);
        }
        status
    }

    /// Moves the live pool from `from` to `to` workers (one change at a time per model, and
    /// none while a rollout of it starts or runs): started workers join once ready;
    /// removed ones drain first, awaited in the background.
    fn apply(&self, f: &mut Followed, pool: &Arc<Pool>, from: usize, to: usize, why: &str, now: Instant) {
        if f.applying.swap(true, Ordering::SeqCst) {
            return;
        }
        let Some(draining) = self.engine.unless_rolling_out(&pool.model, || self.supervisor.resize(pool, to)) else {
            f.applying.store(false, Ordering::SeqCst);
            return;
        };
        let direction = if to > from { "up" } else { "down" };
        tracing::info!(model = %pool.model, version = pool.version, from, to, "scaling {direction}: {why}");
        self.metrics.scale_events.with_label_values(&[pool.model.as_str(), direction]).inc();
        self.engine.remember_workers(&pool.model, Some(to));
        f.decider.changed(now, to as isize - from as isize);
        let applying = f.applying.clone();
        tokio::spawn(async move {
            for task in draining {
                let _ = task.await;
            }
            applying.store(false, Ordering::SeqCst);
        });
    }
}

/// One decision for a model whose interval has passed, `queued` the queue time counted so
/// far; its readings start over.
fn decide(f: &mut Followed, model: &ModelConfig, stable: &Pool, queued: (f64, u64), now: Instant) {
    let ((seconds, requests), (seconds_before, requests_before)) = (queued, std::mem::replace(&mut f.queued, queued));
    let load = Load {
        workers: stable.active(),
        threads: stable.threads,
        inflight: if f.samples == 0 { 0.0 } else { f.inflight / f64::from(f.samples) },
        queue: (requests > requests_before).then(|| {
            Duration::from_secs_f64((seconds - seconds_before).max(0.0) / (requests - requests_before) as f64)
        }),
        cpu: stable.cpu(),
        memory: model.memory_limit.and_then(|limit| Some((mean_rss(stable)?, limit))),
    };
    let proposal = decide::propose(&load, &model.scale);
    f.last = Some(f.decider.decide(now, stable.active(), proposal, model.workers, &model.scale));
    f.restart_readings(now);
}

/// The mean resident memory of the version's running workers (none before a sample).
fn mean_rss(pool: &Pool) -> Option<u64> {
    let (sum, count) = pool.workers().map(|w| w.rss_bytes).filter(|r| *r > 0).fold((0, 0), |(s, n), r| (s + r, n + 1));
    (count > 0).then(|| sum / count)
}

/// The status of a model whose first interval of readings is under way.
fn measuring(model: &ModelConfig, stable: &Pool) -> ScaleStatus {
    let reason = format!("measuring: the first decision comes after {:?} of readings", model.scale.interval);
    status(model, stable.active(), reason)
}

/// A status decided now, nothing holding it (`actual` is filled in when it is read).
fn status(model: &ModelConfig, desired: usize, reason: String) -> ScaleStatus {
    ScaleStatus {
        min: model.workers.min,
        max: model.workers.max,
        desired,
        actual: 0,
        reason,
        held: None,
        frozen: None,
        decided_at: crate::rollout::now(),
    }
}

/// The status of a model the autoscaler leaves alone now.
fn frozen(model: &ModelConfig, route: &ModelRoute, f: &Followed, why: String) -> ScaleStatus {
    let current = route.table().stable.as_ref().map_or(model.workers.min, |p| p.active());
    let reason = f.last.as_ref().map_or("no decision yet".into(), |d| d.proposal.why.clone());
    ScaleStatus { frozen: Some(why), ..status(model, current, reason) }
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
