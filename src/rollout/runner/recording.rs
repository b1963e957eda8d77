//! What a runner writes into its rollout's evidence ([`crate::rollout::evidence`]): each
//! phase under the name `modeld plan` gives it with the time the plan holds it, both
//! versions' windows when it ends, every gate evaluation (thinned), the candidate's
//! engine once its workers report it, and how the rollout ended.

use super::{Runner, Stage};
use crate::config::Strategy;
use crate::rollout::evidence::{AnswerFigures, Ending, Evaluation, Figures, PhaseRecord, verdict_words};
use crate::rollout::gate::Judgement;
use crate::rollout::phase::{GateCheck, GateView, Phase};
use crate::rollout::state;
use crate::router::mirror::ShadowCounts;
use crate::router::pool::Pool;
use std::time::Duration;

impl Runner {
    /// The phase's name as `modeld plan` gives it, and how long the plan holds it.
    fn planned(&self, phase: &Phase) -> (String, Option<Duration>) {
        let d = &self.deploy;
        match phase {
            Phase::Spawning => ("spawn".into(), None),
            Phase::Validating => ("validate".into(), None),
            Phase::Shadow => ("shadow".into(), Some(d.shadow)),
            Phase::Gating { step, steps, .. } => match d.strategy {
                Strategy::Canary | Strategy::Rolling => (format!("step {step}/{steps}"), Some(d.bake)),
                Strategy::BlueGreen | Strategy::Recreate => ("bake".into(), Some(d.bake)),
                Strategy::AbTest => ("test".into(), Some(d.duration)),
            },
            Phase::Paused { step: 0, .. } => ("shadow (paused)".into(), None),
            Phase::Paused { step, steps, .. } => (format!("step {step}/{steps} (paused)"), None),
            Phase::AwaitingDecision { .. } => ("decide".into(), None),
            Phase::Draining => ("drain".into(), None),
            Phase::Promoted | Phase::Reverted { .. } | Phase::Failed { .. } => ("end".into(), None),
        }
    }

    /// Closes the phase in progress with both versions' windows and opens `phase` (none
    /// for an end).
    pub(super) fn record_phase(&mut self, phase: &Phase) {
        let next = (!phase.is_done()).then(|| {
            let (name, hold) = self.planned(phase);
            PhaseRecord {
                name,
                weight: phase.weight(),
                planned_seconds: hold.map(|h| h.as_secs_f64()),
                started_at: state::now(),
                ended_at: None,
                candidate: None,
                stable: None,
                answers: None,
                verdict: None,
            }
        });
        let (candidate, stable) = (self.candidate.clone(), self.stable.clone());
        self.evidence.phase(next, candidate.as_deref(), stable.as_deref());
    }

    /// What the candidate's answers said beside stable's, now.
    pub(super) fn answer_figures(&self, shadow: Option<ShadowCounts>) -> Option<AnswerFigures> {
        let answers = self.answers.as_deref()?;
        Some(AnswerFigures::of(answers, shadow, &self.deploy))
    }

    /// Keeps one gate evaluation with the figures it judged, and shows it to followers.
    pub(super) fn record_evaluation(&mut self, candidate: &Pool, stage: &Stage, judgement: &Judgement) {
        let (word, reason) = verdict_words(&judgement.verdict);
        let phase = self.evidence.evidence.phases.last().map_or_else(String::new, |p| p.name.clone());
        let evaluation = Evaluation {
            at: state::now(),
            phase,
            verdict: word,
            reason,
            candidate: Figures::of(candidate),
            stable: self.stable.as_deref().map(Figures::of),
            answers: self.answer_figures(stage.shadow_counts()),
        };
        let view = self.gate_view(&evaluation, judgement.checks.clone());
        self.progress.send_modify(|p| p.gate = Some(view));
        self.evidence.evaluated(evaluation);
    }

    /// The evaluation as followers show it: each check's value beside its threshold, and
    /// how long the phase holds and has held.
    fn gate_view(&self, e: &Evaluation, checks: Vec<GateCheck>) -> GateView {
        let (hold, held) = match self.holding {
            Some((since, hold)) => (hold, since.elapsed().as_secs_f64()),
            None => (None, 0.0),
        };
        GateView {
            at: e.at,
            verdict: e.verdict.clone(),
            reason: e.reason.clone(),
            hold_seconds: hold.map(|h| h.as_secs_f64()),
            held_seconds: held,
            checks,
            agreement: e.answers.as_ref().and_then(|a| a.agreement),
            psi: e.answers.as_ref().and_then(|a| a.largest_psi),
        }
    }

    /// Notes the verdict that ends the phase in progress, with what the answers said.
    pub(super) fn conclude_phase(&mut self, shadow: Option<ShadowCounts>, verdict: String) {
        let answers = self.answer_figures(shadow);
        self.evidence.conclude(answers, Some(verdict));
    }

    /// Notes the engine and device the candidate's workers report.
    pub(super) fn record_candidate(&mut self, candidate: &Pool) {
        let Some(info) = candidate.info() else { return };
        let to = self.record.to;
        let engine = crate::repo::ModelDir::new(&self.model.dir)
            .manifest(to)
            .ok()
            .and_then(|m| m.engine)
            .map_or_else(|| self.model.engine.name().to_string(), |e| e.name().to_string());
        for files in self.evidence.evidence.versions.iter_mut().filter(|f| f.version == to && f.role == "candidate") {
            files.engine = Some(engine.clone());
            files.device = Some(info.device.clone());
        }
    }

    /// Writes how the rollout ended.
    pub(super) fn record_end(&mut self, outcome: &str, reason: Option<String>) {
        let by = self.ended_by.clone();
        self.evidence.finish(Ending { at: state::now(), outcome: outcome.into(), reason, by });
    }
}
