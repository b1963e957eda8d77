//! Supervised workers: a killed worker costs no request and comes back; a worker that
//! cannot start in time crash-loops into a failed version; the in-flight bound and the
//! request timeout answer at once.

use crate::onnx;
use crate::util::{ModelFiles, Setup, TestDaemon, alive, infer_body};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Sends requests from `clients` threads until `stop`, returning each answer's status.
fn load(
    daemon: &TestDaemon,
    clients: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<(u16, String)>>> {
    (0..clients)
        .map(|_| {
            let client = daemon.client();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let body = infer_body("features", &[1, 30], &[0.3; 30]);
                let mut statuses = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let a = client.post("/v2/models/tabular_mlp/infer", &body);
                    statuses.push((a.status, a.body));
                }
                statuses
            })
        })
        .collect()
}

fn kill_worker_under_load(workers: usize) {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::reference("tabular_mlp"), workers));
    let victims = daemon.worker_pids();
    assert_eq!(victims.len(), workers);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(&daemon, 4, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(victims[0]), Signal::SIGKILL).unwrap();
    daemon.wait_until("the killed worker to be replaced", Duration::from_secs(20), || {
        let h = daemon.health();
        h["models"]["tabular_mlp"]["versions"]["1"]["workers"]["ready"] == workers
            && h["models"]["tabular_mlp"]["versions"]["1"]["workers"]["restarts"] == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let answers: Vec<(u16, String)> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    let failed: Vec<&(u16, String)> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(answers.len() > 50, "only {} requests were sent", answers.len());
    assert!(failed.is_empty(), "{} of {} requests failed, e.g. {:?}", failed.len(), answers.len(), failed.first());
    assert!(!alive(victims[0]));
    assert!(daemon.logs().contains("was killed by signal 9 (SIGKILL); restarting"), "{}", daemon.logs());
}

#[test]
fn killing_one_of_two_workers_fails_no_request() {
    kill_worker_under_load(2);
}

#[test]
fn killing_the_only_worker_fails_no_request() {
    // Requests wait for the restarted worker (well within the request timeout).
    kill_worker_under_load(1);
}

#[test]
fn a_worker_that_never_gets_ready_fails_its_version_as_a_crash_loop() {
    let daemon = TestDaemon::start(
        Setup::new()
            .model(ModelFiles::new("slow_start", 1, onnx::slow(512, 400)), 1)
            .server("worker_start_timeout = \"20ms\""),
    );
    daemon.wait_until("the version to fail", Duration::from_secs(30), || {
        daemon.health()["models"]["slow_start"]["versions"]["1"]["state"] == "failed"
    });
    let version = &daemon.health()["models"]["slow_start"]["versions"]["1"];
    let reason = version["reason"].as_str().unwrap();
    assert!(reason.starts_with("crash loop: worker exited 5 times"), "{reason}");
    assert!(reason.contains("did not report ready within 20ms"), "{reason}");
    // Its workers are gone and stay gone.
    std::thread::sleep(Duration::from_millis(300));
    assert!(daemon.worker_pids().is_empty(), "{:?}", daemon.worker_pids());
}

#[test]
fn requests_past_the_in_flight_bound_get_503_with_retry_after() {
    let daemon = TestDaemon::ready(
        Setup::new().model(ModelFiles::new("slow", 1, onnx::slow(256, 300)), 1).server("max_inflight_per_model = 2"),
    );
    let body = infer_body("x", &[64, 256], &vec![0.5; 64 * 256]);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (client, body) = (daemon.client(), body.clone());
            std::thread::spawn(move || client.post("/v2/models/slow/infer", &body))
        })
        .collect();
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let refused: Vec<_> = answers.iter().filter(|a| a.status == 503).collect();
    assert!(answers.iter().all(|a| a.status == 200 || a.status == 503), "{answers:?}");
    assert!(!refused.is_empty(), "8 concurrent requests against a bound of 2 were all admitted");
    assert!(answers.iter().filter(|a| a.status == 200).count() >= 2);
    assert_eq!(refused[0].retry_after.as_deref(), Some("1"));
    assert!(refused[0].body.contains("its limit"), "{}", refused[0].body);
}

#[test]
fn a_request_past_the_timeout_gets_504() {
    let daemon = TestDaemon::ready(
        Setup::new().model(ModelFiles::new("slow", 1, onnx::slow(512, 400)), 1).server("request_timeout = \"100ms\""),
    );
    let answer = daemon.post("/v2/models/slow/infer", &infer_body("x", &[64, 512], &vec![0.5; 64 * 512]));
    assert_eq!(answer.status, 504, "{}", answer.body);
    assert!(answer.body.contains("timed out after 100ms"), "{}", answer.body);
}

#[test]
fn a_busy_polling_worker_is_told_its_window_and_answers_close_and_spaced_requests() {
    let daemon = TestDaemon::ready(
        Setup::new().model_with(ModelFiles::reference("tabular_mlp"), "workers = 1\nbusy_poll = \"10ms\"\n"),
    );
    let [worker] = daemon.worker_pids()[..] else { panic!("one worker expected") };
    let cmdline = std::fs::read(format!("/proc/{worker}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let at = args.iter().position(|a| *a == b"--busy-poll-us").expect("--busy-poll-us passed to the worker");
    assert_eq!(args[at + 1], b"10000");

    let client = daemon.client();
    let body = infer_body("features", &[1, 30], &[0.3; 30]);
    let first = client.post("/v2/models/tabular_mlp/infer", &body);
    assert_eq!(first.status, 200, "{}", first.body);
    // Back-to-back requests come well within the 10 ms window (the worker polls between
    // them); then pauses of 30 ms outlast a whole poll, after which it sleeps in read and
    // must still wake for each request.
    for _ in 0..300 {
        let a = client.post("/v2/models/tabular_mlp/infer", &body);
        assert_eq!((a.status, &a.body), (200, &first.body));
    }
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(30));
        let a = client.post("/v2/models/tabular_mlp/infer", &body);
        assert_eq!((a.status, &a.body), (200, &first.body));
    }
    assert!(alive(worker), "the worker served everything without restarting");
}
