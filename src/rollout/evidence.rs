//! The evidence a rollout leaves: the plan it set out with, the config and files it ran
//! with, who started it, each phase planned against what happened (with both versions'
//! measured windows at its end), the gate's evaluations with their figures, the signature
//! check, the golden examples and the validation set, and how it ended. `modeld report`
//! turns it into the deployment protocol's evidence package ([`crate::report`]).
//!
//! It lives beside the state file, one JSON file per rollout
//! (`<state_dir>/rollouts/<id>.json`), written atomically as the history is, at each phase
//! change, on a failing evaluation and every [`SAVE_EVERY`] otherwise, so a rollout cut by
//! a restart keeps what it measured. It is bounded: evaluations that passed are thinned as
//! they accumulate (every failing one is kept), and the evidence of all but the running
//! rollouts and the latest [`KEPT_ROLLOUTS`] ended ones is deleted.

use super::answers::{Answers, Sources};
use super::gate::Verdict;
use super::plan::Plan;
use super::state::{self, Store};
use crate::router::mirror::ShadowCounts;
use crate::router::pool::Pool;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The format of an evidence file.
pub const SCHEMA: u32 = 1;
/// Evaluations kept per rollout, at most; passing ones are thinned past it.
pub const MAX_EVALUATIONS: usize = 600;
/// Ended rollouts whose evidence is kept on disk (running ones' always is).
pub const KEPT_ROLLOUTS: usize = 100;
/// How often a running rollout's evidence is saved between phase changes.
pub const SAVE_EVERY: Duration = Duration::from_secs(15);

/// Who or what started a rollout or a rollback.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// "operator" (the CLI), "reload" (SIGHUP or `modeld reload`), "config" (a start),
    /// "watch" (a new version directory, or the watch after a promotion).
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
}

impl Caller {
    pub fn origin(origin: &str) -> Caller {
        Caller { origin: origin.into(), ..Caller::default() }
    }

    /// The operator behind an admin connection.
    pub fn operator(uid: u32, pid: Option<i32>) -> Caller {
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)).ok().flatten().map(|u| u.name);
        Caller { origin: "operator".into(), uid: Some(uid), user, pid }
    }

    /// "operator alice (uid 1000, pid 4242)", "reload".
    pub fn describe(&self) -> String {
        let mut who = self.origin.clone();
        match (&self.user, self.uid) {
            (Some(user), Some(uid)) => who.push_str(&format!(" {user} (uid {uid}")),
            (None, Some(uid)) => who.push_str(&format!(" (uid {uid}")),
            _ => return who,
        }
        if let Some(pid) = self.pid {
            who.push_str(&format!(", pid {pid}"));
        }
        who.push(')');
        who
    }
}

/// A version's files, as the rollout found them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionFiles {
    pub version: u64,
    /// "live" (rolled out from) or "candidate" (rolled out).
    pub role: String,
    pub directory: String,
    pub model_sha256: String,
    pub model_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// The engine its workers run it on, and where, once they reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Golden examples its model.toml holds (all passed if the version got ready).
    pub golden_examples: usize,
    /// Why the files could not be read, when they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl VersionFiles {
    /// Reads and hashes the version directory's model and model.toml.
    pub fn read(dir: &std::path::Path, version: u64, role: &str) -> VersionFiles {
        use sha2::Digest;
        let hash = |bytes: &[u8]| format!("{:x}", sha2::Sha256::digest(bytes));
        let model = std::fs::read(dir.join(crate::repo::MODEL_FILE));
        let manifest = std::fs::read(dir.join(crate::repo::MANIFEST_FILE)).ok();
        let golden = crate::repo::Manifest::read(&dir.join(crate::repo::MANIFEST_FILE)).map_or(0, |m| m.golden.len());
        VersionFiles {
            version,
            role: role.into(),
            directory: dir.display().to_string(),
            model_sha256: model.as_ref().map_or(String::new(), |b| hash(b)),
            model_bytes: model.as_ref().map_or(0, |b| b.len() as u64),
            manifest_sha256: manifest.as_deref().map(hash),
            engine: None,
            device: None,
            golden_examples: golden,
            problem: model.err().map(|e| format!("could not read {}: {e}", dir.display())),
        }
    }
}

/// One version's measured window, and its workers' resources, at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub version: u64,
    /// The time the window covered.
    pub seconds: f64,
    pub requests: u64,
    pub rate_per_second: f64,
    pub errors: u64,
    pub refused: u64,
    pub unavailable: u64,
    pub error_rate: f64,
    pub refusal_rate: f64,
    pub availability: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// The largest worker's resident memory.
    pub rss_bytes: u64,
    /// Cores its workers kept busy over the last sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<f64>,
}

impl Figures {
    pub fn of(pool: &Pool) -> Figures {
        let w = pool.window.snapshot();
        let ms = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
        Figures {
            version: pool.version,
            seconds: w.covered.as_secs_f64(),
            requests: w.requests,
            rate_per_second: w.throughput(),
            errors: w.failed,
            refused: w.invalid,
            unavailable: w.unavailable,
            error_rate: w.error_rate(),
            refusal_rate: w.refusal_rate(),
            availability: w.availability(),
            p50_ms: ms(w.p50),
            p95_ms: ms(w.p95),
            p99_ms: ms(w.p99),
            rss_bytes: pool.largest_rss(),
            cpu_cores: pool.cpu().map(|(busy, _)| busy),
        }
    }
}

/// What the candidate's answers said beside stable's, at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerFigures {
    pub sources: Sources,
    /// The shadow's counts, in the shadow phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowCounts>,
    /// Share of the requests both answered (shadow copies, replays) on which they agreed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<f64>,
    pub compared: u64,
    /// The feature whose distribution moved most, and its PSI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub largest_psi: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_feature: Option<String>,
    /// Whether a feature drifted past the limit beyond chance (the gate's drift verdict).
    #[serde(default)]
    pub drifted: bool,
}

impl AnswerFigures {
    pub fn of(answers: &Answers, shadow: Option<ShadowCounts>, deploy: &crate::config::DeployConfig) -> AnswerFigures {
        let pairs = answers.replay_pairs();
        let (compared, agreed) = match shadow {
            Some(s) => (s.compared + pairs.compared, s.agreed + pairs.agreed),
            None => (pairs.compared, pairs.agreed),
        };
        let drift = answers.drift_now(deploy.drift_min_samples as usize);
        let largest = drift.largest();
        let drifted = deploy.max_output_drift > 0.0 && drift.breach(deploy.max_output_drift).is_some();
        AnswerFigures {
            sources: answers.sources(),
            shadow,
            agreement: (compared > 0).then(|| agreed as f64 / compared as f64),
            compared,
            largest_psi: largest.map(|f| f.psi),
            psi_feature: largest.map(|f| f.feature.to_string()),
            drifted,
        }
    }
}

/// One phase as it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// As `modeld plan` names it: "spawn", "validate", "shadow", "step 2/4", "bake", ...
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u8>,
    /// How long the plan held it (a bake, the shadow), when it holds for a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_seconds: Option<f64>,
    pub started_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<f64>,
    /// Both versions' windows when the phase ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<Figures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<Figures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<AnswerFigures>,
    /// The verdict that ended it, when the gate gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

/// One evaluation of the gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub at: f64,
    pub phase: String,
    /// "pass", "fail" or "inconclusive".
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub candidate: Figures,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<Figures>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<AnswerFigures>,
}

/// How the rollout ended, and by whose hand when by an operator's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ending {
    pub at: f64,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Caller>,
}

/// Everything one rollout left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub schema: u32,
    pub id: u64,
    pub model: String,
    pub caller: Caller,
    /// The plan as planned when the rollout started.
    pub planned: Plan,
    /// The model's config as the rollout ran with it (`[model.deploy]` with the
    /// operator's options applied).
    pub config: serde_json::Value,
    pub versions: Vec<VersionFiles>,
    /// The signature check: differences from the live version, and what was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    pub phases: Vec<PhaseRecord>,
    pub evaluations: Vec<Evaluation>,
    /// Passing or inconclusive evaluations left out as they thinned.
    pub evaluations_left_out: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ending>,
}

impl Evidence {
    /// The evidence of a rollout starting: who asked, the plan, the config in force and
    /// both versions' files.
    pub fn begin(
        record: &super::state::Record,
        caller: Caller,
        planned: Plan,
        model: &crate::config::ModelConfig,
        deploy: &crate::config::DeployConfig,
    ) -> Evidence {
        let dir = crate::repo::ModelDir::new(&model.dir);
        let mut versions: Vec<VersionFiles> =
            record.from.into_iter().map(|v| VersionFiles::read(&dir.version_dir(v), v, "live")).collect();
        versions.push(VersionFiles::read(&dir.version_dir(record.to), record.to, "candidate"));
        Evidence {
            schema: SCHEMA,
            id: record.id,
            model: record.model.clone(),
            caller,
            planned,
            config: crate::config::describe::model(model, deploy),
            versions,
            signature: None,
            phases: Vec::new(),
            evaluations: Vec::new(),
            evaluations_left_out: 0,
            ended: None,
        }
    }
}

/// A running rollout's evidence, and when it last went to disk.
pub struct EvidenceLog {
    pub evidence: Evidence,
    store: Store,
    saved: Instant,
    /// Keep one passing evaluation per this many (doubles as the list thins).
    stride: u64,
    seen: u64,
}

impl EvidenceLog {
    pub fn new(evidence: Evidence, store: Store) -> EvidenceLog {
        let log = EvidenceLog { evidence, store, saved: Instant::now(), stride: 1, seen: 0 };
        log.save();
        log
    }

    /// Writes the evidence now; a failure is logged (the rollout goes on).
    pub fn save(&self) {
        if let Err(e) = self.store.save_evidence(&self.evidence) {
            tracing::error!("{e}");
        }
    }

    fn save_now(&mut self) {
        self.save();
        self.saved = Instant::now();
    }

    /// Closes the phase in progress with both versions' figures, and opens `next` (saved
    /// then; the last phase is saved with the ending, [`EvidenceLog::finish`]).
    pub fn phase(&mut self, next: Option<PhaseRecord>, candidate: Option<&Pool>, stable: Option<&Pool>) {
        if let Some(last) = self.evidence.phases.last_mut().filter(|p| p.ended_at.is_none()) {
            last.ended_at = Some(state::now());
            last.candidate = candidate.map(Figures::of);
            last.stable = stable.map(Figures::of);
        }
        if next.is_some() {
            self.evidence.phases.extend(next);
            self.save_now();
        }
    }

    /// Adds what the phase in progress ended with (its answers, its verdict).
    pub fn conclude(&mut self, answers: Option<AnswerFigures>, verdict: Option<String>) {
        if let Some(last) = self.evidence.phases.last_mut() {
            last.answers = answers.or(last.answers.take());
            last.verdict = verdict.or(last.verdict.take());
        }
    }

    /// Records a gate evaluation: every failing one, passing ones thinned to fit.
    pub fn evaluated(&mut self, evaluation: Evaluation) {
        let failing = evaluation.verdict == "fail";
        self.seen += 1;
        if !failing && !self.seen.is_multiple_of(self.stride) {
            self.evidence.evaluations_left_out += 1;
            return;
        }
        self.evidence.evaluations.push(evaluation);
        if self.evidence.evaluations.len() > MAX_EVALUATIONS {
            self.thin();
        }
        if failing || self.saved.elapsed() >= SAVE_EVERY {
            self.save_now();
        }
    }

    /// Halves the passing evaluations kept (every other one goes), and keeps one in twice
    /// as many from now on.
    fn thin(&mut self) {
        let mut keep = true;
        let before = self.evidence.evaluations.len();
        self.evidence.evaluations.retain(|e| {
            keep = !keep;
            e.verdict == "fail" || keep
        });
        self.evidence.evaluations_left_out += (before - self.evidence.evaluations.len()) as u64;
        self.stride *= 2;
    }

    pub fn finish(&mut self, ending: Ending) {
        self.evidence.ended = Some(ending);
        self.save_now();
    }
}

/// The verdict's word and reason, as evaluations keep them.
pub fn verdict_words(verdict: &Verdict) -> (String, Option<String>) {
    match verdict {
        Verdict::Pass => ("pass".into(), None),
        Verdict::Fail(why) => ("fail".into(), Some(why.clone())),
        Verdict::Inconclusive(why) => ("inconclusive".into(), Some(why.clone())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluation(verdict: &str) -> Evaluation {
        Evaluation {
            at: 1.0,
            phase: "step 1/4".into(),
            verdict: verdict.into(),
            reason: None,
            candidate: Figures {
                version: 2,
                seconds: 60.0,
                requests: 100,
                rate_per_second: 1.7,
                errors: 0,
                refused: 0,
                unavailable: 0,
                error_rate: 0.0,
                refusal_rate: 0.0,
                availability: 1.0,
                p50_ms: Some(1.0),
                p95_ms: Some(2.0),
                p99_ms: Some(3.0),
                rss_bytes: 1 << 20,
                cpu_cores: None,
            },
            stable: None,
            answers: None,
        }
    }

    fn log() -> (tempfile::TempDir, EvidenceLog) {
        let dir = tempfile::tempdir().unwrap();
        let evidence = Evidence {
            schema: SCHEMA,
            id: 7,
            model: "m".into(),
            caller: Caller::origin("reload"),
            planned: Plan {
                model: "m".into(),
                from: Some(1),
                to: 2,
                strategy: "canary".into(),
                downtime: false,
                phases: vec![],
                minimum_seconds: 0.0,
                signature: None,
                answers: vec![],
                workers: String::new(),
            },
            config: serde_json::json!({}),
            versions: vec![],
            signature: None,
            phases: vec![],
            evaluations: vec![],
            evaluations_left_out: 0,
            ended: None,
        };
        let store = Store::new(dir.path());
        (dir, EvidenceLog::new(evidence, store))
    }

    #[test]
    fn evaluations_stay_bounded_and_every_failing_one_is_kept() {
        let (dir, mut log) = log();
        for i in 0..5000 {
            log.evaluated(evaluation(if i % 1000 == 999 { "fail" } else { "pass" }));
        }
        let kept = &log.evidence.evaluations;
        assert!(kept.len() <= MAX_EVALUATIONS, "{}", kept.len());
        assert_eq!(kept.iter().filter(|e| e.verdict == "fail").count(), 5, "every failing evaluation is kept");
        assert_eq!(kept.len() as u64 + log.evidence.evaluations_left_out, 5000);
        // On disk as it is in memory, after a failing one.
        let saved = Store::new(dir.path()).load_evidence(7).unwrap();
        assert_eq!(saved.evaluations.len(), kept.len());
    }

    #[test]
    fn callers_say_who() {
        let c = Caller { origin: "operator".into(), uid: Some(1000), user: Some("alice".into()), pid: Some(42) };
        assert_eq!(c.describe(), "operator alice (uid 1000, pid 42)");
        assert_eq!(Caller::origin("reload").describe(), "reload");
    }
}
