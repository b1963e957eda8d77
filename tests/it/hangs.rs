//! Hangs judged by progress, on the real binary: an inference that keeps making steps is
//! never killed however long it runs, nor when its worker is throttled (stopped most of
//! the time, as a tight `cpu.max` leaves it); an inference thread that stops — held by
//! ptrace as a deadlock holds it, while the worker's reader thread still answers pings —
//! gets its worker replaced and its request retried on another worker.

use crate::onnx;
use crate::util::{ModelFiles, Setup, TestDaemon, infer_body};
use modeld::wire::progress::Block;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use std::time::{Duration, Instant};

const WIDTH: usize = 512;

/// The slow model (`x [N, 512]`, 200 MatMul+Tanh layers: 400 steps a request) on
/// `workers` workers of `threads` threads, with a hang timeout of `hang`.
fn daemon(workers: usize, threads: usize, hang: &str) -> TestDaemon {
    let lines = format!("workers = {workers}\nthreads = {threads}\nhang_timeout = \"{hang}\"\n");
    TestDaemon::ready(
        Setup::new()
            .server("request_timeout = \"60s\"")
            .model_with(ModelFiles::new("slow", 1, onnx::slow(WIDTH as i64, 200)), &lines),
    )
}

fn body(rows: usize) -> String {
    infer_body("x", &[rows, WIDTH], &vec![0.5; rows * WIDTH])
}

/// The rows that make one request take at least `at_least` here, and how long it takes.
fn rows_taking(d: &TestDaemon, at_least: Duration) -> (usize, Duration) {
    let timed = |rows: usize| {
        let started = Instant::now();
        assert_eq!(d.post("/v2/models/slow/infer", &body(rows)).status, 200);
        started.elapsed()
    };
    let mut rows = 8;
    loop {
        // One answer slowed by a busy host must not pick the rows: a size that looks long
        // enough is timed twice more and judged by its fastest answer.
        let mut took = timed(rows);
        if took >= at_least {
            took = took.min(timed(rows)).min(timed(rows));
        }
        if took >= at_least || rows >= 1 << 14 {
            return (rows, took);
        }
        rows *= 2;
    }
}

fn workers(d: &TestDaemon) -> Value {
    d.health()["models"]["slow"]["versions"]["1"]["workers"].clone()
}

/// A request of `rows` rows sent on its own thread: its status and latency.
fn in_background(d: &TestDaemon, rows: usize) -> std::thread::JoinHandle<(u16, Duration)> {
    let (client, body) = (d.client(), body(rows));
    std::thread::spawn(move || {
        let started = Instant::now();
        let status = client.post("/v2/models/slow/infer", &body).status;
        (status, started.elapsed())
    })
}

/// The busy inference threads of every worker: (worker pid, thread id), from their
/// progress blocks.
fn busy_threads(d: &TestDaemon) -> Vec<(i32, u64)> {
    let dir = d.path().join("run/workers");
    let blocks = std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.path());
    blocks
        .filter(|p| p.extension().is_some_and(|e| e == "progress"))
        .filter_map(|p| Block::open(&p).ok())
        .flat_map(|block| block.busy())
        .filter_map(|busy| Some((thread_group(busy.tid)?, busy.tid)))
        .collect()
}

/// The process a thread belongs to (`Tgid` in its status).
fn thread_group(tid: u64) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_long_inference_that_progresses_is_not_killed_even_throttled() {
    let d = daemon(1, 1, "250ms");
    // Five times the hang timeout and more, one step at a time.
    let (rows, took) = rows_taking(&d, Duration::from_millis(1250));
    eprintln!("FIGURE progress: one request of {rows} rows took {took:?} against a 250 ms hang timeout");
    assert!(took >= Duration::from_millis(1250), "the model is too fast here even at {rows} rows: {took:?}");
    assert_eq!(workers(&d)["hangs"], 0, "{}", d.logs());

    // Throttled: the worker runs 30 ms of every 100 (stopped the rest, as the scheduler
    // holds a cgroup past its cpu.max quota), so the same request takes over 3x longer.
    let worker = Pid::from_raw(d.worker_pids()[0]);
    let request = in_background(&d, rows);
    let mut stopped_for = Duration::ZERO;
    while !request.is_finished() {
        kill(worker, Signal::SIGSTOP).unwrap();
        std::thread::sleep(Duration::from_millis(70));
        stopped_for += Duration::from_millis(70);
        kill(worker, Signal::SIGCONT).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    let (status, throttled) = request.join().unwrap();
    eprintln!("FIGURE progress: throttled to 30 %, the request took {throttled:?} ({stopped_for:?} of it stopped)");
    assert_eq!(status, 200);
    assert!(throttled >= took * 2, "the throttling did not slow it: {throttled:?} against {took:?}");
    let w = workers(&d);
    assert_eq!((w["hangs"].clone(), w["restarts"].clone()), (Value::from(0), Value::from(0)), "{}", d.logs());
}

#[test]
fn a_stuck_inference_thread_gets_its_worker_replaced_and_its_request_retried() {
    // Two workers of two inference threads: while one thread is stuck, the worker's
    // reader thread keeps answering pings.
    let d = daemon(2, 2, "300ms");
    let (rows, took) = rows_taking(&d, Duration::from_millis(600));
    let request = in_background(&d, rows);
    let mut busy = Vec::new();
    d.wait_until("an inference running", Duration::from_secs(10), || {
        busy = busy_threads(&d);
        !busy.is_empty()
    });
    let (worker, tid) = busy[0];
    let thread = Pid::from_raw(tid as i32);
    // Held as a deadlock holds it: no step, no CPU; the process and its other threads run.
    nix::sys::ptrace::seize(thread, nix::sys::ptrace::Options::empty()).expect("ptrace the worker's inference thread");
    nix::sys::ptrace::interrupt(thread).unwrap();
    let held = Instant::now();
    d.wait_until("the stuck worker replaced", Duration::from_secs(20), || {
        workers(&d)["hangs"] == 1 && !d.worker_pids().contains(&worker)
    });
    let replaced = held.elapsed();
    // Reap the thread this test still traces, now that its process was killed.
    let _ = nix::sys::wait::waitpid(thread, Some(nix::sys::wait::WaitPidFlag::__WALL));
    let (status, latency) = request.join().unwrap();
    eprintln!(
        "FIGURE progress: a stuck inference thread (of a request taking {took:?}) replaced {replaced:?} after it \
         stopped; the request answered {status} in {latency:?}, retried on the other worker"
    );
    assert_eq!(status, 200, "the request was retried on the other worker:\n{}", d.logs());
    assert!(replaced >= Duration::from_millis(300), "not before the hang timeout: {replaced:?}");
    assert!(d.logs().contains("made no progress"), "{}", d.logs());
    d.wait_until("both workers ready again", Duration::from_secs(20), || workers(&d)["ready"] == 2);
}
