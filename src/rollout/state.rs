//! What survives a restart: per model the live version, the last version the config asked
//! for, the rollout in progress, and the history of rollouts — in one JSON file in the
//! state directory, replaced atomically (write a temp file, fsync it, rename it over the
//! old one, fsync the directory), so a `kill -9` at any instant leaves either the old
//! state or the new, never a torn one.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const FILE: &str = "state.json";
/// History kept, oldest dropped first.
const HISTORY_LIMIT: usize = 500;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    #[serde(default)]
    pub models: BTreeMap<String, ModelState>,
    #[serde(default)]
    pub history: Vec<Record>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ModelState {
    /// The version last promoted (what a restart serves).
    pub live: Option<u64>,
    /// The version promoted away from, for a rollback after promotion.
    #[serde(default)]
    pub previous: Option<u64>,
    /// The last version the config (or the repository watch) asked for and was acted on:
    /// the config asks again only when it names another.
    #[serde(default)]
    pub config_asked: Option<u64>,
    /// The rollout in progress when this was written.
    #[serde(default)]
    pub rollout: Option<Record>,
    /// The workers the autoscaler last set for the live version: a restart or a hand-over
    /// starts as many (within the model's bounds), not `min` under a load that needs more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
}

/// One rollout, from start to outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub id: u64,
    pub model: String,
    pub from: Option<u64>,
    pub to: u64,
    pub strategy: String,
    /// Who asked: "config", "reload", "operator", "watch", "rollback".
    pub origin: String,
    pub started_at: f64,
    #[serde(default)]
    pub ended_at: Option<f64>,
    /// How it ended (none while it runs).
    #[serde(default)]
    pub outcome: Option<Outcome>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub phases: Vec<PhaseEntry>,
    /// The candidate's validation set, when it had one, and how both versions did on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<super::validation::Validation>,
    /// Who started it (for a rollback: who asked), with uid and pid for an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<super::evidence::Caller>,
    /// The operator whose `modeld rollback` ended it, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<super::evidence::Caller>,
}

/// How a rollout ended, as the state file and `modeld history` spell it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The candidate became the live version.
    Promoted,
    /// The gate failed it after it took traffic; the live version serves.
    Reverted,
    /// It failed before taking traffic (load, golden checks, signature, shadow).
    Failed,
    /// A restart cut it; the last promoted version serves.
    Aborted,
    /// `modeld rollback`: the previous version was made live again.
    RolledBack,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::Reverted => "reverted",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
            Outcome::RolledBack => "rolled_back",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A phase the rollout entered, with the verdict or note that came with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhaseEntry {
    pub at: f64,
    pub phase: String,
    #[serde(default)]
    pub weight: Option<u8>,
    #[serde(default)]
    pub note: Option<String>,
}

/// Seconds since the Unix epoch, for timestamps in the state.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("could not read state {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("state {path} is not valid: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("could not write state {path}: {error}")]
    Write { path: PathBuf, error: std::io::Error },
}

/// The state file in one directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store { dir: dir.to_path_buf() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The saved state, or an empty one when none was saved yet.
    pub fn load(&self) -> Result<State, StateError> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt { path, reason: e.to_string() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(error) => Err(StateError::Read { path, error }),
        }
    }

    /// The saved state; one that cannot be read or parsed is moved aside (to
    /// `state.json.corrupt-<unix time>`, kept for a post-mortem) with the reason logged, and
    /// the daemon starts from an empty state: the config's versions serve. A bad state file
    /// must never keep the daemon from starting.
    pub fn load_or_set_aside(&self) -> State {
        let problem = match self.load() {
            Ok(state) => return state,
            Err(e) => e,
        };
        let aside = self.dir.join(format!("{FILE}.corrupt-{}", now() as u64));
        match std::fs::rename(self.path(), &aside) {
            Ok(()) => tracing::error!(
                "{problem}; moved it to {} and starting from the config's versions (rollout history starts anew)",
                aside.display()
            ),
            Err(e) => tracing::error!(
                "{problem}; could not move it aside ({e}); starting from the config's versions, and saving over it"
            ),
        }
        State::default()
    }

    /// Replaces the saved state atomically and durably. On failure (a full disk) the old
    /// state stays, and no partial temporary file is left behind.
    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(state).expect("state serializes");
        write_atomically(&self.dir, FILE, &bytes)
    }

    /// The directory of the rollouts' evidence files.
    pub fn evidence_dir(&self) -> PathBuf {
        self.dir.join(EVIDENCE_DIR)
    }

    /// Replaces one rollout's evidence file atomically, as the state is.
    pub fn save_evidence(&self, evidence: &super::evidence::Evidence) -> Result<(), StateError> {
        let dir = self.evidence_dir();
        std::fs::create_dir_all(&dir).map_err(|error| StateError::Write { path: dir.clone(), error })?;
        let bytes = serde_json::to_vec(evidence).expect("evidence serializes");
        write_atomically(&dir, &format!("{}.json", evidence.id), &bytes)
    }

    /// One rollout's evidence, as last saved.
    pub fn load_evidence(&self, id: u64) -> Result<super::evidence::Evidence, StateError> {
        let path = self.evidence_dir().join(format!("{id}.json"));
        let bytes = std::fs::read(&path).map_err(|error| StateError::Read { path: path.clone(), error })?;
        serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt { path, reason: e.to_string() })
    }

    /// Deletes the evidence of rollouts other than `keep`.
    pub fn prune_evidence(&self, keep: &std::collections::BTreeSet<u64>) {
        let Ok(entries) = std::fs::read_dir(self.evidence_dir()) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let id = name.to_string_lossy().strip_suffix(".json").and_then(|n| n.parse::<u64>().ok());
            if id.is_some_and(|id| !keep.contains(&id)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The directory under the state directory that holds each rollout's evidence.
pub const EVIDENCE_DIR: &str = "rollouts";

/// Writes `name` in `dir` atomically and durably: a temporary file, fsync, rename, fsync
/// of the directory. On failure the old file stays, and no temporary file is left.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let written = write_then_rename(dir, &tmp, &path, bytes);
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

fn write_then_rename(dir: &Path, tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let write_error = |source| StateError::Write { path: path.to_path_buf(), error: source };
    let mut file = std::fs::File::create(tmp).map_err(write_error)?;
    file.write_all(bytes).map_err(write_error)?;
    file.sync_all().map_err(write_error)?;
    drop(file);
    std::fs::rename(tmp, path).map_err(write_error)?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(write_error)?;
    Ok(())
}

impl State {
    pub fn model(&mut self, name: &str) -> &mut ModelState {
        self.models.entry(name.to_string()).or_default()
    }

    /// Appends an ended rollout to the history, dropping the oldest past the limit.
    pub fn remember(&mut self, record: Record) {
        self.history.push(record);
        if self.history.len() > HISTORY_LIMIT {
            let excess = self.history.len() - HISTORY_LIMIT;
            self.history.drain(..excess);
        }
    }

    /// The rollouts whose evidence stays on disk: the latest `ended` ones of the history,
    /// and every one still running (another model's rollout may end first).
    pub fn evidence_kept(&self, ended: usize) -> std::collections::BTreeSet<u64> {
        self.history.iter().rev().take(ended).map(|r| r.id).chain(self.running_ids()).collect()
    }

    /// The next rollout id.
    pub fn next_id(&self) -> u64 {
        self.history.iter().map(|r| r.id).chain(self.running_ids()).max().unwrap_or(0) + 1
    }

    /// The ids of the rollouts in progress.
    fn running_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.models.values().filter_map(|m| m.rollout.as_ref().map(|r| r.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64, model: &str) -> Record {
        Record {
            id,
            model: model.into(),
            from: Some(1),
            to: 2,
            strategy: "canary".into(),
            origin: "operator".into(),
            started_at: 1.0,
            ended_at: None,
            outcome: None,
            reason: None,
            phases: vec![],
            validation: None,
            by: None,
            ended_by: None,
        }
    }

    #[test]
    fn evidence_of_running_rollouts_is_kept_whatever_ended_after_them() {
        let mut state = State::default();
        state.model("a").rollout = Some(record(1, "a"));
        state.model("b").rollout = Some(record(2, "b"));
        for id in 3..=6 {
            state.remember(record(id, "c"));
        }
        assert_eq!(state.evidence_kept(2).into_iter().collect::<Vec<_>>(), [1, 2, 5, 6]);
    }

    #[test]
    fn state_round_trips_and_starts_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        assert_eq!(store.load().unwrap(), State::default());
        let mut state = State::default();
        state.model("iris").live = Some(2);
        state.remember(Record {
            id: 1,
            model: "iris".into(),
            from: Some(1),
            to: 2,
            strategy: "canary".into(),
            origin: "operator".into(),
            started_at: 1.0,
            ended_at: Some(2.0),
            outcome: Some(Outcome::Promoted),
            reason: None,
            phases: vec![PhaseEntry { at: 1.5, phase: "step 1/4".into(), weight: Some(10), note: None }],
            validation: None,
            by: None,
            ended_by: None,
        });
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), state);
        assert_eq!(state.next_id(), 2);
        assert!(!tmp.path().join(".state.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_state_is_an_error_naming_the_file_and_is_set_aside() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(FILE), b"{ not json").unwrap();
        let store = Store::new(tmp.path());
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("state.json is not valid"), "{e}");
        assert_eq!(store.load_or_set_aside(), State::default());
        assert!(!tmp.path().join(FILE).exists());
        let aside: Vec<String> =
            std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        assert!(aside.len() == 1 && aside[0].starts_with("state.json.corrupt-"), "{aside:?}");
        assert_eq!(std::fs::read(tmp.path().join(&aside[0])).unwrap(), b"{ not json", "kept for a post-mortem");
    }
}
