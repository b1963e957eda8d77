//! The supervisor's end of one worker socket: many requests multiplexed over a single
//! connection, replies matched to callers by request id.
//!
//! A caller writes its frame straight to the socket when nothing is queued before it (no
//! hand-off to another task on the common path); what the socket does not take at once is
//! queued, in order, for a writer task that waits for the socket to drain. A reader task
//! completes each caller's oneshot. When the connection ends (the worker died or stopped,
//! a frame could not be read or written, or the supervisor abandoned a hung worker), every
//! request still waiting gets [`CallError::Gone`], which the pool retries on another
//! worker, and [`WorkerConn::ended`] resolves for the worker's keeper.
//!
//! The connection also keeps what liveness needs: when the worker was last heard from,
//! since when it has held requests, and a Ping to send ([`crate::supervisor::liveness`]).

use crate::tensor::Tensor;
use crate::wire::{self, Fault, Frame, Timing};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::BufReader;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

/// Read buffer per worker connection.
const READ_BUFFER: usize = 64 * 1024;

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
    /// Cancelled when the connection ends.
    ended: CancellationToken,
}

/// When the worker was last heard from, and since when it has held requests: the clock
/// liveness reads.
struct Activity {
    origin: Instant,
    /// Milliseconds since `origin` of the last frame received.
    heard_ms: AtomicU64,
    /// Milliseconds since `origin` when the outstanding count last rose from zero.
    busy_since_ms: AtomicU64,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }
}

pub struct WorkerConn {
    outbox: Arc<Outbox>,
    pending: Arc<Mutex<Pending>>,
    activity: Arc<Activity>,
    next_id: AtomicU64,
    outstanding: AtomicUsize,
    /// Requests the worker answered (with outputs or a failure of its own).
    answered: AtomicU64,
}

impl WorkerConn {
    /// Takes over a connection whose handshake is done and starts its reader and writer.
    pub fn start(stream: UnixStream) -> Arc<WorkerConn> {
        let (reader, writer) = stream.into_split();
        let outbox = Arc::new(Outbox::new(writer));
        let pending = Arc::new(Mutex::new(Pending { waiting: Some(HashMap::new()), ended: CancellationToken::new() }));
        let activity = Arc::new(Activity {
            origin: Instant::now(),
            heard_ms: AtomicU64::new(0),
            busy_since_ms: AtomicU64::new(0),
        });
        tokio::spawn(write_loop(outbox.clone(), pending.clone()));
        tokio::spawn(read_loop(reader, pending.clone(), activity.clone()));
        Arc::new(WorkerConn {
            outbox,
            pending,
            activity,
            next_id: AtomicU64::new(1),
            outstanding: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
        })
    }

    /// Requests sent and not yet answered.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Requests the worker answered so far: what proves a restarted worker serves again.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Whether the connection still carries requests.
    pub fn is_open(&self) -> bool {
        lock(&self.pending).waiting.is_some()
    }

    /// Resolves once the connection has ended (for any reason).
    pub async fn ended(&self) {
        let ended = lock(&self.pending).ended.clone();
        ended.cancelled().await
    }

    /// Ends the connection from this side: every waiting request gets Gone (and is
    /// retried elsewhere by its pool), and no new one is sent. For a worker declared hung.
    pub fn abandon(&self) {
        close(&self.pending);
    }

    /// Whether this side is behind the worker rather than the worker silent: bytes it sent
    /// wait unread in the socket, or frames for it wait in the outbox while the socket would
    /// take them. Both happen when the daemon's own threads were too busy to run this
    /// connection's reader or writer; a liveness watch must not blame the worker then.
    pub fn behind(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let socket: &UnixStream = self.outbox.socket.as_ref();
        let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN | PollFlags::POLLOUT)];
        if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            return false;
        }
        let ready = fds[0].revents().unwrap_or(PollFlags::empty());
        let unsent = !self.outbox.state.lock().unwrap_or_else(|e| e.into_inner()).frames.is_empty();
        ready.contains(PollFlags::POLLIN) || (unsent && ready.contains(PollFlags::POLLOUT))
    }

    /// How long the worker has held requests without a word: since the later of its last
    /// frame and the moment it last went from idle to busy. `None` while it holds none.
    pub fn silent_for(&self) -> Option<Duration> {
        if self.outstanding() == 0 {
            return None;
        }
        let a = &self.activity;
        let since = a.heard_ms.load(Ordering::Relaxed).max(a.busy_since_ms.load(Ordering::Relaxed));
        Some(Duration::from_millis(a.now_ms().saturating_sub(since)))
    }

    /// A mark that changes whenever a frame arrives (compare two readings).
    pub fn heard(&self) -> u64 {
        self.activity.heard_ms.load(Ordering::Relaxed)
    }

    /// Asks the worker for a Pong; any frame it sends after counts as an answer.
    pub fn ping(&self) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if self.outbox.send(Frame::Ping { id }.encode()).is_err() {
            close(&self.pending);
        }
    }

    /// Sends one request and waits for its reply.
    pub async fn infer(&self, inputs: &[Tensor]) -> Reply {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match lock(&self.pending).waiting.as_mut() {
            Some(waiting) => waiting.insert(id, tx),
            None => return Err(CallError::Gone),
        };
        let _count = Outstanding::enter(&self.outstanding, &self.activity);
        if let Err(e) = self.outbox.send(wire::encode_infer(id, inputs)) {
            tracing::debug!("worker connection write failed: {e}");
            close(&self.pending);
            return Err(CallError::Gone);
        }
        let reply = rx.await.unwrap_or(Err(CallError::Gone));
        if !matches!(reply, Err(CallError::Gone)) {
            self.answered.fetch_add(1, Ordering::Relaxed);
        }
        reply
    }
}

/// Counts a request as outstanding for as long as it is held, even if the caller's future
/// is dropped (client gone, timeout).
struct Outstanding<'a>(&'a AtomicUsize);

impl<'a> Outstanding<'a> {
    fn enter(count: &'a AtomicUsize, activity: &Activity) -> Outstanding<'a> {
        if count.fetch_add(1, Ordering::Relaxed) == 0 {
            activity.busy_since_ms.store(activity.now_ms(), Ordering::Relaxed);
        }
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
    let mut pending = lock(pending);
    // Dropping the senders wakes every waiting caller with Gone.
    pending.waiting = None;
    pending.ended.cancel();
}

/// Frames on their way to the worker, in call order.
struct Outbox {
    socket: OwnedWriteHalf,
    state: Mutex<Queue>,
    /// Wakes the writer task when a frame had to be queued.
    queued: Notify,
}

/// A frame waiting for the socket, with how much of it was written: a large frame (an
/// image) goes out in several writes, and its rest is never copied.
struct Unsent {
    frame: Vec<u8>,
    written: usize,
}

impl Unsent {
    fn rest(&self) -> &[u8] {
        &self.frame[self.written..]
    }
}

#[derive(Default)]
struct Queue {
    /// Frames (the first one perhaps partly written) the socket has not taken yet.
    frames: VecDeque<Unsent>,
    /// A write failed: the connection is finished.
    broken: bool,
    /// The connection was dropped: the writer task ends.
    dropped: bool,
}

impl Outbox {
    fn new(socket: OwnedWriteHalf) -> Outbox {
        Outbox { socket, state: Mutex::new(Queue::default()), queued: Notify::new() }
    }

    /// Writes the frame now if nothing waits before it and the socket takes it; queues the
    /// rest for the writer task otherwise.
    fn send(&self, frame: Vec<u8>) -> io::Result<()> {
        let mut queue = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if queue.broken {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if !queue.frames.is_empty() {
            queue.frames.push_back(Unsent { frame, written: 0 });
            return Ok(());
        }
        match write_some(&self.socket, &frame) {
            Ok(n) if n == frame.len() => return Ok(()),
            Ok(n) => queue.frames.push_back(Unsent { frame, written: n }),
            Err(e) => {
                queue.broken = true;
                return Err(e);
            }
        }
        drop(queue);
        self.queued.notify_one();
        Ok(())
    }

    /// Writes queued frames until the queue is empty or the socket is full; returns whether
    /// frames remain.
    fn drain(&self) -> io::Result<bool> {
        let mut queue = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if queue.dropped {
            return Err(io::ErrorKind::NotConnected.into());
        }
        while let Some(front) = queue.frames.front_mut() {
            match write_some(&self.socket, front.rest()) {
                Ok(n) if n == front.rest().len() => {
                    queue.frames.pop_front();
                }
                Ok(0) => return Ok(true),
                Ok(n) => {
                    front.written += n;
                    return Ok(true);
                }
                Err(e) => {
                    queue.broken = true;
                    return Err(e);
                }
            }
        }
        Ok(false)
    }
}

impl Drop for WorkerConn {
    fn drop(&mut self) {
        // The writer task holds the socket's write half; ending it closes the connection.
        self.outbox.state.lock().unwrap_or_else(|e| e.into_inner()).dropped = true;
        self.outbox.queued.notify_one();
    }
}

/// One non-blocking write: the bytes the socket took, 0 when it is full.
fn write_some(socket: &OwnedWriteHalf, bytes: &[u8]) -> io::Result<usize> {
    match socket.try_write(bytes) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// Sends what callers could not write at once, as the socket drains; ends when the
/// connection is dropped or broken.
async fn write_loop(outbox: Arc<Outbox>, pending: Arc<Mutex<Pending>>) {
    loop {
        outbox.queued.notified().await;
        let ended = loop {
            match outbox.drain() {
                Ok(false) => break None,
                Ok(true) => {
                    if let Err(e) = outbox.socket.writable().await {
                        break Some(e);
                    }
                }
                Err(e) => break Some(e),
            }
        };
        if let Some(e) = ended {
            if e.kind() != io::ErrorKind::NotConnected {
                tracing::debug!("worker connection write failed: {e}");
            }
            return close(&pending);
        }
    }
}

async fn read_loop(reader: tokio::net::unix::OwnedReadHalf, pending: Arc<Mutex<Pending>>, activity: Arc<Activity>) {
    // Buffered: a burst of replies is read in one system call, not two per frame.
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    loop {
        let frame = match wire::read_frame(&mut reader).await {
            Ok(Some(body)) => Frame::decode(&body),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("worker connection read failed, dropping it: {e}");
                break;
            }
        };
        activity.heard_ms.store(activity.now_ms(), Ordering::Relaxed);
        let (id, reply) = match frame {
            Ok(Frame::Output { id, timing, outputs }) => (id, Ok((outputs, timing))),
            Ok(Frame::Failed { id, fault, message }) => (id, Err(CallError::Failed { fault, message })),
            Ok(Frame::Pong { .. }) => continue,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DType, Tensor};

    /// A worker that answers every Infer frame with its own inputs, until the connection
    /// ends; returns how many it answered.
    async fn echo_worker(stream: UnixStream) -> usize {
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        let mut answered = 0;
        while let Ok(Some(body)) = wire::read_frame(&mut reader).await {
            let Ok(Frame::Infer { id, inputs }) = Frame::decode(&body) else { panic!("not an Infer frame") };
            let reply = Frame::Output { id, timing: Timing::default(), outputs: inputs };
            wire::send(&mut writer, &reply).await.expect("reply written");
            answered += 1;
        }
        answered
    }

    fn tensor(caller: usize, bytes: usize) -> Tensor {
        Tensor { name: format!("t{caller}"), dtype: DType::U8, shape: vec![bytes], data: vec![caller as u8; bytes] }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replies_match_callers_when_frames_overflow_the_socket() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let worker = tokio::spawn(echo_worker(theirs));
        let conn = WorkerConn::start(ours);
        // Frames of 1 MiB exceed the socket buffer: they are written in parts, partly by
        // the writer task, while small frames from other callers queue behind them.
        let calls = (0..40).map(|caller| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let input = tensor(caller, if caller % 4 == 0 { 1 << 20 } else { 100 });
                let (outputs, _) = conn.infer(std::slice::from_ref(&input)).await.expect("answered");
                assert_eq!(outputs, vec![input], "caller {caller} got another caller's reply");
            })
        });
        for call in calls.collect::<Vec<_>>() {
            call.await.unwrap();
        }
        assert_eq!(conn.outstanding(), 0);
        drop(conn);
        // Dropping the connection closes the socket: the worker sees the end and stops.
        let answered = tokio::time::timeout(std::time::Duration::from_secs(10), worker).await;
        assert_eq!(answered.expect("worker saw the connection end").unwrap(), 40);
    }

    #[tokio::test]
    async fn a_worker_gone_fails_waiting_and_later_calls() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let conn = WorkerConn::start(ours);
        let waiting = tokio::spawn({
            let conn = conn.clone();
            async move { conn.infer(&[tensor(1, 10)]).await }
        });
        tokio::task::yield_now().await;
        drop(theirs);
        assert_eq!(waiting.await.unwrap().unwrap_err(), CallError::Gone);
        assert!(!conn.is_open());
        assert_eq!(conn.infer(&[tensor(2, 10)]).await.unwrap_err(), CallError::Gone);
    }

    /// Yields until the runtime's other tasks (this test holds its only thread) have run.
    async fn let_others_run() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn behind_tells_unread_replies_and_unsent_frames_from_a_silent_worker() {
        use std::io::{Read, Write};
        let (ours, theirs) = UnixStream::pair().unwrap();
        let conn = WorkerConn::start(ours);
        let mut worker = theirs.into_std().unwrap();
        assert!(!conn.behind(), "nothing sent, nothing to read");

        // The worker wrote; the reader task has not run yet.
        worker.write_all(&Frame::Pong { id: 1 }.encode()).unwrap();
        assert!(conn.behind(), "a frame from the worker waits unread");
        let_others_run().await;
        assert!(!conn.behind(), "read by the reader task");

        // A frame larger than the socket takes: the rest waits in the outbox while the
        // worker reads nothing. The socket is full: the worker is the one not reading.
        let call = tokio::spawn({
            let conn = conn.clone();
            async move { conn.infer(&[tensor(1, 4 << 20)]).await }
        });
        let_others_run().await;
        assert!(!conn.behind(), "a full socket is the worker's doing");
        // The worker drains the socket; until the writer task runs, this side is behind.
        worker.set_nonblocking(true).unwrap();
        let mut chunk = vec![0; 1 << 16];
        while worker.read(&mut chunk).is_ok_and(|n| n > 0) {}
        assert!(conn.behind(), "room in the socket, frames still in the outbox");
        let_others_run().await;
        assert!(!conn.behind(), "the writer task filled the socket again");
        call.abort();
    }
}
