//! Getting a candidate ready for traffic: its workers started and ready, its signature
//! held against the live version's, its shadow phase on mirrored copies of live traffic.

use super::{Interrupt, Runner, Stage};
use crate::rollout::phase::Phase;
use crate::rollout::shadow;
use crate::rollout::signature;
use crate::rollout::state::Record;
use crate::router::mirror::Mirror;
use crate::router::pool::{Phase as PoolPhase, Pool};
use crate::router::table::RoutingTable;
use crate::wire::ModelInfo;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Runner {
    pub(super) fn start_candidate(&mut self, active: usize) -> Arc<Pool> {
        let pool = self.shared.supervisor.start_with(&self.model, self.record.to, active);
        self.candidate = Some(pool.clone());
        pool
    }

    /// Waits until `want` of the candidate's workers are ready. Err: why it cannot be.
    pub(super) async fn wait_ready(&mut self, pool: &Arc<Pool>, want: usize) -> Result<(), String> {
        // Bounded once: the worker's own handshake gives up after the same time.
        let timeout = self.model.device.start_timeout(self.shared.server.get().worker_start_timeout);
        let deadline = Instant::now() + timeout;
        loop {
            if let PoolPhase::Failed { reason } = &*pool.phase() {
                return Err(format!("version {} failed to start: {reason}", pool.version));
            }
            if pool.ready_workers() >= want {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "version {} did not get {want} workers ready within the start timeout ({timeout:?})",
                    pool.version
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                command = self.commands.recv() => {
                    if self.rolls_back(&command) {
                        return Err("rolled back by the operator before it took traffic".into());
                    }
                }
            }
        }
    }

    /// Starts a candidate pool of `workers` and checks its signature; Err ends the rollout
    /// as failed, before any traffic.
    pub(super) async fn spawn(&mut self, workers: usize) -> Result<Arc<Pool>, Phase> {
        self.enter(Phase::Spawning);
        let candidate = self.start_candidate(workers);
        let ready = self.wait_ready(&candidate, workers).await;
        if ready.is_ok() {
            self.record_candidate(&candidate);
        }
        match ready.and_then(|()| self.check_signature(candidate.info().as_deref())) {
            Ok(()) => Ok(candidate),
            Err(reason) => {
                self.shared.supervisor.stop(&candidate).await;
                Err(Phase::Failed { reason })
            }
        }
    }

    /// Workers a candidate taking `weight` percent of the traffic runs: for an autoscaled
    /// model its share of the count the model ran at the rollout's start (at least one); a
    /// fixed count's candidate runs all of it, as it always has.
    pub(super) fn for_weight(&self, weight: u8) -> usize {
        match self.model.workers.autoscaled() {
            true => (self.size * usize::from(weight)).div_ceil(100).max(1),
            false => self.size,
        }
    }

    /// The candidate's first count, for a first share of `weight`: all of it while a
    /// shadow phase runs, which answers a copy of every live request.
    pub(super) fn first_size(&self, weight: u8) -> usize {
        match self.deploy.shadows(self.stable.is_some()) {
            true => self.size,
            false => self.for_weight(weight),
        }
    }

    /// Grows the candidate to `workers` (never shrinks it) and waits until they are ready.
    pub(super) async fn grow(&mut self, candidate: &Arc<Pool>, workers: usize) -> Result<(), String> {
        if candidate.active() >= workers {
            return Ok(());
        }
        self.shared.supervisor.scale(candidate, workers).await;
        self.wait_ready(candidate, workers).await
    }

    /// Promotes the candidate once it runs as many workers as stable did: a canary or an
    /// A/B arm sized by its weight grows first (reverted if it cannot).
    pub(super) async fn promote_full(&mut self, candidate: &Arc<Pool>) -> Phase {
        match self.grow(candidate, self.size).await {
            Ok(()) => self.promote(candidate).await,
            Err(reason) => self.revert(candidate, reason).await,
        }
    }

    /// Refuses a candidate whose inputs or outputs would break the live version's clients,
    /// unless the operator allowed it; a difference that breaks nothing is noted.
    pub(super) fn check_signature(&mut self, candidate: Option<&ModelInfo>) -> Result<(), String> {
        let live = self.stable.as_ref().and_then(|s| s.info());
        let (Some(live), Some(candidate)) = (live, candidate) else { return Ok(()) };
        let differences = signature::compare(&live, candidate);
        let from = live_version(&self.record);
        if differences.is_empty() {
            self.evidence.evidence.signature = Some(format!("the same inputs and outputs as {from}"));
            return Ok(());
        }
        let checked = match signature::breaking(&differences) {
            Some(breaking) if !self.deploy.allow_signature_change => Err(format!(
                "signature differs from {from}: {breaking} (deploy with --allow-signature-change, or set \
                 allow_signature_change = true in [model.deploy], if the change is meant)"
            )),
            _ => {
                let all: Vec<String> = differences.iter().map(|d| d.text.clone()).collect();
                self.note(format!("signature differs from {from}, allowed: {}", all.join("; ")));
                Ok(())
            }
        };
        let all: Vec<String> = differences.iter().map(|d| d.text.clone()).collect();
        self.evidence.evidence.signature = Some(match &checked {
            Ok(()) => format!("differs from {from}, allowed: {}", all.join("; ")),
            Err(_) => format!("differs from {from}, refused: {}", all.join("; ")),
        });
        checked
    }

    /// The shadow phase, when configured and there is a stable version to mirror: the
    /// candidate answers copies of live traffic until the gate passes on them. Ok when it
    /// passed or was skipped.
    pub(super) async fn shadow(&mut self, candidate: &Arc<Pool>) -> Result<(), Interrupt> {
        // Nothing to mirror without a stable version (its answers are what the shadow
        // judges against), and then no answers are read either.
        let Some(answers) = self.answers.clone().filter(|_| self.deploy.shadows(true)) else { return Ok(()) };
        let timeout = self.shared.server.get().request_timeout;
        let shadow = shadow::start(candidate, answers, self.shared.metrics.clone(), timeout);
        self.set_shadow(Some(shadow.mirror.clone()));
        let passed = self.bake(candidate, Stage::Shadow(shadow.mirror.clone()), self.deploy.shadow).await;
        self.set_shadow(None);
        if passed.is_err() {
            let counts = shadow.mirror.counts();
            let summary = format!("shadow ended: {}", self.summary(candidate, Some(counts)));
            self.conclude_phase(Some(counts), summary.clone());
            self.note(summary);
        }
        passed
    }

    /// Starts or stops mirroring live traffic, the rest of the routing unchanged.
    pub(super) fn set_shadow(&self, mirror: Option<Arc<Mirror>>) {
        self.route.swap(RoutingTable { shadow: mirror, ..RoutingTable::clone(&self.route.table()) });
    }

    /// Spawns a candidate of `workers` and runs its shadow phase: Ok(candidate) to go on,
    /// or how the rollout ended (failed before traffic, reverted or promoted by the
    /// operator).
    pub(super) async fn prepare(&mut self, workers: usize) -> Result<Arc<Pool>, Phase> {
        let candidate = self.spawn(workers).await?;
        if let Err(reason) = self.validate(&candidate).await {
            self.shared.supervisor.stop(&candidate).await;
            return Err(Phase::Failed { reason });
        }
        self.start_judging(&candidate);
        match self.shadow(&candidate).await {
            Ok(()) => Ok(candidate),
            Err(Interrupt::PromoteNow) => Err(self.promote_full(&candidate).await),
            Err(Interrupt::Revert(reason)) => Err(self.revert(&candidate, reason).await),
        }
    }
}

/// "v3", or "the live version" when none was live.
fn live_version(record: &Record) -> String {
    record.from.map_or("the live version".into(), |v| format!("v{v}"))
}
