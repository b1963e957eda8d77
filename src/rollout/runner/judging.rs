//! How a runner judges its candidate beyond its window: the answers it reads beside
//! stable's (agreement, drift) and the replays that fill a quiet model's gaps, the gate's
//! verdict with stable's baseline, the validation set before any traffic, and the
//! summaries the history keeps.

use super::{DRIFT_PAIRS, Runner, Stage};
use crate::rollout::answers::Answers;
use crate::rollout::drift::Side;
use crate::rollout::gate::{self, Seen, Verdict};
use crate::rollout::phase::Phase;
use crate::rollout::replay::{Replayer, Replaying};
use crate::rollout::validation;
use crate::router::mirror::ShadowCounts;
use crate::router::pool::Pool;
use std::sync::Arc;
use std::time::Duration;

impl Runner {
    /// Starts reading the candidate's answers beside stable's (agreement, drift), and
    /// replaying recent requests to it when traffic is thin, once both versions are up.
    pub(super) fn start_judging(&mut self, candidate: &Arc<Pool>) {
        let Some(stable) = self.stable.clone() else { return };
        let answers = Answers::new(&stable, candidate, self.deploy.agreement_tolerance);
        if self.deploy.replay {
            self.replayer = Some(Replayer::start(Replaying {
                route: self.route.clone(),
                candidate: candidate.clone(),
                stable,
                answers: answers.clone(),
                metrics: self.shared.metrics.clone(),
                timeout: self.shared.server.get().request_timeout,
            }));
        }
        self.answers = Some(answers);
    }

    /// Watches both versions' answers to users (the candidate takes traffic from now on).
    pub(super) fn watch_live(&mut self, candidate: &Arc<Pool>) {
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
    pub(super) fn aim_replays(&self, candidate: &Pool, stage: &Stage, hold: Duration) {
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

    /// Why replays did not fill the gap, when they could not (said with an inconclusive
    /// end).
    pub(super) fn replay_state(&self) -> String {
        let (kept, _) = self.route.sample.size();
        match (&self.replayer, self.deploy.replay) {
            (_, false) => " (replay is off for this model)".into(),
            (Some(r), true) if r.exhausted() => {
                format!(" (every one of the {kept} requests in the model's sample was replayed)")
            }
            (None, true) => " (no live version to replay requests against)".into(),
            (Some(_), true) => String::new(),
        }
    }

    /// The gate's verdict on the candidate now, kept in the evidence and shown to
    /// followers with the checks it was drawn from.
    pub(super) fn judge(&mut self, candidate: &Pool, stage: &Stage) -> Verdict {
        let baseline = self.stable.as_deref().and_then(|s| self.baseline.read(s));
        let seen = Seen { shadow: stage.shadow_counts(), answers: self.answers.as_deref(), baseline };
        let judgement = gate::evaluate(candidate, &self.shared.host, &self.deploy, seen);
        self.record_evaluation(candidate, stage, &judgement);
        judgement.verdict
    }

    /// What the gate saw of a candidate, for the history: its window, in the shadow phase
    /// what was mirrored, and what its answers said beside stable's (where they came from,
    /// agreement on replays, the largest drift — shown even when drift is not judged).
    pub(super) fn summary(&self, pool: &Pool, shadow: Option<ShadowCounts>) -> String {
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

    /// Runs the candidate's validation set, when it has one, on it and on the live version:
    /// Err (the rollout fails, before any traffic) when it scores worse than allowed, or
    /// the set cannot be read. The result goes into the record.
    pub(super) async fn validate(&mut self, candidate: &Arc<Pool>) -> Result<(), String> {
        let Some(set) = self.validation_set()? else { return Ok(()) };
        self.enter(Phase::Validating);
        let timeout = self.shared.server.get().request_timeout;
        let mine = self.unless_rolled_back(validation::score(&set, candidate, timeout)).await??;
        let live = self.score_live(&set).await?;
        self.judge_validation(&set, mine, live)
    }

    /// The candidate's validation set, if it has one (Err: it cannot be read).
    pub(super) fn validation_set(&self) -> Result<Option<validation::Set>, String> {
        let dir = crate::repo::ModelDir::new(&self.model.dir);
        let manifest = dir.manifest(self.record.to).map_err(|e| e.to_string())?;
        manifest.validation_file(&dir.version_dir(self.record.to)).map(|path| validation::read(&path)).transpose()
    }

    /// The live version's score on the set (None without one, or when it cannot answer it:
    /// noted).
    pub(super) async fn score_live(&mut self, set: &validation::Set) -> Result<Option<validation::Score>, String> {
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
    pub(super) fn judge_validation(
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
    pub(super) async fn unless_rolled_back<T>(
        &mut self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, String> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => return Ok(done),
                command = self.commands.recv() => {
                    if self.rolls_back(&command) {
                        return Err("rolled back by the operator before it took traffic".into());
                    }
                }
            }
        }
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
