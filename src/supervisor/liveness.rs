//! Liveness of a ready worker: a process can be alive and still serve nobody — stopped
//! (SIGSTOP), deadlocked, or cut off from its connection (a frame that could not be read
//! or written). A crash shows as an exit; these do not, so the keeper watches for them.
//!
//! A worker that holds requests and has said nothing for `server.worker_hang_timeout` is
//! sent a Ping. Any frame back clears it. Silence through the ping's grace makes it *hung*
//! — unless its CPU time kept growing (a long inference on a one-thread worker, which
//! reads pings only between batches; a panic's backtrace being printed) and it is not
//! stopped: a busy worker is no hung one, and least-outstanding routing already sends new
//! requests elsewhere. A worker that computes past the request timeout and the hang
//! timeout together serves no one, and is hung then. A hung worker's connection is
//! abandoned at once (out of rotation, its requests retried on another worker), and the
//! keeper SIGKILLs and restarts it.

use crate::config::Live;
use crate::router::conn::WorkerConn;
use std::time::{Duration, Instant};

/// How often a busy worker's silence is looked at.
const TICK: Duration = Duration::from_millis(50);

/// Why a worker that still runs no longer serves.
#[derive(Debug, Clone, PartialEq)]
pub enum Lost {
    /// Held requests without a word and answered no ping.
    Hung(String),
    /// Its connection ended while the process lived.
    Disconnected,
}

/// Watches `conn` (worker `pid`) until it hangs or disconnects.
pub async fn watch(conn: &WorkerConn, pid: u32, server: &Live) -> Lost {
    loop {
        tokio::select! {
            _ = conn.ended() => return Lost::Disconnected,
            _ = tokio::time::sleep(TICK) => {}
        }
        let (hang_after, request_timeout) = {
            let settings = server.get();
            (settings.worker_hang_timeout, settings.request_timeout)
        };
        match conn.silent_for() {
            Some(silent) if silent >= hang_after => {}
            _ => continue,
        }
        if let Some(why) = ping(conn, pid, hang_after, request_timeout).await {
            return Lost::Hung(why);
        }
    }
}

/// Ping and wait: why the worker is hung, or `None` if it spoke, moved on, or is visibly
/// computing.
async fn ping(conn: &WorkerConn, pid: u32, hang_after: Duration, request_timeout: Duration) -> Option<String> {
    let (heard, cpu_before) = (conn.heard(), Process::read(pid));
    let pinged = Instant::now();
    conn.ping();
    let grace = (hang_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    tokio::select! {
        _ = conn.ended() => return None,
        _ = tokio::time::sleep(grace) => {}
    }
    let silent = conn.silent_for()?;
    if conn.heard() != heard || silent < hang_after {
        return None;
    }
    let now = Process::read(pid);
    let computing = match (&cpu_before, &now) {
        (Some(before), Some(now)) => now.cpu_ticks > before.cpu_ticks && !now.stopped(),
        _ => false,
    };
    if computing && silent < request_timeout + hang_after {
        return None;
    }
    let state = now.map_or("gone".to_string(), |p| p.describe());
    Some(format!(
        "worker hung: it held {} request(s) for {:.1} s without a reply and answered no ping within {:?} (process {state})",
        conn.outstanding(),
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

    fn parse(stat: &str) -> Option<Process> {
        let rest = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields.first()?.chars().next()?;
        // After the command: state is field 3, so utime (14) and stime (15) sit at 11, 12.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(Process { state, cpu_ticks: utime + stime })
    }

    /// Stopped by a signal or a tracer.
    fn stopped(&self) -> bool {
        matches!(self.state, 'T' | 't')
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
    use crate::wire::{self, Frame};
    use tokio::net::UnixStream;

    fn server(hang: &str) -> Live {
        let text =
            format!("[server]\nworker_hang_timeout = \"{hang}\"\nrequest_timeout = \"30s\"\n[[model]]\nname = \"m\"\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("modeld.toml");
        std::fs::write(&path, text).unwrap();
        Live::new(crate::config::load(&path, &Default::default()).unwrap().0.server)
    }

    /// A worker end that reads frames and answers only Pings (when `pongs`), never a request.
    async fn worker(stream: UnixStream, pongs: bool) {
        let (reader, mut writer) = stream.into_split();
        let mut reader = tokio::io::BufReader::new(reader);
        while let Ok(Some(body)) = wire::read_frame(&mut reader).await {
            if let (true, Ok(Frame::Ping { id })) = (pongs, Frame::decode(&body)) {
                wire::send(&mut writer, &Frame::Pong { id }).await.unwrap();
            }
        }
    }

    /// A process that sleeps: alive, using no CPU.
    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep").arg("30").spawn().unwrap()
    }

    #[tokio::test]
    async fn a_silent_worker_that_answers_no_ping_is_hung() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        tokio::spawn(worker(theirs, false));
        let conn = WorkerConn::start(ours);
        let waiting = tokio::spawn({
            let conn = conn.clone();
            async move { conn.infer(&[]).await }
        });
        let mut sleeping = sleeper();
        let started = Instant::now();
        let lost = tokio::time::timeout(Duration::from_secs(10), watch(&conn, sleeping.id(), &server("300ms"))).await;
        let _ = sleeping.kill();
        let _ = sleeping.wait();
        match lost.expect("declared hung in time") {
            Lost::Hung(why) => assert!(why.contains("held 1 request(s)") && why.contains("answered no ping"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() >= Duration::from_millis(300));
        conn.abandon();
        assert_eq!(waiting.await.unwrap().unwrap_err(), crate::router::CallError::Gone, "handed back for a retry");
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
        let watched = tokio::time::timeout(Duration::from_secs(1), watch(&conn, sleeping.id(), &server("200ms"))).await;
        assert!(watched.is_err(), "a worker answering pings was declared lost: {watched:?}");
        // The worker's end goes away: the connection is broken, not hung.
        worker.abort();
        let lost = tokio::time::timeout(Duration::from_secs(5), watch(&conn, sleeping.id(), &server("200ms"))).await;
        let _ = sleeping.kill();
        let _ = sleeping.wait();
        assert_eq!(lost.unwrap(), Lost::Disconnected);
        assert!(waiting.await.unwrap().is_err());
    }

    #[test]
    fn proc_stat_gives_the_state_and_cpu_time() {
        let stat = "4242 (modeld worker (x)) T 1 4242 4242 0 -1 4194560 2400 0 0 0 170 31 0 0 20 0 5 0 100 0 0";
        let p = Process::parse(stat).unwrap();
        assert_eq!(p, Process { state: 'T', cpu_ticks: 201 });
        assert!(p.stopped());
        assert!(p.describe().contains("stopped"));
        let own = Process::read(std::process::id()).expect("this process's stat");
        assert!(!own.stopped());
        assert!(Process::parse("garbage").is_none());
    }
}
