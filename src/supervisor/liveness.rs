//! Liveness of a ready worker: a process can be alive and still serve nobody — stopped
//! (SIGSTOP), deadlocked, or cut off from its connection (a frame that could not be read
//! or written). A crash shows as an exit; these do not, so the keeper watches for them.
//!
//! A worker is judged by its progress, not by its answers: each inference thread's slot
//! in the worker's progress block ([`crate::wire::progress`]) says when it took its
//! request, how many steps it has made (tract: each node of the plan) and when the last
//! one was made, and `/proc` gives the thread's CPU time. An inference that makes a step
//! or uses CPU within the hang timeout is progressing, however long it runs — one waiting
//! on a GPU kernel, throttled by its cgroup's `cpu.max`, or paging in a model from a slow
//! disk is slow, not stuck. One that does neither for the hang timeout is stuck (a
//! deadlock, SIGSTOP), even while the worker's reader thread still answers pings. One
//! that holds a request past the request timeout and the hang timeout together serves no
//! one, and counts as hung too. Requests the worker holds with no inference running (its
//! reader stopped, the whole process stopped) are looked at as before: after the hang
//! timeout without a frame it is sent a Ping, and silence through the ping's grace makes
//! it hung — unless it started an inference or used CPU meanwhile (a worker serving on
//! one thread reads the ping only between batches), which counts as progress until the
//! request timeout and the hang timeout have passed together.
//!
//! The hang timeout is the model's `hang_timeout`, or else four times the longest step
//! the worker has measured (its warm-up and golden examples included), never below
//! `server.worker_hang_timeout`. A hung worker's connection is abandoned at once (out of
//! rotation, its requests retried on another worker), and the keeper SIGKILLs and
//! restarts it.

use crate::config::Live;
use crate::router::conn::WorkerConn;
use crate::router::pool::Pool;
use crate::wire::progress::{Block, Busy};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often a worker's progress is looked at.
const TICK: Duration = Duration::from_millis(50);
/// The default hang timeout is this many times the longest step measured.
const STEPS_OF_SLACK: u32 = 4;

/// Why a worker that still runs no longer serves.
#[derive(Debug, Clone, PartialEq)]
pub enum Lost {
    /// Held requests and made no progress (or answered no ping) for the hang timeout.
    Hung(String),
    /// Its connection ended while the process lived.
    Disconnected,
}

/// What a keeper watches one worker with.
pub struct Watched<'a> {
    pub conn: &'a WorkerConn,
    pub pid: u32,
    /// The worker's progress block (none when it could not be made: pings only then).
    pub block: Option<&'a Block>,
    /// The version, whose `hang_timeout` a reload may change.
    pub pool: &'a Pool,
    pub server: &'a Live,
}

impl Watched<'_> {
    /// How long an inference may make no progress: the model's `hang_timeout`, else
    /// sized from the longest step measured, never below the server's floor.
    pub fn hang_timeout(&self) -> Duration {
        let floor = self.server.get().worker_hang_timeout;
        match self.pool.health().hang_timeout {
            Some(set) => set,
            None => floor.max(self.block.map_or(Duration::ZERO, |b| b.longest_step() * STEPS_OF_SLACK)),
        }
    }
}

/// One inference as the watch last saw it: when its thread's CPU time last grew.
struct Seen {
    cpu_ticks: Option<u64>,
    cpu_grew: Instant,
}

/// Watches the worker until it hangs or disconnects.
pub async fn watch(w: Watched<'_>) -> Lost {
    let mut seen: HashMap<(usize, u64), Seen> = HashMap::new();
    loop {
        tokio::select! {
            _ = w.conn.ended() => return Lost::Disconnected,
            _ = tokio::time::sleep(TICK) => {}
        }
        let hang_after = w.hang_timeout();
        let busy = w.block.map(Block::busy).unwrap_or_default();
        if let Some(why) = stuck(&w, &busy, &mut seen, hang_after) {
            return Lost::Hung(why);
        }
        let held_idle = busy.is_empty() && w.conn.outstanding() > 0;
        if !held_idle || w.conn.silent_for().is_none_or(|silent| silent < hang_after) {
            continue;
        }
        if let Some(why) = ping(&w, hang_after).await {
            return Lost::Hung(why);
        }
    }
}

/// Why one of the worker's inferences is hung, if one is: no step and no CPU time for
/// `hang_after`, or held past the request timeout and `hang_after` together.
fn stuck(
    w: &Watched<'_>,
    busy: &[Busy],
    seen: &mut HashMap<(usize, u64), Seen>,
    hang_after: Duration,
) -> Option<String> {
    let now = Instant::now();
    seen.retain(|key, _| busy.iter().any(|b| (b.slot, b.tid) == *key));
    let request_timeout = w.server.get().request_timeout;
    for b in busy {
        let thread = Process::read_thread(w.pid, b.tid);
        let ticks = thread.as_ref().map(|t| t.cpu_ticks);
        let entry = seen.entry((b.slot, b.tid)).or_insert(Seen { cpu_ticks: ticks, cpu_grew: now });
        if ticks.is_some() && ticks != entry.cpu_ticks {
            *entry = Seen { cpu_ticks: ticks, cpu_grew: now };
        }
        // The thread's CPU is known to have grown no earlier than the watch saw it.
        let idle_cpu = now.duration_since(entry.cpu_grew).min(b.held);
        let state = thread.map_or("gone".to_string(), |t| t.describe());
        if b.since_step >= hang_after && idle_cpu >= hang_after {
            return Some(format!(
                "worker hung: an inference held a request for {:.1} s and made no progress for {:.1} s ({} steps, \
                 then none and no CPU time; thread {}, {state}); the hang timeout is {hang_after:?}, the longest step \
                 measured {:?}",
                b.held.as_secs_f64(),
                b.since_step.min(idle_cpu).as_secs_f64(),
                b.steps,
                b.tid,
                w.block.map_or(Duration::ZERO, Block::longest_step),
            ));
        }
        if b.held >= request_timeout + hang_after {
            return Some(format!(
                "worker hung: an inference has run {:.1} s on one request, past the request timeout ({request_timeout:?})                  and the hang timeout ({hang_after:?}) together, and its client is gone (thread {}, {state}, {} steps)",
                b.held.as_secs_f64(),
                b.tid,
                b.steps
            ));
        }
    }
    None
}

/// Requests held and no inference running: ping and wait. Why the worker is hung, or
/// `None` if it spoke or moved on.
///
/// A worker serving on one thread reads a ping only between batches, so silence through
/// the grace is not enough: an inference it started meanwhile (judged from then on by
/// its steps) or CPU time it used (reading and preparing large requests) is progress.
/// Not forever: silent past the request timeout and the hang timeout together, it serves
/// no one whatever its CPU does. Nor is silence the worker's while its replies wait unread
/// or its requests unsent because the daemon's own threads were busy
/// ([`WorkerConn::behind`]).
async fn ping(w: &Watched<'_>, hang_after: Duration) -> Option<String> {
    let heard = w.conn.heard();
    let cpu_before = Process::read(w.pid).map(|p| p.cpu_ticks);
    let pinged = Instant::now();
    w.conn.ping();
    let grace = (hang_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    tokio::select! {
        _ = w.conn.ended() => return None,
        _ = tokio::time::sleep(grace) => {}
    }
    let silent = w.conn.silent_for()?;
    if w.conn.heard() != heard || silent < hang_after {
        return None;
    }
    if w.block.is_some_and(|b| !b.busy().is_empty()) || w.conn.behind() {
        return None;
    }
    let process = Process::read(w.pid);
    let worked = matches!((cpu_before, &process), (Some(before), Some(now)) if now.cpu_ticks > before);
    if worked && silent < w.server.get().request_timeout + hang_after {
        return None;
    }
    let state = process.map_or("gone".to_string(), |p| p.describe());
    Some(format!(
        "worker hung: it held {} request(s) for {:.1} s with no inference running, without a reply, and answered \
         no ping within {:?} (process {state})",
        w.conn.outstanding(),
        silent.as_secs_f64(),
        pinged.elapsed()
    ))
}

/// What /proc says of a process: its state letter and CPU time so far.
#[derive(Debug, Clone, PartialEq)]
struct Process {
    state: char,
    cpu_ticks: u64,
}

impl Process {
    /// Reads `/proc/<pid>/stat` (proc(5)): the state is the field after the parenthesised
    /// command, utime and stime the 14th and 15th fields.
    fn read(pid: u32) -> Option<Process> {
        Process::parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// One thread of process `pid`, from `/proc/<pid>/task/<tid>/stat` (the same format).
    fn read_thread(pid: u32, tid: u64) -> Option<Process> {
        Process::parse(&std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?)
    }

    fn parse(stat: &str) -> Option<Process> {
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields.first()?.chars().next()?;
        // After the command: state is field 3, so utime (14) and stime (15) sit at 11, 12.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(Process { state, cpu_ticks: utime + stime })
    }

    fn describe(&self) -> String {
        let what = match self.state {
            'T' | 't' => "stopped",
            'D' => "in uninterruptible sleep",
            'Z' => "a zombie",
            'R' => "running",
            'S' => "sleeping",
            _ => "in another state",
        };
        format!("state {}: {what}", self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthConfig;
    use crate::router::pool::PoolSpec;
    use crate::wire::{self, Frame};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tokio::net::UnixStream;

    fn server(hang: &str) -> Live {
        server_timed(hang, "30s")
    }

    fn server_timed(hang: &str, request_timeout: &str) -> Live {
        let text = format!(
            "[server]\nworker_hang_timeout = \"{hang}\"\nrequest_timeout = \"{request_timeout}\"\n[[model]]\nname = \"m\"\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("modeld.toml");
        std::fs::write(&path, text).unwrap();
        Live::new(crate::config::load(&path, &Default::default()).unwrap().0.server)
    }

    fn pool(hang_timeout: Option<Duration>) -> Pool {
        let health = HealthConfig { hang_timeout, ..HealthConfig::default() };
        Pool::new(PoolSpec { model: "m".into(), version: 1, workers: 1, health, ..PoolSpec::default() })
    }

    /// A worker end that reads frames and answers only Pings (when `pongs`), never a request.
    async fn worker(stream: UnixStream, pongs: bool) {
        worker_telling(stream, pongs, Arc::new(AtomicBool::new(false))).await
    }

    /// [`worker`], setting `pinged` when a Ping arrives.
    async fn worker_telling(stream: UnixStream, pongs: bool, pinged: Arc<AtomicBool>) {
        let (reader, mut writer) = stream.into_split();
        let mut reader = tokio::io::BufReader::new(reader);
        while let Ok(Some(body)) = wire::read_frame(&mut reader).await {
            if let Ok(Frame::Ping { id }) = Frame::decode(&body) {
                pinged.store(true, Ordering::Release);
                if pongs {
                    wire::send(&mut writer, &Frame::Pong { id }).await.unwrap();
                }
            }
        }
    }

    /// The task holding a request: what the call ended with.
    type Held = tokio::task::JoinHandle<Result<(Vec<wire::Tensor>, wire::Timing), crate::router::CallError>>;

    /// A connection holding one request its worker never answers (answering pings when
    /// `pongs`), and the task holding the request.
    fn holding(pongs: bool) -> (Arc<WorkerConn>, Held) {
        holding_telling(pongs, Arc::new(AtomicBool::new(false)))
    }

    /// [`holding`], setting `pinged` when the worker end gets a Ping.
    fn holding_telling(pongs: bool, pinged: Arc<AtomicBool>) -> (Arc<WorkerConn>, Held) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        tokio::spawn(worker_telling(theirs, pongs, pinged));
        let conn = WorkerConn::start(ours);
        let waiting = tokio::spawn({
            let conn = conn.clone();
            async move { conn.infer(&[]).await }
        });
        (conn, waiting)
    }

    /// A process that sleeps: alive, using no CPU.
    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep").arg("30").spawn().unwrap()
    }

    #[tokio::test]
    async fn held_requests_with_no_inference_and_no_pong_are_a_hang() {
        let (conn, waiting) = holding(false);
        let (live, pool) = (server("300ms"), pool(None));
        let started = Instant::now();
        let lost = watch_as(&conn, sleeper(), None, (&live, &pool), Duration::from_secs(10)).await;
        match lost.expect("declared hung in time") {
            Lost::Hung(why) => assert!(why.contains("held 1 request(s)") && why.contains("answered no ping"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(300));
        conn.abandon();
        assert_eq!(waiting.await.unwrap().unwrap_err(), crate::router::CallError::Gone, "handed back for a retry");
    }

    /// A process that spins: alive, using CPU.
    fn spinner() -> std::process::Child {
        std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap()
    }

    /// Watches `conn` as worker `process`'s connection for at most `limit`, then stops the
    /// process; what the watch ended with, if it ended.
    async fn watch_as(
        conn: &WorkerConn,
        mut process: std::process::Child,
        block: Option<&Block>,
        (live, pool): (&Live, &Pool),
        limit: Duration,
    ) -> Option<Lost> {
        let watched = Watched { conn, pid: process.id(), block, pool, server: live };
        let lost = tokio::time::timeout(limit, watch(watched)).await.ok();
        let _ = process.kill();
        let _ = process.wait();
        lost
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inference_started_while_a_ping_waits_is_progress_not_a_hang() {
        // A one-thread worker: the ping arrives between batches, is read only after the
        // next batch, and that batch starts (and steps) during the ping's grace.
        let dir = tempfile::tempdir().unwrap();
        let block = Arc::new(Block::create(&dir.path().join("p"), 1).unwrap());
        let (pinged, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (conn, _waiting) = holding_telling(false, pinged.clone());
        let batch = std::thread::spawn({
            let (block, stop) = (block.clone(), stop.clone());
            move || {
                while !pinged.load(Ordering::Acquire) && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let slot = block.claim(nix::unistd::gettid().as_raw() as u64).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    block.step(slot);
                }
                block.release(slot);
            }
        });
        let (live, pool) = (server("100ms"), pool(Some(Duration::from_millis(300))));
        let lost = watch_as(&conn, sleeper(), Some(&block), (&live, &pool), Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        batch.join().unwrap();
        assert!(lost.is_none(), "a worker that started a batch was declared lost: {lost:?}");
    }

    #[tokio::test]
    async fn a_silent_worker_using_cpu_is_given_until_the_request_timeout() {
        // Reading and preparing large requests, answering nothing: progress, up to the
        // request timeout and the hang timeout together (1 s + 200 ms here).
        let (conn, _waiting) = holding(false);
        let (live, pool) = (server_timed("200ms", "1s"), pool(None));
        let started = Instant::now();
        let lost = watch_as(&conn, spinner(), None, (&live, &pool), Duration::from_secs(10)).await;
        match lost.expect("declared hung in time") {
            Lost::Hung(why) => assert!(why.contains("answered no ping") && why.contains("running"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(
            started.elapsed() >= Duration::from_millis(1200),
            "before the request timeout: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_worker_that_answers_pings_is_not_hung_and_a_broken_connection_is_disconnected() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let worker = tokio::spawn(worker(theirs, true));
        let conn = WorkerConn::start(ours);
        let waiting = tokio::spawn({
            let conn = conn.clone();
            async move { conn.infer(&[]).await }
        });
        let mut sleeping = sleeper();
        let (live, pool) = (server("200ms"), pool(None));
        let watched = || Watched { conn: &conn, pid: sleeping.id(), block: None, pool: &pool, server: &live };
        let result = tokio::time::timeout(Duration::from_secs(1), watch(watched())).await;
        assert!(result.is_err(), "a worker answering pings was declared lost: {result:?}");
        // The worker's end goes away: the connection is broken, not hung.
        worker.abort();
        let lost = tokio::time::timeout(Duration::from_secs(5), watch(watched())).await;
        let _ = sleeping.kill();
        let _ = sleeping.wait();
        assert_eq!(lost.unwrap(), Lost::Disconnected);
        assert!(waiting.await.unwrap().is_err());
    }

    /// A thread of this process that holds slot `slot`'s request and, until `stop`, does
    /// `work` in a loop (sleeping, stepping, spinning); its tid.
    fn inference(
        block: &Arc<Block>,
        stop: &Arc<AtomicBool>,
        work: impl Fn(&Block, usize) + Send + 'static,
    ) -> (u64, std::thread::JoinHandle<()>) {
        let (block, stop) = (block.clone(), stop.clone());
        let tid = Arc::new(AtomicU64::new(0));
        let told = tid.clone();
        let thread = std::thread::spawn(move || {
            let me = nix::unistd::gettid().as_raw() as u64;
            let slot = block.claim(me).unwrap();
            told.store(me, Ordering::Release);
            while !stop.load(Ordering::Relaxed) {
                work(&block, slot);
            }
            block.release(slot);
        });
        while tid.load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        (tid.load(Ordering::Acquire), thread)
    }

    /// Watches a connection holding a request, with a block where one thread of this
    /// process runs `work`, for at most `limit`.
    async fn judge(work: impl Fn(&Block, usize) + Send + 'static, pongs: bool, limit: Duration) -> Option<Lost> {
        let dir = tempfile::tempdir().unwrap();
        let block = Arc::new(Block::create(&dir.path().join("p"), 2).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let (_tid, thread) = inference(&block, &stop, work);
        let (conn, _waiting) = holding(pongs);
        let (live, pool) = (server("100ms"), pool(Some(Duration::from_millis(400))));
        let watched = Watched { conn: &conn, pid: std::process::id(), block: Some(&block), pool: &pool, server: &live };
        let lost = tokio::time::timeout(limit, watch(watched)).await.ok();
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        lost
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inference_with_no_step_and_no_cpu_is_stuck_though_pings_are_answered() {
        // A deadlocked inference thread: it sleeps, stepping never, while the worker's
        // reader thread answers every ping.
        let started = Instant::now();
        let lost = judge(|_, _| std::thread::sleep(Duration::from_millis(10)), true, Duration::from_secs(10)).await;
        match lost {
            Some(Lost::Hung(why)) => assert!(why.contains("made no progress") && why.contains("0 steps"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(400), "not before the hang timeout");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inference_that_steps_or_computes_is_not_stuck_however_long_it_runs() {
        // Five times the hang timeout: a step every 150 ms with no CPU between (a GPU
        // kernel at a time), then pure computation without steps (one long node).
        let stepping = |block: &Block, slot: usize| {
            std::thread::sleep(Duration::from_millis(150));
            block.step(slot);
        };
        assert_eq!(judge(stepping, false, Duration::from_secs(2)).await, None);
        let spinning = |_: &Block, _: usize| {
            let until = Instant::now() + Duration::from_millis(5);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        };
        assert_eq!(judge(spinning, false, Duration::from_secs(2)).await, None);
    }

    #[test]
    fn proc_stat_gives_the_state_and_cpu_time() {
        let stat = "4242 (modeld worker (x)) T 1 4242 4242 0 -1 4194560 2400 0 0 0 170 31 0 0 20 0 5 0 100 0 0";
        let p = Process::parse(stat).unwrap();
        assert_eq!(p, Process { state: 'T', cpu_ticks: 201 });
        assert!(p.describe().contains("stopped"));
        assert!(Process::read(std::process::id()).is_some(), "this process's stat");
        let tid = nix::unistd::gettid().as_raw() as u64;
        let me = Process::read_thread(std::process::id(), tid).expect("this thread's stat");
        assert_eq!(me.state, 'R', "this thread runs as it reads: {me:?}");
        assert!(Process::parse("garbage").is_none());
    }

    #[test]
    fn the_hang_timeout_is_the_models_or_sized_from_its_longest_step() {
        let dir = tempfile::tempdir().unwrap();
        let block = Block::create(&dir.path().join("p"), 1).unwrap();
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _entered = runtime.enter();
        ours.set_nonblocking(true).unwrap();
        let conn = WorkerConn::start(UnixStream::from_std(ours).unwrap());
        let live = server("1s");
        let unset = pool(None);
        let watched = |pool| Watched { conn: &conn, pid: 1, block: Some(&block), pool, server: &live };
        assert_eq!(watched(&unset).hang_timeout(), Duration::from_secs(1), "the floor, before any step");
        let slot = block.claim(1).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        block.release(slot);
        let sized = watched(&unset).hang_timeout();
        assert!(
            sized >= Duration::from_millis(1200) && sized < Duration::from_secs(3),
            "4x the 300 ms step: {sized:?}"
        );
        let set = pool(Some(Duration::from_millis(700)));
        assert_eq!(watched(&set).hang_timeout(), Duration::from_millis(700), "the model's own wins");
    }
}
