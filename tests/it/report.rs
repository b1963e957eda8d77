//! `modeld report`: the evidence package of real rollouts under load — a canary promoted,
//! one reverted, a blue-green rolled back by its package's script — with every file
//! there, the report's numbers the record's and the evidence's, the page self-contained,
//! and a rollout cut by a restart said to be so, read offline from the state directory.

use crate::load::{Load, Pattern};
use crate::onnx::classes::{self, Variant};
use crate::rollouts::{HEALTH, history, stable_version};
use crate::util::{ModelFiles, Setup, TestDaemon};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const FILES: [&str; 11] = [
    "reports/deployment_report.md",
    "reports/deployment_report.html",
    "reports/validation_results.json",
    "reports/validation_results.schema.json",
    "rollback/rollback-plan.md",
    "rollback/rollback-script.sh",
    "rollback/rollback-history.json",
    "monitoring/health-checks.yaml",
    "monitoring/alert-rules.yaml",
    "monitoring/metrics-config.yaml",
    "serving/serving-config.json",
];

fn files(version: u64, variant: Variant) -> ModelFiles {
    ModelFiles::new("m", version, classes::model(variant)).with_manifest(classes::MANIFEST)
}

/// A daemon serving the classifier as v1, with a retrain as v2 and an export without its
/// softmax as v3.
fn daemon(deploy: &str) -> TestDaemon {
    let lines = format!("workers = 1\nversion = 1\ndeploy = {{ check_every = \"100ms\", {deploy} }}\n");
    TestDaemon::ready(
        Setup::new()
            .server_section(HEALTH)
            .model_with(files(1, Variant::Good), &lines)
            .files(files(2, Variant::Retrained { percent: 2.0, seed: 5 }))
            .files(files(3, Variant::NoSoftmax)),
    )
}

fn varied() -> Pattern {
    Pattern { varied: true, pace: Some(Duration::from_millis(10)), ..Pattern::default() }
}

/// Writes the package of `rollout` (`--last` when none) under a new directory.
fn package(d: &TestDaemon, rollout: Option<u64>, extra: &[&str]) -> PathBuf {
    let out = d.path().join(format!("package-{}", rollout.map_or("last".into(), |r| r.to_string())));
    let config = d.path().join("modeld.toml");
    let id = rollout.map(|r| r.to_string());
    let mut args = vec!["report", "m", "--out", out.to_str().unwrap(), "--config", config.to_str().unwrap()];
    if let Some(id) = &id {
        args.extend(["--rollout", id]);
    }
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = d.cli(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for f in FILES {
        assert!(out.join(f).is_file(), "{f} is missing from the package:\n{stdout}");
    }
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The page fetches nothing: no script, no stylesheet or font from outside, no link out.
fn assert_self_contained(html: &str) {
    // The one link: an empty icon, so that a browser asks for no /favicon.ico.
    let html = html.replace(r#"<link rel="icon" href="data:,">"#, "");
    for outside in ["http://", "https://", "<script", "<link", "@import", "url(", "src="] {
        assert!(!html.contains(outside), "the page refers outside itself ({outside})");
    }
    assert!(html.contains("<svg viewBox"), "no chart in the page");
}

#[test]
fn a_promoted_canary_and_a_reverted_one_leave_their_evidence_package() {
    let d = daemon("strategy = \"canary\", steps = [50, 100], shadow = \"1s\", bake = \"1s\"");
    let load = Load::start(&d, "m", varied());
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = d.cli(&["deploy", "m", "--version", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    let out_dir = package(&d, None, &[]);
    let results = read_json(&out_dir.join("reports/validation_results.json"));
    let record = history(&d).pop().unwrap();
    // The report's numbers are the record's and the evidence's, not recomputed.
    assert_eq!(results["schema"], "modeld/validation-results/1");
    assert_eq!(results["rollout"], record["id"]);
    assert_eq!((results["from"].clone(), results["to"].clone()), (Value::from(1), Value::from(2)));
    assert_eq!(results["outcome"], "promoted");
    assert_eq!(results["triggered_by"]["origin"], "operator");
    assert!(results["triggered_by"]["uid"].is_u64(), "{}", results["triggered_by"]);
    let evidence = read_json(&d.path().join(format!("state/rollouts/{}.json", record["id"])));
    assert_eq!(results["phases"], evidence["phases"]);
    assert_eq!(results["evaluations"]["kept"], evidence["evaluations"]);
    assert_eq!(results["versions"], evidence["versions"]);
    let names: Vec<&str> = results["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["spawn", "shadow", "step 1/2", "step 2/2", "drain"], "{names:?}");
    let step = &results["phases"][2];
    assert_eq!((step["weight"].clone(), step["planned_seconds"].clone()), (Value::from(50), Value::from(1.0)));
    assert!(step["candidate"]["requests"].as_u64().unwrap() > 0, "{step}");
    let versions = results["versions"].as_array().unwrap();
    let sha =
        |v: u64| versions.iter().find(|x| x["version"] == v).unwrap()["model_sha256"].as_str().unwrap().to_string();
    assert_eq!(sha(2).len(), 64);
    assert_ne!(sha(1), sha(2));
    let gates: Vec<(&str, &str)> = results["final_verdict"]["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["name"].as_str().unwrap(), g["mark"].as_str().unwrap()))
        .collect();
    assert_eq!(
        gates,
        [("Pre-deployment validation", "passed"), ("Execution", "passed"), ("Post-deployment validation", "passed")],
        "{}",
        results["quality_gates"]
    );
    let md = std::fs::read_to_string(out_dir.join("reports/deployment_report.md")).unwrap();
    assert!(md.starts_with("# Deployment report: m v1 → v2"), "{md}");
    assert!(md.contains("| Outcome | **promoted** |"), "{md}");
    assert!(md.contains("- [x] the shadow agrees with the live version"), "{md}");
    assert_self_contained(&std::fs::read_to_string(out_dir.join("reports/deployment_report.html")).unwrap());
    let rules = std::fs::read_to_string(out_dir.join("monitoring/alert-rules.yaml")).unwrap();
    assert!(rules.contains("alert: ModeldWrongAnswers"), "{rules}");
    let scrape = std::fs::read_to_string(out_dir.join("monitoring/metrics-config.yaml")).unwrap();
    assert!(scrape.contains("rule_files:") && scrape.contains("job_name: \"modeld\""), "{scrape}");

    // The export without its softmax: reverted in its shadow; the report says why.
    let (code, out, err) = d.cli(&["deploy", "m", "--version", "3", "--strategy", "canary"]);
    assert_eq!(code, 3, "{out}{err}");
    let _ = load.stop();
    let reverted = package(&d, None, &[]);
    let results = read_json(&reverted.join("reports/validation_results.json"));
    assert_eq!(results["outcome"], "reverted");
    let reason = results["reason"].as_str().unwrap();
    let md = std::fs::read_to_string(reverted.join("reports/deployment_report.md")).unwrap();
    assert!(md.contains(reason), "the report names the reason: {reason}");
    assert!(md.contains("Post-deployment validation: FAILED"), "{md}");
    let history_file = read_json(&reverted.join("rollback/rollback-history.json"));
    assert!(
        history_file["reverts_and_rollbacks"].as_array().unwrap().iter().any(|r| r["outcome"] == "reverted"),
        "{history_file}"
    );
    // Nothing of a reverted rollout is live: its script refuses.
    let script = Command::new("sh").arg(reverted.join("rollback/rollback-script.sh")).output().unwrap();
    assert_eq!(script.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&script.stderr).contains("never became live"), "{script:?}");
    // The history points at each rollout's report, with how long it took.
    let lines = d.cli(&["history", "m"]).1;
    assert!(lines.contains("report: modeld report m --rollout 1") && lines.contains("took "), "{lines}");
}

#[test]
fn the_packages_rollback_script_rolls_back_then_refuses() {
    let d = daemon("strategy = \"blue_green\", shadow = \"1s\", bake = \"1s\", keep_previous = \"60s\"");
    let load = Load::start(&d, "m", varied());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(d.cli(&["deploy", "m", "--version", "2"]).0, 0);
    let out = package(&d, None, &["--k8s"]);
    assert!(out.join("manifests/RUNBOOK.md").is_file(), "--k8s renders the manifests");
    let plan = std::fs::read_to_string(out.join("rollback/rollback-plan.md")).unwrap();
    assert!(plan.contains("modeld rollback m --socket"), "{plan}");
    let run = || {
        Command::new("sh")
            .arg(out.join("rollback/rollback-script.sh"))
            .env("MODELD", crate::util::BIN)
            .env("MODELD_SOCKET", d.path().join("run/admin.sock"))
            .output()
            .unwrap()
    };
    let first = run();
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    d.wait_until("v1 to serve again", Duration::from_secs(20), || stable_version(&d) == 1);
    let second = run();
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    assert!(String::from_utf8_lossy(&second.stderr).contains("m serves v1, not v2"), "{second:?}");
    load.stop().assert_failures_only_from(None);
    let record = history(&d).pop().unwrap();
    assert_eq!((record["strategy"].as_str(), record["outcome"].as_str()), (Some("rollback"), Some("rolled_back")));
    assert_eq!(record["by"]["origin"], "operator", "{record}");
}

#[test]
fn a_rollout_cut_by_a_restart_is_reported_as_such_offline() {
    let d = daemon("strategy = \"canary\", steps = [50, 100], shadow = \"off\", bake = \"60s\"");
    let load = Load::start(&d, "m", varied());
    assert_eq!(d.cli(&["deploy", "m", "--version", "2", "--no-follow"]).0, 0);
    d.wait_until("step 1", Duration::from_secs(20), || d.cli(&["status"]).1.contains("step 1/2"));
    std::thread::sleep(Duration::from_secs(2));
    let _ = load.stop();
    let mut d = d.restart();
    d.wait_ready();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(20));
    let state = d.path().join("state");
    let report =
        Command::new(crate::util::BIN).args(["report", "m", "--last", "--state-dir"]).arg(&state).output().unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success(), "{report:?}");
    assert!(text.contains("This rollout was cut by a restart of the daemon during its step 1/2 phase"), "{text}");
    let json = Command::new(crate::util::BIN)
        .args(["report", "m", "--rollout", "7", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!json.status.success());
    assert!(
        String::from_utf8_lossy(&json.stderr).contains("rollout 7 is not one of model 'm' (its rollouts: 1)"),
        "{json:?}"
    );
}
