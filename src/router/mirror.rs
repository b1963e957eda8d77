//! The shadow phase's tap on live traffic: a bounded queue of copies of the requests the
//! stable version answered, with its answers, for a candidate to answer too.
//!
//! The front offers a copy after the stable version answered, and never waits: when the
//! queue is full the copy is dropped and counted, so mirroring never slows or fails a
//! user request. The rollout's shadow task ([`crate::rollout::shadow`]) takes the copies,
//! runs them on the candidate, throws its answers away once compared, and counts here what
//! it compared; `/health` and the gate read the counts.
//!
//! It also keeps, for the copies both versions answered, each worker's own inference time
//! (what the worker measured running the model). A copy's round trip is no measure of the
//! candidate's speed beside stable's live requests: it runs right after stable answered,
//! while the daemon and the client handle that answer on the same cores, and a saturated
//! host makes it wait for a core far more than the live request did (a soak of 20 honest
//! retrains at 20 requests/s each saw the copies' P95 at up to 10x stable's live P95 in
//! the shadow, 1-3x in the canary steps that followed). The two workers' inference times
//! on the same inputs are a like-for-like comparison, which the gate uses in the shadow.

use super::pool::Pool;
use crate::tensor::Tensor;
use crate::window::{Outcome, Window};
use crate::wire::Timing;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// One live request and the stable version's answer to it.
pub struct Copy {
    pub inputs: Vec<Tensor>,
    pub answer: Vec<Tensor>,
    /// Where the request's time went in stable's worker.
    pub stable: Timing,
}

/// What the shadow phase has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShadowCounts {
    /// Copies queued for the candidate.
    pub mirrored: u64,
    /// Copies dropped because the queue was full or the stable version saturated.
    pub dropped: u64,
    /// Copies the candidate answered or failed (its window holds their outcomes).
    pub answered: u64,
    /// Copies the candidate answered whose answer could be compared with stable's.
    pub compared: u64,
    /// Of those, the ones where the two agreed.
    pub agreed: u64,
    /// Copies both versions answered, in the window, with each worker's inference time.
    #[serde(default)]
    pub timed: u64,
    /// P95 of the candidate's inference time on those copies, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_p95_us: Option<u64>,
    /// P95 of stable's inference time on the same copies, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_p95_us: Option<u64>,
}

impl ShadowCounts {
    /// Share of compared copies the candidate agreed on (None before any).
    pub fn agreement(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.agreed as f64 / self.compared as f64)
    }

    /// The candidate's and stable's inference P95 on the same copies, once any were timed.
    pub fn inference_p95s(&self) -> Option<(Duration, Duration)> {
        let (mine, theirs) = (self.candidate_p95_us?, self.stable_p95_us?);
        Some((Duration::from_micros(mine), Duration::from_micros(theirs)))
    }
}

/// The two workers' inference times on the copies both answered, over the candidate's
/// window span.
struct Timed {
    candidate: Window,
    stable: Window,
}

pub struct Mirror {
    /// The candidate answering the copies (no user request reaches it).
    pub pool: Arc<Pool>,
    queue: mpsc::Sender<Copy>,
    mirrored: AtomicU64,
    dropped: AtomicU64,
    answered: AtomicU64,
    compared: AtomicU64,
    agreed: AtomicU64,
    timed: Timed,
}

impl Mirror {
    /// A mirror feeding `pool` through a queue of `capacity` copies; the receiver goes to
    /// the task that answers them.
    pub fn new(pool: Arc<Pool>, capacity: usize) -> (Arc<Mirror>, mpsc::Receiver<Copy>) {
        let (queue, copies) = mpsc::channel(capacity.max(1));
        let span = pool.health().window;
        let mirror = Mirror {
            pool,
            queue,
            mirrored: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            compared: AtomicU64::new(0),
            agreed: AtomicU64::new(0),
            timed: Timed { candidate: Window::new(span), stable: Window::new(span) },
        };
        (Arc::new(mirror), copies)
    }

    /// Queues the copy `make` builds, if there is room and the stable version that
    /// answered it is not `saturated` (the candidate's work would compete with live
    /// requests for the same cores); counts it dropped otherwise (and then builds
    /// nothing). Never waits. True when queued.
    pub fn offer(&self, saturated: bool, make: impl FnOnce() -> Copy) -> bool {
        if saturated || self.queue.capacity() == 0 {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        match self.queue.try_send(make()) {
            Ok(()) => {
                self.mirrored.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
            // The shadow phase ended while this request ran.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Counts one copy the candidate answered or failed.
    pub fn answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one compared copy.
    pub fn compared(&self, agreed: bool) {
        self.compared.fetch_add(1, Ordering::Relaxed);
        if agreed {
            self.agreed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records both workers' inference times on one copy the candidate answered; a copy
    /// whose run built a plan on either side (a first batch size) is no measure of the
    /// model's speed and is left out.
    pub fn timed(&self, candidate: Timing, stable: Timing) {
        if candidate.plans_built > 0 || stable.plans_built > 0 {
            return;
        }
        self.timed.candidate.record(Outcome::Served, candidate.computed);
        self.timed.stable.record(Outcome::Served, stable.computed);
    }

    pub fn counts(&self) -> ShadowCounts {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (candidate, stable) = (self.timed.candidate.snapshot(), self.timed.stable.snapshot());
        let micros = |p: Option<Duration>| p.map(|p| p.as_micros() as u64);
        ShadowCounts {
            mirrored: read(&self.mirrored),
            dropped: read(&self.dropped),
            answered: read(&self.answered),
            compared: read(&self.compared),
            agreed: read(&self.agreed),
            timed: candidate.requests,
            candidate_p95_us: micros(candidate.p95),
            stable_p95_us: micros(stable.p95),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::pool::PoolSpec;

    fn candidate() -> Arc<Pool> {
        Arc::new(Pool::new(PoolSpec {
            model: "m".into(),
            version: 2,
            workers: 1,
            predict: Default::default(),
            health: Default::default(),
            memory_limit: None,
            cores_per_worker: 1,
            ..PoolSpec::default()
        }))
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_building_the_copy() {
        let (mirror, mut copies) = Mirror::new(candidate(), 2);
        let copy = || Copy { inputs: vec![], answer: vec![], stable: Timing::default() };
        assert!(mirror.offer(false, copy));
        assert!(mirror.offer(false, copy));
        let mut built = false;
        assert!(!mirror.offer(false, || {
            built = true;
            copy()
        }));
        assert!(!built, "a copy with no room is never built");
        assert_eq!((mirror.counts().mirrored, mirror.counts().dropped), (2, 1));
        assert!(copies.try_recv().is_ok());
        assert!(mirror.offer(false, copy), "room again once the shadow task took one");
        assert!(!mirror.offer(true, copy), "a saturated stable version mirrors nothing");
        assert_eq!(mirror.counts().dropped, 2);
        mirror.compared(true);
        mirror.compared(false);
        assert_eq!(mirror.counts().agreement(), Some(0.5));
    }

    #[test]
    fn inference_times_are_paired_per_copy() {
        let (mirror, _copies) = Mirror::new(candidate(), 2);
        assert_eq!(mirror.counts().inference_p95s(), None);
        let ran = |micros: u64| Timing { computed: Duration::from_micros(micros), ..Timing::default() };
        for i in 1..=20u64 {
            mirror.timed(ran(300 * i), ran(100 * i));
        }
        // A run that built a plan is left out, on either side.
        mirror.timed(Timing { plans_built: 1, ..ran(1_000_000) }, ran(100));
        mirror.timed(ran(100), Timing { plans_built: 1, ..ran(1_000_000) });
        let counts = mirror.counts();
        assert_eq!(counts.timed, 20);
        let (mine, theirs) = counts.inference_p95s().unwrap();
        // Log buckets 5 % wide: within a bucket of the 19th of 20 samples.
        let near = |d: Duration, us: f64| (d.as_secs_f64() * 1e6 / us - 1.0).abs() < 0.06;
        assert!(near(mine, 5700.0) && near(theirs, 1900.0), "{mine:?} {theirs:?}");
    }
}
