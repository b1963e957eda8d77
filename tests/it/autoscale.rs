//! Host autoscaling: a model's workers follow its load between `min` and `max`, within
//! the host budget shared by all models; no request is lost on the way, and a rollout
//! freezes the count and sizes its candidate from it.

use crate::load::{Load, Pattern, Report};
use crate::onnx::family;
use crate::util::{ModelFiles, Setup, TestDaemon};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Layers of the slow model: a few milliseconds a request, so a few clients keep a worker
/// busy and the in-flight reading is what the clients make it.
const DEPTH: usize = 40;

/// The budget's cores: the default is the host's (2 in CI), fewer than these tests' `max`.
const CORES: &str = "[server.budget]\ncores = 8";

/// Decisions every 250 ms; down after a 2 s window (the defaults are 5 s and 5 minutes).
const FAST: &str = "[model.scale]\ninterval = \"250ms\"\n[model.scale.down]\nstabilization = \"2s\"\n";

fn scale(daemon: &TestDaemon, model: &str) -> Value {
    daemon.get("/health").json()["models"][model]["scale"].clone()
}

fn number(v: &Value) -> usize {
    v.as_u64().unwrap_or(0) as usize
}

/// The slow model `m` (version 1) with these `[[model]]` lines, on a budget of [`CORES`].
fn slow_model(lines: &str) -> Setup {
    Setup::new().server_section(CORES).model_with(ModelFiles::new("m", 1, family::slow(DEPTH)), lines)
}

/// A model's versions in a `/health` answer that have this role.
fn with_role<'a>(model: &'a Value, role: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    model["versions"].as_object().into_iter().flat_map(|v| v.values()).filter(move |v| v["role"] == role)
}

/// `modeld deploy m --version 2`, which follows the rollout to its end, while `watch`
/// reads model `m` of `/health` every 20 ms; the deploy's exit and output.
fn deploy_watching(daemon: &TestDaemon, mut watch: impl FnMut(&Value)) -> (bool, String) {
    let mut cli = std::process::Command::new(env!("CARGO_BIN_EXE_modeld"));
    cli.args(["deploy", "m", "--version", "2", "--socket"]).arg(daemon.path().join("run/admin.sock"));
    let deploying = std::thread::spawn(move || cli.output().unwrap());
    daemon.wait_until("the rollout to end", Duration::from_secs(60), || {
        watch(&daemon.health()["models"]["m"]);
        deploying.is_finished()
    });
    let output = deploying.join().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

/// As many clients as `clients`, back to back: `clients` requests always in flight.
fn busy(clients: usize) -> Pattern {
    Pattern { clients, ..Pattern::default() }
}

/// One client, one request every 50 ms: a worker busy a small share of the time.
fn quiet() -> Pattern {
    Pattern { clients: 1, pace: Some(Duration::from_millis(50)), ..Pattern::default() }
}

/// Samples a model's desired and actual workers (and its live version's state) every
/// 100 ms on a thread of its own.
struct Timeline {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(f64, usize, usize, String)>>,
}

impl Timeline {
    fn start(daemon: &TestDaemon, model: &str, started: Instant) -> Timeline {
        let stop = Arc::new(AtomicBool::new(false));
        let (client, model, stopping) = (daemon.url(""), model.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let mut points = Vec::new();
            while !stopping.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
                if let Ok(mut r) = agent.get(&format!("{client}/health")).call()
                    && let Ok(v) = serde_json::from_str::<Value>(&r.body_mut().read_to_string().unwrap_or_default())
                {
                    let m = &v["models"][&model];
                    let s = &m["scale"];
                    let stable = with_role(m, "stable").next();
                    let state = stable.and_then(|v| v["state"].as_str()).unwrap_or("-").to_string();
                    points.push((started.elapsed().as_secs_f64(), number(&s["desired"]), number(&s["actual"]), state));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            points
        });
        Timeline { stop, thread }
    }

    fn stop(self) -> Vec<(f64, usize, usize, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// The timeline in one line per second: clients, desired, actual, P95 of the answers.
fn print_timeline(points: &[(f64, usize, usize, String)], phases: &[(f64, &str)], shots: &[(f64, Duration)]) {
    let end = points.last().map_or(0.0, |p| p.0);
    for second in 0..=(end as usize) {
        let at = |t: f64| t >= second as f64 && t < second as f64 + 1.0;
        let Some(point) = points.iter().rev().find(|p| at(p.0)) else { continue };
        let mut latencies: Vec<Duration> = shots.iter().filter(|s| at(s.0)).map(|s| s.1).collect();
        latencies.sort();
        let p95 = latencies.get((latencies.len() * 95).div_ceil(100).saturating_sub(1)).copied();
        let phase = phases.iter().rev().find(|(t, _)| *t <= second as f64 + 0.5).map_or("", |p| p.1);
        eprintln!(
            "FIGURE timeline t={second:>2}s load={phase:<10} desired={} actual={} requests={} p95={}",
            point.1,
            point.2,
            latencies.len(),
            p95.map_or("-".into(), |d| format!("{:.1}ms", d.as_secs_f64() * 1e3))
        );
    }
}

fn shots(report: &Report, offset: f64) -> Vec<(f64, Duration)> {
    report.shots.iter().map(|s| (s.at + offset, s.latency)).collect()
}

#[test]
fn a_load_ramp_scales_up_at_once_and_down_after_the_window_with_no_failed_request() {
    let lines = format!("workers = {{ min = 1, max = 4 }}\n{FAST}");
    let daemon = TestDaemon::ready(slow_model(&lines));
    let started = Instant::now();
    let timeline = Timeline::start(&daemon, "m", started);
    let since = |t: Instant| t.duration_since(started).as_secs_f64();

    // Low: one paced client; one worker is plenty.
    let low = Load::start(&daemon, "m", quiet());
    std::thread::sleep(Duration::from_millis(1500));
    let low_report = low.stop();
    assert_eq!(number(&scale(&daemon, "m")["desired"]), 1, "{}", scale(&daemon, "m"));

    // High: six clients back to back: up to max, as fast as the workers load.
    let high_at = Instant::now();
    let high = Load::start(&daemon, "m", busy(6));
    daemon.wait_until("4 workers ready", Duration::from_secs(30), || number(&scale(&daemon, "m")["actual"]) == 4);
    let up_after = high_at.elapsed();
    std::thread::sleep(Duration::from_millis(1500));
    let high_report = high.stop();
    let up = scale(&daemon, "m");
    assert_eq!(number(&up["desired"]), 4, "{up}");
    assert!(up["reason"].as_str().unwrap().contains("in flight per worker thread"), "{up}");

    // Low again: the down window (2 s) holds the count, then it drops to min at once.
    let low_at = Instant::now();
    let low_again = Load::start(&daemon, "m", quiet());
    daemon.wait_until("back to 1 worker", Duration::from_secs(30), || {
        let s = scale(&daemon, "m");
        number(&s["desired"]) == 1 && number(&s["actual"]) == 1
    });
    let down_after = low_at.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let low_again_report = low_again.stop();
    let points = timeline.stop();

    for report in [&low_report, &high_report, &low_again_report] {
        report.assert_failures_only_from(None);
    }
    let total = low_report.shots.len() + high_report.shots.len() + low_again_report.shots.len();
    eprintln!(
        "FIGURE autoscale ramp: {total} requests, 0 failed; 4 workers ready {:.2} s after the load rose; back to 1 \
         {:.2} s after it fell (down window 2 s)",
        up_after.as_secs_f64(),
        down_after.as_secs_f64()
    );
    let mut all = shots(&low_report, 0.0);
    all.extend(shots(&high_report, since(high_at)));
    all.extend(shots(&low_again_report, since(low_at)));
    print_timeline(&points, &[(0.0, "1 paced"), (since(high_at), "6 busy"), (since(low_at), "1 paced")], &all);
    // Down waits for the window: no proposal of the busy phase may be younger than 2 s.
    assert!(down_after >= Duration::from_millis(1700), "scaled down {down_after:?} after the load fell");
    // Never more than max, never fewer than min; workers joining or leaving never make
    // the live version look degraded.
    assert!(points.iter().all(|p| (1..=4).contains(&p.1) && p.2 <= 4), "{points:?}");
    assert!(points.iter().all(|p| p.3 == "ready"), "the live version was not always ready: {points:?}");

    let metrics = daemon.get("/metrics").body;
    for series in [
        "modeld_scale_events_total{direction=\"up\",model=\"m\"}",
        "modeld_scale_events_total{direction=\"down\",model=\"m\"}",
        "modeld_workers_desired{model=\"m\"} 1",
        "modeld_workers_actual{model=\"m\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} not in\n{metrics}");
    }
    let status = daemon.cli(&["status"]).1;
    assert!(status.contains("autoscaled 1..4: desired 1, actual 1"), "{status}");
    assert!(daemon.logs().contains("scaling up"), "{}", daemon.logs());
}

#[test]
fn models_competing_for_the_budget_keep_their_min_and_share_the_rest_by_demand() {
    // A down window long enough that "at once" and "after the window" stay apart on a busy host.
    let lines = FAST.replace("stabilization = \"2s\"", "stabilization = \"5s\"");
    let lines = format!("workers = {{ min = 1, max = 3 }}\n{lines}");
    let daemon = TestDaemon::ready(
        Setup::new()
            .server_section("[server.budget]\ncores = 3")
            .model_with(ModelFiles::new("a", 1, family::slow(DEPTH)), &lines)
            .model_with(ModelFiles::new("b", 1, family::slow(DEPTH)), &lines),
    );
    let desired = |m: &str| number(&scale(&daemon, m)["desired"]);
    let within_budget = |what: &str| {
        let (a, b) = (desired("a"), desired("b"));
        assert!(a >= 1 && b >= 1 && a + b <= 3, "{what}: a {a}, b {b} (budget 3 cores, min 1 each)");
    };

    // a alone is busy (12 clients: well past 3 workers' worth, also on a loaded host): it
    // takes what b's min leaves, and says what holds it.
    let load_a = Load::start(&daemon, "a", busy(12));
    daemon.wait_until("a at 2", Duration::from_secs(30), || desired("a") == 2);
    std::thread::sleep(Duration::from_millis(800));
    let a = scale(&daemon, "a");
    assert_eq!((number(&a["desired"]), desired("b")), (2, 1), "{a}");
    assert_eq!(a["held"]["by"], "budget", "{a}");
    assert!(a["held"]["why"].as_str().unwrap().contains("needs 1 more core(s) for worker 3"), "{a}");
    within_budget("a busy");

    // Both busy: still within the budget, each keeping its min.
    let load_b = Load::start(&daemon, "b", busy(12));
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(150));
        within_budget("both busy");
    }
    // a goes quiet: its own down window (5 s) would keep it at 2, but b's demand takes
    // the core at once.
    let report_a = load_a.stop();
    let quiet_at = Instant::now();
    daemon.wait_until("b at 2", Duration::from_secs(30), || desired("b") == 2);
    let moved = quiet_at.elapsed();
    within_budget("b busy");
    assert_eq!(desired("a"), 1);
    let report_b = load_b.stop();
    report_a.assert_failures_only_from(None);
    report_b.assert_failures_only_from(None);
    eprintln!(
        "FIGURE autoscale budget: 3 cores for a and b (1..3 each); a busy alone got 2, b's demand took a's \
         second core {:.2} s after a went quiet; {} requests, 0 failed",
        moved.as_secs_f64(),
        report_a.shots.len() + report_b.shots.len()
    );
    assert!(moved < Duration::from_millis(4500), "b waited for a's down window: {moved:?}");
    assert!(daemon.logs().contains("held at 2 of 3: needs 1 more core(s)"), "{}", daemon.logs());
}

#[test]
fn a_worker_whose_memory_would_not_fit_the_budget_is_refused_with_the_reason() {
    let lines = format!("workers = {{ min = 1, max = 4 }}\nmemory_limit = \"256MiB\"\n{FAST}");
    let daemon = TestDaemon::ready(
        Setup::new()
            .server_section("[server.budget]\ncores = 8\nmemory = \"600MiB\"")
            .model_with(ModelFiles::new("m", 1, family::slow(DEPTH)), &lines),
    );
    let load = Load::start(&daemon, "m", busy(6));
    daemon.wait_until("2 workers and a refusal", Duration::from_secs(30), || {
        let s = scale(&daemon, "m");
        number(&s["actual"]) == 2 && s["held"]["by"] == "budget"
    });
    std::thread::sleep(Duration::from_millis(600));
    let report = load.stop();
    report.assert_failures_only_from(None);
    let s = scale(&daemon, "m");
    assert_eq!(number(&s["desired"]), 2, "{s}");
    let why = s["held"]["why"].as_str().unwrap();
    assert!(why.contains("needs 256 MiB more memory for worker 3, the budget has 88 MiB left"), "{why}");
}

#[test]
fn a_rollout_while_scaled_up_freezes_the_count_and_sizes_the_candidate_like_stable() {
    let lines = format!(
        "workers = {{ min = 1, max = 3 }}\nversion = 1\n\
         deploy = {{ strategy = \"blue_green\", bake = \"1s\", shadow = \"off\", keep_previous = \"0s\", check_every = \"100ms\", \
         max_output_drift = 0.0 }}\n{FAST}"
    );
    let daemon = TestDaemon::ready(slow_model(&lines).files(ModelFiles::new("m", 2, family::slow(DEPTH))));
    let load = Load::start(&daemon, "m", busy(6));
    daemon.wait_until("3 workers ready", Duration::from_secs(30), || number(&scale(&daemon, "m")["actual"]) == 3);

    let mut candidate_workers = 0;
    let mut frozen_seen = false;
    let (deployed, out) = deploy_watching(&daemon, |m| {
        frozen_seen |= m["scale"]["frozen"].is_string();
        for v in with_role(m, "candidate") {
            candidate_workers = candidate_workers.max(number(&v["workers"]["configured"]));
        }
    });
    assert!(deployed && out.contains("promoted"), "{out}");
    assert!(frozen_seen, "the autoscaler did not report itself frozen during the rollout");
    assert_eq!(candidate_workers, 3, "the blue-green candidate is sized like stable");
    // The promoted version runs as many; the autoscaler resumes on it.
    daemon.wait_until("v2 at 3, thawed", Duration::from_secs(10), || {
        let s = scale(&daemon, "m");
        s["frozen"].is_null() && number(&s["actual"]) == 3
    });
    let report = load.stop();
    report.assert_failures_only_from(None);
    assert!(report.answered_by(2).len() > 10, "v2 served the load");
    daemon.wait_until("v2 back to 1 after the load", Duration::from_secs(30), || {
        number(&scale(&daemon, "m")["desired"]) == 1
    });
    eprintln!(
        "FIGURE autoscale rollout: blue-green while at 3 workers: candidate 3, {} requests, 0 failed",
        report.shots.len()
    );
}

#[test]
fn plan_and_config_check_show_the_policy_in_force() {
    let lines = format!("workers = {{ min = 2, max = 6 }}\n{FAST}");
    let daemon = TestDaemon::ready(
        Setup::new().model_with(ModelFiles::new("m", 1, family::slow(4)), &lines).files(ModelFiles::new(
            "m",
            2,
            family::slow(4),
        )),
    );
    let (code, plan, err) = daemon.cli(&["plan", "m", "--version", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(plan.contains("autoscaling is frozen during the rollout"), "{plan}");
    assert!(plan.contains("2..6 workers, aiming at 1 in-flight requests per worker thread"), "{plan}");
    assert!(plan.contains("down: after a 2s window"), "{plan}");
    let config = daemon.path().join("modeld.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modeld"))
        .args(["config", "check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("autoscaling m: 2..6 workers, aiming at 1 in-flight requests per worker thread"), "{text}");
    assert!(text.contains("up: after a 0s window, at most 4 workers per 15s or 100% per 15s (max of them)"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("budget: ") && l.contains("cores")), "{text}");
}

#[test]
fn a_crashed_worker_is_replaced_without_a_scale_event() {
    let lines = format!("workers = {{ min = 2, max = 3 }}\n{FAST}");
    let daemon = TestDaemon::ready(slow_model(&lines));
    daemon.wait_until("a first decision", Duration::from_secs(10), || {
        !scale(&daemon, "m")["reason"].as_str().unwrap_or("measuring").starts_with("measuring")
    });
    let victim = daemon.worker_pids()[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), nix::sys::signal::Signal::SIGKILL).unwrap();
    daemon.wait_until("the worker replaced", Duration::from_secs(20), || {
        let pids = daemon.worker_pids();
        pids.len() == 2 && !pids.contains(&victim) && number(&scale(&daemon, "m")["actual"]) == 2
    });
    std::thread::sleep(Duration::from_millis(600));
    let s = scale(&daemon, "m");
    assert_eq!(number(&s["desired"]), 2, "{s}");
    let metrics = daemon.get("/metrics").body;
    assert!(!metrics.contains("modeld_scale_events_total{"), "a restart counted as a scale event:\n{metrics}");
    assert!(metrics.contains("modeld_worker_restarts_total{model=\"m\",version=\"1\"} 1"), "{metrics}");
}

#[test]
fn a_restart_starts_as_many_workers_as_the_autoscaler_last_set() {
    let lines = format!("workers = {{ min = 1, max = 3 }}\n{FAST}");
    let daemon = TestDaemon::ready(slow_model(&lines));
    let load = Load::start(&daemon, "m", busy(6));
    daemon.wait_until("3 workers ready", Duration::from_secs(30), || number(&scale(&daemon, "m")["actual"]) == 3);
    load.stop().assert_failures_only_from(None);
    // Killed as by a crash, started again: the live version comes back at 3, not at min
    // (then the down window and the idle load take it to 1, as before).
    let daemon = daemon.restart();
    daemon.wait_ready();
    let health = daemon.health();
    let stable = with_role(&health["models"]["m"], "stable").next().unwrap();
    assert_eq!(number(&stable["workers"]["configured"]), 3, "{health}");
    assert!(daemon.logs().contains("starting version model=m version=1 workers=3"), "{}", daemon.logs());
    daemon.wait_until("back to 1 idle", Duration::from_secs(30), || number(&scale(&daemon, "m")["desired"]) == 1);
}

#[test]
fn a_reload_to_a_fixed_count_ends_autoscaling_and_keeps_serving() {
    // A change of workers rolls out a new pool of the same version: quickly here.
    let deploy = "deploy = { strategy = \"blue_green\", bake = \"500ms\", shadow = \"off\", check_every = \"100ms\", \
                  max_output_drift = 0.0 }\n";
    let setup = |lines: &str| slow_model(&format!("{deploy}{lines}"));
    let daemon = TestDaemon::ready(setup(&format!("workers = {{ min = 1, max = 3 }}\n{FAST}")));
    daemon.wait_until("an autoscaler's account", Duration::from_secs(10), || scale(&daemon, "m").is_object());
    let load = Load::start(&daemon, "m", quiet());
    daemon.write_config(&setup("workers = 2\n").config());
    let (code, out, err) = daemon.cli(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    daemon.wait_until("2 fixed workers, no account", Duration::from_secs(30), || {
        let health = daemon.health();
        let m = &health["models"]["m"];
        m["scale"].is_null() && with_role(m, "stable").next().is_some_and(|s| number(&s["workers"]["ready"]) == 2)
    });
    load.stop().assert_failures_only_from(None);
}

#[test]
fn a_worker_that_cannot_join_leaves_the_version_serving_and_growth_paused() {
    let lines = format!("workers = {{ min = 1, max = 3 }}\nversion = 1\n{FAST}");
    let daemon = TestDaemon::ready(slow_model(&lines));
    // The running worker has its model in memory; any worker started from now cannot load.
    std::fs::remove_file(daemon.path().join("models/m/1/model.onnx")).unwrap();
    let load = Load::start(&daemon, "m", busy(6));
    daemon.wait_until("growth paused", Duration::from_secs(30), || scale(&daemon, "m")["held"]["by"] == "start_failed");
    std::thread::sleep(Duration::from_millis(800));
    let report = load.stop();
    report.assert_failures_only_from(None);
    let s = scale(&daemon, "m");
    assert_eq!((number(&s["desired"]), number(&s["actual"])), (1, 1), "{s}");
    assert!(s["held"]["why"].as_str().unwrap().contains("an added worker could not get ready"), "{s}");
    let health = daemon.health();
    assert_eq!(health["models"]["m"]["ready"], true, "{health}");
    assert!(daemon.logs().contains("the version keeps serving on its other workers"), "{}", daemon.logs());
    assert!(!daemon.logs().contains("version failed"), "{}", daemon.logs());
}

#[test]
fn an_autoscaled_canary_runs_its_steps_share_of_workers_then_all_of_them() {
    let lines = format!(
        "workers = {{ min = 1, max = 4 }}\nversion = 1\n\
         deploy = {{ strategy = \"canary\", steps = [25, 100], bake = \"1s\", shadow = \"off\", keep_previous = \"0s\", \
         check_every = \"100ms\", max_output_drift = 0.0 }}\n{FAST}"
    );
    let daemon = TestDaemon::ready(slow_model(&lines).files(ModelFiles::new("m", 2, family::slow(DEPTH))));
    let load = Load::start(&daemon, "m", busy(6));
    daemon.wait_until("4 workers ready", Duration::from_secs(30), || number(&scale(&daemon, "m")["actual"]) == 4);
    // The candidate's counts, as they were seen.
    let mut seen: Vec<usize> = Vec::new();
    let (deployed, out) = deploy_watching(&daemon, |m| {
        for v in with_role(m, "candidate") {
            let workers = number(&v["workers"]["configured"]);
            if number(&v["workers"]["ready"]) > 0 && seen.last() != Some(&workers) {
                seen.push(workers);
            }
        }
    });
    assert!(deployed, "{out}");
    load.stop().assert_failures_only_from(None);
    // 25 % of 4 workers is 1; the step to 100 % grows it to all 4 (joining one by one).
    assert_eq!((seen.first(), seen.last()), (Some(&1), Some(&4)), "{seen:?}");
    daemon.wait_until("v2 at 4", Duration::from_secs(10), || number(&scale(&daemon, "m")["actual"]) == 4);
}
