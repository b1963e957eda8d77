//! Replay: a quiet model's candidate also answers recent live requests from the model's
//! sample ([`crate::router::sample`]) when live traffic is too thin for a phase to reach
//! the answers its gate needs within its bake.
//!
//! Each phase sets an aim ([`Replayer::aim`]): the answers the candidate's window must
//! hold, and the answers the two versions should have given the same requests over the
//! rollout (what drift is judged on most surely). While what users (or shadow copies)
//! bring falls short of a pace that reaches the aim by half the phase's hold, the replayer
//! sends the candidate the newest request of
//! the sample it has not sent yet, one at a time and only while the candidate holds no
//! other request, so a replay never makes a live request wait. Its answer counts in the
//! candidate's window (its outcome and latency, as a user's would) and is compared with
//! stable's answer to the same request ([`Answers::replayed`]), then thrown away: the
//! stable answer kept with the request when that version is still stable, else stable
//! answers it again, only while it has an idle inference thread and without counting it
//! in stable's window. A request is replayed at most once per rollout.

use super::answers::Answers;
use crate::metrics::Metrics;
use crate::router::ModelRoute;
use crate::router::pool::Pool;
use crate::router::sample::Kept;
use crate::tensor::Tensor;
use crate::window::Outcome;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the replayer looks whether the candidate needs more answers.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// What the current phase needs.
#[derive(Debug, Clone, Copy)]
struct Aim {
    /// Answers the candidate's window should hold.
    needed: u64,
    /// Answers to the same requests as stable's, over the rollout.
    pairs: u64,
    /// When the phase started, and the time by which the aim should be reached.
    since: Instant,
    reach_in: Duration,
}

/// A running replayer; dropping it stops it.
pub struct Replayer {
    aim: watch::Sender<Option<Aim>>,
    exhausted: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Drop for Replayer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What replaying needs: the model's route (its sample), the two versions, where their
/// answers are compared, and how long one replay may take.
pub struct Replaying {
    pub route: Arc<ModelRoute>,
    pub candidate: Arc<Pool>,
    pub stable: Arc<Pool>,
    pub answers: Arc<Answers>,
    pub metrics: Arc<Metrics>,
    pub timeout: Duration,
}

impl Replayer {
    /// Starts replaying the route's sample to the candidate; it waits for an aim.
    pub fn start(replaying: Replaying) -> Replayer {
        let (aim, aims) = watch::channel(None);
        let exhausted = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        tokio::spawn(replaying.run(aims, exhausted.clone(), stop.clone()));
        Replayer { aim, exhausted, stop }
    }

    /// From now on the candidate's window should hold `needed` answers, and the rollout
    /// `pairs` answers to requests stable answered too, reached by half of `hold` at the
    /// latest.
    pub fn aim(&self, needed: u64, pairs: u64, hold: Duration) {
        self.aim.send_replace(Some(Aim { needed, pairs, since: Instant::now(), reach_in: hold / 2 }));
    }

    /// Whether every request of the sample has been replayed (none is left to fill a
    /// shortfall).
    pub fn exhausted(&self) -> bool {
        self.exhausted.load(Ordering::Relaxed)
    }
}

impl Replaying {
    async fn run(self, aims: watch::Receiver<Option<Aim>>, exhausted: Arc<AtomicBool>, stop: CancellationToken) {
        let mut sent: HashSet<u64> = HashSet::new();
        let mut rest = false;
        loop {
            // Replays follow one another at once while the aim is short; otherwise look again
            // in a while.
            if rest {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(LOOK_EVERY) => {}
                }
            }
            rest = true;
            let Some(aim) = *aims.borrow() else { continue };
            if !self.short_of(&aim) || self.candidate.outstanding() > 0 {
                continue;
            }
            let Some(kept) = self.route.sample.newest_unseen(&sent, 1).pop() else {
                exhausted.store(true, Ordering::Relaxed);
                continue;
            };
            rest = false;
            exhausted.store(false, Ordering::Relaxed);
            sent.insert(kept.id);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.replay(kept) => {}
            }
        }
    }

    /// Whether the candidate has fewer answers than the aim's pace asks by now.
    fn short_of(&self, aim: &Aim) -> bool {
        let progress = match aim.reach_in.is_zero() {
            true => 1.0,
            false => (aim.since.elapsed().as_secs_f64() / aim.reach_in.as_secs_f64()).min(1.0),
        };
        let due = |n: u64| (n as f64 * progress).ceil() as u64;
        let sources = self.answers.sources();
        self.candidate.window.snapshot().requests < due(aim.needed)
            || sources.mirrored + sources.replayed < due(aim.pairs)
    }

    /// Runs one kept request on the candidate and records what it did.
    async fn replay(&self, kept: Kept) {
        let started = Instant::now();
        let answered = tokio::time::timeout(self.timeout, self.candidate.infer(&kept.inputs)).await;
        let latency = started.elapsed();
        let (outcome, outputs) = match answered {
            Err(_) => (Outcome::Unavailable, None),
            Ok(Ok((outputs, _))) => (Outcome::Served, Some(outputs)),
            Ok(Err(e)) => (super::shadow::failure(&self.metrics, &self.candidate, e), None),
        };
        self.candidate.window.record(outcome, latency);
        let stable = self.stable_answer(kept).await;
        let agreed = self.answers.replayed(outcome, latency, stable.as_deref(), outputs.as_deref());
        let counted = match (outcome, agreed) {
            (Outcome::Served, Some(true)) => "agreed",
            (Outcome::Served, Some(false)) => "disagreed",
            (Outcome::Served, None) => "uncompared",
            _ => "failed",
        };
        let labels = [self.candidate.model.as_str(), &self.candidate.version.to_string(), counted];
        self.metrics.replayed_requests.with_label_values(&labels).inc();
    }

    /// Stable's answer to a kept request: kept with it when that version is still stable,
    /// else asked again while stable has an idle inference thread (None when it has not).
    async fn stable_answer(&self, kept: Kept) -> Option<Vec<Tensor>> {
        if kept.version == self.stable.version {
            return Some(kept.answer);
        }
        if self.stable.is_saturated() {
            return None;
        }
        let answered = tokio::time::timeout(self.timeout, self.stable.infer(&kept.inputs)).await;
        answered.ok()?.ok().map(|(outputs, _)| outputs)
    }
}
