//! The shadow phase's worker side: answers the mirrored copies of live requests on the
//! candidate, records each outcome and latency in the candidate's window (as its own
//! traffic would be), compares its answers with stable's ([`Answers`]) and its worker's
//! inference time with stable's worker's on the same copy, and throws them away.
//!
//! It runs at most one copy per ready worker of the candidate at a time, each under the
//! request timeout, so a copy never queues behind another inside a worker (its latency is
//! the candidate's own, comparable with stable's) and a slow or hung candidate fills the
//! mirror's queue, whose copies are then dropped, never waited for. It stops when the
//! phase ends.

use super::answers::Answers;
use crate::metrics::Metrics;
use crate::router::CallError;
use crate::router::mirror::{Copy, Mirror};
use crate::router::pool::{Pool, PoolError};
use crate::window::Outcome;
use crate::wire::Fault;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Copies waiting for the candidate, at most.
pub const QUEUE: usize = 256;

/// A running shadow phase; dropping it stops the task.
pub struct Shadow {
    pub mirror: Arc<Mirror>,
    stop: CancellationToken,
}

impl Drop for Shadow {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// What answering one copy needs.
struct Answering {
    candidate: Arc<Pool>,
    mirror: Arc<Mirror>,
    answers: Arc<Answers>,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

/// Starts mirroring into `candidate`, its answers compared with stable's in `answers`.
pub fn start(candidate: &Arc<Pool>, answers: Arc<Answers>, metrics: Arc<Metrics>, timeout: Duration) -> Shadow {
    let (mirror, copies) = Mirror::new(candidate.clone(), QUEUE);
    let stop = CancellationToken::new();
    let answering =
        Arc::new(Answering { candidate: candidate.clone(), mirror: mirror.clone(), answers, metrics, timeout });
    let concurrency = candidate.ready_workers().max(1);
    tokio::spawn(answer_copies(answering, copies, concurrency, stop.clone()));
    Shadow { mirror, stop }
}

async fn answer_copies(
    answering: Arc<Answering>,
    mut copies: mpsc::Receiver<Copy>,
    concurrency: usize,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(concurrency));
    loop {
        let copy = tokio::select! {
            _ = stop.cancelled() => return,
            copy = copies.recv() => match copy {
                Some(copy) => copy,
                None => return,
            },
        };
        let permit = tokio::select! {
            _ = stop.cancelled() => return,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (answering, stop) = (answering.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = answering.answer(copy) => {}
            }
            drop(permit);
        });
    }
}

impl Answering {
    /// Runs one copy on the candidate and records what it did.
    async fn answer(&self, copy: Copy) {
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, self.candidate.infer(&copy.inputs)).await;
        let latency = started.elapsed();
        let outcome = match result {
            Err(_) => Outcome::Unavailable,
            Ok(Ok((outputs, timing))) => {
                self.mirror.timed(timing, copy.stable);
                if let Some(agreed) = self.answers.mirrored(&copy.answer, &outputs) {
                    self.mirror.compared(agreed);
                    self.count(if agreed { "agreed" } else { "disagreed" });
                }
                Outcome::Served
            }
            Ok(Err(e)) => {
                self.answers.mirrored_failed();
                failure(&self.metrics, &self.candidate, e)
            }
        };
        self.candidate.window.record(outcome, latency);
        self.mirror.answered();
    }

    fn count(&self, outcome: &str) {
        let labels = [self.candidate.model.as_str(), &self.candidate.version.to_string(), outcome];
        self.metrics.shadow_requests.with_label_values(&labels).inc();
    }
}

/// The outcome a copy or replay the candidate failed counts as, as the front would count
/// it; a wrong answer is counted against its output.
pub fn failure(metrics: &Metrics, candidate: &Pool, e: PoolError) -> Outcome {
    match e {
        PoolError::Call(CallError::Failed { fault: Fault::BadInput, .. }) => Outcome::Invalid,
        PoolError::Call(CallError::Failed { fault, .. }) => {
            if let Some(output) = fault.output() {
                let contract = matches!(fault, Fault::Contract { .. });
                metrics.wrong_answer(&candidate.model, candidate.version, output, contract);
            }
            Outcome::Failed
        }
        PoolError::Call(CallError::Gone) | PoolError::Unavailable(_) | PoolError::Stopping => Outcome::Unavailable,
    }
}
