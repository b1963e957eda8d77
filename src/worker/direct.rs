//! The one-thread worker loop, used when a worker runs one inference at a time: a plain
//! thread reads frames, batches them, runs the batch and writes its replies, with no
//! hand-off between threads per request.
//!
//! Batches form from what has already arrived: every frame the read buffer or the socket
//! holds is taken (up to `max_batch` rows, same trailing shapes), waiting for more at most
//! `delay` after the first arrived unless a preferred size is reached. Under load the
//! frames that queued while the last batch ran form the next one; at low load a request
//! waits no longer than `delay`. Replies of a batch leave in one write. A request whose
//! trailing shapes differ from the batch's is held for the next one.
//!
//! Between requests the loop busy-polls its socket for up to `busy_poll` before sleeping
//! in `read`, but only while the last request came within that time: on a virtual machine
//! waking a sleeping process costs tens of microseconds (bench/wake_cost.rs), more than a
//! small model's inference. Sparse traffic never polls; it costs CPU only while requests
//! come close together. Off unless configured.

use super::batcher::{self, Forming, Policy, Queued, reply_frame};
use super::engine::Engine;
use super::in_flight::{InFlight, InFlightGuard};
use crate::wire::{self, Frame};
use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;
use std::collections::VecDeque;
use std::io::{self, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Read buffer: a burst of frames is read in one system call.
const READ_BUFFER: usize = 64 * 1024;

/// A request read and prepared, counted in flight until its reply is written.
struct Pending {
    id: u64,
    request: Queued,
    in_flight: InFlightGuard,
}

impl AsRef<Queued> for Pending {
    fn as_ref(&self) -> &Queued {
        &self.request
    }
}

/// What reading the next frame gave.
enum Next {
    Request(Pending),
    /// A frame answered at once (a ping, or inputs that did not fit the model), reply encoded.
    Answered(Vec<u8>),
    /// Nothing arrived in time.
    Nothing,
    /// The supervisor closed the connection.
    Closed,
}

pub struct DirectServer<'a> {
    engine: &'a Engine,
    policy: &'a Policy,
    max_rows: usize,
    in_flight: &'a Arc<InFlight>,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Requests that did not stack onto the last batch, oldest first.
    held: VecDeque<Pending>,
    /// Encoded replies waiting for the next write.
    out: Vec<u8>,
    poll: BusyPoll,
}

/// When to poll for the next request rather than sleep: while the gaps between requests
/// are shorter than the window, polling catches the next one without a wake-up.
#[derive(Debug, Clone, Copy)]
struct BusyPoll {
    window: Duration,
    /// How long the loop last waited for a request.
    last_gap: Duration,
}

impl BusyPoll {
    fn new(window: Duration) -> BusyPoll {
        // Starts sleeping: the first gap shows whether polling would pay.
        BusyPoll { window, last_gap: Duration::MAX }
    }

    /// Until when to poll, from `now`; `None` to sleep at once.
    fn until(&self, now: Instant) -> Option<Instant> {
        (!self.window.is_zero() && self.last_gap <= self.window).then(|| now + self.window)
    }
}

impl<'a> DirectServer<'a> {
    pub fn new(
        stream: UnixStream,
        engine: &'a Engine,
        policy: &'a Policy,
        in_flight: &'a Arc<InFlight>,
        busy_poll: Duration,
    ) -> io::Result<DirectServer<'a>> {
        stream.set_nonblocking(false)?;
        Ok(DirectServer {
            engine,
            policy,
            max_rows: policy.max_rows(engine),
            in_flight,
            reader: BufReader::with_capacity(READ_BUFFER, stream.try_clone()?),
            writer: stream,
            held: VecDeque::new(),
            out: Vec::new(),
            poll: BusyPoll::new(busy_poll),
        })
    }

    /// Serves the connection until the supervisor closes it.
    pub fn serve(mut self) -> io::Result<()> {
        loop {
            let first = match self.held.pop_front() {
                Some(pending) => pending,
                None => match self.next(None)? {
                    Next::Request(pending) => pending,
                    Next::Answered(reply) => {
                        self.writer.write_all(&reply)?;
                        continue;
                    }
                    Next::Nothing => continue,
                    Next::Closed => return Ok(()),
                },
            };
            let (batch, closed) = self.gather(first)?;
            let answered = self.run(batch);
            self.flush()?;
            drop(answered);
            if closed && self.held.is_empty() {
                return Ok(());
            }
        }
    }

    /// Collects a batch led by `first`: held requests, then what has arrived, then what
    /// arrives before the delay runs out. Returns it, and whether the connection closed.
    fn gather(&mut self, first: Pending) -> io::Result<(Forming<Pending>, bool)> {
        let mut batch = Forming::new(first, self.max_rows);
        let deadline = batch.deadline(self.policy);
        batch.take_from(&mut self.held);
        while !batch.is_full(self.policy) {
            match self.next(Some(deadline))? {
                Next::Request(pending) => {
                    if let Some(unfit) = batch.offer(pending) {
                        self.held.push_back(unfit);
                    }
                }
                // Written now, not after the batch: a pong held behind a long batch reads
                // as silence to the supervisor's liveness watch.
                Next::Answered(reply) => self.writer.write_all(&reply)?,
                Next::Nothing => break,
                Next::Closed => return Ok((batch, true)),
            }
        }
        Ok((batch, false))
    }

    /// Reads the next frame, waiting until `deadline` (forever when `None`, in `read`
    /// itself, after busy-polling if that pays).
    fn next(&mut self, deadline: Option<Instant>) -> io::Result<Next> {
        let idle = Instant::now();
        let waits = self.reader.buffer().is_empty();
        if waits {
            match deadline {
                Some(deadline) => {
                    if !readable_within(&self.writer, Some(deadline.saturating_duration_since(idle)))? {
                        return Ok(Next::Nothing);
                    }
                }
                None => self.busy_poll(idle)?,
            }
        }
        let Some(frame) = wire::read_decoded_blocking(&mut self.reader)? else { return Ok(Next::Closed) };
        if waits && deadline.is_none() {
            self.poll.last_gap = idle.elapsed();
        }
        let (id, inputs) = match frame {
            Frame::Infer { id, inputs } => (id, inputs),
            Frame::Ping { id } => return Ok(Next::Answered(Frame::Pong { id }.encode())),
            _ => {
                tracing::warn!("ignoring unexpected frame from supervisor");
                return Ok(Next::Nothing);
            }
        };
        Ok(match self.engine.prepare(inputs) {
            Ok(prepared) => Next::Request(Pending {
                id,
                request: Queued::new(prepared, self.engine.batchable),
                in_flight: self.in_flight.enter(),
            }),
            Err(failure) => Next::Answered(reply_frame(id, Err(failure)).encode()),
        })
    }

    /// Polls the socket from `idle` while requests come close together, until data
    /// arrives or the window ends; the read that follows sleeps if nothing came.
    fn busy_poll(&self, idle: Instant) -> io::Result<()> {
        if let Some(until) = self.poll.until(idle) {
            while !readable_within(&self.writer, Some(Duration::ZERO))? && Instant::now() < until {
                // Lets the supervisor or the client run if they share this core.
                std::thread::yield_now();
            }
        }
        Ok(())
    }

    /// Runs a batch and queues its replies for the next write; returns the requests'
    /// in-flight marks, to be dropped once the replies are written.
    fn run(&mut self, batch: Forming<Pending>) -> Vec<InFlightGuard> {
        let mut ids = Vec::with_capacity(batch.items.len());
        let mut requests = Vec::with_capacity(batch.items.len());
        let mut answered = Vec::with_capacity(batch.items.len());
        for Pending { id, request, in_flight } in batch.items {
            ids.push(id);
            requests.push(request);
            answered.push(in_flight);
        }
        for (id, reply) in ids.into_iter().zip(batcher::run_batch(self.engine, requests, batch.rows)) {
            self.out.extend_from_slice(&reply_frame(id, reply).encode());
        }
        answered
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.writer.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }
}

/// Whether the socket has data (or its end) within `wait` (`None`: waits until it has).
fn readable_within(socket: &UnixStream, wait: Option<Duration>) -> io::Result<bool> {
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
    loop {
        match ppoll(&mut fds, wait.map(TimeSpec::from_duration), None) {
            Ok(n) => return Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_poll_starts_asleep_and_polls_only_after_a_short_gap() {
        let now = Instant::now();
        let mut poll = BusyPoll::new(Duration::from_micros(100));
        assert_eq!(poll.until(now), None, "no gap seen yet");
        poll.last_gap = Duration::from_micros(40);
        assert_eq!(poll.until(now), Some(now + Duration::from_micros(100)));
        poll.last_gap = Duration::from_millis(3);
        assert_eq!(poll.until(now), None, "sparse traffic sleeps at once");
    }

    #[test]
    fn zero_window_never_polls() {
        let mut poll = BusyPoll::new(Duration::ZERO);
        poll.last_gap = Duration::ZERO;
        assert_eq!(poll.until(Instant::now()), None);
    }

    #[test]
    fn readable_within_sees_data_and_times_out_without() {
        let (a, mut b) = UnixStream::pair().unwrap();
        assert!(!readable_within(&a, Some(Duration::from_millis(5))).unwrap());
        b.write_all(b"x").unwrap();
        assert!(readable_within(&a, Some(Duration::ZERO)).unwrap());
        assert!(readable_within(&a, None).unwrap());
    }
}
