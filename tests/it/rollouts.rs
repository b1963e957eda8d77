//! Rollouts under a bounded load running throughout: every strategy brings a good
//! version in with zero failed requests; slow, erroring and OOM-ing versions are reverted
//! by themselves, failing nothing beyond their own errors; manual rollback; reloads;
//! restarts mid-rollout; half-written models in the repository.

use crate::load::{Load, Pattern, Report};
use crate::onnx::family;
use crate::util::{ModelFiles, Setup, TestDaemon};
use nix::sys::signal::Signal;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A short health window and fast gate settings, so rollouts take seconds.
pub const HEALTH: &str = "[health]\nwindow = \"10s\"\nmin_samples = 10";

/// A `[[model]]`'s lines: two workers on v1, the gate every 100 ms, and a one-second
/// shadow phase unless `settings` say otherwise (recreate has none).
pub fn deploy_line(settings: &str) -> String {
    let shadow = match settings.contains("shadow") || settings.contains("recreate") {
        true => "",
        false => "shadow = \"1s\", ",
    };
    format!("workers = 2\nversion = 1\ndeploy = {{ check_every = \"100ms\", {shadow}{settings} }}\n")
}

/// A daemon serving `m` v1 (good) with `v2` beside it in the repository.
pub fn daemon(v2: Vec<u8>, model_lines: &str) -> TestDaemon {
    let setup = Setup::new()
        .server_section(HEALTH)
        .model_with(ModelFiles::new("m", 1, family::good(1.0)), model_lines)
        .files(ModelFiles::new("m", 2, v2));
    TestDaemon::ready(setup)
}

pub fn stable_version(daemon: &TestDaemon) -> Value {
    let (code, status, err) = daemon.cli(&["status", "--output", "json"]);
    let status: Value =
        serde_json::from_str(&status).unwrap_or_else(|e| panic!("modeld status (exit {code}): {e}: {status}{err}"));
    let m = status["models"].as_array().unwrap().iter().find(|m| m["name"] == "m").unwrap().clone();
    m["versions"].as_array().unwrap().iter().find(|v| v["role"] == "stable").unwrap()["version"].clone()
}

pub fn history(daemon: &TestDaemon) -> Vec<Value> {
    serde_json::from_str::<Vec<Value>>(&daemon.cli(&["history", "m", "--output", "json"]).1).unwrap()
}

/// Deploys v2 with `modeld deploy`, following it; returns (exit code, output, seconds).
pub fn deploy(daemon: &TestDaemon, extra: &[&str]) -> (i32, String, f64) {
    deploy_version(daemon, 2, extra)
}

/// Deploys `version` of `m` with `modeld deploy`, following it.
fn deploy_version(daemon: &TestDaemon, version: u64, extra: &[&str]) -> (i32, String, f64) {
    let started = Instant::now();
    let version = version.to_string();
    let mut args = vec!["deploy", "m", "--version", &version];
    args.extend_from_slice(extra);
    let (code, out, err) = daemon.cli(&args);
    (code, format!("{out}{err}"), started.elapsed().as_secs_f64())
}

fn figure(what: &str, report: &Report, seconds: f64) {
    eprintln!(
        "FIGURE {what}: rollout {seconds:.1} s; {} requests at {:.0}/s, {} failed",
        report.shots.len(),
        report.rate(),
        report.failed().len()
    );
}

/// Deploys `version` of `m` under a bounded load and checks the rollout promoted it with
/// no failed request; returns the load's report and how long the rollout took.
pub fn promote_under_load(daemon: &TestDaemon, version: u64, extra: &[&str]) -> (Report, f64) {
    let load = Load::start(daemon, "m", Pattern::default());
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, seconds) = deploy_version(daemon, version, extra);
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    assert_eq!(code, 0, "v{version}: {out}\n{}", daemon.logs());
    assert!(out.contains("promoted"), "{out}");
    report.assert_failures_only_from(None);
    assert!(report.shots.len() > 100, "only {} requests were sent", report.shots.len());
    (report, seconds)
}

/// Runs a good v1 -> v2 rollout under load and checks nothing failed.
fn good_rollout(name: &str, settings: &str, extra: &[&str]) -> (TestDaemon, Report) {
    let daemon = daemon(family::good(1.05), &deploy_line(settings));
    let (report, seconds) = promote_under_load(&daemon, 2, extra);
    let tail: Vec<_> = report.shots.iter().rev().take(20).collect();
    assert!(tail.iter().all(|s| s.version == Some(2)), "traffic is not on v2 at the end");
    assert_eq!(stable_version(&daemon), 2);
    // The new version is the stable one, not a candidate left at 100 % beside a stopped
    // stable: the next rollout starts from it.
    let status: Value = serde_json::from_str(&daemon.cli(&["status", "--output", "json"]).1).unwrap();
    let versions = status["models"][0]["versions"].as_array().unwrap();
    assert!(!versions.iter().any(|v| v["role"] == "candidate"), "{status}");
    figure(name, &report, seconds);
    (daemon, report)
}

#[test]
fn canary_rolls_a_good_version_out_with_no_failed_request() {
    let (daemon, report) = good_rollout("canary", "strategy = \"canary\", steps = [20, 50, 100], bake = \"1s\"", &[]);
    // Traffic moved in steps: v2 served some requests while v1 still served others.
    let mixed = report.shots.iter().any(|s| s.version == Some(1) && s.at > report.answered_by(2)[0].at);
    assert!(mixed, "the canary never shared traffic");
    let record = history(&daemon).pop().unwrap();
    assert_eq!(record["outcome"], "promoted");
    let notes: Vec<&str> = record["phases"].as_array().unwrap().iter().filter_map(|p| p["note"].as_str()).collect();
    assert_eq!(notes.iter().filter(|n| n.starts_with("gate passed")).count(), 3, "{notes:?}");
}

#[test]
fn blue_green_rolls_a_good_version_out_with_no_failed_request() {
    let (daemon, _) =
        good_rollout("blue_green", "strategy = \"blue_green\", bake = \"1s\", keep_previous = \"30s\"", &[]);
    // Blue stays warm behind green for keep_previous.
    let status: Value = serde_json::from_str(&daemon.cli(&["status", "--output", "json"]).1).unwrap();
    let roles: Vec<&str> =
        status["models"][0]["versions"].as_array().unwrap().iter().map(|v| v["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["stable", "previous"]);
}

#[test]
fn rolling_replaces_workers_one_at_a_time_with_no_failed_request() {
    let (daemon, _) =
        good_rollout("rolling", "strategy = \"rolling\", bake = \"1s\", max_surge = 1, max_unavailable = 0", &[]);
    let record = history(&daemon).pop().unwrap();
    let steps: Vec<&str> = record["phases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["note"].as_str())
        .filter(|n| n.starts_with("step"))
        .collect();
    assert_eq!(steps.len(), 2, "two workers, one at a time: {steps:?}");
}

#[test]
fn recreate_has_its_gap_but_requests_wait_through_it() {
    // Recreate stops v1 before starting v2: requests arriving in the gap wait for v2
    // (up to the request timeout) instead of failing.
    let (daemon, report) = good_rollout("recreate", "strategy = \"recreate\", bake = \"1s\"", &[]);
    let plan = daemon.cli(&["plan", "m", "--version", "2"]).1;
    assert!(plan.contains("WARNING: this strategy has downtime"), "{plan}");
    let slowest = report.shots.iter().map(|s| s.latency).max().unwrap();
    eprintln!("FIGURE recreate: slowest request {slowest:?} (waited through the gap)");
}

#[test]
fn an_ab_test_splits_sticky_users_and_waits_for_a_decision() {
    let daemon = daemon(
        family::good(1.05),
        &deploy_line("strategy = \"ab_test\", split = 50, duration = \"1s\", sticky_header = \"x-user\""),
    );
    let load = Load::start(&daemon, "m", Pattern { users: Some(20), ..Pattern::default() });
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, _) = deploy(&daemon, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("`modeld promote` picks the winner"), "{out}");
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, _) = daemon.cli(&["promote", "m", "--version", "2"]);
    assert_eq!(code, 0, "{out}");
    daemon.wait_until("the A/B winner to be stable", Duration::from_secs(10), || stable_version(&daemon) == 2);
    let report = load.stop();
    report.assert_failures_only_from(None);
    // While both arms served, each user stayed on one arm.
    let during: Vec<_> = report.shots.iter().filter(|s| s.version == Some(2)).collect();
    assert!(!during.is_empty());
    // The route swaps before the old arm has drained; the record ends after that.
    daemon.wait_until("the rollout's record to end", Duration::from_secs(10), || {
        history(&daemon).last().is_some_and(|r| !r["outcome"].is_null())
    });
    let record = history(&daemon).pop().unwrap();
    assert_eq!(record["outcome"], "promoted");
    assert!(record["phases"].as_array().unwrap().iter().any(|p| p["phase"] == "awaiting_decision"));
}

#[test]
fn sticky_users_stay_on_one_arm() {
    let daemon = daemon(
        family::good(1.05),
        // No load: no shadow phase to fill.
        &deploy_line(
            "strategy = \"ab_test\", split = 50, duration = \"30s\", sticky_header = \"x-user\", shadow = \"off\"",
        ),
    );
    assert_eq!(daemon.cli(&["deploy", "m", "--version", "2", "--no-follow"]).0, 0);
    daemon.wait_until("the A/B test to run", Duration::from_secs(10), || {
        daemon.cli(&["status"]).1.contains("step 1/1: 50% of traffic")
    });
    let client = daemon.client();
    let body = r#"{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}"#;
    let mut arms = std::collections::HashMap::new();
    for round in 0..5 {
        for user in 0..20 {
            let a = client.post_with("/v2/models/m/infer", body, ("x-user", &format!("u{user}")));
            let first = *arms.entry(user).or_insert(a.version);
            assert_eq!(a.version, first, "user u{user} moved arms in round {round}");
        }
    }
    let on_b = arms.values().filter(|v| **v == Some(2)).count();
    assert!((3..=17).contains(&on_b), "{on_b} of 20 users on the new arm");
    assert_eq!(daemon.cli(&["rollback", "m"]).0, 0);
}

/// Deploys a bad v2 by canary under load; returns the report after the revert.
fn bad_rollout(name: &str, v2: Vec<u8>, model_lines: &str, pattern: Pattern) -> (TestDaemon, Report) {
    let daemon = daemon(v2, model_lines);
    let load = Load::start(&daemon, "m", pattern);
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, seconds) = deploy(&daemon, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    assert_eq!(code, 3, "expected a revert:\n{out}\n{}", daemon.logs());
    assert!(out.contains("reverted"), "{out}");
    report.assert_failures_only_from(Some(2));
    assert_eq!(stable_version(&daemon), 1);
    let tail: Vec<_> = report.shots.iter().rev().take(20).collect();
    assert!(tail.iter().all(|s| s.version == Some(1) && s.status == 200), "traffic is not back on v1");
    let first = report.answered_by(2).first().map_or(0.0, |s| s.at);
    let last = report.answered_by(2).last().map_or(0.0, |s| s.at);
    eprintln!(
        "FIGURE {name} reverted: v2 answered {} of {} requests ({:.2}%), {} failed, in {:.2} s from its first request to its last; rollout {seconds:.1} s at {:.0} req/s",
        report.answered_by(2).len(),
        report.shots.len(),
        100.0 * report.answered_by(2).len() as f64 / report.shots.len() as f64,
        report.failed().len(),
        last - first,
        report.rate()
    );
    (daemon, report)
}

/// A canary without a shadow phase: its steps and gate catch what the versions do to
/// users (tests/it/safety.rs runs the shadow against the same faults).
const CANARY: &str = "strategy = \"canary\", steps = [10, 50, 100], bake = \"2s\", shadow = \"off\"";

#[test]
fn an_erroring_version_is_reverted_by_itself() {
    // About 500 requests/s: 4 clients, one request each 6 ms (less the answer time).
    let pattern = Pattern { pace: Some(Duration::from_millis(6)), ..Pattern::default() };
    let (daemon, report) = bad_rollout("erroring", family::erroring(), &deploy_line(CANARY), pattern);
    assert!(!report.failed().is_empty(), "the erroring version failed nothing");
    let record = history(&daemon).pop().unwrap();
    assert_eq!(record["outcome"], "reverted");
    assert!(record["reason"].as_str().unwrap().contains("error_rate critical"), "{record}\n{}", daemon.logs());
}

#[test]
fn a_slow_version_is_reverted_by_itself() {
    let lines =
        format!("{}health = {{ p95_latency = {{ warning = \"20ms\", critical = \"40ms\" }} }}\n", deploy_line(CANARY));
    let (daemon, report) = bad_rollout("slow", family::slow(400), &lines, Pattern::default());
    assert!(report.failed().is_empty(), "a slow version fails nothing: {:?}", report.failed().first());
    let reason = history(&daemon).pop().unwrap()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("latency critical") || reason.contains("P95"), "{reason}");
}

#[test]
fn an_oom_ing_version_is_reverted_by_itself() {
    // The hog is slow as well as greedy: latency is not what this test is about, so the
    // comparison that would race the OOM kill to the revert is loosened.
    let lines = format!("memory_limit = \"192MiB\"\n{}", deploy_line(&format!("{CANARY}, max_latency_ratio = 100.0")));
    let pattern = Pattern { big_every: Some(5), ..Pattern::default() };
    let (daemon, _) = bad_rollout("oom", family::hog(), &lines, pattern);
    let reason = history(&daemon).pop().unwrap()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("oom critical"), "{reason}");
    assert!(daemon.get("/metrics").body.contains(r#"modeld_worker_oom_kills_total{model="m",version="2"}"#));
}

#[test]
fn a_canary_is_rolled_back_by_hand() {
    let daemon = daemon(family::good(1.05), &deploy_line("strategy = \"canary\", steps = [30, 100], bake = \"60s\""));
    let load = Load::start(&daemon, "m", Pattern::default());
    assert_eq!(daemon.cli(&["deploy", "m", "--version", "2", "--no-follow"]).0, 0);
    daemon.wait_until("the canary to take traffic", Duration::from_secs(10), || {
        daemon.cli(&["status"]).1.contains("step 1/2: 30% of traffic")
    });
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = daemon.cli(&["rollback", "m"]);
    assert_eq!(code, 0, "{out}{err}");
    daemon.wait_until("the revert", Duration::from_secs(10), || {
        history(&daemon).last().is_some_and(|r| r["outcome"] == "reverted")
    });
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    report.assert_failures_only_from(None);
    assert!(!report.answered_by(2).is_empty());
    assert_eq!(history(&daemon).pop().unwrap()["reason"], "rolled back by the operator");
    assert_eq!(stable_version(&daemon), 1);
}

#[test]
fn a_blue_green_promotion_is_rolled_back_from_the_warm_pool() {
    let (daemon, _) =
        good_rollout("blue_green", "strategy = \"blue_green\", bake = \"1s\", keep_previous = \"60s\"", &[]);
    let load = Load::start(&daemon, "m", Pattern::default());
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, _) = daemon.cli(&["rollback", "m"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("version 1 is live again (from its warm pool)"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    let report = load.stop();
    report.assert_failures_only_from(None);
    assert_eq!(stable_version(&daemon), 1);
    assert!(report.shots.iter().rev().take(10).all(|s| s.version == Some(1)));
}

#[test]
fn sighup_with_an_invalid_config_changes_nothing_and_a_valid_one_rolls_out() {
    let daemon = daemon(family::good(1.05), &deploy_line("strategy = \"blue_green\", bake = \"1s\""));
    // Ready takes one worker; the status compared below is the settled one, both up.
    daemon.wait_until("both workers up", Duration::from_secs(10), || daemon.cli(&["status"]).1.contains(" 2/2 "));
    let good = daemon.cli(&["status"]).1;
    let config = std::fs::read_to_string(daemon.path().join("modeld.toml")).unwrap();
    daemon.write_config(&config.replace("workers = 2", "workers = 0"));
    daemon.signal(Signal::SIGHUP);
    daemon.wait_until("the refusal in the log", Duration::from_secs(10), || {
        daemon.logs().contains("refusing the new config")
    });
    assert!(daemon.logs().contains("model[0].workers: must be between 1 and 256, got 0"));
    let (code, _, err) = daemon.cli(&["reload"]);
    assert_ne!(code, 0);
    assert!(err.contains("must be between 1 and 256"), "{err}");
    assert_eq!(daemon.cli(&["status"]).1.lines().nth(2), good.lines().nth(2));

    daemon.write_config(&config.replace("version = 1", "version = 2"));
    let load = Load::start(&daemon, "m", Pattern::default());
    let (code, out, err) = daemon.cli(&["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("m: rollout") && out.contains("to version 2 by blue_green"), "{out}");
    daemon.wait_until("the reload's rollout to promote", Duration::from_secs(20), || stable_version(&daemon) == 2);
    load.stop().assert_failures_only_from(None);
}

#[test]
fn a_restart_mid_rollout_serves_the_last_promoted_version() {
    let settings = "strategy = \"canary\", steps = [50, 100], bake = \"60s\", shadow = \"off\"";
    let daemon = daemon(family::good(1.05), &deploy_line(settings));
    assert_eq!(daemon.cli(&["deploy", "m", "--version", "2", "--no-follow"]).0, 0);
    daemon.wait_until("the canary to take traffic", Duration::from_secs(10), || {
        daemon.cli(&["status"]).1.contains("step 1/2")
    });
    let workers = daemon.worker_pids();
    let daemon = daemon.restart();
    daemon.wait_ready();
    for pid in workers {
        assert!(!crate::util::alive(pid), "a worker of the killed daemon survived");
    }
    assert_eq!(stable_version(&daemon), 1);
    let record = history(&daemon).pop().unwrap();
    assert_eq!(record["outcome"], "aborted", "{record}");
    assert!(daemon.cli(&["status"]).1.lines().all(|l| !l.starts_with("rollout")), "a rollout resumed");
    let answer = daemon.post(
        "/v2/models/m/infer",
        r#"{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}"#,
    );
    assert_eq!((answer.status, answer.version), (200, Some(1)));
}

#[test]
fn a_reverted_version_asked_by_the_config_is_not_redeployed_by_a_restart() {
    let daemon = daemon(family::erroring(), &deploy_line(CANARY));
    let config = std::fs::read_to_string(daemon.path().join("modeld.toml")).unwrap();
    daemon.write_config(&config.replace("version = 1", "version = 2"));
    let load = Load::start(&daemon, "m", Pattern::default());
    assert_eq!(daemon.cli(&["reload"]).0, 0);
    daemon.wait_until("the revert", Duration::from_secs(30), || {
        history(&daemon).last().is_some_and(|r| r["outcome"] == "reverted")
    });
    load.stop();
    let daemon = daemon.restart();
    daemon.wait_ready();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stable_version(&daemon), 1);
    assert_eq!(history(&daemon).len(), 1, "the restart rolled v2 out again");
    assert!(daemon.cli(&["status"]).1.lines().all(|l| !l.starts_with("rollout")));
}

#[test]
fn a_half_written_model_is_not_deployed_until_complete() {
    let setup = Setup::new()
        .server_section(HEALTH)
        .model_with(ModelFiles::new("m", 1, family::good(1.0)), "workers = 1\nversion = \"latest\"\ndeploy = { strategy = \"blue_green\", bake = \"500ms\", shadow = \"500ms\", check_every = \"100ms\" }\n");
    let daemon = TestDaemon::ready(setup);
    let model = family::good(1.05);
    let dir = daemon.path().join("models/m/2");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.onnx"), &model[..model.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(history(&daemon).is_empty(), "a half-written model was deployed: {:?}", history(&daemon));
    assert!(daemon.logs().contains("is not a complete ONNX model"), "{}", daemon.logs());
    let load = Load::start(&daemon, "m", Pattern { clients: 2, ..Pattern::default() });
    std::fs::write(dir.join("model.onnx"), &model).unwrap();
    daemon.wait_until("the new version to roll out", Duration::from_secs(20), || {
        history(&daemon).last().is_some_and(|r| r["outcome"] == "promoted")
    });
    assert_eq!(stable_version(&daemon), 2);
    load.stop().assert_failures_only_from(None);
    let record = history(&daemon).pop().unwrap();
    assert_eq!((record["origin"].as_str(), record["outcome"].as_str()), (Some("watch"), Some("promoted")));
}

#[test]
fn plan_shows_phases_and_durations_and_deploy_refuses_what_it_cannot_do() {
    let daemon =
        daemon(family::good(1.05), &deploy_line("strategy = \"canary\", steps = [10, 25, 50, 100], bake = \"2m\""));
    let plan = daemon.cli(&["plan", "m", "--version", "2"]).1;
    assert!(plan.contains("m: v1 -> v2 by canary"), "{plan}");
    assert!(plan.contains("step 1/4 (2m): 10% of traffic to v2"), "{plan}");
    assert!(plan.contains("at least 8m"), "{plan}");
    assert!(plan.contains("shadow (1s): v2 answers a mirrored copy of live requests"), "{plan}");
    assert!(plan.contains("signature: same inputs and outputs as v1"), "{plan}");
    let bg = daemon.cli(&["plan", "m", "--version", "2", "--strategy", "blue_green", "--output", "json"]).1;
    let bg: Value = serde_json::from_str(&bg).unwrap();
    assert_eq!(bg["strategy"], "blue_green");
    assert_eq!(bg["downtime"], false);
    // Another strategy keeps the model's gate (check_every 100ms) and its shadow.
    let phases = bg["phases"].as_array().unwrap();
    assert!(phases.iter().any(|p| p["name"] == "shadow" && p["seconds"] == 1.0), "{bg}");
    assert!(phases.iter().any(|p| p["detail"].as_str().unwrap().contains("health gate every 100ms")), "{bg}");
    assert_eq!(bg["signature"]["refused"], false, "{bg}");
    assert!(history(&daemon).is_empty(), "plan did something");

    let (code, _, err) = daemon.cli(&["deploy", "m", "--version", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("already serving version 1"), "{err}");
    let (_, _, err) = daemon.cli(&["deploy", "m", "--version", "7"]);
    assert!(err.contains("version 7 not found"), "{err}");
    let (_, _, err) = daemon.cli(&["deploy", "nope", "--version", "2"]);
    assert!(err.contains("unknown model 'nope'"), "{err}");
    let (_, _, err) = daemon.cli(&["deploy", "m", "--version", "2", "--strategy", "yolo"]);
    assert!(err.contains("'yolo' is not a strategy"), "{err}");
    let (_, _, err) = daemon.cli(&["promote", "m"]);
    assert!(err.contains("no rollout in progress"), "{err}");
}

#[test]
fn a_version_that_cannot_start_fails_before_any_traffic() {
    let daemon = daemon(b"not an onnx model".to_vec(), &deploy_line(CANARY));
    let load = Load::start(&daemon, "m", Pattern::default());
    let (code, out, _) = deploy(&daemon, &[]);
    let report = load.stop();
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("failed: version 2 failed to start: could not read ONNX model"), "{out}");
    report.assert_failures_only_from(None);
    assert!(report.answered_by(2).is_empty(), "the broken version took traffic");
    assert_eq!(stable_version(&daemon), 1);
}

#[test]
fn pause_holds_a_step_and_resume_moves_on() {
    let daemon = daemon(family::good(1.05), &deploy_line("strategy = \"canary\", steps = [25, 100], bake = \"1s\""));
    let load = Load::start(&daemon, "m", Pattern { clients: 2, ..Pattern::default() });
    assert_eq!(daemon.cli(&["deploy", "m", "--version", "2", "--no-follow"]).0, 0);
    daemon.wait_until("step 1", Duration::from_secs(10), || daemon.cli(&["status"]).1.contains("step 1/2"));
    let (code, out, _) = daemon.cli(&["pause", "m"]);
    assert_eq!(code, 0, "{out}");
    std::thread::sleep(Duration::from_secs(2));
    let status = daemon.cli(&["status"]).1;
    assert!(status.contains("paused at step 1/2 (25% of traffic): paused by the operator"), "{status}");
    // Headers reach a version directly while the canary holds at 25 %.
    let client = daemon.client();
    let body = r#"{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}"#;
    for _ in 0..10 {
        assert_eq!(client.post_with("/v2/models/m/infer", body, ("canary", "true")).version, Some(2));
        assert_eq!(client.post_with("/v2/models/m/infer", body, ("x-modeld-version", "1")).version, Some(1));
    }
    assert_eq!(client.post_with("/v2/models/m/infer", body, ("x-modeld-version", "5")).status, 404);
    assert_eq!(daemon.cli(&["resume", "m"]).0, 0);
    daemon.wait_until("the promotion", Duration::from_secs(20), || stable_version(&daemon) == 2);
    load.stop().assert_failures_only_from(None);
}

#[test]
fn too_little_traffic_to_judge_fails_or_pauses_as_configured() {
    // No load at all: the gate never has min_samples, so each step is inconclusive.
    let settings = "strategy = \"canary\", steps = [50, 100], bake = \"300ms\", inconclusive_timeout = \"1s\"";
    let daemon = daemon(family::good(1.05), &deploy_line(settings));
    let (code, out, _) = deploy(&daemon, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("no conclusive verdict within 1s"), "{out}");

    let paused = format!("{settings}, on_inconclusive = \"pause\"");
    let daemon = self::daemon(family::good(1.05), &deploy_line(&paused));
    assert_eq!(daemon.cli(&["deploy", "m", "--version", "2", "--no-follow"]).0, 0);
    daemon.wait_until("the inconclusive pause", Duration::from_secs(10), || {
        daemon.cli(&["status"]).1.contains("not enough traffic to judge")
    });
    assert_eq!(daemon.cli(&["promote", "m"]).0, 0);
    daemon.wait_until("the promotion", Duration::from_secs(10), || stable_version(&daemon) == 2);
}

#[test]
fn a_reload_rolls_out_new_worker_settings_but_not_new_rollout_settings() {
    // Blue stops at promotion (not kept warm), so only the new workers remain.
    let daemon =
        daemon(family::good(1.05), &deploy_line("strategy = \"blue_green\", bake = \"1s\", keep_previous = \"0s\""));
    let config = std::fs::read_to_string(daemon.path().join("modeld.toml")).unwrap();

    daemon.write_config(&config.replace("bake = \"1s\"", "bake = \"2s\""));
    let (code, out, err) = daemon.cli(&["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("m: unchanged"), "how to roll out is not a reason to: {out}");

    // Thresholds are the supervisor's: applied at once, no worker restarted.
    let workers = daemon.worker_pids();
    daemon.write_config(&config.replace("min_samples = 10", "min_samples = 12"));
    let (code, out, err) = daemon.cli(&["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("m: health thresholds applied (no worker restarted)"), "{out}");
    assert_eq!(daemon.worker_pids(), workers);
    let checks = &daemon.health()["models"]["m"]["versions"]["1"]["checks"];
    assert_eq!(checks["error_rate"]["threshold"]["min_samples"], 12, "{checks}");
    daemon.write_config(&config);
    assert!(daemon.cli(&["reload"]).1.contains("m: health thresholds applied"));

    daemon.write_config(&config.replace("workers = 2", "workers = 2\nbusy_poll = \"50us\"\nintra_op_threads = 1"));
    // Traffic for the gate to judge the new workers by.
    let load = Load::start(&daemon, "m", Pattern::default());
    let (code, out, err) = daemon.cli(&["reload"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("m: rollout") && out.contains("to version 1"), "{out}");
    // The same version twice: two pools side by side, each with its own worker sockets,
    // both shown by /health.
    daemon.wait_until("both pools of version 1 in /health", Duration::from_secs(10), || {
        let health = daemon.health();
        let versions = health["models"]["m"]["versions"].as_object().unwrap().clone();
        versions.contains_key("1") && versions.keys().any(|k| k == "1-shadow" || k == "1-candidate")
    });
    let sockets = std::fs::read_dir(daemon.path().join("run/workers"))
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().extension().is_some_and(|e| e == "sock"))
        .count();
    assert_eq!(sockets, 4, "each pool's workers have their own sockets");
    daemon.wait_until("the new workers to be promoted", Duration::from_secs(30), || {
        history(&daemon).last().is_some_and(|r| r["outcome"] == "promoted")
    });
    load.stop().assert_failures_only_from(None);
    // The old workers stop once drained; then only workers with the new setting remain.
    daemon.wait_until("only new workers", Duration::from_secs(10), || {
        let pids = daemon.worker_pids();
        pids.len() == 2 && pids.iter().all(|pid| busy_poll_arg(*pid).as_deref() == Some("50"))
    });
}

/// The `--busy-poll-us` a worker process was started with (None once it has exited).
fn busy_poll_arg(pid: i32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let at = args.iter().position(|a| *a == b"--busy-poll-us")?;
    Some(String::from_utf8_lossy(args[at + 1]).into_owned())
}
