//! The supervisor's end of one worker socket: many requests multiplexed over a single
//! connection, replies matched to callers by request id.
//!
//! A writer task sends queued frames (flushing only when the queue is empty, so bursts
//! share a write) and a reader task completes each caller's oneshot. When the connection
//! ends (the worker died or stopped), every request still waiting gets
//! [`CallError::Gone`], which the pool retries on another worker.

use crate::tensor::Tensor;
use crate::wire::{self, Fault, Frame, Timing};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};

/// Read buffer per worker connection.
const READ_BUFFER: usize = 64 * 1024;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

/// Why a call to a worker did not return outputs.
#[derive(Debug, Clone, PartialEq)]
pub enum CallError {
    /// The connection ended before the reply: the worker died or is stopping.
    Gone,
    /// The worker answered with a failure.
    Failed { fault: Fault, message: String },
}

/// A worker's answer: the outputs, and where the time went.
pub type Reply = Result<(Vec<Tensor>, Timing), CallError>;

struct Pending {
    /// `None` once the connection has ended: no new call may wait on it.
    waiting: Option<HashMap<u64, oneshot::Sender<Reply>>>,
}

pub struct WorkerConn {
    outbox: mpsc::UnboundedSender<Vec<u8>>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
    outstanding: AtomicUsize,
}

impl WorkerConn {
    /// Takes over a connection whose handshake is done and starts its reader and writer.
    pub fn start(stream: UnixStream) -> Arc<WorkerConn> {
        let (reader, writer) = stream.into_split();
        let (outbox, queue) = mpsc::unbounded_channel();
        let pending = Arc::new(Mutex::new(Pending { waiting: Some(HashMap::new()) }));
        tokio::spawn(write_loop(BufWriter::new(writer), queue, pending.clone()));
        tokio::spawn(read_loop(reader, pending.clone()));
        Arc::new(WorkerConn { outbox, pending, next_id: AtomicU64::new(1), outstanding: AtomicUsize::new(0) })
    }

    /// Requests sent and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Whether the connection still carries requests.
    pub fn is_open(&self) -> bool {
        lock(&self.pending).waiting.is_some()
    }

    /// Sends one request and waits for its reply.
    pub async fn infer(&self, inputs: &[Tensor]) -> Reply {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match lock(&self.pending).waiting.as_mut() {
            Some(waiting) => waiting.insert(id, tx),
            None => return Err(CallError::Gone),
        };
        let _count = Outstanding::enter(&self.outstanding);
        if self.outbox.send(wire::encode_infer(id, inputs)).is_err() {
            close(&self.pending);
            return Err(CallError::Gone);
        }
        rx.await.unwrap_or(Err(CallError::Gone))
    }
}

/// Counts a request as outstanding for as long as it is held, even if the caller's future
/// is dropped (client gone, timeout).
struct Outstanding<'a>(&'a AtomicUsize);

impl<'a> Outstanding<'a> {
    fn enter(count: &'a AtomicUsize) -> Outstanding<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        Outstanding(count)
    }
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    // Held only for map inserts and removals, which cannot leave it half-changed.
    pending.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends the connection for callers: every waiting request gets Gone, and no new request
/// may wait on it (so a retry never picks it again).
fn close(pending: &Mutex<Pending>) {
    // Dropping the senders wakes every waiting caller with Gone.
    lock(pending).waiting = None;
}

async fn write_loop(
    mut writer: BufWriter<tokio::net::unix::OwnedWriteHalf>,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    pending: Arc<Mutex<Pending>>,
) {
    while let Some(frame) = queue.recv().await {
        let written = match writer.write_all(&frame).await {
            Ok(()) if queue.is_empty() => writer.flush().await,
            other => other,
        };
        if let Err(e) = written {
            tracing::debug!("worker connection write failed: {e}");
            return close(&pending);
        }
    }
}

async fn read_loop(reader: tokio::net::unix::OwnedReadHalf, pending: Arc<Mutex<Pending>>) {
    // Buffered: a burst of replies is read in one system call, not two per frame.
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    loop {
        let frame = match wire::read_frame(&mut reader).await {
            Ok(Some(body)) => Frame::decode(&body),
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("worker connection read failed: {e}");
                break;
            }
        };
        let (id, reply) = match frame {
            Ok(Frame::Output { id, timing, outputs }) => (id, Ok((outputs, timing))),
            Ok(Frame::Failed { id, fault, message }) => (id, Err(CallError::Failed { fault, message })),
            Ok(other) => {
                tracing::warn!("unexpected frame from worker: {other:?}");
                continue;
            }
            Err(e) => {
                tracing::error!("undecodable frame from worker, dropping connection: {e}");
                break;
            }
        };
        if let Some(tx) = lock(&pending).waiting.as_mut().and_then(|w| w.remove(&id)) {
            let _ = tx.send(reply);
        }
    }
    close(&pending);
}
