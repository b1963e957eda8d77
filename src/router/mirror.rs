//! The shadow phase's tap on live traffic: a bounded queue of copies of the requests the
//! stable version answered, with its answers, for a candidate to answer too.
//!
//! The front offers a copy after the stable version answered, and never waits: when the
//! queue is full the copy is dropped and counted, so mirroring never slows or fails a
//! user request. The rollout's shadow task ([`crate::rollout::shadow`]) takes the copies,
//! runs them on the candidate, throws its answers away once compared, and counts here what
//! it compared; `/health` and the gate read the counts.

use super::pool::Pool;
use crate::tensor::Tensor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// One live request and the stable version's answer to it.
pub struct Copy {
    pub inputs: Vec<Tensor>,
    pub answer: Vec<Tensor>,
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
}

impl ShadowCounts {
    /// Share of compared copies the candidate agreed on (None before any).
    pub fn agreement(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.agreed as f64 / self.compared as f64)
    }
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
}

impl Mirror {
    /// A mirror feeding `pool` through a queue of `capacity` copies; the receiver goes to
    /// the task that answers them.
    pub fn new(pool: Arc<Pool>, capacity: usize) -> (Arc<Mirror>, mpsc::Receiver<Copy>) {
        let (queue, copies) = mpsc::channel(capacity.max(1));
        let mirror = Mirror {
            pool,
            queue,
            mirrored: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            compared: AtomicU64::new(0),
            agreed: AtomicU64::new(0),
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

    pub fn counts(&self) -> ShadowCounts {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ShadowCounts {
            mirrored: read(&self.mirrored),
            dropped: read(&self.dropped),
            answered: read(&self.answered),
            compared: read(&self.compared),
            agreed: read(&self.agreed),
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
        let copy = || Copy { inputs: vec![], answer: vec![] };
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
}
