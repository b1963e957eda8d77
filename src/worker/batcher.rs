//! Dynamic batching, on Triton's model: requests wait in one queue, owned by one task;
//! whenever an inference thread is free, the task takes the oldest request and every
//! queued request with the same trailing input shapes, up to `max_batch` rows, waiting at
//! most `delay` after the first arrived (or until a preferred size is reached) — then runs
//! them as one batch stacked along the first dimension and splits the outputs back.
//!
//! Under load, requests queue while the threads are busy, so batches form by themselves
//! even with no delay; at low load a request never waits longer than `delay`. A request
//! whose client has gone before its batch starts is dropped. If a merged batch fails, its
//! requests are run one by one, so one bad request fails alone. A model whose first
//! dimension is not open is never batched (`max_batch` is then 1).

use super::engine::{Engine, Failure};
use crate::tensor::{DType, Tensor};
use crate::wire::Timing;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// How requests are merged.
#[derive(Debug, Clone)]
pub struct Policy {
    pub max_batch: usize,
    pub delay: Duration,
    pub preferred: Vec<usize>,
}

type Reply = Result<(Vec<Tensor>, Timing), Failure>;

/// One request waiting for a batch.
struct Job {
    inputs: Vec<Tensor>,
    rows: usize,
    /// Element types and shapes after the first dimension: only equal keys stack.
    key: Vec<(DType, Vec<usize>)>,
    arrived: Instant,
    reply: oneshot::Sender<Reply>,
}

#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::UnboundedSender<Job>,
    batchable: bool,
}

impl Batcher {
    /// Starts the task that forms batches and runs them on `slots` inference threads.
    pub fn start(engine: Arc<Engine>, slots: Arc<Semaphore>, mut policy: Policy) -> Batcher {
        if !engine.batchable {
            policy.max_batch = 1;
        }
        let (queue, jobs) = mpsc::unbounded_channel();
        let batchable = engine.batchable;
        tokio::spawn(form_batches(engine, slots, policy, jobs));
        Batcher { queue, batchable }
    }

    /// Queues prepared inputs and waits for their outputs.
    pub async fn submit(&self, inputs: Vec<Tensor>) -> Reply {
        let rows = if self.batchable { inputs.first().map_or(1, Tensor::rows) } else { 1 };
        let key = inputs.iter().map(|t| (t.dtype, t.shape.get(1..).unwrap_or_default().to_vec())).collect();
        let (reply, answer) = oneshot::channel();
        let job = Job { inputs, rows, key, arrived: Instant::now(), reply };
        if self.queue.send(job).is_err() {
            return Err(Failure { fault: crate::wire::Fault::Internal, message: "worker is stopping".into() });
        }
        answer.await.unwrap_or_else(|_| {
            Err(Failure { fault: crate::wire::Fault::Internal, message: "the batch was lost".into() })
        })
    }
}

async fn form_batches(
    engine: Arc<Engine>,
    slots: Arc<Semaphore>,
    policy: Policy,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let mut held: VecDeque<Job> = VecDeque::new();
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let first = match held.pop_front() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        if first.reply.is_closed() {
            continue;
        }
        let deadline = tokio::time::Instant::from_std(first.arrived + policy.delay);
        let mut batch = vec![first];
        let mut rows = batch[0].rows;
        // Held requests first (they are older), then the queue without waiting, then the
        // queue until the deadline.
        let mut i = 0;
        while i < held.len() && rows < policy.max_batch {
            if fits(&held[i], &batch[0], rows, policy.max_batch) {
                let job = held.remove(i).expect("index in range");
                rows += job.rows;
                batch.push(job);
            } else {
                i += 1;
            }
        }
        while rows < policy.max_batch && !policy.preferred.contains(&rows) {
            let next = match jobs.try_recv() {
                Ok(job) => job,
                Err(_) => match tokio::time::timeout_at(deadline, jobs.recv()).await {
                    Ok(Some(job)) => job,
                    _ => break,
                },
            };
            if next.reply.is_closed() {
                continue;
            }
            if fits(&next, &batch[0], rows, policy.max_batch) {
                rows += next.rows;
                batch.push(next);
            } else {
                held.push_back(next);
            }
        }
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || {
            run_batch(&engine, batch, rows);
            drop(permit);
        });
    }
}

fn fits(job: &Job, first: &Job, rows: usize, max_batch: usize) -> bool {
    job.key == first.key && rows + job.rows <= max_batch
}

/// Runs a batch and answers each of its requests with its own rows.
fn run_batch(engine: &Engine, batch: Vec<Job>, rows: usize) {
    let started = Instant::now();
    if batch.len() == 1 {
        let job = batch.into_iter().next().expect("one job");
        return answer_alone(engine, job, started);
    }
    let merged: Vec<Tensor> = (0..batch[0].inputs.len())
        .map(|i| Tensor::concat_rows(&batch.iter().map(|j| j.inputs[i].clone()).collect::<Vec<_>>()))
        .collect();
    match engine.run(merged) {
        Ok(run) => {
            let computed = started.elapsed();
            let mut start = 0;
            for (n, job) in batch.into_iter().enumerate() {
                let end = start + job.rows;
                let outputs = run.outputs.iter().map(|t| t.slice_rows(start, end)).collect();
                let plans_built = if n == 0 { run.plans_built } else { 0 };
                let timing =
                    Timing { queued: started - job.arrived, computed, batch: rows as u32, leads: n == 0, plans_built };
                let _ = job.reply.send(Ok((outputs, timing)));
                start = end;
            }
        }
        // One bad request must not fail its neighbours: each runs alone.
        Err(_) => {
            for job in batch {
                answer_alone(engine, job, Instant::now());
            }
        }
    }
}

fn answer_alone(engine: &Engine, job: Job, started: Instant) {
    let rows = job.rows;
    let result = engine.run(job.inputs).map(|run| {
        let timing = Timing {
            queued: started.saturating_duration_since(job.arrived),
            computed: started.elapsed(),
            batch: rows as u32,
            leads: true,
            plans_built: run.plans_built,
        };
        (run.outputs, timing)
    });
    let _ = job.reply.send(result);
}
