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

use super::Shared;
use super::answers::Answers;
use super::drift::Side;
use super::gate::{self, Baseline, Seen, Verdict};
use super::phase::{Phase, Progress};
use super::replay::Replayer;
use super::state::{self, Outcome, PhaseEntry, Record};
use super::{shadow, signature, validation};
use crate::config::{DeployConfig, ModelConfig, OnInconclusive, Strategy};
use crate::router::ModelRoute;
use crate::router::mirror::{Mirror, ShadowCounts};
use crate::router::pool::{Phase as PoolPhase, Pool};
use crate::router::table::{Candidate, RoutingTable};
use crate::wire::ModelInfo;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Answers to the same requests as stable's a rollout aims for, in drift minimums: about
/// 200 by default, on which a PSI of 0.5 between two versions is beyond chance.
const DRIFT_PAIRS: u64 = 4;

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

/// What a bake holds the candidate at.
#[derive(Clone)]
enum Stage {
    /// The shadow phase: answering mirrored copies, no user traffic.
    Shadow(Arc<Mirror>),
    /// `weight` % of traffic, at step `step` of `steps`.
    Step { step: usize, steps: usize, weight: u8 },
}

impl Stage {
    fn phase(&self) -> Phase {
        match self {
            Stage::Shadow(_) => Phase::Shadow,
            Stage::Step { step, steps, weight } => Phase::Gating { step: *step, steps: *steps, weight: *weight },
        }
    }

    fn held(&self, reason: &str) -> Phase {
        let reason = reason.to_string();
        match self {
            Stage::Shadow(_) => Phase::Paused { step: 0, steps: 0, weight: 0, reason },
            Stage::Step { step, steps, weight } => {
                Phase::Paused { step: *step, steps: *steps, weight: *weight, reason }
            }
        }
    }

    fn shadow_counts(&self) -> Option<ShadowCounts> {
        match self {
            Stage::Shadow(mirror) => Some(mirror.counts()),
            Stage::Step { .. } => None,
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
        self.enter(end);
        tracing::info!(model = %self.model.name, to = self.record.to, %outcome, ?reason, "rollout ended");
        self.record.outcome = Some(outcome);
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
            sources: self.answers.as_ref().map(|a| a.sources()),
            phase,
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

    /// Starts reading the candidate's answers beside stable's (agreement, drift), and
    /// replaying recent requests to it when traffic is thin, once both versions are up.
    fn start_judging(&mut self, candidate: &Arc<Pool>) {
        let Some(stable) = self.stable.clone() else { return };
        let answers = Answers::new(&stable, candidate, self.deploy.agreement_tolerance);
        if self.deploy.replay {
            let timeout = self.shared.server.get().request_timeout;
            let (route, metrics) = (self.route.clone(), self.shared.metrics.clone());
            self.replayer = Some(Replayer::start(route, candidate.clone(), stable, answers.clone(), metrics, timeout));
        }
        self.answers = Some(answers);
    }

    /// Watches both versions' answers to users (the candidate takes traffic from now on).
    fn watch_live(&mut self, candidate: &Arc<Pool>) {
        let Some(answers) = self.answers.clone() else { return };
        if !self.watched.iter().any(|p| Arc::ptr_eq(p, candidate)) {
            answers.watch(candidate, Side::Candidate);
            self.watched.push(candidate.clone());
        }
        if let Some(stable) = self.stable.clone().filter(|s| !self.watched.iter().any(|p| Arc::ptr_eq(p, s))) {
            answers.watch(&stable, Side::Stable);
            self.watched.push(stable);
        }
    }

    /// What the candidate should have answered in a stage: enough requests in its window
    /// to judge its rates and drift (in the shadow phase, the copies asked for), and over
    /// the rollout [`DRIFT_PAIRS`] times the drift minimum of answers to requests stable
    /// answered too, which judge drift on a quiet model as surely as a busy one's traffic.
    /// Replays top up what traffic does not bring, the window's a fifth over as it slides.
    fn aim_replays(&self, candidate: &Pool, stage: &Stage, hold: Duration) {
        let Some(replayer) = &self.replayer else { return };
        let mut needed = candidate.health().min_samples;
        let mut pairs = 0;
        if self.deploy.max_output_drift > 0.0 {
            needed = needed.max(self.deploy.drift_min_samples);
            pairs = self.deploy.drift_min_samples * DRIFT_PAIRS;
        }
        if let Stage::Shadow(_) = stage {
            needed = needed.max(self.deploy.shadow_requests);
        }
        replayer.aim(needed + needed / 5, pairs, hold);
    }

    /// The gate's verdict on the candidate now.
    fn judge(&mut self, candidate: &Pool, stage: &Stage) -> Verdict {
        let baseline = self.stable.as_deref().and_then(|s| self.baseline.read(s));
        let seen = Seen { shadow: stage.shadow_counts(), answers: self.answers.as_deref(), baseline };
        gate::evaluate(candidate, &self.shared.host, &self.deploy, seen)
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
        let deadline =
            Instant::now() + self.model.device.start_timeout(self.shared.server.get().worker_start_timeout) * 2;
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
        self.enter(if self.paused { held("paused by the operator") } else { gating.clone() });
        let started = Instant::now();
        let mut breaches = 0;
        let mut inconclusive_since: Option<Instant> = None;
        if let Stage::Step { .. } = stage {
            self.watch_live(candidate);
        }
        self.aim_replays(candidate, &stage, hold);
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
                    self.note(format!("{what}: {}", self.summary(candidate, counts)));
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

    /// Starts a full candidate pool and checks its signature; Err ends the rollout as
    /// failed, before any traffic.
    async fn spawn_full(&mut self) -> Result<Arc<Pool>, Phase> {
        self.enter(Phase::Spawning);
        let candidate = self.start_candidate(self.model.workers);
        let ready = self.wait_ready(&candidate, self.model.workers).await;
        match ready.and_then(|()| self.check_signature(candidate.info().as_deref())) {
            Ok(()) => Ok(candidate),
            Err(reason) => {
                self.shared.supervisor.stop(&candidate).await;
                Err(Phase::Failed { reason })
            }
        }
    }

    /// Runs the candidate's validation set, when it has one, on it and on the live version:
    /// Err (the rollout fails, before any traffic) when it scores worse than allowed, or
    /// the set cannot be read. The result goes into the record.
    async fn validate(&mut self, candidate: &Arc<Pool>) -> Result<(), String> {
        let Some(set) = self.validation_set()? else { return Ok(()) };
        self.enter(Phase::Validating);
        let timeout = self.shared.server.get().request_timeout;
        let mine = self.unless_rolled_back(validation::score(&set, candidate, timeout)).await??;
        let live = self.score_live(&set).await?;
        self.judge_validation(&set, mine, live)
    }

    /// The candidate's validation set, if it has one (Err: it cannot be read).
    fn validation_set(&self) -> Result<Option<validation::Set>, String> {
        let dir = crate::repo::ModelDir::new(&self.model.dir);
        let manifest = dir.manifest(self.record.to).map_err(|e| e.to_string())?;
        manifest.validation_file(&dir.version_dir(self.record.to)).map(|path| validation::read(&path)).transpose()
    }

    /// The live version's score on the set (None without one, or when it cannot answer it:
    /// noted).
    async fn score_live(&mut self, set: &validation::Set) -> Result<Option<validation::Score>, String> {
        let Some(stable) = self.stable.clone() else { return Ok(None) };
        let timeout = self.shared.server.get().request_timeout;
        match self.unless_rolled_back(validation::score(set, &stable, timeout)).await? {
            Ok(score) => Ok(Some(score)),
            Err(e) => {
                self.note(format!("the live version could not answer the validation set: {e}"));
                Ok(None)
            }
        }
    }

    /// Judges the scores, notes and keeps the result; Err when the candidate is refused.
    fn judge_validation(
        &mut self,
        set: &validation::Set,
        mine: validation::Score,
        live: Option<validation::Score>,
    ) -> Result<(), String> {
        let result = validation::judge(set, mine, live, &self.deploy);
        self.note(format!("validation set {}: {}", result.path, result.verdict));
        let passed = result.passed;
        let refusal = format!("validation set {}: {}", result.path, result.verdict);
        self.record.validation = Some(result);
        self.shared.save_rollout(&self.model.name, &self.record);
        if passed { Ok(()) } else { Err(refusal) }
    }

    /// Runs `work` unless the operator rolls back first (Err then).
    async fn unless_rolled_back<T>(&mut self, work: impl std::future::Future<Output = T>) -> Result<T, String> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return Ok(done),
                command = self.commands.recv() => {
                    if let Some(Command::Rollback) | None = command {
                        return Err("rolled back by the operator before it took traffic".into());
                    }
                }
            }
        }
    }

    /// Refuses a candidate whose inputs or outputs would break the live version's clients,
    /// unless the operator allowed it; a difference that breaks nothing is noted.
    fn check_signature(&mut self, candidate: Option<&ModelInfo>) -> Result<(), String> {
        let live = self.stable.as_ref().and_then(|s| s.info());
        let (Some(live), Some(candidate)) = (live, candidate) else { return Ok(()) };
        let differences = signature::compare(&live, candidate);
        if differences.is_empty() {
            return Ok(());
        }
        let from = live_version(&self.record);
        match signature::breaking(&differences) {
            Some(breaking) if !self.deploy.allow_signature_change => Err(format!(
                "signature differs from {from}: {breaking} (deploy with --allow-signature-change, or set \
                 allow_signature_change = true in [model.deploy], if the change is meant)"
            )),
            _ => {
                let all: Vec<String> = differences.iter().map(|d| d.text.clone()).collect();
                self.note(format!("signature differs from {from}, allowed: {}", all.join("; ")));
                Ok(())
            }
        }
    }

    /// The shadow phase, when configured and there is a stable version to mirror: the
    /// candidate answers copies of live traffic until the gate passes on them. Ok when it
    /// passed or was skipped.
    async fn shadow(&mut self, candidate: &Arc<Pool>) -> Result<(), Interrupt> {
        // Nothing to mirror without a stable version (its answers are what the shadow
        // judges against), and then no answers are read either.
        let Some(answers) = self.answers.clone().filter(|_| !self.deploy.shadow.is_zero()) else { return Ok(()) };
        let timeout = self.shared.server.get().request_timeout;
        let shadow = shadow::start(candidate, answers, self.shared.metrics.clone(), timeout);
        self.set_shadow(Some(shadow.mirror.clone()));
        let passed = self.bake(candidate, Stage::Shadow(shadow.mirror.clone()), self.deploy.shadow).await;
        self.set_shadow(None);
        if passed.is_err() {
            self.note(format!("shadow ended: {}", self.summary(candidate, Some(shadow.mirror.counts()))));
        }
        passed
    }

    /// Starts or stops mirroring live traffic, the rest of the routing unchanged.
    fn set_shadow(&self, mirror: Option<Arc<Mirror>>) {
        self.route.swap(RoutingTable { shadow: mirror, ..RoutingTable::clone(&self.route.table()) });
    }

    /// Spawns a full candidate and runs its shadow phase: Ok(candidate) to go on, or how
    /// the rollout ended (failed before traffic, reverted or promoted by the operator).
    async fn prepare(&mut self) -> Result<Arc<Pool>, Phase> {
        let candidate = self.spawn_full().await?;
        if let Err(reason) = self.validate(&candidate).await {
            self.shared.supervisor.stop(&candidate).await;
            return Err(Phase::Failed { reason });
        }
        self.start_judging(&candidate);
        match self.shadow(&candidate).await {
            Ok(()) => Ok(candidate),
            Err(Interrupt::PromoteNow) => Err(self.promote(&candidate).await),
            Err(Interrupt::Revert(reason)) => Err(self.revert(&candidate, reason).await),
        }
    }

    async fn canary(&mut self) -> Phase {
        let candidate = match self.prepare().await {
            Ok(c) => c,
            Err(ended) => return ended,
        };
        let steps = self.deploy.steps.clone();
        let bake = self.deploy.bake;
        for (i, weight) in steps.iter().enumerate() {
            self.route_candidate(&candidate, *weight);
            let stage = Stage::Step { step: i + 1, steps: steps.len(), weight: *weight };
            match self.bake(&candidate, stage, bake).await {
                Ok(()) => {}
                Err(Interrupt::PromoteNow) => break,
                Err(Interrupt::Revert(reason)) => return self.revert(&candidate, reason).await,
            }
        }
        self.promote(&candidate).await
    }

    async fn blue_green(&mut self) -> Phase {
        let green = match self.prepare().await {
            Ok(c) => c,
            Err(ended) => return ended,
        };
        // One store moves all traffic; blue stays warm behind it until the bake passes.
        self.route_candidate(&green, 100);
        match self.bake(&green, Stage::Step { step: 1, steps: 1, weight: 100 }, self.deploy.bake).await {
            Ok(()) | Err(Interrupt::PromoteNow) => self.promote(&green).await,
            Err(Interrupt::Revert(reason)) => self.revert(&green, reason).await,
        }
    }

    async fn ab_test(&mut self) -> Phase {
        let b = match self.prepare().await {
            Ok(c) => c,
            Err(ended) => return ended,
        };
        let split = self.deploy.split;
        self.route_candidate(&b, split);
        match self.bake(&b, Stage::Step { step: 1, steps: 1, weight: split }, self.deploy.duration).await {
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
            let verdict = self.judge(b, &Stage::Step { step: 1, steps: 1, weight: split });
            if let Verdict::Fail(reason) = verdict {
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
            if step == 1
                && let Err(reason) = self.check_signature(candidate.info().as_deref())
            {
                // No request reached it: the rollout failed rather than reverted.
                self.revert_rolling(&candidate, reason.clone()).await;
                return Phase::Failed { reason };
            }
            if step == 1 {
                if let Err(reason) = self.validate(&candidate).await {
                    self.revert_rolling(&candidate, reason.clone()).await;
                    return Phase::Failed { reason };
                }
                self.start_judging(&candidate);
            }
            // The first workers up answer the shadow's copies before any user request.
            let shadowed = if step == 1 { self.shadow(&candidate).await } else { Ok(()) };
            let held = match shadowed {
                Ok(()) => {
                    let weight = self.rolling_weight(&candidate);
                    self.route_candidate(&candidate, weight);
                    self.bake(&candidate, Stage::Step { step, steps, weight }, self.deploy.bake).await
                }
                interrupted => interrupted,
            };
            match held {
                Ok(()) => {}
                Err(Interrupt::PromoteNow) => {
                    if let Err(reason) = self.scale_to_all(&candidate).await {
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

    /// Runs every one of the candidate's workers (a promotion mid-rolling).
    async fn scale_to_all(&mut self, candidate: &Arc<Pool>) -> Result<(), String> {
        self.shared.supervisor.scale(candidate, self.model.workers).await;
        self.wait_ready(candidate, self.model.workers).await
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
        // The old version stops first, so the new one's signature (and that it loads at
        // all) is read beforehand, in a short-lived process: a refusal costs no downtime.
        if self.stable.is_some() {
            self.enter(Phase::Spawning);
            let described = self.shared.supervisor.describe(&self.model, self.record.to).await;
            let checked = described
                .map_err(|e| format!("version {} cannot load: {e}", self.record.to))
                .and_then(|info| self.check_signature(Some(&info)));
            if let Err(reason) = checked {
                return Phase::Failed { reason };
            }
        }
        // The live version answers the validation set before it stops; the new one after it
        // is up, before its bake.
        let set = match self.validation_set() {
            Ok(set) => set,
            Err(reason) => return Phase::Failed { reason },
        };
        let live = match &set {
            Some(set) => match self.score_live(set).await {
                Ok(live) => live,
                Err(reason) => return Phase::Failed { reason },
            },
            None => None,
        };
        self.enter(Phase::Draining);
        let new = self.start_candidate(0);
        self.route.swap(RoutingTable::stable(new.clone()));
        if let Some(old) = &self.stable {
            self.shared.supervisor.stop(old).await;
        }
        self.enter(Phase::Spawning);
        self.shared.supervisor.scale(&new, self.model.workers).await;
        let ready = self.wait_ready(&new, self.model.workers).await;
        let validated = match (ready, set) {
            (Ok(()), Some(set)) => {
                let timeout = self.shared.server.get().request_timeout;
                match validation::score(&set, &new, timeout).await {
                    Ok(mine) => self.judge_validation(&set, mine, live),
                    Err(reason) => Err(reason),
                }
            }
            (ready, _) => ready,
        };
        let verdict = match validated {
            Err(reason) => Err(reason),
            Ok(()) => match self.bake(&new, Stage::Step { step: 1, steps: 1, weight: 100 }, self.deploy.bake).await {
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

impl Runner {
    /// What the gate saw of a candidate, for the history: its window, in the shadow phase
    /// what was mirrored, and what its answers said beside stable's (where they came from,
    /// agreement on replays, the largest drift — shown even when drift is not judged).
    fn summary(&self, pool: &Pool, shadow: Option<ShadowCounts>) -> String {
        let mut text = window_summary(pool, shadow);
        let Some(answers) = &self.answers else { return text };
        let s = answers.sources();
        text.push_str(&format!("; answers: {} live, {} mirrored, {} replayed", s.live, s.mirrored, s.replayed));
        let pairs = answers.replay_pairs();
        if let Some(agreement) = pairs.agreement() {
            text.push_str(&format!(" (replays agree {:.1}% of {})", agreement * 100.0, pairs.compared));
        }
        let drift = answers.drift_now(self.deploy.drift_min_samples as usize);
        match drift.largest() {
            Some(f) => text.push_str(&format!(
                "; largest drift: PSI {:.3} on {} ({} and {} answers{})",
                f.psi,
                f.feature,
                f.stable_samples,
                f.candidate_samples,
                if self.deploy.max_output_drift > 0.0 { "" } else { ", not judged" }
            )),
            None => text.push_str(&format!("; drift: {} answers of each version so far", drift.samples)),
        }
        text
    }
}

/// A candidate's window for the history: requests, error rate, refusals, P95, and in
/// the shadow phase what was mirrored and how much agreed.
fn window_summary(pool: &Pool, shadow: Option<ShadowCounts>) -> String {
    let w = pool.window.snapshot();
    let p95 = w.p95.map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0));
    let mut text = format!(
        "{} requests in the window, error rate {:.2}%, refused as invalid {:.2}%, availability {:.2}%, P95 {p95}",
        w.requests,
        w.error_rate() * 100.0,
        w.refusal_rate() * 100.0,
        w.availability() * 100.0
    );
    if let Some(c) = shadow {
        let agreement = c.agreement().map_or("-".into(), |a| format!("{:.1}%", a * 100.0));
        text.push_str(&format!(
            "; shadow: {} mirrored ({} dropped), {} answered, {} compared, agreement {agreement}",
            c.mirrored, c.dropped, c.answered, c.compared
        ));
    }
    text
}

/// "v3", or "the live version" when none was live.
fn live_version(record: &Record) -> String {
    record.from.map_or("the live version".into(), |v| format!("v{v}"))
}
