//! Health that tells the truth: each check driven to critical by a purpose-built model
//! within one window, and back to ok after; too little traffic is insufficient data; a
//! killed worker shows at once.

use crate::onnx;
use crate::util::{ModelFiles, Setup, TestDaemon, infer_body};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use std::time::Duration;

/// A short window so a test sees a breach and its recovery within seconds.
fn fast_health(setup: Setup) -> Setup {
    setup.server_section("[health]\nwindow = \"2s\"\nmin_samples = 5\np95_latency = { warning = \"40ms\", critical = \"80ms\" }\np99_latency = { critical = \"80ms\" }")
}

fn check(daemon: &TestDaemon, model: &str, check: &str) -> Value {
    daemon.health()["models"][model]["versions"]["1"]["checks"][check].clone()
}

fn wait_check(daemon: &TestDaemon, model: &str, name: &str, status: &str) -> Value {
    let mut last = Value::Null;
    daemon.wait_until(&format!("{model} {name} to be {status} (last: {last})"), Duration::from_secs(20), || {
        last = check(daemon, model, name);
        last["status"] == status
    });
    last
}

#[test]
fn a_slow_version_breaches_latency_and_recovers() {
    let daemon =
        TestDaemon::ready(fast_health(Setup::new().model(ModelFiles::new("slow", 1, onnx::slow(256, 200)), 1)));
    let heavy = infer_body("x", &[128, 256], &vec![0.5; 128 * 256]);
    let light = infer_body("x", &[1, 256], &vec![0.5; 256]);
    let started = std::time::Instant::now();
    assert_eq!(daemon.post("/v2/models/slow/infer", &heavy).status, 200);
    let one = started.elapsed();
    assert!(one > Duration::from_millis(80), "the heavy request took only {one:?}; the fixture is not slow enough");
    for _ in 0..5 {
        assert_eq!(daemon.post("/v2/models/slow/infer", &heavy).status, 200);
    }
    let breached = wait_check(&daemon, "slow", "latency", "critical");
    assert!(breached["value"]["p95_seconds"].as_f64().unwrap() > 0.08, "{breached}");
    assert_eq!(daemon.health()["status"], "unhealthy");
    assert_eq!(daemon.get("/health").status, 503);
    // Fast traffic only: once the slow requests leave the window, latency is ok again.
    let mut recovered = Value::Null;
    daemon.wait_until("latency to recover", Duration::from_secs(20), || {
        for _ in 0..5 {
            daemon.post("/v2/models/slow/infer", &light);
        }
        recovered = check(&daemon, "slow", "latency");
        recovered["status"] == "ok"
    });
    assert!(recovered["value"]["p95_seconds"].as_f64().unwrap() < 0.04, "{recovered}");
}

#[test]
fn a_failing_version_breaches_the_error_rate_and_recovers() {
    let daemon = TestDaemon::ready(fast_health(Setup::new().model(ModelFiles::new("lookup", 1, onnx::lookup()), 1)));
    let body = |i: i64| json!({"inputs": [{"name": "i", "shape": [1], "datatype": "INT64", "data": [i]}]}).to_string();
    for i in 0..10 {
        daemon.post("/v2/models/lookup/infer", &body(if i % 2 == 0 { 9 } else { 1 }));
    }
    let breached = wait_check(&daemon, "lookup", "error_rate", "critical");
    assert!((breached["value"].as_f64().unwrap() - 0.5).abs() < 0.11, "{breached}");
    assert_eq!(breached["threshold"]["critical"], 0.05);
    // Availability is not touched by errors the version answered.
    assert_eq!(check(&daemon, "lookup", "availability")["status"], "ok");
    let mut last = Value::Null;
    daemon.wait_until("the error rate to recover", Duration::from_secs(20), || {
        for _ in 0..5 {
            assert_eq!(daemon.post("/v2/models/lookup/infer", &body(2)).status, 200);
        }
        last = check(&daemon, "lookup", "error_rate");
        last["status"] == "ok"
    });
    // Ok is below the warning threshold (1 %); the window may still hold a tail of the
    // errors as it slides past them.
    let rate = last["value"].as_f64().unwrap();
    assert!(rate < 0.01, "recovered means under the warning threshold: {last}");
}

#[test]
fn a_version_past_its_memory_limit_is_oom_killed_and_counted() {
    let daemon =
        TestDaemon::ready(fast_health(Setup::new().model_with(
            ModelFiles::new("hog", 1, onnx::memory_hog(1 << 20)),
            "workers = 1\nmemory_limit = \"256MiB\"\n",
        )));
    // 128 rows × 1M floats = 512 MiB for the intermediate: past the limit.
    let answer = daemon.post("/v2/models/hog/infer", &infer_body("x", &[128, 1], &[1.0; 128]));
    assert_ne!(answer.status, 200, "{}", answer.body);
    wait_check(&daemon, "hog", "oom", "critical");
    // The request killed its worker, and its one retry killed the restarted worker too
    // (the second exit may be reaped just after the client got its answer).
    daemon.wait_until("both OOM kills counted", Duration::from_secs(10), || check(&daemon, "hog", "oom")["value"] == 2);
    let version = &daemon.health()["models"]["hog"]["versions"]["1"];
    assert!(version["reason"].as_str().unwrap_or("").contains("exceeded 256 MiB memory limit"), "{version}");
    assert!(daemon.get("/metrics").body.contains(r#"modeld_worker_oom_kills_total{model="hog",version="1"} 2"#));
    // The worker comes back, small requests work, and the kill leaves the window.
    daemon.wait_until("the worker to come back", Duration::from_secs(20), || {
        daemon.health()["models"]["hog"]["versions"]["1"]["workers"]["ready"] == 1
    });
    assert_eq!(daemon.post("/v2/models/hog/infer", &infer_body("x", &[2, 1], &[1.0, 2.0])).status, 200);
    wait_check(&daemon, "hog", "oom", "ok");
    let memory = check(&daemon, "hog", "memory");
    assert_eq!(memory["threshold"]["of"], "memory_limit");
    assert_eq!(memory["threshold"]["of_bytes"], 256u64 << 20);
}

#[test]
fn too_little_traffic_is_insufficient_data_never_ok() {
    let daemon = TestDaemon::ready(fast_health(Setup::new().model(ModelFiles::reference("tabular_mlp"), 1)));
    for _ in 0..3 {
        daemon.post("/v2/models/tabular_mlp/infer", &infer_body("features", &[1, 30], &[0.1; 30]));
    }
    for name in ["error_rate", "latency", "availability"] {
        let c = check(&daemon, "tabular_mlp", name);
        assert_eq!(c["status"], "insufficient_data", "{name}: {c}");
        assert_eq!(c["threshold"]["samples"], 3, "{name}: {c}");
    }
    // Too few samples is no problem with the version: an idle daemon is healthy.
    assert_eq!(daemon.health()["status"], "healthy");
    let window = &daemon.health()["models"]["tabular_mlp"]["versions"]["1"]["window"];
    assert_eq!(window["requests"], 3, "{window}");
    assert!(window["throughput_per_second"].as_f64().unwrap() > 0.0, "{window}");
    assert_eq!(check(&daemon, "tabular_mlp", "model_loaded")["status"], "ok");
}

#[test]
fn a_killed_worker_shows_at_once() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::reference("tabular_mlp"), 2));
    let victim = daemon.worker_pids()[0];
    kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    // Within the time it takes the supervisor to reap it, well before any restart.
    daemon.wait_until("the dead worker to show", Duration::from_secs(2), || {
        let c = check(&daemon, "tabular_mlp", "model_loaded");
        c["status"] == "warning" && c["value"] == 1
    });
    assert_eq!(daemon.health()["models"]["tabular_mlp"]["versions"]["1"]["state"], "degraded");
    wait_check(&daemon, "tabular_mlp", "model_loaded", "ok");
}

#[test]
fn metrics_export_every_check_and_the_worker_resources() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::reference("tabular_mlp"), 1));
    daemon.post("/v2/models/tabular_mlp/infer", &infer_body("features", &[3, 30], &[0.1; 90]));
    daemon.wait_until("a resource sample", Duration::from_secs(5), || {
        daemon.get("/metrics").body.contains("modeld_worker_cpu_seconds_total{model=\"tabular_mlp\"")
    });
    let text = daemon.get("/metrics").body;
    for check in ["model_loaded", "memory", "cpu", "error_rate", "latency", "availability", "oom"] {
        let line = format!(r#"modeld_health_check_status{{check="{check}",model="tabular_mlp",version="1"}}"#);
        assert!(text.contains(&line), "missing {line}");
    }
    assert!(text.contains(r#"modeld_health_check_status{check="error_rate",model="tabular_mlp",version="1"} -1"#));
    // Counters exist at 0 from the version's start, so the first event is an increase.
    for line in [
        r#"modeld_worker_oom_kills_total{model="tabular_mlp",version="1"} 0"#,
        r#"modeld_worker_restarts_total{model="tabular_mlp",version="1"} 0"#,
        r#"modeld_requests_total{code="500",model="tabular_mlp",protocol="oip",version="1"} 0"#,
        r#"modeld_requests_total{code="503",model="tabular_mlp",protocol="predict",version="1"} 0"#,
        r#"modeld_nonfinite_outputs_total{model="tabular_mlp",output="probabilities",version="1"} 0"#,
    ] {
        assert!(text.contains(line), "missing {line}");
    }
    assert!(text.contains(r#"modeld_batch_size_count{model="tabular_mlp",version="1"} 1"#), "{text}");
    assert!(text.contains(r#"modeld_batch_size_sum{model="tabular_mlp",version="1"} 3"#), "{text}");
    assert!(text.contains(r#"modeld_inference_duration_seconds_count{model="tabular_mlp",version="1"} 1"#));
    assert!(text.contains(r#"modeld_queue_duration_seconds_count{model="tabular_mlp",version="1"} 1"#));
    // A loaded worker holds the runtime and the model: several MB, sampled each second.
    let rss = || {
        let text = daemon.get("/metrics").body;
        let line = text
            .lines()
            .find(|l| l.starts_with(r#"modeld_worker_rss_bytes{model="tabular_mlp",slot="0",version="1"}"#));
        line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
    };
    daemon.wait_until("the worker's RSS sampled after loading", Duration::from_secs(5), || rss() > 4e6);
}

#[test]
fn an_idle_daemon_on_a_busy_host_is_healthy() {
    // The bundled models, left idle, while this test keeps every core of the host busy.
    let daemon = TestDaemon::ready(
        Setup::new().model(ModelFiles::bundled("iris", 2), 2).model(ModelFiles::bundled("tabular_mlp", 1), 2),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let burners: Vec<_> = (0..cores)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let version = |health: &Value, model: &str| {
        health["models"][model]["versions"][if model == "iris" { "2" } else { "1" }].clone()
    };
    daemon.wait_until("every worker up and sampled on a busy host", Duration::from_secs(20), || {
        let health = daemon.health();
        ["iris", "tabular_mlp"].iter().all(|m| {
            let checks = &version(&health, m)["checks"];
            checks["model_loaded"]["status"] == "ok"
                && checks["cpu"]["value"]["share"].is_number()
                && checks["cpu"]["value"]["host_busy"].as_f64().is_some_and(|b| b > 0.8)
        })
    });
    let health = daemon.health();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    burners.into_iter().for_each(|b| b.join().unwrap());
    assert_eq!(health["status"], "healthy", "{health}");
    for model in ["iris", "tabular_mlp"] {
        let checks = &version(&health, model)["checks"];
        assert_eq!(checks["cpu"]["status"], "ok", "{model}: {checks}");
        assert_eq!(checks["cpu"]["value"]["cores_allowed"], 2.0, "{model}: {checks}");
        assert_eq!(checks["error_rate"]["status"], "insufficient_data", "{model}: {checks}");
    }
}

/// A version kept busy by its clients is at capacity, not failing: with its cpu check
/// past even a "critical" level the config asks for (ignored, with a warning), `/health`
/// says degraded with 200, never unhealthy with 503, while latency and errors are fine.
#[test]
fn a_version_busy_at_capacity_is_degraded_not_unhealthy() {
    let daemon = TestDaemon::ready(
        Setup::new()
            .model(ModelFiles::bundled("iris", 2), 1)
            .server_section("[health]\nwindow = \"5s\"\nmin_samples = 5\ncpu = { warning = 5.0, critical = 10.0 }"),
    );
    let checked = std::process::Command::new(crate::util::BIN)
        .args(["config", "check", "--config"])
        .arg(daemon.path().join("modeld.toml"))
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));
    assert!(checked.status.success(), "{out}{err}");
    assert!(
        format!("{out}{err}").contains("health.cpu.critical"),
        "config check warns of the ignored level: {out}{err}"
    );
    let load = crate::load::Load::start(&daemon, "iris", crate::load::Pattern { input: "X", ..Default::default() });
    let mut busy = Value::Null;
    daemon.wait_until("the worker sampled past both levels", Duration::from_secs(20), || {
        busy = daemon.health();
        check_of(&busy, "cpu")["value"]["share"].as_f64().is_some_and(|s| s > 0.10)
    });
    let _ = load.stop();
    let cpu = check_of(&busy, "cpu");
    assert_eq!(cpu["status"], "warning", "{cpu}");
    assert_eq!(cpu["threshold"]["critical"], Value::Null, "{cpu}");
    assert_eq!(busy["status"], "degraded", "{busy}");
    assert_eq!(daemon.get("/health").status, 200);
}

fn check_of(health: &Value, name: &str) -> Value {
    health["models"]["iris"]["versions"]["2"]["checks"][name].clone()
}
