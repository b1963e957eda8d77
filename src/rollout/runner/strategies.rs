//! The strategies as sequences of routing-table swaps between bakes: canary, blue-green,
//! A/B (with its decision), rolling (worker by worker) and recreate (downtime by design).
//! Each returns the phase the rollout ended in.

use super::{Command, Interrupt, Runner, Stage};
use crate::rollout::gate::Verdict;
use crate::rollout::phase::Phase;
use crate::rollout::validation;
use crate::router::pool::Pool;
use crate::router::table::RoutingTable;
use std::sync::Arc;

impl Runner {
    /// An autoscaled model's candidate runs workers in proportion to its weight (of the
    /// count the model ran when the rollout started), growing before each step; all of
    /// them before promotion.
    pub(super) async fn canary(&mut self) -> Phase {
        let steps = self.deploy.steps.clone();
        let first = self.first_size(steps.first().copied().unwrap_or(100));
        let candidate = match self.prepare(first).await {
            Ok(c) => c,
            Err(ended) => return ended,
        };
        let bake = self.deploy.bake;
        for (i, weight) in steps.iter().enumerate() {
            if let Err(reason) = self.grow(&candidate, self.for_weight(*weight)).await {
                return self.revert(&candidate, reason).await;
            }
            let stage = Stage::Step { step: i + 1, steps: steps.len(), weight: *weight };
            match self.bake(&candidate, stage, bake).await {
                Ok(()) => {}
                Err(Interrupt::PromoteNow) => break,
                Err(Interrupt::Revert(reason)) => return self.revert(&candidate, reason).await,
            }
        }
        self.promote_full(&candidate).await
    }

    pub(super) async fn blue_green(&mut self) -> Phase {
        let green = match self.prepare(self.size).await {
            Ok(c) => c,
            Err(ended) => return ended,
        };
        // One store moves all traffic (as the bake begins); blue stays warm behind it
        // until the bake passes.
        match self.bake(&green, Stage::Step { step: 1, steps: 1, weight: 100 }, self.deploy.bake).await {
            Ok(()) | Err(Interrupt::PromoteNow) => self.promote(&green).await,
            Err(Interrupt::Revert(reason)) => self.revert(&green, reason).await,
        }
    }

    /// An autoscaled model's arm B runs workers in proportion to its split.
    pub(super) async fn ab_test(&mut self) -> Phase {
        let split = self.deploy.split;
        let b = match self.prepare(self.first_size(split)).await {
            Ok(c) => c,
            Err(ended) => return ended,
        };
        match self.bake(&b, Stage::Step { step: 1, steps: 1, weight: split }, self.deploy.duration).await {
            Ok(()) => {}
            Err(Interrupt::PromoteNow) => return self.promote_full(&b).await,
            Err(Interrupt::Revert(reason)) => return self.revert(&b, reason).await,
        }
        self.decide(&b, split).await
    }

    /// A/B after its duration: both arms serve, the gate still watches, until an operator
    /// names the winner.
    pub(super) async fn decide(&mut self, b: &Arc<Pool>, split: u8) -> Phase {
        self.enter(Phase::AwaitingDecision { weight: split });
        self.holding = Some((std::time::Instant::now(), None));
        let mut breaches = 0;
        let mut tick = tokio::time::interval(self.deploy.check_every);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                command = self.commands.recv() => match command {
                    Some(Command::Promote(None)) => return self.promote_full(b).await,
                    Some(Command::Promote(Some(v))) if v == b.version => return self.promote_full(b).await,
                    Some(Command::Promote(Some(v))) => {
                        return self.revert(b, format!("A/B decision: version {v} stays")).await;
                    }
                    ref c @ (Some(Command::Rollback(_)) | None) => {
                        self.rolls_back(c);
                        return self.revert(b, "rolled back by the operator".into()).await;
                    }
                    Some(_) => {}
                },
            }
            let stage = Stage::Step { step: 1, steps: 1, weight: split };
            let verdict = self.judge(b, &stage);
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
    pub(super) async fn rolling(&mut self) -> Phase {
        let n = self.size;
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
                    self.bake(&candidate, Stage::Step { step, steps, weight }, self.deploy.bake).await
                }
                interrupted => interrupted,
            };
            match held {
                Ok(()) => {}
                Err(Interrupt::PromoteNow) => {
                    // Every one of the candidate's workers runs (a promotion mid-rolling).
                    if let Err(reason) = self.grow(&candidate, self.size).await {
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
                self.reroute(&candidate, weight);
            }
        }
        self.promote(&candidate).await
    }

    /// The candidate's share of ready workers, in percent.
    pub(super) fn rolling_weight(&self, candidate: &Pool) -> u8 {
        let new = candidate.ready_workers();
        let old = self.stable.as_ref().map_or(0, |s| s.ready_workers());
        match new + old {
            0 => 0,
            total => (new * 100 / total) as u8,
        }
    }

    /// A failed rolling step: all traffic to the old version at once, then it regrows.
    pub(super) async fn revert_rolling(&mut self, candidate: &Arc<Pool>, reason: String) -> Phase {
        let phase = self.revert(candidate, reason).await;
        if let Some(stable) = &self.stable {
            self.shared.supervisor.scale(stable, self.size).await;
        }
        phase
    }

    /// Stop the old version, then start the new one: downtime by design. Requests that
    /// arrive in the gap wait for the new version (up to the request timeout) instead of
    /// failing at once. If the new version fails, the old one is started again.
    pub(super) async fn recreate(&mut self) -> Phase {
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
        self.shared.supervisor.scale(&new, self.size).await;
        let ready = self.wait_ready(&new, self.size).await;
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
            Ok(()) => match self.bake(&new, Stage::Alone, self.deploy.bake).await {
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
    pub(super) async fn recreate_back(&mut self, new: &Arc<Pool>, reason: String) -> Phase {
        let Some(old_version) = self.record.from else {
            self.route.swap(RoutingTable::unavailable(format!("version {} failed: {reason}", new.version)));
            self.shared.supervisor.stop(new).await;
            return Phase::Reverted { reason };
        };
        let old = self.shared.supervisor.start_with(&self.model, old_version, self.size);
        self.route.swap(RoutingTable::stable(old.clone()));
        self.enter(Phase::Draining);
        self.shared.supervisor.stop(new).await;
        self.stable = Some(old);
        Phase::Reverted { reason }
    }
}
