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
use crate::wire::{DType, Tensor};
use crate::wire::{Frame, Timing};
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

impl Policy {
    /// The rows one run may take for this engine: 1 when its first dimension is fixed.
    pub fn max_rows(&self, engine: &Engine) -> usize {
        if engine.batchable { self.max_batch.max(1) } else { 1 }
    }

    /// Whether a batch of `rows` rows should run now rather than wait for more.
    pub fn is_full(&self, rows: usize, max_rows: usize) -> bool {
        rows >= max_rows || self.preferred.contains(&rows)
    }
}

pub type Reply = Result<(Vec<Tensor>, Timing), Failure>;

/// The frame that answers request `id`.
pub fn reply_frame(id: u64, reply: Reply) -> Frame {
    match reply {
        Ok((outputs, timing)) => Frame::Output { id, timing, outputs },
        Err(Failure { fault, message }) => Frame::Failed { id, fault, message },
    }
}

/// One request waiting for a batch.
pub struct Queued {
    pub inputs: Vec<Tensor>,
    pub rows: usize,
    /// Element types and shapes after the first dimension: only equal keys stack.
    key: Vec<(DType, Vec<usize>)>,
    pub arrived: Instant,
}

impl Queued {
    /// A request of prepared inputs, arrived now.
    pub fn new(inputs: Vec<Tensor>, batchable: bool) -> Queued {
        let rows = if batchable { inputs.first().map_or(1, Tensor::rows) } else { 1 };
        let key = inputs.iter().map(|t| (t.dtype, t.shape.get(1..).unwrap_or_default().to_vec())).collect();
        Queued { inputs, rows, key, arrived: Instant::now() }
    }

    /// Whether this request stacks onto a batch led by `first` holding `rows` rows.
    pub fn fits(&self, first: &Queued, rows: usize, max_rows: usize) -> bool {
        self.key == first.key && rows + self.rows <= max_rows
    }
}

/// A batch being formed: the requests (with whatever travels with each) that stack onto
/// the oldest, and their rows. Both the batching task and the one-thread loop form theirs
/// with it.
pub struct Forming<T> {
    pub items: Vec<T>,
    pub rows: usize,
    max_rows: usize,
}

impl<T: AsRef<Queued>> Forming<T> {
    pub fn new(first: T, max_rows: usize) -> Forming<T> {
        let rows = first.as_ref().rows;
        Forming { items: vec![first], rows, max_rows }
    }

    /// When the first request may wait no longer for others.
    pub fn deadline(&self, policy: &Policy) -> Instant {
        self.items[0].as_ref().arrived + policy.delay
    }

    /// Adds `item` if it stacks onto the batch; hands it back otherwise.
    pub fn offer(&mut self, item: T) -> Option<T> {
        let request = item.as_ref();
        if !request.fits(self.items[0].as_ref(), self.rows, self.max_rows) {
            return Some(item);
        }
        self.rows += request.rows;
        self.items.push(item);
        None
    }

    /// Takes the held requests that stack onto the batch, oldest first; the others stay.
    pub fn take_from(&mut self, held: &mut VecDeque<T>) {
        *held = std::mem::take(held).into_iter().filter_map(|item| self.offer(item)).collect();
    }

    /// Whether the batch should run now rather than wait for more.
    pub fn is_full(&self, policy: &Policy) -> bool {
        policy.is_full(self.rows, self.max_rows)
    }
}

/// A queued request and where its answer goes.
struct Job {
    request: Queued,
    reply: oneshot::Sender<Reply>,
}

impl AsRef<Queued> for Job {
    fn as_ref(&self) -> &Queued {
        &self.request
    }
}

#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::UnboundedSender<Job>,
    batchable: bool,
}

impl Batcher {
    /// Starts the task that forms batches and runs them on `slots` inference threads.
    pub fn start(engine: Arc<Engine>, slots: Arc<Semaphore>, policy: Policy) -> Batcher {
        let (queue, jobs) = mpsc::unbounded_channel();
        let batchable = engine.batchable;
        tokio::spawn(form_batches(engine, slots, policy, jobs));
        Batcher { queue, batchable }
    }

    /// Queues prepared inputs and waits for their outputs.
    pub async fn submit(&self, inputs: Vec<Tensor>) -> Reply {
        let (reply, answer) = oneshot::channel();
        let job = Job { request: Queued::new(inputs, self.batchable), reply };
        if self.queue.send(job).is_err() {
            return Err(Failure::internal("worker is stopping"));
        }
        answer.await.unwrap_or_else(|_| Err(Failure::internal("the batch was lost")))
    }
}

async fn form_batches(
    engine: Arc<Engine>,
    slots: Arc<Semaphore>,
    policy: Policy,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let max_rows = policy.max_rows(&engine);
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
        let mut batch = Forming::new(first, max_rows);
        let deadline = tokio::time::Instant::from_std(batch.deadline(&policy));
        // Held requests first (they are older), then the queue without waiting, then the
        // queue until the deadline.
        batch.take_from(&mut held);
        while !batch.is_full(&policy) {
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
            if let Some(unfit) = batch.offer(next) {
                held.push_back(unfit);
            }
        }
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || {
            let (requests, answers): (Vec<Queued>, Vec<_>) =
                batch.items.into_iter().map(|j| (j.request, j.reply)).unzip();
            for (reply, answer) in run_batch(&engine, requests, batch.rows).into_iter().zip(answers) {
                let _ = answer.send(reply);
            }
            drop(permit);
        });
    }
}

/// Runs a batch and gives each of its requests its own rows, in order.
pub fn run_batch(engine: &Engine, batch: Vec<Queued>, rows: usize) -> Vec<Reply> {
    let started = Instant::now();
    if batch.len() == 1 {
        return batch.into_iter().map(|request| run_alone(engine, request, started)).collect();
    }
    let merged: Vec<Tensor> = (0..batch[0].inputs.len())
        .map(|i| Tensor::concat_rows(&batch.iter().map(|r| &r.inputs[i]).collect::<Vec<_>>()))
        .collect();
    match engine.run(merged) {
        Ok(run) => {
            let computed = started.elapsed();
            let mut start = 0;
            let mut replies = Vec::with_capacity(batch.len());
            for (n, request) in batch.into_iter().enumerate() {
                let end = start + request.rows;
                let outputs: Vec<Tensor> = run.outputs.iter().map(|t| t.slice_rows(start, end)).collect();
                let plans_built = if n == 0 { run.plans_built } else { 0 };
                let queued = started - request.arrived;
                let timing = Timing { queued, computed, batch: rows as u32, leads: n == 0, plans_built };
                replies.push(engine.contract.check(&outputs).map(|()| (outputs, timing)));
                start = end;
            }
            replies
        }
        // One bad request must not fail its neighbours: each runs alone.
        Err(_) => batch.into_iter().map(|request| run_alone(engine, request, Instant::now())).collect(),
    }
}

fn run_alone(engine: &Engine, request: Queued, started: Instant) -> Reply {
    let rows = request.rows;
    let run = engine.run(request.inputs)?;
    engine.contract.check(&run.outputs)?;
    let timing = Timing {
        queued: started.saturating_duration_since(request.arrived),
        computed: started.elapsed(),
        batch: rows as u32,
        leads: true,
        plans_built: run.plans_built,
    };
    Ok((run.outputs, timing))
}
