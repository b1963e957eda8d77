//! `modeld report`: a rollout's evidence turned into the deployment protocol's evidence
//! package — a deployment report (Markdown, and HTML with charts), the validation
//! results as a versioned JSON document, the rollback plan, script and history, the
//! health checks, alert rules and scrape config in force, the serving config, and on
//! request the cluster's manifests.
//!
//! The facts come from the rollout's record and evidence ([`crate::rollout::state`],
//! [`crate::rollout::evidence`]), read over the admin socket or straight from the state
//! directory when the daemon is down; what depends on the config now (alert rules, the
//! scrape config, manifests) from the config file. Nothing here measures: every tick of
//! a quality gate ([`gates`]) is a figure the rollout measured, shown beside its
//! threshold.

pub mod cli;
pub mod gates;
pub mod html;
pub mod markdown;
pub mod package;
pub mod results;

use crate::rollout::evidence::Evidence;
use crate::rollout::state::{Outcome, Record, State, Store};
use serde::{Deserialize, Serialize};

/// One rollout, as the report reads it: its record, its evidence (none for a rollout
/// older than evidence, or whose evidence was pruned), and the model's whole history (for
/// the rollback history, and whether a promotion was later reverted).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subject {
    pub record: Record,
    #[serde(default)]
    pub evidence: Option<Evidence>,
    pub history: Vec<Record>,
}

/// Which rollout of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    Last,
    Id(u64),
}

/// Why no report could be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReportError {
    #[error("model '{0}' has had no rollout")]
    NoRollout(String),
    #[error("rollout {id} is not one of model '{model}' (its rollouts: {known})")]
    NotFound { model: String, id: u64, known: String },
    #[error("{0}")]
    State(String),
}

impl Subject {
    /// Picks the rollout from a model's history (running ones last); `evidence` reads an
    /// evidence file by id.
    pub fn pick(
        model: &str,
        which: Which,
        history: Vec<Record>,
        evidence: impl Fn(u64) -> Option<Evidence>,
    ) -> Result<Subject, ReportError> {
        let history: Vec<Record> = history.into_iter().filter(|r| r.model == model).collect();
        let record = match which {
            Which::Last => history.iter().rfind(|r| r.strategy != "rollback" && r.strategy != "revert"),
            Which::Id(id) => history.iter().find(|r| r.id == id),
        };
        let record = match (record, which) {
            (Some(r), _) => r.clone(),
            (None, Which::Last) => return Err(ReportError::NoRollout(model.into())),
            (None, Which::Id(id)) => {
                let known: Vec<String> = history.iter().map(|r| r.id.to_string()).collect();
                let known = if known.is_empty() { "none".into() } else { known.join(", ") };
                return Err(ReportError::NotFound { model: model.into(), id, known });
            }
        };
        let evidence = evidence(record.id);
        Ok(Subject { record, evidence, history })
    }

    /// Reads the rollout from a state directory, the daemon running or not.
    pub fn from_state_dir(dir: &std::path::Path, model: &str, which: Which) -> Result<Subject, ReportError> {
        let store = Store::new(dir);
        let state: State = store.load().map_err(|e| ReportError::State(e.to_string()))?;
        let running = state.models.values().filter_map(|m| m.rollout.clone());
        let history: Vec<Record> = state.history.iter().cloned().chain(running).collect();
        Subject::pick(model, which, history, |id| store.load_evidence(id).ok())
    }

    /// The rollout did not end: cut by a restart (its record says aborted), or running.
    pub fn cut_short(&self) -> Option<String> {
        match (self.record.outcome, self.evidence.as_ref().and_then(|e| e.ended.as_ref())) {
            (Some(Outcome::Aborted), _) => Some(format!(
                "This rollout was cut by a restart of the daemon{}: {}. Its evidence ends where the old \
                 process stopped; the last promoted version serves.",
                self.evidence
                    .as_ref()
                    .and_then(|e| e.phases.last())
                    .map_or(String::new(), |p| format!(" during its {} phase", p.name)),
                self.record.reason.as_deref().unwrap_or("the daemon restarted mid-rollout")
            )),
            (None, _) => Some("This rollout is still running; the report shows it so far.".into()),
            _ => None,
        }
    }

    /// Seconds from start to end (to now, for a running one).
    pub fn seconds(&self) -> f64 {
        let end = self.record.ended_at.unwrap_or_else(crate::rollout::state::now);
        (end - self.record.started_at).max(0.0)
    }

    /// "v3", or "(none)" when nothing was live.
    pub fn from(&self) -> String {
        self.record.from.map_or("(none)".into(), |v| format!("v{v}"))
    }

    /// Records of the model after this one that reverted or rolled back its promotion.
    pub fn undone_later(&self) -> Vec<&Record> {
        self.history
            .iter()
            .filter(|r| r.id > self.record.id && r.from == Some(self.record.to))
            .take_while(|r| r.strategy == "revert" || r.strategy == "rollback")
            .collect()
    }
}

/// "2026-12-07 13:05:21 UTC" for a Unix time.
pub fn when(unix: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(unix.max(0.0));
    humantime::format_rfc3339_seconds(t).to_string().replace('T', " ").replace('Z', " UTC")
}

/// "4m 30s" for seconds.
pub fn took(seconds: f64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(seconds.max(0.0).round() as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(id: u64, strategy: &str, from: Option<u64>, to: u64, outcome: Option<Outcome>) -> Record {
        Record {
            id,
            model: "m".into(),
            from,
            to,
            strategy: strategy.into(),
            origin: "operator".into(),
            started_at: 100.0,
            ended_at: outcome.map(|_| 400.0),
            outcome,
            reason: None,
            phases: vec![],
            validation: None,
            by: None,
            ended_by: None,
        }
    }

    #[test]
    fn the_last_rollout_is_picked_and_a_missing_one_named() {
        let history = vec![
            record(1, "canary", Some(1), 2, Some(Outcome::Promoted)),
            record(2, "rollback", Some(2), 1, Some(Outcome::RolledBack)),
        ];
        let s = Subject::pick("m", Which::Last, history.clone(), |_| None).unwrap();
        assert_eq!(s.record.id, 1, "a rollback is not a rollout to report");
        assert_eq!(s.undone_later().len(), 1);
        let e = Subject::pick("m", Which::Id(9), history, |_| None).unwrap_err();
        assert_eq!(e.to_string(), "rollout 9 is not one of model 'm' (its rollouts: 1, 2)");
        assert_eq!(Subject::pick("x", Which::Last, vec![], |_| None).unwrap_err(), ReportError::NoRollout("x".into()));
    }

    #[test]
    fn a_rollout_cut_by_a_restart_says_so() {
        let mut r = record(3, "canary", Some(1), 2, Some(Outcome::Aborted));
        r.reason = Some("the daemon restarted mid-rollout; the last promoted version serves".into());
        let s = Subject { record: r, evidence: None, history: vec![] };
        assert!(s.cut_short().unwrap().starts_with("This rollout was cut by a restart of the daemon"));
    }
}
