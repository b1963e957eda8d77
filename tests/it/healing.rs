//! Self-healing and start-up edges: a corrupt state file, what an idle daemon says, and
//! what each reload applies.

use crate::onnx::family;
use crate::util::{ModelFiles, Setup, TestDaemon};

#[test]
fn a_corrupt_state_file_is_set_aside_and_the_config_serves() {
    let setup = Setup::new().model_with(ModelFiles::new("m", 1, family::good(1.0)), "version = 1\n");
    let daemon = TestDaemon::ready(setup);
    std::fs::write(daemon.path().join("state/state.json"), b"{\"models\": {\"m\": {\"live\": \"two\"").unwrap();
    let daemon = daemon.restart();
    daemon.wait_ready();
    let answer = daemon.post(
        "/v2/models/m/infer",
        r#"{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}"#,
    );
    assert_eq!((answer.status, answer.version), (200, Some(1)), "{}", answer.body);
    let logs = daemon.logs();
    assert!(logs.contains("state.json is not valid") && logs.contains("moved it to"), "{logs}");
    let aside = std::fs::read_dir(daemon.path().join("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("state.json.corrupt-"));
    assert!(aside, "the corrupt file was not kept for a post-mortem");
    // And a state the daemon can read again: a second restart needs no setting aside.
    let daemon = daemon.restart();
    daemon.wait_ready();
    assert!(!daemon.logs().contains("is not valid"), "{}", daemon.logs());
}

/// The slow model's width: one row of it is 8 KiB of JSON and 2048² multiply-adds for
/// each of its 1200 layers.
const SLOW_WIDTH: usize = 2048;

/// One request of the slow model with `rows` rows: status, body and latency.
fn slow_request(daemon: &TestDaemon, rows: usize) -> (u16, String, std::time::Duration) {
    let body = crate::util::infer_body("x", &[rows, SLOW_WIDTH], &vec![0.5; rows * SLOW_WIDTH]);
    let started = std::time::Instant::now();
    let answer = daemon.client().post("/v2/models/slow/infer", &body);
    (answer.status, answer.body, started.elapsed())
}

/// The worker of `model` (its command line names it).
fn worker_of(daemon: &TestDaemon, model: &str) -> i32 {
    let named = |pid: &i32| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.windows(2).any(|w| w[0] == b"--model" && w[1] == model.as_bytes())
    };
    daemon.worker_pids().into_iter().find(named).unwrap_or_else(|| panic!("no worker of {model}"))
}

/// Every `[server]` key a reload applies is checked by what the daemon then does, not by
/// the words of its answer: the body limit, the request timeout, the in-flight bound, the
/// header timeout, the start timeout of the next worker, the log level and the shutdown
/// grace; a restart-only key is said to be so and the daemon keeps the old value.
#[test]
fn a_reload_applies_every_server_key_or_says_it_needs_a_restart() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    // m loads in far over 20 ms (400 layers to plan), slow infers for seconds.
    let setup = Setup::new()
        .model_with(ModelFiles::new("m", 1, family::slow(400)), "version = 1\n")
        .model_with(ModelFiles::new("slow", 1, crate::onnx::slow(SLOW_WIDTH as i64, 1200)), "workers = 2\n")
        .server("max_body = \"1MiB\"");
    let mut daemon = TestDaemon::ready(setup);
    let config = std::fs::read_to_string(daemon.path().join("modeld.toml")).unwrap();
    let big = format!(
        r#"{{"inputs": [{{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}}], "id": "{}"}}"#,
        "x".repeat(90 << 10)
    );
    assert_eq!(daemon.post("/v2/models/m/infer", &big).status, 200);
    // Rows that make a slow request take over a second and a half (8 rows: 66 KiB). The
    // fastest of three timed requests counts: either worker may answer, and a first request
    // of a shape (or a busy host) makes one slower than the timeout below must assume.
    let (mut rows, mut took) = (1, Duration::ZERO);
    while rows <= 8 {
        assert_eq!(slow_request(&daemon, rows).0, 200);
        took = (0..3)
            .map(|_| {
                let (status, body, t) = slow_request(&daemon, rows);
                assert_eq!(status, 200, "{body}");
                t
            })
            .min()
            .unwrap();
        if took >= Duration::from_millis(1500) || rows == 8 {
            break;
        }
        rows *= 2;
    }
    eprintln!("FIGURE reload: a slow request of {rows} rows takes {took:?}");
    assert!(took >= Duration::from_millis(800), "the slow model is too fast here: {took:?} at {rows} rows");
    let timeout_ms = took.as_millis() / 4;

    let server_keys = |max_body: &str, request_timeout: &str| {
        format!(
            "max_body = \"{max_body}\"\nrequest_timeout = \"{request_timeout}\"\nmax_inflight_per_model = 1\n\
             worker_start_timeout = \"20ms\"\nshutdown_grace = \"1s\"\nheader_read_timeout = \"1s\"\n\
             admin_socket = \"other.sock\""
        )
    };
    let reloaded = |keys: String| {
        let changed =
            config.replace("max_body = \"1MiB\"", &keys).replace("log_level = \"debug\"", "log_level = \"warn\"");
        daemon.write_config(&changed);
        let (code, out, err) = daemon.cli(&["reload"]);
        assert_eq!(code, 0, "{err}");
        out
    };
    // Every key but the request timeout first: a request held in flight for the in-flight
    // bound must not end at a short timeout meanwhile.
    let out = reloaded(server_keys("80KiB", "30s"));
    assert!(out.contains("other.sock: takes effect on restart only"), "{out}");

    // max_body.
    let refused = daemon.post("/v2/models/m/infer", &big);
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert!(refused.body.contains("81920-byte limit"), "{}", refused.body);
    // max_inflight_per_model: with one request in flight, the next is refused.
    let first = std::thread::spawn({
        let client = daemon.client();
        let body = crate::util::infer_body("x", &[rows, SLOW_WIDTH], &vec![0.5; rows * SLOW_WIDTH]);
        move || client.post("/v2/models/slow/infer", &body).status
    });
    daemon.wait_until("the first request in flight", Duration::from_secs(10), || {
        daemon.get("/metrics").body.contains("modeld_inflight_requests{model=\"slow\"} 1")
    });
    let (status, body, _) = slow_request(&daemon, 1);
    assert_eq!(status, 503, "over the new in-flight bound of 1: {body}");
    assert!(body.contains("retry later"), "{body}");
    assert_eq!(first.join().unwrap(), 200);
    // request_timeout: the same slow request now times out.
    reloaded(server_keys("80KiB", &format!("{timeout_ms}ms")));
    let (status, body, waited) = slow_request(&daemon, rows);
    assert_eq!(status, 504, "{body}");
    assert!(waited < took / 2, "answered at the new timeout ({waited:?}), not after the {took:?} inference");
    // header_read_timeout: a client stalled in its headers is let go after 1 s.
    let mut stalled = std::net::TcpStream::connect(daemon.addr).unwrap();
    stalled.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    stalled.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let stalled_at = Instant::now();
    let _ = stalled.read_to_end(&mut Vec::new());
    let let_go = stalled_at.elapsed();
    assert!(let_go < Duration::from_secs(5), "the stalled client was held {let_go:?} (the old timeout is 10 s)");
    // log_level: a reload's info line no longer shows.
    let lines = daemon.logs().lines().count();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    let after: Vec<String> = daemon.logs().lines().skip(lines).map(String::from).collect();
    assert!(after.iter().all(|l| !l.contains("SIGHUP: config applied")), "info logged at warn: {after:?}");
    // admin_socket is restart-only: the old socket still answers.
    assert_eq!(daemon.cli(&["status"]).0, 0);
    // worker_start_timeout: a worker started from now on must be ready within 20 ms.
    let victim = worker_of(&daemon, "m");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), nix::sys::signal::Signal::SIGKILL).unwrap();
    daemon.wait_until("a restarted worker held to 20 ms", Duration::from_secs(20), || {
        daemon.logs().contains("did not report ready within 20ms")
    });

    // A config that does not parse is refused, and the daemon's own log says so.
    daemon.write_config("[server\nbroken");
    let (code, _, err) = daemon.cli(&["reload"]);
    assert_ne!(code, 0);
    assert!(err.contains("not valid TOML"), "{err}");
    // The daemon's stderr reaches the test through a reader thread: wait for the line.
    daemon.wait_until("the refusal in the daemon's log", Duration::from_secs(10), || {
        daemon.logs().contains("reload: refusing the new config")
    });
    assert_eq!(daemon.post("/v2/models/m/infer", &big).status, 413, "the running config stays");

    // shutdown_grace: with the request timeout long again, SIGTERM with a request in
    // flight eight times as long as the others exits after the 1 s grace given to the
    // open requests and the 1 s given to the workers, not after the request.
    reloaded(server_keys("1MiB", "30s"));
    let client = daemon.client();
    let long = rows * 8;
    let body = crate::util::infer_body("x", &[long, SLOW_WIDTH], &vec![0.5; long * SLOW_WIDTH]);
    let in_flight = std::thread::spawn(move || client.post("/v2/models/slow/infer", &body).status);
    std::thread::sleep(Duration::from_millis(300));
    let stopped = Instant::now();
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(30));
    let exited = stopped.elapsed();
    eprintln!(
        "FIGURE reload: with shutdown_grace 1s, SIGTERM exited in {exited:?} with a ~{:?} request in flight",
        took * 8
    );
    assert!(status.success(), "{status:?}");
    // Waiting for the request would take about eight times `took` (0.8 s at least).
    assert!(exited < (took * 6).max(Duration::from_secs(4)), "the daemon took {exited:?} to stop");
    daemon.wait_until("the grace's end in the daemon's log", Duration::from_secs(10), || {
        daemon.logs().contains("shutdown grace of 1s ran out")
    });
    let _ = in_flight.join();
}

/// Stops one worker with SIGSTOP under load and waits for its replacement; returns the
/// load's report and the seconds from the stop to the new worker answering.
fn stop_a_worker_under_load(workers: usize, request_timeout: &str) -> (TestDaemon, crate::load::Report, f64) {
    use crate::load::{Load, Pattern};
    use std::time::{Duration, Instant};
    let setup = Setup::new()
        .server(&format!("request_timeout = \"{request_timeout}\""))
        .model_with(ModelFiles::new("m", 1, family::good(1.0)), &format!("version = 1\nworkers = {workers}\n"));
    let daemon = TestDaemon::ready(setup);
    daemon.wait_until("every worker ready", Duration::from_secs(20), || {
        daemon.health()["models"]["m"]["versions"]["1"]["workers"]["ready"] == workers
    });
    let load = Load::start(&daemon, "m", Pattern { clients: 8, ..Pattern::default() });
    std::thread::sleep(Duration::from_millis(800));
    let victim = daemon.worker_pids()[0];
    let stopped = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), nix::sys::signal::Signal::SIGSTOP).unwrap();
    daemon.wait_until("the hung worker replaced", Duration::from_secs(20), || {
        let w = &daemon.health()["models"]["m"]["versions"]["1"]["workers"];
        w["hangs"] == 1 && w["ready"] == workers && !daemon.worker_pids().contains(&victim)
    });
    let replaced = stopped.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(1500));
    (daemon, load.stop(), replaced)
}

#[test]
fn a_stopped_worker_is_found_hung_replaced_and_costs_no_request() {
    for (workers, timeout) in [(2, "2s"), (1, "5s")] {
        let (daemon, report, replaced) = stop_a_worker_under_load(workers, timeout);
        let failed = report.failed();
        eprintln!(
            "FIGURE hung worker ({workers} workers, request_timeout {timeout}): replaced {replaced:.2} s after SIGSTOP; {} requests, {} failed, slowest {:?}",
            report.shots.len(),
            failed.len(),
            report.shots.iter().map(|s| s.latency).max().unwrap()
        );
        assert!(failed.is_empty(), "{} requests failed; the first: {:?}", failed.len(), failed[0]);
        let metrics = daemon.get("/metrics").body;
        assert!(metrics.contains(r#"modeld_worker_hangs_total{model="m",version="1"} 1"#), "{metrics}");
        assert!(daemon.logs().contains("worker hung: "), "{}", daemon.logs());
        let reason = daemon.health()["models"]["m"]["versions"]["1"]["workers"]["restarts"].as_u64().unwrap();
        assert!(reason >= 1);
    }
}

#[test]
fn latest_serves_the_newest_version_that_loads_and_says_why_once() {
    use std::time::Duration;
    let setup = Setup::new()
        .model_with(ModelFiles::new("m", 1, family::good(1.0)), "version = \"latest\"\nworkers = 1\n")
        .files(ModelFiles::new("m", 2, family::good(2.0)))
        .files(ModelFiles::new("m", 3, b"not an onnx model at all".to_vec()));
    let daemon = TestDaemon::start(setup);
    daemon.wait_ready();
    let body = r#"{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}"#;
    daemon.wait_until("version 2 to serve", Duration::from_secs(20), || {
        daemon.post("/v2/models/m/infer", body).version == Some(2)
    });
    let told = |logs: &str| logs.lines().filter(|l| l.contains("serving version 2, the next newest")).count();
    assert_eq!(told(&daemon.logs()), 1, "{}", daemon.logs());
    let mentions = |logs: &str| logs.lines().filter(|l| l.contains("m/3/model.onnx")).count();
    let before = mentions(&daemon.logs());
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(mentions(&daemon.logs()), before, "the bad version is reported again and again:\n{}", daemon.logs());
    assert!(before >= 1, "the bad version's reason is not in the log:\n{}", daemon.logs());
    // A restart serves version 2 straight away: it is the live one now.
    let daemon = daemon.restart();
    daemon.wait_ready();
    assert_eq!(daemon.post("/v2/models/m/infer", body).version, Some(2));
}

/// Resident memory of a process and its children, in bytes (from /proc).
fn tree_rss(pid: i32) -> u64 {
    let rss = |pid: i32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(|v| v.trim().trim_end_matches(" kB"));
        kb.and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0) * 1024
    };
    rss(pid) + crate::util::children_of(pid).into_iter().map(rss).sum::<u64>()
}

#[test]
fn memory_goes_back_after_a_burst_of_large_requests() {
    use std::time::{Duration, Instant};
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::reference("squeezenet1_1"), 2));
    let image: Vec<f32> = (0..3 * 224 * 224).map(|i| (i % 255) as f32 / 255.0).collect();
    let body = crate::util::infer_body("input", &[1, 3, 224, 224], &image);
    assert_eq!(daemon.post("/v2/models/squeezenet1_1/infer", &body).status, 200);
    std::thread::sleep(Duration::from_secs(3));
    let idle = tree_rss(daemon.pid());
    // 64 images in flight at once.
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let (client, body) = (daemon.client(), body.clone());
            std::thread::spawn(move || {
                let answer = client.post("/v2/models/squeezenet1_1/infer", &body);
                (answer.status, answer.body)
            })
        })
        .collect();
    let mut peak = 0;
    while clients.iter().any(|c| !c.is_finished()) {
        peak = peak.max(tree_rss(daemon.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let failed: Vec<(u16, String)> = clients.into_iter().map(|c| c.join().unwrap()).filter(|a| a.0 != 200).collect();
    assert!(failed.is_empty(), "{failed:?}\n{}", crate::util::above_debug(&daemon.logs()));
    let after_burst = Instant::now();
    let mut settled = tree_rss(daemon.pid());
    while settled > 2 * idle && after_burst.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(250));
        settled = tree_rss(daemon.pid());
    }
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "FIGURE memory: tree RSS idle {:.0} MiB, peak {:.0} MiB during 64 images in flight, {:.0} MiB {:.1} s after",
        mib(idle),
        mib(peak),
        mib(settled),
        after_burst.elapsed().as_secs_f64()
    );
    assert!(settled <= 2 * idle, "RSS stayed at {:.0} MiB after the burst (idle {:.0} MiB)", mib(settled), mib(idle));
}

/// The worker's socket file descriptors, newest (highest) last: its listener, then the
/// supervisor's connection (twice, when the one-thread loop holds a duplicate).
fn socket_fds(pid: i32) -> Vec<u32> {
    let mut fds: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// Shuts socket `fd` of process `pid` down for both directions, from outside: the socket
/// is taken with pidfd_getfd(2) (allowed on one's own descendants), and shutdown(2) acts on
/// the socket itself, whichever process holds it.
fn shut_down_socket_of(pid: i32, fd: u32) {
    // SAFETY: plain system calls on integers; every result is checked before use.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        assert!(pidfd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
        let ours = libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) as i32;
        assert!(ours >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
        assert_eq!(libc::shutdown(ours, libc::SHUT_RDWR), 0, "shutdown: {}", std::io::Error::last_os_error());
        libc::close(ours);
        libc::close(pidfd);
    }
}

#[test]
fn a_connection_broken_under_a_live_worker_is_noticed_and_the_worker_replaced() {
    use std::time::Duration;
    let setup = Setup::new().model_with(ModelFiles::new("m", 1, family::good(1.0)), "version = 1\nworkers = 1\n");
    let daemon = TestDaemon::ready(setup);
    let body = r#"{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}"#;
    assert_eq!(daemon.post("/v2/models/m/infer", body).status, 200);
    let worker = daemon.worker_pids()[0];
    // Shut the worker's end of its connection down from inside the worker, as a failed
    // write or an undecodable frame would: the process lives on, its connection is gone.
    let fd = *socket_fds(worker).last().expect("the worker has a socket");
    shut_down_socket_of(worker, fd);
    daemon.wait_until("the broken connection noticed and the worker replaced", Duration::from_secs(20), || {
        let w = &daemon.health()["models"]["m"]["versions"]["1"]["workers"];
        w["disconnects"] == 1 && w["ready"] == 1 && !daemon.worker_pids().contains(&worker)
    });
    assert!(daemon.logs().contains("worker connection broke while the process lived"), "{}", daemon.logs());
    assert!(daemon.get("/metrics").body.contains(r#"modeld_worker_disconnects_total{model="m",version="1"} 1"#));
    assert_eq!(daemon.post("/v2/models/m/infer", body).status, 200);
}

/// A model on `latest` serving v1, a blue-green gate short enough for a test, and a
/// two-second start timeout.
fn latest_daemon() -> TestDaemon {
    let lines = "version = \"latest\"\nworkers = 1\ndeploy = { strategy = \"blue_green\", shadow = \"500ms\", bake = \"500ms\", check_every = \"100ms\" }\n";
    TestDaemon::ready(
        Setup::new()
            .server("worker_start_timeout = \"2s\"")
            .server_section(crate::rollouts::HEALTH)
            .model_with(ModelFiles::new("m", 1, family::good(1.0)), lines),
    )
}

/// Stops (SIGSTOP) the first worker that is not one of `before` as soon as it appears,
/// so that it hangs while loading; its pid.
fn stop_the_next_worker(daemon: &TestDaemon, before: &[i32]) -> i32 {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(pid) = daemon.worker_pids().into_iter().find(|p| !before.contains(p)) {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGSTOP).unwrap();
            return pid;
        }
        assert!(Instant::now() < deadline, "no new worker started:\n{}", daemon.logs());
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// At any time, not only at start: a newest version that hangs while loading, then one
/// that fails to load, are each skipped once, with a log line and a metric, the wait
/// bounded by the start timeout once; the version before them serves throughout.
#[test]
fn latest_skips_a_newest_version_that_hangs_or_fails_while_loading_at_any_time() {
    use crate::load::{Load, Pattern};
    use crate::rollouts::{history, stable_version};
    use std::time::{Duration, Instant};
    let daemon = latest_daemon();
    let load = Load::start(&daemon, "m", Pattern { clients: 2, ..Pattern::default() });
    let before = daemon.worker_pids();
    // v2: slow to load (a 512-wide matrix product per layer), and stopped as it starts.
    ModelFiles::new("m", 2, family::slow(400)).write_to(&daemon.path().join("models"));
    let hung = stop_the_next_worker(&daemon, &before);
    let stopped = Instant::now();
    daemon.wait_until("v2 skipped", Duration::from_secs(20), || {
        history(&daemon).last().is_some_and(|r| r["outcome"] == "failed")
    });
    let waited = stopped.elapsed();
    eprintln!(
        "FIGURE latest: a newest version hanging while loading was skipped {waited:?} after it stopped (start timeout 2 s)"
    );
    assert!(waited < Duration::from_millis(3500), "the wait was not bounded by the start timeout once: {waited:?}");
    let record = history(&daemon).pop().unwrap();
    assert!(
        record["reason"].as_str().unwrap().contains("did not get 1 workers ready within the start timeout (2s)"),
        "{record}"
    );
    assert_eq!(stable_version(&daemon), 1);
    daemon.wait_until("the stuck worker stopped", Duration::from_secs(10), || !daemon.worker_pids().contains(&hung));

    // v3: decodes, but its golden example fails: skipped at once.
    let wrong = "[[golden]]\ninputs.x = { shape = [1, 4], data = [1.0, 1.0, 1.0, 1.0] }\noutputs.y = { shape = [1, 1], data = [-99.0] }\n";
    ModelFiles::new("m", 3, family::good(1.0)).with_manifest(wrong).write_to(&daemon.path().join("models"));
    daemon.wait_until("v3 skipped", Duration::from_secs(20), || {
        history(&daemon).last().is_some_and(|r| r["to"] == 3 && r["outcome"] == "failed")
    });
    std::thread::sleep(Duration::from_secs(3));
    let report = load.stop();
    report.assert_failures_only_from(None);
    assert_eq!(stable_version(&daemon), 1);
    assert_eq!(history(&daemon).len(), 2, "a skipped version was tried again: {:?}", history(&daemon));
    let metrics = daemon.get("/metrics").body;
    for version in [2, 3] {
        let line = format!("modeld_latest_skipped_total{{model=\"m\",version=\"{version}\"}} 1");
        assert!(metrics.contains(&line), "missing {line}");
        assert!(daemon.logs().contains(&format!("skipping version {version}, the newest")), "{}", daemon.logs());
    }
}

/// At a first start too, a newest version that hangs while loading gives way to the one
/// before it after the start timeout once, with the metric.
#[test]
fn latest_falls_back_from_a_newest_version_hanging_at_start_within_the_start_timeout() {
    use std::time::{Duration, Instant};
    let setup = Setup::new()
        .server("worker_start_timeout = \"2s\"")
        .model_with(ModelFiles::new("m", 1, family::good(1.0)), "version = \"latest\"\nworkers = 1\n")
        .files(ModelFiles::new("m", 2, family::slow(400)));
    let daemon = TestDaemon::start(setup);
    let hung = stop_the_next_worker(&daemon, &[]);
    let stopped = Instant::now();
    let body = r#"{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}"#;
    daemon.wait_until("version 1 to serve", Duration::from_secs(20), || {
        daemon.post("/v2/models/m/infer", body).version == Some(1)
    });
    let waited = stopped.elapsed();
    eprintln!(
        "FIGURE latest: at start, version 1 served {waited:?} after the newest hung while loading (start timeout 2 s)"
    );
    assert!(waited < Duration::from_millis(4000), "{waited:?}");
    assert!(!daemon.worker_pids().contains(&hung));
    assert!(daemon.get("/metrics").body.contains("modeld_latest_skipped_total{model=\"m\",version=\"2\"} 1"));
}
