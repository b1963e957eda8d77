//! Stopping: SIGTERM lets in-flight requests finish and exits 0; SIGINT stops at once.

use crate::onnx;
use crate::util::{ModelFiles, Setup, TestDaemon, alive, infer_body};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

#[test]
fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let mut daemon = TestDaemon::ready(Setup::new().model(ModelFiles::new("slow", 1, onnx::slow(256, 200)), 2));
    let workers = daemon.worker_pids();
    let address_file = daemon.path().join("run/http.addr");
    assert_eq!(std::fs::read_to_string(&address_file).unwrap(), format!("{}\n", daemon.addr));
    let body = infer_body("x", &[32, 256], &vec![0.5; 32 * 256]);
    let started = Instant::now();
    assert_eq!(daemon.post("/v2/models/slow/infer", &body).status, 200);
    let one = started.elapsed();
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (client, body) = (daemon.client(), body.clone());
            std::thread::spawn(move || client.post("/v2/models/slow/infer", &body))
        })
        .collect();
    // Let the requests reach the workers (each takes `one`; six on two workers queue up).
    std::thread::sleep((one / 2).max(Duration::from_millis(50)));
    daemon.signal(Signal::SIGTERM);
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    let status = daemon.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", daemon.logs());
    for pid in workers {
        assert!(!alive(pid), "worker {pid} outlived the daemon");
    }
    // Operators (and the image suite) read why and how it stops from the log.
    let logs = daemon.logs();
    assert!(logs.contains("SIGTERM: finishing in-flight requests (up to"), "{logs}");
    assert!(logs.contains("all HTTP requests answered"), "{logs}");
    assert!(!address_file.exists(), "a clean stop removes the address file");
}

#[test]
fn sigint_stops_at_once() {
    let mut daemon = TestDaemon::ready(Setup::new().model(ModelFiles::reference("tabular_mlp"), 2));
    let workers = daemon.worker_pids();
    daemon.signal(Signal::SIGINT);
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(daemon.logs().contains("SIGINT: stopping now"), "{}", daemon.logs());
    std::thread::sleep(Duration::from_millis(200));
    for pid in workers {
        assert!(!alive(pid), "worker {pid} outlived the daemon");
    }
}

#[test]
fn a_dead_supervisor_takes_its_workers_with_it() {
    let mut daemon = TestDaemon::ready(Setup::new().model(ModelFiles::reference("tabular_mlp"), 2));
    let workers = daemon.worker_pids();
    daemon.signal(Signal::SIGKILL);
    daemon.wait_exit(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    while workers.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(workers.iter().all(|p| !alive(*p)), "workers survived their parent");
}
