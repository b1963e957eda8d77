//! What the gate reads of a candidate's answers beside its window: whether it agrees with
//! stable on the same requests (shadow copies and replays, [`super::agreement`]), how far
//! the distribution of its answers moved from stable's ([`super::drift`]), and where its
//! answers came from (users, shadow copies, replays).
//!
//! One [`Answers`] lives for a rollout. The shadow task and the replayer hand it pairs of
//! answers to one request; while the candidate takes user traffic, a tap on each pool
//! ([`crate::router::pool::AnswerTap`]) hands it what each version answered its users, so
//! the two sides' distributions come from the same traffic in the same minutes.

use super::agreement::Comparer;
use super::drift::{Drift, DriftReading, Reading, Side};
use crate::router::pool::{AnswerTap, Pool};
use crate::tensor::Tensor;
use crate::window::{Outcome, Window};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where a rollout's candidate answers came from, so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources {
    /// Requests of users it answered.
    pub live: u64,
    /// Copies of live requests it answered in its shadow phase.
    pub mirrored: u64,
    /// Recent live requests replayed to it because live traffic was thin.
    pub replayed: u64,
}

/// Replayed requests compared with stable's answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pairs {
    pub compared: u64,
    pub agreed: u64,
}

impl Pairs {
    pub fn agreement(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.agreed as f64 / self.compared as f64)
    }
}

pub struct Answers {
    comparer: Comparer,
    stable: Reading,
    candidate: Reading,
    drift: Mutex<Drift>,
    live: AtomicU64,
    mirrored: AtomicU64,
    replayed: AtomicU64,
    replay_compared: AtomicU64,
    replay_agreed: AtomicU64,
    /// The outcomes of replays over the candidate's window span: what share of its window
    /// was replayed (stable answered those requests successfully).
    replays: Window,
}

impl Answers {
    /// For a candidate judged against `stable`, both ready (their signatures known).
    pub fn new(stable: &Pool, candidate: &Pool, tolerance: f64) -> Arc<Answers> {
        Arc::new(Answers {
            comparer: Comparer::for_versions(stable, candidate, tolerance),
            stable: Reading::of(stable),
            candidate: Reading::of(candidate),
            drift: Mutex::new(Drift::default()),
            live: AtomicU64::new(0),
            mirrored: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            replay_compared: AtomicU64::new(0),
            replay_agreed: AtomicU64::new(0),
            replays: Window::new(candidate.window.span()),
        })
    }

    fn drift(&self) -> std::sync::MutexGuard<'_, Drift> {
        self.drift.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, side: Side, outputs: &[Tensor]) {
        let reading = match side {
            Side::Stable => &self.stable,
            Side::Candidate => &self.candidate,
        };
        let rows = request_rows(outputs);
        let mut drift = self.drift();
        reading.features(outputs, |feature, value| drift.record(side, feature, value, rows));
    }

    /// Both versions' answers to one request: their distributions, the pair, and whether
    /// they agree (None: nothing comparable).
    fn pair(&self, stable: &[Tensor], candidate: &[Tensor]) -> Option<bool> {
        let (mut theirs, mut mine) = (Vec::new(), Vec::new());
        self.stable.features(stable, |f, v| theirs.push((f, v)));
        self.candidate.features(candidate, |f, v| mine.push((f, v)));
        self.drift().record_pair(theirs, mine, request_rows(stable));
        self.comparer.agrees(stable, candidate)
    }

    /// A shadow copy the candidate answered, beside stable's answer to it.
    pub fn mirrored(&self, stable: &[Tensor], candidate: &[Tensor]) -> Option<bool> {
        self.mirrored.fetch_add(1, Ordering::Relaxed);
        self.pair(stable, candidate)
    }

    /// A shadow copy the candidate failed (its window counts how).
    pub fn mirrored_failed(&self) {
        self.mirrored.fetch_add(1, Ordering::Relaxed);
    }

    /// A replayed request: how the candidate did, its answer (None: it failed) beside
    /// stable's (None: stable could not answer it again).
    pub fn replayed(
        &self,
        outcome: Outcome,
        latency: std::time::Duration,
        stable: Option<&[Tensor]>,
        candidate: Option<&[Tensor]>,
    ) -> Option<bool> {
        self.replayed.fetch_add(1, Ordering::Relaxed);
        self.replays.record(outcome, latency);
        let stable = stable?;
        let agreed = self.pair(stable, candidate?);
        if let Some(agreed) = agreed {
            self.replay_compared.fetch_add(1, Ordering::Relaxed);
            self.replay_agreed.fetch_add(u64::from(agreed), Ordering::Relaxed);
        }
        agreed
    }

    /// An answer one side gave a user.
    fn live(&self, side: Side, outputs: &[Tensor]) {
        if side == Side::Candidate {
            self.live.fetch_add(1, Ordering::Relaxed);
        }
        self.record(side, outputs);
    }

    /// Both sides' distributions now, each feature judged on at least `min_samples`.
    pub fn drift_now(&self, min_samples: usize) -> DriftReading {
        self.drift().read(min_samples)
    }

    pub fn sources(&self) -> Sources {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Sources { live: read(&self.live), mirrored: read(&self.mirrored), replayed: read(&self.replayed) }
    }

    /// Replays within the candidate's window span now.
    pub fn replayed_in_window(&self) -> u64 {
        self.replays.snapshot().requests
    }

    pub fn replay_pairs(&self) -> Pairs {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Pairs { compared: read(&self.replay_compared), agreed: read(&self.replay_agreed) }
    }

    /// Starts watching what `pool` answers its users, as `side`.
    pub fn watch(self: &Arc<Self>, pool: &Pool, side: Side) {
        pool.set_tap(Some(Box::new(Tap { answers: self.clone(), side })));
    }
}

/// Hands a pool's answers to users to the rollout's [`Answers`].
struct Tap {
    answers: Arc<Answers>,
    side: Side,
}

impl AnswerTap for Tap {
    fn answered(&self, outputs: &[Tensor]) {
        self.answers.live(self.side, outputs);
    }
}

/// The rows of the request an answer answers (its first output's batch dimension).
fn request_rows(outputs: &[Tensor]) -> usize {
    outputs.first().map_or(1, |t| t.rows().max(1))
}
