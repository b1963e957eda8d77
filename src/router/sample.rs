//! A model's sample of recent live requests, kept in memory so that a rollout of a quiet
//! model can replay them to its candidate when live traffic is too thin to judge it
//! ([`crate::rollout::replay`]).
//!
//! The front offers each request its stable version answered, with that answer; the
//! sample keeps the most recent, bounded by a count and a byte budget, and takes at most
//! [`MAX_TAKEN_PER_SECOND`] a second so that copying a request's tensors never costs a
//! busy model anything that matters (a quiet one has every request kept). Nothing here
//! is ever written to disk; the sample goes with the model's route, and a model whose
//! inputs are sensitive turns it off (`[model.deploy] replay = false`).

use crate::tensor::Tensor;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Requests taken into the sample at most per second.
pub const MAX_TAKEN_PER_SECOND: u32 = 50;

/// One kept request and the answer the stable version gave it.
#[derive(Debug, Clone)]
pub struct Kept {
    /// Unique within the sample: a replay never takes the same request twice.
    pub id: u64,
    pub inputs: Vec<Tensor>,
    pub answer: Vec<Tensor>,
    /// The version that answered it.
    pub version: u64,
}

impl Kept {
    fn bytes(&self) -> usize {
        self.inputs.iter().chain(&self.answer).map(|t| t.data.len() + t.name.len() + 64).sum()
    }
}

/// How much a sample may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests kept (0: the sample is off).
    pub requests: usize,
    /// Bytes of tensors kept, at most.
    pub bytes: usize,
}

impl Limits {
    pub const OFF: Limits = Limits { requests: 0, bytes: 0 };
}

struct Held {
    limits: Limits,
    kept: VecDeque<Kept>,
    bytes: usize,
    /// When the last request was taken, to pace taking.
    last_taken: Option<Instant>,
}

pub struct Sample {
    held: Mutex<Held>,
    next_id: AtomicU64,
}

impl Sample {
    pub fn new(limits: Limits) -> Sample {
        Sample {
            held: Mutex::new(Held { limits, kept: VecDeque::new(), bytes: 0, last_taken: None }),
            next_id: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies new limits (a reload): the oldest requests go until the sample fits.
    pub fn set_limits(&self, limits: Limits) {
        let mut held = self.lock();
        held.limits = limits;
        held.shrink();
    }

    pub fn limits(&self) -> Limits {
        self.lock().limits
    }

    /// Whether a request offered now would be taken: the sample is on and its pace
    /// allows. Checked before the request's tensors are copied.
    pub fn wants(&self) -> bool {
        let held = self.lock();
        let spacing = Duration::from_secs(1) / MAX_TAKEN_PER_SECOND;
        held.limits.requests > 0 && held.last_taken.is_none_or(|t| t.elapsed() >= spacing)
    }

    /// Keeps a request `version` answered with `answer`; the oldest go when it is full.
    /// A request larger than the whole byte budget is not kept.
    pub fn keep(&self, inputs: Vec<Tensor>, answer: Vec<Tensor>, version: u64) {
        let kept = Kept { id: self.next_id.fetch_add(1, Ordering::Relaxed), inputs, answer, version };
        let size = kept.bytes();
        let mut held = self.lock();
        if held.limits.requests == 0 || size > held.limits.bytes {
            return;
        }
        held.last_taken = Some(Instant::now());
        held.bytes += size;
        held.kept.push_back(kept);
        held.shrink();
    }

    /// The kept requests, newest first, skipping those in `seen`.
    pub fn newest_unseen(&self, seen: &std::collections::HashSet<u64>, at_most: usize) -> Vec<Kept> {
        let held = self.lock();
        held.kept.iter().rev().filter(|k| !seen.contains(&k.id)).take(at_most).cloned().collect()
    }

    /// Requests kept now, and their bytes.
    pub fn size(&self) -> (usize, usize) {
        let held = self.lock();
        (held.kept.len(), held.bytes)
    }
}

impl Held {
    fn shrink(&mut self) {
        while self.kept.len() > self.limits.requests || self.bytes > self.limits.bytes {
            let Some(old) = self.kept.pop_front() else { break };
            self.bytes -= old.bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Values;

    fn tensor(v: f32) -> Vec<Tensor> {
        vec![Tensor::from_values("x", vec![1, 4], Values::F32(vec![v; 4])).unwrap()]
    }

    fn take(sample: &Sample, v: f32) {
        // Past the pace: each call is a second's worth of spacing later.
        sample.lock().last_taken = None;
        assert!(sample.wants());
        sample.keep(tensor(v), tensor(v * 2.0), 1);
    }

    #[test]
    fn the_sample_keeps_the_newest_within_its_count_and_bytes() {
        let s = Sample::new(Limits { requests: 3, bytes: 1 << 20 });
        for v in 0..5 {
            take(&s, v as f32);
        }
        let kept = s.newest_unseen(&Default::default(), 10);
        let firsts: Vec<f32> = kept.iter().map(|k| k.inputs[0].to_f64()[0] as f32).collect();
        assert_eq!(firsts, [4.0, 3.0, 2.0], "newest first, the oldest gone");
        let one = kept[0].bytes();
        s.set_limits(Limits { requests: 3, bytes: one * 2 });
        assert_eq!(s.size().0, 2, "a smaller budget drops the oldest");
        let seen = [kept[0].id].into_iter().collect();
        assert_eq!(s.newest_unseen(&seen, 10).len(), 1);
    }

    #[test]
    fn taking_is_paced_and_off_takes_nothing() {
        let s = Sample::new(Limits { requests: 10, bytes: 1 << 20 });
        assert!(s.wants());
        s.keep(tensor(1.0), tensor(2.0), 1);
        assert!(!s.wants(), "at most {MAX_TAKEN_PER_SECOND} a second");
        let off = Sample::new(Limits::OFF);
        assert!(!off.wants());
        off.keep(tensor(1.0), tensor(2.0), 1);
        assert_eq!(off.size(), (0, 0));
        let tiny = Sample::new(Limits { requests: 10, bytes: 10 });
        tiny.keep(tensor(1.0), tensor(2.0), 1);
        assert_eq!(tiny.size().0, 0, "a request over the whole budget is not kept");
    }
}
