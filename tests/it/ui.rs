//! The live view: `/ui/state` through a canary under load (weights moving, the gate's
//! checks with their thresholds, the charts' points, the report linked), tokens guarding
//! it and limiting its models, `modeld deploy` and `modeld status --watch` under a
//! pseudo-terminal showing what the admin socket reports — and, run by `.ci/run`
//! (ignored here: it needs chromium and playwright-core), the page in a real browser.

use crate::auth::{auth_section, token_table};
use crate::load::{Load, Pattern};
use crate::onnx::classes::{self, Variant};
use crate::rollouts::HEALTH;
use crate::util::{BIN, ModelFiles, Setup, TestDaemon};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn files(name: &str, version: u64, variant: Variant) -> ModelFiles {
    ModelFiles::new(name, version, classes::model(variant)).with_manifest(classes::MANIFEST)
}

/// The classifier as v1 of model `m`, a retrain as v2, an export without its softmax
/// (whose answers break the output contract) as v3; the gate checks every 100 ms.
fn setup(deploy: &str) -> Setup {
    setup_checking("100ms", deploy)
}

fn setup_checking(every: &str, deploy: &str) -> Setup {
    let lines = format!("workers = 1\nversion = 1\ndeploy = {{ check_every = \"{every}\", {deploy} }}\n");
    Setup::new()
        .server_section(HEALTH)
        .model_with(files("m", 1, Variant::Good), &lines)
        .files(files("m", 2, Variant::Retrained { percent: 2.0, seed: 5 }))
        .files(files("m", 3, Variant::NoSoftmax))
}

fn paced() -> Pattern {
    Pattern { varied: true, pace: Some(Duration::from_millis(10)), ..Pattern::default() }
}

/// GET with headers: status, the headers asked for, body.
fn get(d: &TestDaemon, path: &str, token: Option<&str>) -> (u16, ureq::http::HeaderMap, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut request = agent.get(&d.url(path));
    if let Some(t) = token {
        request = request.header("authorization", &format!("Bearer {t}"));
    }
    let mut response = request.call().unwrap();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (response.status().as_u16(), response.headers().clone(), body)
}

fn state(d: &TestDaemon, query: &str) -> Value {
    let (status, _, body) = get(d, &format!("/ui/state{query}"), None);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn model<'a>(state: &'a Value, name: &str) -> &'a Value {
    state["models"].as_array().unwrap().iter().find(|m| m["name"] == name).unwrap_or_else(|| panic!("{state}"))
}

/// The page is served whole from the binary, under a policy that lets it load nothing
/// from elsewhere; its state follows a canary under load: the candidate's weight moves
/// step by step, the gate's checks come with values and thresholds, the charts get a
/// point a second for each version, the ended rollout is in the history with a report.
#[test]
fn the_state_follows_a_canary_step_by_step() {
    let d =
        TestDaemon::ready(setup("strategy = \"canary\", steps = [25, 50, 100], shadow = \"1s\", bake = \"1500ms\""));
    let (status, headers, page) = get(&d, "/ui", None);
    assert_eq!(status, 200);
    let policy = headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"), "{policy}");
    for outside in ["http://", "https://", "<script>", "style="] {
        assert!(!page.contains(outside), "the page refers outside itself or inlines code ({outside})");
    }
    for asset in ["/ui/app.js", "/ui/app.css"] {
        assert!(page.contains(asset), "the page loads {asset}");
        let (status, headers, body) = get(&d, asset, None);
        assert_eq!(status, 200, "{asset}");
        let body = body.replace("http://www.w3.org/2000/svg", "");
        assert!(!body.contains("http://") && !body.contains("https://"), "{asset} fetches from elsewhere");
        assert!(headers.get("content-type").unwrap().to_str().unwrap().starts_with("text/"), "{asset}");
    }
    let (status, _, body) = get(&d, "/ui/state?since=yesterday", None);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("since=yesterday"), "{body}");
    assert_eq!(get(&d, "/ui/state?since=-1", None).0, 400, "a time before 1970 is no Unix time");
    assert_eq!(get(&d, "/ui/state?since=1e%2B9", None).0, 200, "the query is percent-decoded");

    let load = Load::start(&d, "m", paced());
    std::thread::sleep(Duration::from_millis(1500));
    let (code, out, err) = d.cli(&["deploy", "m", "--version", "2", "--no-follow"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut weights = BTreeSet::new();
    let mut checks_seen: Option<Value> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let ended = loop {
        assert!(Instant::now() < deadline, "the rollout did not end; logs:\n{}", d.logs());
        let s = state(&d, "");
        let m = model(&s, "m");
        let rollout = &m["rollout"];
        if rollout["phase"] == "gating" {
            let candidate = m["versions"].as_array().unwrap().iter().find(|v| v["role"] == "candidate");
            if let Some(c) = candidate {
                assert_eq!(c["weight"], rollout["weight"], "the table's weight is the step's: {m}");
                weights.insert(c["weight"].as_u64().unwrap());
            }
            if !rollout["gate"].is_null() {
                checks_seen = Some(rollout["gate"].clone());
            }
        }
        if rollout["phase"] == "promoted" {
            break s;
        }
        std::thread::sleep(Duration::from_millis(150));
    };
    let _ = load.stop();
    assert!(weights.len() >= 2, "the weights seen moved: {weights:?}");
    let gate = checks_seen.expect("the gate's view was seen while gating");
    assert!(gate["hold_seconds"].as_f64().unwrap() > 1.0, "{gate}");
    let checks = gate["checks"].as_array().unwrap();
    let named = |n: &str| checks.iter().find(|c| c["name"] == n).unwrap_or_else(|| panic!("no {n} in {gate}"));
    assert!(named("error rate")["threshold"].as_str().unwrap().contains("≤ 5.00%"), "{gate}");
    assert!(named("P95 latency")["value"].as_str().unwrap().ends_with("ms)"), "{gate}");
    assert_eq!(named("requests in the window")["threshold"], "≥ 10", "{gate}");

    let m = model(&ended, "m");
    let series = m["series"].as_array().unwrap();
    let points =
        |v: u64| series.iter().find(|s| s["version"] == v).map_or(0, |s| s["points"].as_array().unwrap().len());
    assert!(points(1) >= 5 && points(2) >= 3, "a point a second for each version: {series:?}");
    let served = series.iter().flat_map(|s| s["points"].as_array().unwrap()).filter(|p| p["rate"].as_f64() > Some(0.0));
    assert!(served.count() > 0, "the points measured the load: {series:?}");
    // `since` returns only what is newer.
    let later = state(&d, &format!("?since={}", ended["now"]));
    let newer: usize =
        model(&later, "m")["series"].as_array().unwrap().iter().map(|s| s["points"].as_array().unwrap().len()).sum();
    assert!(newer <= 4, "since= returned old points: {later}");
    // The phase says "promoted" as the rollout ends; its history entry follows once the
    // engine has recorded it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let history = loop {
        let history = model(&state(&d, ""), "m")["history"].clone();
        if !history[0]["outcome"].is_null() || Instant::now() > deadline {
            break history;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let record = &history[0];
    assert_eq!(record["outcome"], "promoted", "{history}");
    let (status, headers, report) = get(&d, record["report"].as_str().unwrap(), None);
    assert_eq!(status, 200, "{report}");
    assert!(report.contains("Deployment report: m v2"), "{report}");
    let policy = headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(!policy.contains("script-src"), "a report may run no script: {policy}");
    let (status, _, body) = get(&d, "/ui/report/m/99", None);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("rollout 99 is not one of model 'm'"), "{body}");
}

/// With tokens on, the page itself is open (it holds nothing), its state asks for a
/// token with the metadata scope, and a token for some models shows only those.
#[test]
fn tokens_guard_the_state_and_limit_its_models() {
    let tokens = [
        token_table("meta-all", "tok-meta-all", "[\"*\"]", "[\"metadata\"]"),
        token_table("meta-a", "tok-meta-a", "[\"a\"]", "[\"metadata\"]"),
        token_table("infer", "tok-infer", "[\"*\"]", "[\"infer\"]"),
    ];
    let d = TestDaemon::ready(
        Setup::new()
            .model(files("a", 1, Variant::Good), 1)
            .model(files("b", 1, Variant::Good), 1)
            .server_section(&auth_section(true, &tokens)),
    );
    assert_eq!(get(&d, "/ui", None).0, 200);
    assert_eq!(get(&d, "/ui/app.js", None).0, 200);
    let (status, headers, _) = get(&d, "/ui/state", None);
    assert_eq!(status, 401);
    assert!(headers.get("www-authenticate").is_some());
    assert_eq!(get(&d, "/ui/state", Some("tok-infer")).0, 403);
    let names = |token| {
        let (status, _, body) = get(&d, "/ui/state", Some(token));
        assert_eq!(status, 200, "{body}");
        let s: Value = serde_json::from_str(&body).unwrap();
        s["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(names("tok-meta-all"), ["a", "b"]);
    assert_eq!(names("tok-meta-a"), ["a"]);
    assert_eq!(get(&d, "/ui/report/b/1", Some("tok-meta-a")).0, 403);
}

/// Runs `command` under a pseudo-terminal 200 columns wide (`script`), returning all it
/// drew.
fn under_a_terminal(command: &str, limit: Duration) -> String {
    let typescript = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &format!("stty cols 200 rows 60; {command}")])
        .arg(typescript.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("script (util-linux) runs");
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Asked to stop, `script` writes out what it holds.
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _ = child.wait();
    std::fs::read_to_string(typescript.path()).unwrap()
}

fn socket(d: &TestDaemon) -> PathBuf {
    d.path().join("run/admin.sock")
}

/// `modeld deploy` on a terminal draws the phase, the traffic split, each gate check
/// with its value and threshold and the time left, as the admin socket reports them;
/// then the verdict and the report command. `modeld status --watch` draws the same.
#[test]
fn the_terminal_views_show_what_the_admin_socket_reports() {
    // A check a second: each evaluation stays on the screen for many frames.
    let d = TestDaemon::ready(setup_checking(
        "1s",
        "strategy = \"canary\", steps = [50, 100], shadow = \"1s\", bake = \"4s\"",
    ));
    let load = Load::start(&d, "m", paced());
    std::thread::sleep(Duration::from_millis(1500));
    let deploy_cmd = format!("{BIN} deploy m --version 2 --socket {}", socket(&d).display());
    let reader = {
        let socket = socket(&d);
        std::thread::spawn(move || gate_views(&socket, Duration::from_secs(30)))
    };
    let drawn = under_a_terminal(&deploy_cmd, Duration::from_secs(60));
    let seen = reader.join().unwrap();
    let text = strip_escapes(&drawn);
    assert!(text.contains("traffic: v1 50%, v2 50%"), "{text}");
    assert!(text.contains("left in this phase"), "{text}");
    assert!(text.contains("rollout 1 of m: v1 -> v2 by canary: promoted"), "{text}");
    assert!(text.contains("report: modeld report m --rollout 1"), "{text}");
    // Every check line the admin socket reported for a gating step was drawn.
    let reported: Vec<String> = seen
        .iter()
        .filter(|g| g["checks"].as_array().is_some_and(|c| !c.is_empty()))
        .flat_map(|g| {
            g["checks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| format!("{} {}", c["name"].as_str().unwrap(), c["value"].as_str().unwrap()))
        })
        .collect();
    assert!(!reported.is_empty(), "the admin socket reported no gate view");
    let drawn_lines = reported.iter().filter(|line| text.contains(line.as_str())).count();
    assert!(
        drawn_lines * 10 >= reported.len() * 9,
        "of {} check values the admin socket reported, {drawn_lines} were drawn:\n{:?}\n{text}",
        reported.len(),
        reported.iter().filter(|l| !text.contains(l.as_str())).take(5).collect::<Vec<_>>()
    );
    for g in &seen {
        for c in g["checks"].as_array().into_iter().flatten() {
            let threshold = c["threshold"].as_str().unwrap();
            assert!(threshold.is_empty() || text.contains(threshold), "threshold {threshold} not drawn");
        }
    }

    // status --watch, on a terminal and not.
    let watch_cmd = format!("{BIN} status --watch --socket {}", socket(&d).display());
    let watched = strip_escapes(&under_a_terminal(&watch_cmd, Duration::from_millis(2500)));
    assert!(watched.contains("Ctrl-C stops") && watched.matches("every 1s").count() >= 2, "{watched}");
    assert!(watched.contains("stable") && watched.contains("m "), "{watched}");
    let mut piped = Command::new(BIN)
        .args(["status", "--watch", "--socket"])
        .arg(socket(&d))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let _ = piped.kill();
    let out = String::from_utf8(piped.wait_with_output().unwrap().stdout).unwrap();
    assert!(out.starts_with("-- ") && !out.contains('\x1b'), "plain lines when not a terminal: {out}");
    let _ = load.stop();
}

/// The gate views the admin socket reports (`status --output json`) until the rollout
/// ends, a read every 200 ms.
fn gate_views(socket: &Path, limit: Duration) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    let mut views = Vec::new();
    let mut started = false;
    while Instant::now() < deadline {
        let out = Command::new(BIN).args(["status", "--output", "json", "--socket"]).arg(socket).output().unwrap();
        let status: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let rollouts = status["rollouts"].as_array().cloned().unwrap_or_default();
        if rollouts.is_empty() && started {
            break;
        }
        for r in rollouts {
            started = true;
            if r["phase"] == "gating" && !r["gate"].is_null() && !views.contains(&r["gate"]) {
                views.push(r["gate"].clone());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    views
}

/// The text a terminal was sent, without its escape sequences.
fn strip_escapes(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            // Parameters, then one final byte in @..~.
            for p in chars.by_ref() {
                if ('@'..='~').contains(&p) {
                    break;
                }
            }
        }
    }
    out.replace('\r', "")
}

/// The page in a real browser (Debian's chromium, driven by playwright-core from
/// `tests/ui/drive.js`): during a canary under load the weights change and the verdict
/// appears; a reverted rollout shows why; on a phone-sized screen nothing overflows;
/// with tokens the page asks for one and keeps it only in its tab; no console error and
/// no failed request throughout. Screenshots go to `target/ui-screenshots/`. Run by
/// `.ci/run`, which installs both.
#[test]
#[ignore = "needs chromium and tests/ui/node_modules (npm install): .ci/run runs it"]
fn in_a_browser() {
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let d = TestDaemon::ready(setup("strategy = \"canary\", steps = [25, 50, 100], shadow = \"1s\", bake = \"3s\""));
    let load = Load::start(&d, "m", paced());
    let driver = drive(&d.url("/ui"), &shots, "rollouts", None);
    std::thread::sleep(Duration::from_secs(3));
    let (code, out, err) = d.cli(&["deploy", "m", "--version", "2"]);
    assert_eq!(code, 0, "{out}{err}");
    std::thread::sleep(Duration::from_secs(2));
    let (code, out, err) = d.cli(&["deploy", "m", "--version", "3"]);
    assert_eq!(code, 3, "v3 breaks its output contract and is reverted: {out}{err}");
    let report = finish(driver);
    let _ = load.stop();
    assert!(report["weights"].as_array().unwrap().len() >= 2, "{report}");
    assert!(
        report["reason"].as_str().unwrap().contains("breaks what model.toml declares"),
        "the reason names the broken output contract: {report}"
    );

    let tokens = [token_table("meta-all", "tok-meta-all", "[\"*\"]", "[\"metadata\"]")];
    let d = TestDaemon::ready(setup("strategy = \"canary\"").server_section(&auth_section(true, &tokens)));
    let report = finish(drive(&d.url("/ui"), &shots, "token", Some("tok-meta-all")));
    assert_eq!(report["asked_again_in_a_new_tab"], true, "{report}");
}

fn drive(url: &str, shots: &Path, mode: &str, token: Option<&str>) -> std::process::Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/drive.js");
    Command::new("node")
        .arg(script)
        .args([url, shots.to_str().unwrap(), mode, token.unwrap_or("")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs")
}

/// Waits for the driver; its last line is its report (JSON), its exit status whether
/// every step held.
fn finish(driver: std::process::Child) -> Value {
    let out = driver.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the browser test failed:\n{text}");
    serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {text}"))
}
