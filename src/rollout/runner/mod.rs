//! One rollout, run to its end: the strategies as sequences of routing-table swaps
//! between bakes, each bake watched by the health gate.
//!
//! Before any user request, a candidate must load (warm-up, golden examples), match the
//! live version's signature ([`super::signature`]) and, unless turned off, pass its
//! shadow phase: answering a mirrored copy of live traffic whose answers are compared
//! with stable's and thrown away ([`super::shadow`]).
//!
//! Every traffic switch is one store of the model's routing table; requests in flight
//! finish on the pool that took them, and a pool is drained before its workers stop
//! (the supervisor does both). The runner answers operator commands (rollback, promote,
//! pause, resume) at any point, reports each phase on its `watch` channel and in the
//! persisted record, and returns the record with its outcome.

mod judging;
mod preparing;
mod recording;
mod strategies;

use super::Shared;
use super::answers::Answers;
use super::evidence::{Caller, EvidenceLog};
use super::gate::{Baseline, Verdict};
use super::phase::{Phase, Progress};
use super::replay::Replayer;
use super::state::{self, Outcome, PhaseEntry, Record};
use crate::config::{DeployConfig, ModelConfig, OnInconclusive, Strategy};
use crate::router::ModelRoute;
use crate::router::mirror::{Mirror, ShadowCounts};
use crate::router::pool::Pool;
use crate::router::table::{Candidate, RoutingTable};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Answers to the same requests as stable's a rollout aims for, in drift minimums: about
/// 200 by default, on which a PSI of 0.5 between two versions is beyond chance.
const DRIFT_PAIRS: u64 = 4;

/// What an operator can ask of a running rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Back to the old version now, skipping whatever remains; who asked.
    Rollback(Caller),
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

/// What a bake holds the candidate at.
#[derive(Clone)]
enum Stage {
    /// The shadow phase: answering mirrored copies, no user traffic.
    Shadow(Arc<Mirror>),
    /// `weight` % of traffic beside stable, at step `step` of `steps`: the bake routes it.
    Step { step: usize, steps: usize, weight: u8 },
    /// All traffic, the old version gone (recreate): it is already the table's stable.
    Alone,
}

impl Stage {
    fn phase(&self) -> Phase {
        match self {
            Stage::Shadow(_) => Phase::Shadow,
            Stage::Step { step, steps, weight } => Phase::Gating { step: *step, steps: *steps, weight: *weight },
            Stage::Alone => Phase::Gating { step: 1, steps: 1, weight: 100 },
        }
    }

    fn held(&self, reason: &str) -> Phase {
        let reason = reason.to_string();
        match self {
            Stage::Shadow(_) => Phase::Paused { step: 0, steps: 0, weight: 0, reason },
            Stage::Step { step, steps, weight } => {
                Phase::Paused { step: *step, steps: *steps, weight: *weight, reason }
            }
            Stage::Alone => Phase::Paused { step: 1, steps: 1, weight: 100, reason },
        }
    }

    fn shadow_counts(&self) -> Option<ShadowCounts> {
        match self {
            Stage::Shadow(mirror) => Some(mirror.counts()),
            Stage::Step { .. } | Stage::Alone => None,
        }
    }
}

pub struct Runner {
    pub shared: Arc<Shared>,
    pub route: Arc<ModelRoute>,
    pub model: ModelConfig,
    pub deploy: DeployConfig,
    pub record: Record,
    pub stable: Option<Arc<Pool>>,
    /// The workers the model ran when the rollout started: the candidate is sized from it
    /// (and the autoscaler leaves the model alone until the rollout ends).
    pub size: usize,
    pub progress: watch::Sender<Progress>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub paused: bool,
    /// What the candidate's answers say beside stable's, once both are up.
    pub answers: Option<Arc<Answers>>,
    /// Replays recent live requests to the candidate when traffic is thin.
    pub replayer: Option<Replayer>,
    /// Stable's window as the gate compares with it.
    pub baseline: Baseline,
    /// Pools whose answers to users are watched (taps to remove at the end).
    pub watched: Vec<Arc<Pool>>,
    /// The candidate's pool, once started.
    pub candidate: Option<Arc<Pool>>,
    /// What the rollout leaves as evidence, saved as it goes.
    pub evidence: EvidenceLog,
    /// The operator whose rollback ended the rollout, if one did.
    pub ended_by: Option<Caller>,
    /// Since when the phase in progress holds, and for how long (none: until an operator
    /// decides), for followers' "time left".
    pub holding: Option<(Instant, Option<Duration>)>,
}

impl Runner {
    /// Runs the rollout to its end and returns its record, outcome set.
    /// Runs the rollout to its end; `finish` records the ended rollout (the history)
    /// before followers learn the end, so whoever sees it (`modeld deploy`) finds it in
    /// `modeld history` at once.
    pub async fn run(mut self, finish: impl FnOnce(Record)) {
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
        for pool in self.watched.drain(..) {
            pool.set_tap(None);
        }
        self.replayer = None;
        let outcome = match &end {
            Phase::Promoted => Outcome::Promoted,
            Phase::Reverted { .. } => Outcome::Reverted,
            _ => Outcome::Failed,
        };
        let reason = match &end {
            Phase::Reverted { reason } | Phase::Failed { reason } => Some(reason.clone()),
            _ => None,
        };
        let last = self.record_entry(end);
        self.record_end(outcome.name(), reason.clone());
        if outcome == Outcome::Failed && self.record.origin == "watch" {
            self.skip_latest(reason.as_deref().unwrap_or_default());
        }
        tracing::info!(model = %self.model.name, to = self.record.to, %outcome, ?reason, "rollout ended");
        self.record.outcome = Some(outcome);
        self.record.reason = reason;
        self.record.ended_at = Some(state::now());
        finish(self.record.clone());
        self.progress.send_modify(|p| *p = last);
    }

    /// A newest version the repository watch rolled out could not serve: it is skipped
    /// (the version before it serves on) until a newer one appears.
    fn skip_latest(&self, reason: &str) {
        let (model, version) = (&self.model.name, self.record.to);
        self.shared.metrics.latest_skipped.with_label_values(&[model, &version.to_string()]).inc();
        let serving = self.record.from.map_or("no version".into(), |v| format!("version {v}"));
        tracing::error!(model = %model, version, "skipping version {version}, the newest: {reason}; {serving} serves on");
    }

    /// Reports a new phase to followers, the metrics and the persisted record.
    fn enter(&mut self, phase: Phase) {
        self.enter_routed(phase, None);
    }

    /// Enters `phase`; with `route`, the candidate's weight changes in the same moment
    /// followers learn the phase, so no one reads a table and a phase that disagree.
    fn enter_routed(&mut self, phase: Phase, route: Option<(&Arc<Pool>, u8)>) {
        let progress = self.record_entry(phase);
        self.progress.send_modify(|p| {
            if let Some((candidate, weight)) = route {
                self.route_candidate(candidate, weight);
            }
            *p = progress;
        });
        self.shared.save_rollout(&self.model.name, &self.record);
    }

    /// Records `phase` in the evidence, the metrics and the record; the progress that
    /// tells followers of it, to send.
    fn record_entry(&mut self, phase: Phase) -> Progress {
        self.record_phase(&phase);
        self.shared.metrics.set_rollout_phase(&self.model.name, phase.name(), &Phase::NAMES);
        self.record.phases.push(PhaseEntry {
            at: state::now(),
            phase: phase.name().into(),
            weight: phase.weight(),
            note: Some(phase.describe()),
        });
        Progress {
            id: self.record.id,
            model: self.model.name.clone(),
            from: self.record.from,
            to: self.record.to,
            strategy: self.record.strategy.clone(),
            sources: self.answers.as_ref().map(|a| a.sources()),
            gate: None,
            phase,
        }
    }

    /// Moves the candidate's weight within the phase in progress (rolling, as old
    /// workers stop), table and phase together.
    fn reroute(&mut self, candidate: &Arc<Pool>, weight: u8) {
        self.progress.send_modify(|p| {
            self.route_candidate(candidate, weight);
            p.phase.set_weight(weight);
        });
    }

    /// Tells followers where the candidate's answers came from, when that changed.
    fn report_sources(&self) {
        let sources = self.answers.as_ref().map(|a| a.sources());
        self.progress.send_if_modified(|p| {
            let changed = p.sources != sources;
            p.sources = sources;
            changed
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

    /// Whether a command ends the rollout by reverting it (an operator's rollback, or the
    /// engine gone); the operator is remembered for the record.
    fn rolls_back(&mut self, command: &Option<Command>) -> bool {
        match command {
            Some(Command::Rollback(by)) => {
                self.ended_by = Some(by.clone());
                true
            }
            None => true,
            Some(_) => false,
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
        // What the answers said was kept when the phase ended (the shadow's counts with it).
        self.evidence.conclude(None, Some(format!("revert: {reason}")));
        self.note(format!("reverting after {}", self.summary(candidate, None)));
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
                false => {
                    let watch =
                        super::Watch { every: self.deploy.check_every, breaches: self.deploy.consecutive_breaches };
                    self.shared.retire_later(self.route.clone(), old, keep, watch)
                }
            }
        }
        Phase::Promoted
    }

    /// Holds the candidate at `stage` for `hold`, judging it every `check_every`, and
    /// answering commands. Ok once the hold ended with a pass.
    async fn bake(&mut self, candidate: &Arc<Pool>, stage: Stage, hold: Duration) -> Result<(), Interrupt> {
        let gating = stage.phase();
        let held = |reason: &str| stage.held(reason);
        let route = match &stage {
            Stage::Step { weight, .. } => Some((candidate, *weight)),
            Stage::Shadow(_) | Stage::Alone => None,
        };
        self.enter_routed(if self.paused { held("paused by the operator") } else { gating.clone() }, route);
        let started = Instant::now();
        self.holding = Some((started, Some(hold)));
        let mut breaches = 0;
        let mut inconclusive_since: Option<Instant> = None;
        if let Stage::Step { .. } | Stage::Alone = stage {
            self.watch_live(candidate);
        }
        self.aim_replays(candidate, &stage, hold);
        let mut tick = tokio::time::interval(self.deploy.check_every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                command = self.commands.recv() => match command {
                    ref c @ (Some(Command::Rollback(_)) | None) => {
                        self.rolls_back(c);
                        return Err(Interrupt::Revert("rolled back by the operator".into()));
                    }
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
            let counts = stage.shadow_counts();
            let verdict = self.judge(candidate, &stage);
            self.report_sources();
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
            if self.paused || started.elapsed() < hold {
                continue;
            }
            match verdict {
                Verdict::Pass => {
                    let what = if counts.is_some() { "shadow passed" } else { "gate passed" };
                    let summary = format!("{what}: {}", self.summary(candidate, counts));
                    self.conclude_phase(counts, summary.clone());
                    self.note(summary);
                    return Ok(());
                }
                Verdict::Inconclusive(why) => {
                    let since = *inconclusive_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.deploy.inconclusive_timeout {
                        match self.deploy.on_inconclusive {
                            OnInconclusive::Fail => {
                                return Err(Interrupt::Revert(format!(
                                    "no conclusive verdict within {:?}: {why}{}",
                                    self.deploy.inconclusive_timeout,
                                    self.replay_state()
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
}
