//! The rollout safety net, tried as an operator would: purpose-built faulty versions
//! (a changed signature, NaN outputs, a classifier whose top class disagrees, one that
//! refuses a fifth of the traffic) deployed by canary and blue-green under load, with
//! every answer the clients got checked against the stable version's. Each prints a
//! FIGURE line: outcome, wrong answers / all requests, time to revert.

use crate::load::{Load, Pattern, Report, first_output};
use crate::onnx::family;
use crate::rollouts::{HEALTH, deploy, deploy_line, history, stable_version};
use crate::util::{ModelFiles, Setup, TestDaemon};
use std::time::{Duration, Instant};

/// About 500 requests/s: 4 clients, one request each 8 ms (less the answer time).
pub const PACE: Duration = Duration::from_millis(8);
/// How long each load runs, the rollout inside it.
pub const RUN: Duration = Duration::from_secs(6);

pub const CANARY: &str = "strategy = \"canary\", steps = [10, 50, 100], bake = \"1s\"";
pub const BLUE_GREEN: &str = "strategy = \"blue_green\", bake = \"1s\"";

/// Right for `family::good(1.0)`: each row's `y` is the row's sum (within 10 %).
fn sum_of_row(k: u64, rows: usize, answer: &serde_json::Value) -> bool {
    let want = (k % 8) as f64 + 1.75;
    let y = first_output(answer);
    y.len() == rows && y.iter().all(|v| (v - want).abs() <= 0.1 * want)
}

/// Right for `family::classifier(false)`: each row's top class.
fn top_class(k: u64, rows: usize, answer: &serde_json::Value) -> bool {
    let logits = first_output(answer);
    logits.len() == rows * 3
        && logits.chunks(3).all(|row| {
            let best = (0..3).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            best == family::class_of(k)
        })
}

/// A daemon serving `v1` with `v2` beside it, both with `manifest`.
pub fn daemon(v1: Vec<u8>, v2: Vec<u8>, manifest: Option<&str>, lines: &str) -> TestDaemon {
    let files = |version, onnx| {
        let f = ModelFiles::new("m", version, onnx);
        match manifest {
            Some(m) => f.with_manifest(m),
            None => f,
        }
    };
    TestDaemon::ready(Setup::new().server_section(HEALTH).model_with(files(1, v1), lines).files(files(2, v2)))
}

/// What one deploy under load gave.
pub struct Tried {
    pub daemon: TestDaemon,
    pub report: Report,
    pub code: i32,
    pub out: String,
    pub seconds: f64,
}

/// Deploys v2 under a paced load that runs [`RUN`] in all.
pub fn try_deploy(daemon: TestDaemon, pattern: Pattern, extra: &[&str]) -> Tried {
    let started = Instant::now();
    let load = Load::start(&daemon, "m", Pattern { pace: Some(PACE), ..pattern });
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, seconds) = deploy(&daemon, extra);
    std::thread::sleep(RUN.saturating_sub(started.elapsed()).max(Duration::from_millis(300)));
    Tried { report: load.stop(), daemon, code, out, seconds }
}

impl Tried {
    /// Prints the closing note's row and checks the old version serves at the end.
    pub fn figure(&self, fault: &str, strategy: &str) -> f64 {
        let r = &self.report;
        let wrong = r.wrong().len();
        let share = 100.0 * wrong as f64 / r.shots.len() as f64;
        let outcome = history(&self.daemon).pop().map_or("-".into(), |h| h["outcome"].to_string());
        eprintln!(
            "FIGURE safety {fault} x {strategy}: {outcome}, {wrong} wrong of {} requests ({share:.2}%), v2 answered {}, deploy returned after {:.1} s",
            r.shots.len(),
            r.answered_by(2).len(),
            self.seconds
        );
        assert!(r.shots.len() > 500, "only {} requests were sent", r.shots.len());
        assert_eq!(stable_version(&self.daemon), 1);
        assert!(r.shots.iter().rev().take(20).all(|s| s.version == Some(1) && !s.wrong), "traffic is not back on v1");
        share
    }

    pub fn reason(&self) -> String {
        history(&self.daemon).pop().unwrap()["reason"].as_str().unwrap_or_default().to_string()
    }

    /// The rollout ended before any user request reached v2.
    pub fn assert_no_user_saw_v2(&self) {
        assert!(self.report.answered_by(2).is_empty(), "v2 answered users: {:?}", self.report.answered_by(2)[0]);
        assert!(self.report.wrong().is_empty(), "a wrong answer reached a user: {:?}", self.report.wrong()[0]);
    }
}

/// The tests' usual traffic, each answer checked against the stable regression model's.
fn regression() -> Pattern {
    Pattern { expect: Some(sum_of_row), ..Pattern::default() }
}

#[test]
fn a_changed_signature_is_refused_before_any_traffic() {
    for strategy in [CANARY, BLUE_GREEN] {
        let d = daemon(family::good(1.0), family::wider(), None, &deploy_line(strategy));
        let plan = d.cli(&["plan", "m", "--version", "2"]).1;
        assert!(
            plan.contains("signature differs from v1:\n  - input 'x': dimension 1 was 4, is 5 (breaking)"),
            "{plan}"
        );
        assert!(plan.contains("REFUSED"), "{plan}");
        let tried = try_deploy(d, regression(), &[]);
        assert_eq!(tried.code, 4, "refused is a failed rollout:\n{}", tried.out);
        assert!(tried.out.contains("signature differs from v1: input 'x': dimension 1 was 4, is 5"), "{}", tried.out);
        tried.assert_no_user_saw_v2();
        tried.figure("signature change", strategy.split('"').nth(1).unwrap());
    }
}

#[test]
fn non_finite_outputs_fail_requests_and_the_version() {
    // Without a shadow phase, the canary's first step shows users a few of them.
    let d = daemon(family::good(1.0), family::nan(), None, &deploy_line(&format!("{CANARY}, shadow = \"off\"")));
    let tried = try_deploy(d, regression(), &[]);
    assert_eq!(tried.code, 3, "{}", tried.out);
    assert!(tried.reason().contains("error_rate critical"), "{}", tried.reason());
    let from_v2: Vec<_> = tried.report.answered_by(2);
    assert!(!from_v2.is_empty() && from_v2.iter().all(|s| s.status == 500), "{:?}", from_v2.first());
    assert!(
        from_v2[0].body.contains("output 'y' holds non-finite values (1 NaN of 1 elements)"),
        "{}",
        from_v2[0].body
    );
    let metrics = tried.daemon.get("/metrics").body;
    let nonfinite = metrics
        .lines()
        .find(|l| l.starts_with(r#"modeld_nonfinite_outputs_total{model="m",output="y",version="2"}"#))
        .unwrap_or_else(|| panic!("no nonfinite counter:\n{metrics}"));
    let counted: f64 = nonfinite.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted >= from_v2.len() as f64, "{nonfinite}");
    assert!(metrics.contains(r#"modeld_nonfinite_outputs_total{model="m",output="y",version="1"} 0"#), "{metrics}");
    let share = tried.figure("non-finite", "canary without shadow");
    assert!(share < 1.0, "{share:.2}% of requests were wrong");

    // With the default shadow phase, no user sees it.
    for strategy in [CANARY, BLUE_GREEN] {
        let d = daemon(family::good(1.0), family::nan(), None, &deploy_line(strategy));
        let tried = try_deploy(d, regression(), &[]);
        assert_eq!(tried.code, 3, "{}", tried.out);
        tried.assert_no_user_saw_v2();
        let record = history(&tried.daemon).pop().unwrap();
        let phases: Vec<&str> =
            record["phases"].as_array().unwrap().iter().map(|p| p["phase"].as_str().unwrap()).collect();
        assert!(!phases.contains(&"gating"), "it left its shadow phase: {phases:?}");
        tried.figure("non-finite", strategy.split('"').nth(1).unwrap());
    }
}

#[test]
fn a_classifier_that_disagrees_with_stable_is_stopped_in_its_shadow() {
    for strategy in [CANARY, BLUE_GREEN] {
        let d = daemon(
            family::classifier(false),
            family::classifier(true),
            Some(family::CLASSIFIER_LABELS),
            &deploy_line(strategy),
        );
        let tried = try_deploy(d, Pattern { expect: Some(top_class), ..Pattern::default() }, &[]);
        assert_eq!(tried.code, 3, "{}", tried.out);
        // The swapped columns change the top class on 7 of 8 rows the clients send.
        let reason = tried.reason();
        let agreement: f64 = reason
            .split("agrees with stable on ")
            .nth(1)
            .and_then(|r| r.split('%').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{reason}"));
        assert!((5.0..20.0).contains(&agreement), "{reason}");
        tried.assert_no_user_saw_v2();
        tried.figure("disagreeing classifier", strategy.split('"').nth(1).unwrap());
    }
}

#[test]
fn a_version_refusing_a_fifth_of_the_traffic_is_reverted() {
    // Exported with its batch dimension fixed at 1: one request in five carries 64 rows.
    // The operator allowed the signature change; the refusals still stop it.
    let fifth = Pattern { big_every: Some(5), expect: Some(sum_of_row), ..Pattern::default() };
    for strategy in [CANARY, BLUE_GREEN] {
        let d = daemon(family::good(1.0), family::single_row(), None, &deploy_line(strategy));
        let tried = try_deploy(d, fifth, &["--allow-signature-change"]);
        assert_eq!(tried.code, 3, "{}", tried.out);
        assert!(
            tried.reason().contains("refused as invalid") && tried.reason().contains("against stable's 0.00%"),
            "{}",
            tried.reason()
        );
        tried.assert_no_user_saw_v2();
        tried.figure("refuses a fifth", strategy.split('"').nth(1).unwrap());
    }
    // Without a shadow the canary's refusals are compared with stable's: the share v2
    // refused is the share of large batches in the traffic, measured. (No replays: on a
    // busy machine they could show v2 the large batches before users do.)
    let line = deploy_line(&format!("{CANARY}, shadow = \"off\", replay = false"));
    let d = daemon(family::good(1.0), family::single_row(), None, &line);
    let tried = try_deploy(d, fifth, &["--allow-signature-change"]);
    assert_eq!(tried.code, 3, "{}", tried.out);
    assert!(tried.reason().contains("refused as invalid"), "{}", tried.reason());
    let by_v2 = tried.report.answered_by(2);
    let refused: Vec<_> = by_v2.iter().filter(|s| s.status == 400).collect();
    assert!(!refused.is_empty() && refused[0].body.contains("dimension 0 must be 1"), "{:?}", refused.first());
    // v2 refused exactly the large batches it was sent, and those are a fifth of the
    // traffic (picked at random, so the canary's turn cannot line up with them).
    assert!(by_v2.iter().all(|s| (s.rows == 64) == (s.status == 400)), "v2 refused other than the large batches");
    let shots = &tried.report.shots;
    let share = shots.iter().filter(|s| s.rows == 64).count() as f64 / shots.len() as f64;
    eprintln!(
        "FIGURE safety refuses a fifth: large batches {:.1}% of {} requests; v2 took {} and refused {}",
        share * 100.0,
        shots.len(),
        by_v2.len(),
        refused.len()
    );
    assert!((0.15..0.25).contains(&share), "large batches were {:.1}% of the traffic", share * 100.0);
    tried.figure("refuses a fifth", "canary without shadow");
}

#[test]
fn good_versions_are_promoted_twenty_times_in_twenty() {
    // Versions 2..=21, each a copy of v1, deployed one after the other under load,
    // alternating canary and blue-green with the default gate and a short shadow.
    let fast =
        "check_every = \"100ms\", shadow = \"300ms\", bake = \"300ms\", steps = [50, 100], keep_previous = \"0s\"";
    let mut setup = Setup::new().server_section(HEALTH).model_with(
        ModelFiles::new("m", 1, family::good(1.0)),
        &format!("workers = 2\nversion = 1\ndeploy = {{ {fast} }}\n"),
    );
    for v in 2..=21 {
        setup = setup.files(ModelFiles::new("m", v, family::good(1.0)));
    }
    let d = TestDaemon::ready(setup);
    let load = Load::start(&d, "m", Pattern { pace: Some(PACE), ..regression() });
    let started = Instant::now();
    for v in 2..=21u64 {
        let strategy = if v % 2 == 0 { "canary" } else { "blue_green" };
        let (code, out, err) = d.cli(&["deploy", "m", "--version", &v.to_string(), "--strategy", strategy]);
        assert_eq!(code, 0, "deploy of v{v} by {strategy} was not promoted:\n{out}{err}");
    }
    let report = load.stop();
    assert_eq!(stable_version(&d), 21);
    assert!(report.wrong().is_empty(), "{} wrong answers; the first: {:?}", report.wrong().len(), report.wrong()[0]);
    let promoted = history(&d).iter().filter(|r| r["outcome"] == "promoted").count();
    assert_eq!(promoted, 20);
    eprintln!(
        "FIGURE safety good copies: 20 of 20 promoted in {:.1} s, {} requests, 0 wrong",
        started.elapsed().as_secs_f64(),
        report.shots.len()
    );
}

#[test]
fn infinite_outputs_are_answered_only_where_model_toml_allows_them() {
    let allowed =
        ModelFiles::new("logp", 1, family::log_of_zero()).with_manifest("[outputs.y]\nallow_infinite = true\n");
    let d =
        TestDaemon::ready(Setup::new().model(allowed, 1).model(ModelFiles::new("strict", 1, family::log_of_zero()), 1));
    let body = r#"{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}"#;
    let answer = d.post("/v2/models/logp/infer", body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["outputs"][0]["data"], serde_json::json!(["-Infinity"]), "never a silent null");
    let predict = d.post("/predict", r#"{"model": "logp", "features": [1, 2, 3, 4]}"#);
    assert_eq!(predict.json()["prediction"], "-Infinity", "{}", predict.body);
    let refused = d.post("/v2/models/strict/infer", body);
    assert_eq!(refused.status, 500, "{}", refused.body);
    assert!(refused.body.contains("output 'y' holds non-finite values (1 -Inf of 1 elements)"), "{}", refused.body);
    let health = d.health();
    assert_eq!(health["models"]["strict"]["versions"]["1"]["window"]["failed"], 1, "{health}");
    // A model.toml naming an output the model lacks is a load failure, not a silent no-op.
    let typo = ModelFiles::new("typo", 1, family::log_of_zero()).with_manifest("[outputs.z]\nallow_nan = true\n");
    let d = TestDaemon::start(Setup::new().model(typo, 1));
    d.wait_until("typo to fail", Duration::from_secs(30), || {
        d.health()["models"]["typo"]["versions"]["1"]["state"] == "failed"
    });
    let reason = d.health()["models"]["typo"]["versions"]["1"]["reason"].to_string();
    assert!(reason.contains("model.toml [outputs.z]: the model has no output 'z'"), "{reason}");
}
