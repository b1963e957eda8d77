//! One rollout, run to its end: the strategies as sequences of routing-table swaps
//! between bakes, each bake watched by the health gate.
//!
//! Every traffic switch is one store of the model's routing table; requests in flight
//! finish on the pool that took them, and a pool is drained before its workers stop
//! (the supervisor does both). The runner answers operator commands (rollback, promote,
//! pause, resume) at any point, reports each phase on its `watch` channel and in the
//! persisted record, and returns the record with its outcome.

use super::Shared;
use super::gate::{self, Verdict};
use super::phase::{Phase, Progress};
use super::state::{self, PhaseEntry, Record};
use crate::config::{DeployConfig, ModelConfig, OnInconclusive, Strategy};
use crate::router::ModelRoute;
use crate::router::pool::{Phase as PoolPhase, Pool};
use crate::router::table::{Candidate, RoutingTable};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// What an operator can ask of a running rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Back to the old version now, skipping whatever remains.
    Rollback,
    /// Make the candidate stable now (A/B: the named version wins).
    Promote(Option<u64>),
    Pause,
    Resume,
}

/// Why a bake ended before its time passed with a passing gate.
enum Interrupt {
    Revert(String),
    PromoteNow,
}

pub struct Runner {
    pub shared: Arc<Shared>,
    pub route: Arc<ModelRoute>,
    pub model: ModelConfig,
    pub deploy: DeployConfig,
    pub record: Record,
    pub stable: Option<Arc<Pool>>,
    pub progress: watch::Sender<Progress>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub paused: bool,
}

impl Runner {
    /// Runs the rollout to its end and returns its record, outcome set.
    pub async fn run(mut self) -> Record {
        tracing::info!(
            model = %self.model.name, from = ?self.record.from, to = self.record.to,
            strategy = %self.deploy.strategy, "rollout started"
        );
        let end = match self.deploy.strategy {
            Strategy::Canary => self.canary().await,
            Strategy::BlueGreen => self.blue_green().await,
            Strategy::Rolling => self.rolling().await,
            Strategy::Recreate => self.recreate().await,
            Strategy::AbTest => self.ab_test().await,
        };
        let outcome = match &end {
            Phase::Promoted => "promoted",
            Phase::Reverted { .. } => "reverted",
            _ => "failed",
        };
        let reason = match &end {
            Phase::Reverted { reason } | Phase::Failed { reason } => Some(reason.clone()),
            _ => None,
        };
        self.enter(end);
        tracing::info!(model = %self.model.name, to = self.record.to, outcome, ?reason, "rollout ended");
        self.record.outcome = Some(outcome.into());
        self.record.reason = reason;
        self.record.ended_at = Some(state::now());
        self.record
    }

    /// Reports a new phase to followers, the metrics and the persisted record.
    fn enter(&mut self, phase: Phase) {
        self.shared.metrics.set_rollout_phase(&self.model.name, phase.name(), &Phase::NAMES);
        self.record.phases.push(PhaseEntry {
            at: state::now(),
            phase: phase.name().into(),
            weight: phase.weight(),
            note: Some(phase.describe()),
        });
        self.shared.save_rollout(&self.model.name, &self.record);
        self.progress.send_replace(Progress {
            id: self.record.id,
            model: self.model.name.clone(),
            from: self.record.from,
            to: self.record.to,
            strategy: self.record.strategy.clone(),
            phase,
        });
    }

    /// Adds a verdict or remark to the record without changing phase.
    fn note(&mut self, note: String) {
        let phase = self.progress.borrow().phase.clone();
        self.record.phases.push(PhaseEntry {
            at: state::now(),
            phase: phase.name().into(),
            weight: phase.weight(),
            note: Some(note),
        });
        self.shared.save_rollout(&self.model.name, &self.record);
    }

    fn start_candidate(&self, active: usize) -> Arc<Pool> {
        self.shared.supervisor.start_with(&self.model, self.record.to, active)
    }

    /// Waits until `want` of the candidate's workers are ready. Err: why it cannot be.
    async fn wait_ready(&mut self, pool: &Arc<Pool>, want: usize) -> Result<(), String> {
        let deadline = Instant::now() + self.shared.start_timeout * 2;
        loop {
            if let PoolPhase::Failed { reason } = &*pool.phase() {
                return Err(format!("version {} failed to start: {reason}", pool.version));
            }
            if pool.ready_workers() >= want {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("version {} did not get {want} workers ready in time", pool.version));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                command = self.commands.recv() => {
                    if let Some(Command::Rollback) | None = command {
                        return Err("rolled back by the operator before it took traffic".into());
                    }
                }
            }
        }
    }

    /// Routes `weight` % of traffic to `candidate` beside the old stable version.
    fn route_candidate(&self, candidate: &Arc<Pool>, weight: u8) {
        let sticky_header = match self.deploy.strategy {
            Strategy::AbTest => self.deploy.sticky_header.clone(),
            _ => None,
        };
        self.route.swap(RoutingTable {
            stable: self.stable.clone(),
            candidate: Some(Candidate { pool: candidate.clone(), weight, sticky_header }),
            ..RoutingTable::default()
        });
    }

    /// All traffic back to the old version; the candidate is drained and stopped.
    async fn revert(&mut self, candidate: &Arc<Pool>, reason: String) -> Phase {
        tracing::warn!(model = %self.model.name, version = candidate.version, "reverting: {reason}");
        self.note(format!("reverting after {}", summary(candidate)));
        match &self.stable {
            Some(stable) => self.route.swap(RoutingTable::stable(stable.clone())),
            None => self
                .route
                .swap(RoutingTable::unavailable(format!("version {} was reverted: {reason}", candidate.version))),
        };
        self.enter(Phase::Draining);
        self.shared.supervisor.stop(candidate).await;
        Phase::Reverted { reason }
    }

    /// The candidate becomes stable in one store; the old version is kept warm for
    /// `keep_previous`, or drained and stopped now.
    async fn promote(&mut self, candidate: &Arc<Pool>) -> Phase {
        let old = self.stable.clone();
        let keep = self.deploy.keep_previous;
        let previous = old.clone().filter(|_| !keep.is_zero());
        self.route.swap(RoutingTable { stable: Some(candidate.clone()), previous, ..RoutingTable::default() });
        if let Some(old) = old {
            match keep.is_zero() {
                true => {
                    self.enter(Phase::Draining);
                    self.shared.supervisor.stop(&old).await;
                }
                false => self.shared.retire_later(self.route.clone(), old, keep),
            }
        }
        Phase::Promoted
    }

    /// Holds `weight` on the candidate for `bake`, judging it every `check_every`, and
    /// answering commands. Ok once the bake ended with a pass.
    async fn bake(&mut self, candidate: &Arc<Pool>, step: usize, steps: usize, weight: u8) -> Result<(), Interrupt> {
        let gating = Phase::Gating { step, steps, weight };
        let held = |reason: &str| Phase::Paused { step, steps, weight, reason: reason.into() };
        self.enter(if self.paused { held("paused by the operator") } else { gating.clone() });
        let started = Instant::now();
        let mut breaches = 0;
        let mut inconclusive_since: Option<Instant> = None;
        let mut tick = tokio::time::interval(self.deploy.check_every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                command = self.commands.recv() => match command {
                    Some(Command::Rollback) | None => return Err(Interrupt::Revert("rolled back by the operator".into())),
                    Some(Command::Promote(_)) => return Err(Interrupt::PromoteNow),
                    Some(Command::Pause) if !self.paused => {
                        self.paused = true;
                        self.enter(held("paused by the operator"));
                    }
                    Some(Command::Resume) if self.paused => {
                        self.paused = false;
                        inconclusive_since = None;
                        self.enter(gating.clone());
                    }
                    Some(_) => {}
                },
            }
            let verdict = gate::evaluate(candidate, self.stable.as_deref(), &self.shared.host, &self.deploy);
            match &verdict {
                Verdict::Fail(reason) => {
                    breaches += 1;
                    if breaches >= self.deploy.consecutive_breaches {
                        return Err(Interrupt::Revert(format!("health gate: {reason}")));
                    }
                    continue;
                }
                Verdict::Pass | Verdict::Inconclusive(_) => breaches = 0,
            }
            if self.paused || started.elapsed() < self.deploy.bake {
                continue;
            }
            match verdict {
                Verdict::Pass => {
                    self.note(format!("gate passed: {}", summary(candidate)));
                    return Ok(());
                }
                Verdict::Inconclusive(why) => {
                    let since = *inconclusive_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.deploy.inconclusive_timeout {
                        match self.deploy.on_inconclusive {
                            OnInconclusive::Fail => {
                                return Err(Interrupt::Revert(format!(
                                    "no conclusive verdict within {:?}: {why}",
                                    self.deploy.inconclusive_timeout
                                )));
                            }
                            OnInconclusive::Pause => {
                                self.paused = true;
                                self.enter(held(&format!("not enough traffic to judge: {why}")));
                            }
                        }
                    }
                }
                Verdict::Fail(_) => {}
            }
        }
    }

    /// Starts a full candidate pool; Err ends the rollout as failed.
    async fn spawn_full(&mut self) -> Result<Arc<Pool>, Phase> {
        self.enter(Phase::Spawning);
        let candidate = self.start_candidate(self.model.workers);
        match self.wait_ready(&candidate, self.model.workers).await {
            Ok(()) => Ok(candidate),
            Err(reason) => {
                self.shared.supervisor.stop(&candidate).await;
                Err(Phase::Failed { reason })
            }
        }
    }

    async fn canary(&mut self) -> Phase {
        let candidate = match self.spawn_full().await {
            Ok(c) => c,
            Err(failed) => return failed,
        };
        let steps = self.deploy.steps.clone();
        for (i, weight) in steps.iter().enumerate() {
            self.route_candidate(&candidate, *weight);
            match self.bake(&candidate, i + 1, steps.len(), *weight).await {
                Ok(()) => {}
                Err(Interrupt::PromoteNow) => break,
                Err(Interrupt::Revert(reason)) => return self.revert(&candidate, reason).await,
            }
        }
        self.promote(&candidate).await
    }

    async fn blue_green(&mut self) -> Phase {
        let green = match self.spawn_full().await {
            Ok(c) => c,
            Err(failed) => return failed,
        };
        // One store moves all traffic; blue stays warm behind it until the bake passes.
        self.route_candidate(&green, 100);
        match self.bake(&green, 1, 1, 100).await {
            Ok(()) | Err(Interrupt::PromoteNow) => self.promote(&green).await,
            Err(Interrupt::Revert(reason)) => self.revert(&green, reason).await,
        }
    }

    async fn ab_test(&mut self) -> Phase {
        let b = match self.spawn_full().await {
            Ok(c) => c,
            Err(failed) => return failed,
        };
        let split = self.deploy.split;
        self.route_candidate(&b, split);
        let bake = std::mem::replace(&mut self.deploy.bake, self.deploy.duration);
        let ran = self.bake(&b, 1, 1, split).await;
        self.deploy.bake = bake;
        match ran {
            Ok(()) => {}
            Err(Interrupt::PromoteNow) => return self.promote(&b).await,
            Err(Interrupt::Revert(reason)) => return self.revert(&b, reason).await,
        }
        self.decide(&b, split).await
    }

    /// A/B after its duration: both arms serve, the gate still watches, until an operator
    /// names the winner.
    async fn decide(&mut self, b: &Arc<Pool>, split: u8) -> Phase {
        self.enter(Phase::AwaitingDecision { weight: split });
        let mut breaches = 0;
        let mut tick = tokio::time::interval(self.deploy.check_every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                command = self.commands.recv() => match command {
                    Some(Command::Promote(None)) => return self.promote(b).await,
                    Some(Command::Promote(Some(v))) if v == b.version => return self.promote(b).await,
                    Some(Command::Promote(Some(v))) => {
                        return self.revert(b, format!("A/B decision: version {v} stays")).await;
                    }
                    Some(Command::Rollback) | None => return self.revert(b, "rolled back by the operator".into()).await,
                    Some(_) => {}
                },
            }
            if let Verdict::Fail(reason) = gate::evaluate(b, self.stable.as_deref(), &self.shared.host, &self.deploy) {
                breaches += 1;
                if breaches >= self.deploy.consecutive_breaches {
                    return self.revert(b, format!("health gate: {reason}")).await;
                }
            } else {
                breaches = 0;
            }
        }
    }

    /// Replaces workers in batches: `max_unavailable` old ones out first, `max_surge +
    /// max_unavailable` new ones in, gate, then `max_surge` old ones out. Traffic follows
    /// the ready workers of each version.
    async fn rolling(&mut self) -> Phase {
        let n = self.model.workers;
        let (surge, unavailable) = (self.deploy.max_surge, self.deploy.max_unavailable);
        let batch = (surge + unavailable).max(1);
        self.enter(Phase::Spawning);
        let candidate = self.start_candidate(0);
        let steps = n.div_ceil(batch);
        let mut old_active = self.stable.as_ref().map_or(0, |s| s.active());
        let mut new_active = 0;
        let mut step = 0;
        while new_active < n {
            step += 1;
            let adding = batch.min(n - new_active);
            if let Some(stable) = self.stable.clone() {
                old_active = old_active.saturating_sub(unavailable.min(adding));
                self.shared.supervisor.scale(&stable, old_active).await;
            }
            new_active += adding;
            self.shared.supervisor.scale(&candidate, new_active).await;
            if let Err(reason) = self.wait_ready(&candidate, new_active).await {
                return self.revert_rolling(&candidate, reason).await;
            }
            let weight = self.rolling_weight(&candidate);
            self.route_candidate(&candidate, weight);
            match self.bake(&candidate, step, steps, weight).await {
                Ok(()) => {}
                Err(Interrupt::PromoteNow) => {
                    self.shared.supervisor.scale(&candidate, n).await;
                    if let Err(reason) = self.wait_ready(&candidate, n).await {
                        return self.revert_rolling(&candidate, reason).await;
                    }
                    break;
                }
                Err(Interrupt::Revert(reason)) => return self.revert_rolling(&candidate, reason).await,
            }
            if let Some(stable) = self.stable.clone() {
                // A stopping worker is taken out of rotation and drained first, so this
                // fails no request; traffic then follows the workers left.
                old_active = n.saturating_sub(new_active).min(old_active);
                self.shared.supervisor.scale(&stable, old_active).await;
                let weight = if old_active == 0 { 100 } else { self.rolling_weight(&candidate) };
                self.route_candidate(&candidate, weight);
            }
        }
        self.promote(&candidate).await
    }

    /// The candidate's share of ready workers, in percent.
    fn rolling_weight(&self, candidate: &Pool) -> u8 {
        let new = candidate.ready_workers();
        let old = self.stable.as_ref().map_or(0, |s| s.ready_workers());
        match new + old {
            0 => 0,
            total => (new * 100 / total) as u8,
        }
    }

    /// A failed rolling step: all traffic to the old version at once, then it regrows.
    async fn revert_rolling(&mut self, candidate: &Arc<Pool>, reason: String) -> Phase {
        let phase = self.revert(candidate, reason).await;
        if let Some(stable) = &self.stable {
            self.shared.supervisor.scale(stable, self.model.workers.max(stable.slots.len())).await;
        }
        phase
    }

    /// Stop the old version, then start the new one: downtime by design. Requests that
    /// arrive in the gap wait for the new version (up to the request timeout) instead of
    /// failing at once. If the new version fails, the old one is started again.
    async fn recreate(&mut self) -> Phase {
        self.enter(Phase::Draining);
        let new = self.start_candidate(0);
        self.route.swap(RoutingTable::stable(new.clone()));
        if let Some(old) = &self.stable {
            self.shared.supervisor.stop(old).await;
        }
        self.enter(Phase::Spawning);
        self.shared.supervisor.scale(&new, self.model.workers).await;
        let verdict = match self.wait_ready(&new, self.model.workers).await {
            Err(reason) => Err(reason),
            Ok(()) => match self.bake(&new, 1, 1, 100).await {
                Ok(()) | Err(Interrupt::PromoteNow) => Ok(()),
                Err(Interrupt::Revert(reason)) => Err(reason),
            },
        };
        match verdict {
            Ok(()) => Phase::Promoted,
            Err(reason) => self.recreate_back(&new, reason).await,
        }
    }

    /// Brings the old version back after a failed recreate.
    async fn recreate_back(&mut self, new: &Arc<Pool>, reason: String) -> Phase {
        let Some(old_version) = self.record.from else {
            self.route.swap(RoutingTable::unavailable(format!("version {} failed: {reason}", new.version)));
            self.shared.supervisor.stop(new).await;
            return Phase::Reverted { reason };
        };
        let old = self.shared.supervisor.start(&self.model, old_version);
        self.route.swap(RoutingTable::stable(old.clone()));
        self.enter(Phase::Draining);
        self.shared.supervisor.stop(new).await;
        self.stable = Some(old);
        Phase::Reverted { reason }
    }
}

/// What the gate saw of a candidate, for the history: requests, error rate, P95.
fn summary(pool: &Pool) -> String {
    let w = pool.window.snapshot();
    let p95 = w.p95.map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0));
    format!(
        "{} requests in the window, error rate {:.2}%, availability {:.2}%, P95 {p95}",
        w.requests,
        w.error_rate() * 100.0,
        w.availability() * 100.0
    )
}
