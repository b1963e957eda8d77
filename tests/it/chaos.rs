//! The chaos suite (`.ci/run` runs it; `cargo test --test it chaos -- --ignored` by
//! hand, as root for its tmpfs): sustained load on two models while, at random moments,
//! 24 deploys — 20 of good versions (canary, blue-green, rolling, recreate in turn), each
//! of which must be promoted (at least 16; one may be reverted only when its workers were
//! what the chaos killed or stopped, and its reason says so), and 4 of faulty ones (errors, NaN answers, a label-order
//! bug, a signature change), each of which must be stopped before any user sees it —,
//! 20 worker SIGKILLs, 5 SIGSTOP/SIGCONT pairs, SIGHUPs with good and broken configs, a
//! corrupt model directory appearing in the repository, all with the state directory on
//! a tiny tmpfs that is full (checked). Every answer is checked against the reference.
//!
//! What may fail by design, and nothing else: a request whose worker died under it and
//! whose one retry found its second worker dead too (503, "the retry found none"), and a
//! request refused over the in-flight bound (503, "retry later"). The seed is printed;
//! `MODELD_CHAOS_SEED=N` replays a run's schedule.

use crate::load::{Load, Pattern, Report, first_output};
use crate::onnx::family;
use crate::util::{ModelFiles, Setup, TestDaemon};
use nix::sys::signal::Signal;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Versions per model beyond the first: 2 models × 12 = 24 deploys.
const DEPLOYS_PER_MODEL: u64 = 12;
const KILLS: usize = 20;
const STOPS: usize = 5;
/// The span the signal events are spread over.
const SPAN: Duration = Duration::from_secs(60);
/// The tmpfs under the state directory, and how much of it a filler takes.
const TMPFS_BYTES: u64 = 96 * 1024;
const FILLER_BYTES: u64 = 64 * 1024;

/// A small xorshift generator: the schedule is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const STRATEGIES: [&str; 4] = ["canary", "blue_green", "rolling", "recreate"];

/// What a deployed version is, and so how its rollout must end.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Good,
    /// Broken in a way the gate must see before users do, so deployed by a strategy
    /// with a shadow phase (never recreate, whose downtime-by-design has none).
    Faulty {
        what: &'static str,
        strategy: &'static str,
    },
}

/// The version `v` of `model` (2 ..= 1 + DEPLOYS_PER_MODEL): good but for 5 and 9.
fn kind(model: &str, v: u64) -> Kind {
    match (model, v) {
        ("reg", 5) => Kind::Faulty { what: "fails half its requests", strategy: "canary" },
        ("reg", 9) => Kind::Faulty { what: "answers NaN", strategy: "rolling" },
        ("cls", 5) => Kind::Faulty { what: "orders its classes wrongly", strategy: "blue_green" },
        ("cls", 9) => Kind::Faulty { what: "changed its signature", strategy: "canary" },
        _ => Kind::Good,
    }
}

fn model_file(model: &str, v: u64) -> ModelFiles {
    match (model, v) {
        ("reg", 5) => ModelFiles::new("reg", v, family::erroring()),
        ("reg", 9) => ModelFiles::new("reg", v, family::nan()),
        ("reg", _) => ModelFiles::new("reg", v, family::good(1.0)),
        ("cls", 5) => ModelFiles::new("cls", v, family::classifier(true)).with_manifest(family::CLASSIFIER_LABELS),
        ("cls", 9) => ModelFiles::new("cls", v, family::good(1.0)),
        _ => ModelFiles::new("cls", v, family::classifier(false)).with_manifest(family::CLASSIFIER_LABELS),
    }
}

fn model_lines() -> String {
    let deploy =
        "check_every = \"100ms\", shadow = \"500ms\", bake = \"300ms\", steps = [50, 100], keep_previous = \"0s\"";
    format!("workers = 2\nversion = 1\ndeploy = {{ {deploy} }}\n")
}

fn config_setup() -> Setup {
    let mut setup = Setup::new()
        .server_section("[health]\nwindow = \"10s\"\nmin_samples = 10")
        .model_with(ModelFiles::new("reg", 1, family::good(1.0)), &model_lines())
        .model_with(
            ModelFiles::new("cls", 1, family::classifier(false)).with_manifest(family::CLASSIFIER_LABELS),
            &model_lines(),
        )
        // On "latest", watched: where the corrupt and the incompatible versions appear.
        .model_with(ModelFiles::new("lat", 1, family::good(1.0)), "version = \"latest\"\n");
    for v in 2..=1 + DEPLOYS_PER_MODEL {
        setup = setup.files(model_file("reg", v)).files(model_file("cls", v));
    }
    setup.before_start(|dir| mount_tiny_tmpfs(&dir.join("state")))
}

/// Mounts a tmpfs of [`TMPFS_BYTES`] on `dir`, most of it taken by a filler, so saving
/// the state fails once the history grows. The suite needs it (root, for `mount`): a
/// plain directory would let the full-disk case pass without happening.
fn mount_tiny_tmpfs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let out = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_BYTES}"), "tmpfs"])
        .arg(dir)
        .output()
        .expect("the chaos suite needs the mount command");
    assert!(
        out.status.success(),
        "the chaos suite mounts a tiny tmpfs under the state directory, and could not (run it as root): {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    std::fs::write(dir.join("filler"), vec![0u8; FILLER_BYTES as usize]).unwrap();
    eprintln!("CHAOS state directory: a {TMPFS_BYTES}-byte tmpfs, {FILLER_BYTES} bytes of it taken");
}

/// Bytes free on the file system holding `dir`, and whether it is a tmpfs.
fn free_bytes(dir: &Path) -> (u64, bool) {
    let fs = nix::sys::statfs::statfs(dir).unwrap();
    let vfs = nix::sys::statvfs::statvfs(dir).unwrap();
    (vfs.blocks_available() as u64 * vfs.fragment_size() as u64, fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// Unmounts the state tmpfs when the run ends, passed or not (lazily: a daemon may hold it).
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// Right answers: `reg` gives each row's sum, `cls` each row's class.
fn reg_right(k: u64, rows: usize, answer: &serde_json::Value) -> bool {
    let want = (k % 8) as f64 + 1.75;
    let y = first_output(answer);
    y.len() == rows && y.iter().all(|v| (v - want).abs() < 1e-3)
}

fn cls_right(k: u64, rows: usize, answer: &serde_json::Value) -> bool {
    let logits = first_output(answer);
    logits.len() == rows * 3
        && logits.chunks(3).all(|r| (0..3).fold(0, |b, i| if r[i] > r[b] { i } else { b }) == family::class_of(k))
}

/// The failures the design intends, by what they say.
fn intended(status: u16, body: &str) -> bool {
    status == 503 && (body.contains("the retry found none") || body.contains("its limit; retry later"))
}

#[test]
#[ignore = "the chaos suite: run by .ci/run (as root, for its tmpfs), a few minutes"]
fn chaos() {
    let seed = std::env::var("MODELD_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("CHAOS seed {seed} (MODELD_CHAOS_SEED={seed} replays this schedule)");
    let daemon = Arc::new(TestDaemon::ready(config_setup()));
    let state_dir = daemon.path().join("state");
    let _unmount = Unmount(state_dir.clone());
    let config = std::fs::read_to_string(daemon.path().join("modeld.toml")).unwrap();
    let started = Instant::now();
    let pace = Some(Duration::from_millis(10));
    let reg = Load::start(&daemon, "reg", Pattern { clients: 3, pace, expect: Some(reg_right), ..Pattern::default() });
    let cls = Pattern { clients: 3, pace, big_every: Some(7), expect: Some(cls_right), ..Pattern::default() };
    let cls = Load::start(&daemon, "cls", cls);

    let outcomes = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let deploying = Arc::new(AtomicBool::new(true));
    let deploys = std::thread::spawn({
        let (daemon, outcomes, deploying) = (daemon.clone(), outcomes.clone(), deploying.clone());
        move || {
            let wrong = run_deploys(&daemon, &outcomes);
            deploying.store(false, Ordering::Relaxed);
            wrong
        }
    });
    let events = run_signals(&daemon, &mut Rng(seed), &config, &deploying);
    let wrongly_ended = deploys.join().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let (reg, cls) = (reg.stop(), cls.stop());
    let elapsed = started.elapsed();

    let logs = daemon.logs();
    eprintln!("CHAOS {:.0} s; events: {events:?}; deploys: {:?}", elapsed.as_secs_f64(), outcomes.lock().unwrap());
    for (name, report) in [("reg", &reg), ("cls", &cls)] {
        print_counts(name, report);
    }
    for (name, report) in [("reg", &reg), ("cls", &cls)] {
        let unintended: Vec<_> = report.shots.iter().filter(|s| s.wrong && !intended(s.status, &s.body)).collect();
        assert!(
            unintended.is_empty(),
            "{name}: {} unintended failures or wrong answers; the first at {:.2} s: {} {}",
            unintended.len(),
            unintended[0].at,
            unintended[0].status,
            unintended[0].body
        );
        assert!(report.shots.len() > 1000, "{name}: only {} requests", report.shots.len());
    }
    // The faulty version that fails half its requests does so by an out-of-range Gather
    // that panics inside tract; the worker catches it and answers the request failed.
    // Any other panic is a defect.
    let panics: Vec<&str> = logs.lines().filter(|l| l.contains("panicked at") && !l.contains("/tract-core-")).collect();
    assert!(panics.is_empty(), "a panic in the log:\n{}", panics.join("\n"));
    assert!(wrongly_ended.is_empty(), "deploys that did not end as their kind must:\n{}", wrongly_ended.join("\n"));
    let promoted = outcomes.lock().unwrap().get("good promoted").copied().unwrap_or(0);
    assert!(promoted >= 16, "only {promoted} of the 20 good versions were promoted through the chaos");
    check_state_afterwards(daemon, &state_dir);
}

/// The deploys, the two models in turn, each good one by the next strategy, each
/// followed to its end (a deploy refused because the repository watch's rollout runs is
/// tried again); returns how each ended that is not how its kind must.
fn run_deploys(daemon: &TestDaemon, outcomes: &Mutex<BTreeMap<String, usize>>) -> Vec<String> {
    let mut wrong = Vec::new();
    for i in 0..2 * DEPLOYS_PER_MODEL {
        let model = if i % 2 == 0 { "reg" } else { "cls" };
        let version = 2 + i / 2;
        let kind = kind(model, version);
        let strategy = match kind {
            Kind::Good => STRATEGIES[(i as usize / 2) % STRATEGIES.len()],
            Kind::Faulty { strategy, .. } => strategy,
        };
        let outcome = loop {
            let (code, out, err) =
                daemon.cli(&["deploy", model, "--version", &version.to_string(), "--strategy", strategy]);
            let why = || {
                out.lines().find(|l| l.contains("reverted:") || l.contains("failed:")).unwrap_or_default().to_string()
            };
            match code {
                0 => break "promoted".to_string(),
                3 => break format!("reverted ({})", why()),
                4 => break format!("failed ({})", why()),
                _ if err.contains("rollout in progress") => std::thread::sleep(Duration::from_millis(200)),
                _ => break format!("not started: {err}"),
            }
        };
        let ended = outcome.split(' ').next().unwrap().to_string();
        let what = match kind {
            Kind::Good => "good".to_string(),
            Kind::Faulty { what, .. } => format!("faulty: {what}"),
        };
        eprintln!("CHAOS deploy {model} v{version} ({what}) by {strategy}: {outcome}");
        let as_its_kind_says = match kind {
            Kind::Good => ended == "promoted" || (ended == "reverted" && by_the_chaos(&outcome)),
            Kind::Faulty { .. } => ended == "reverted" || ended == "failed",
        };
        if !as_its_kind_says {
            wrong.push(format!("{model} v{version} ({what}) by {strategy}: {outcome}"));
        }
        *outcomes.lock().unwrap().entry(format!("{what} {ended}")).or_default() += 1;
    }
    wrong
}

/// Whether a good version's revert says its workers were what the chaos broke (killed,
/// stopped, none left up): the gate doing its job on the faults injected, not judging the
/// version wrongly. Anything else reverting a good version fails the run.
fn by_the_chaos(outcome: &str) -> bool {
    ["model_loaded critical", "killed by signal", "hung", "made no progress", "crash"]
        .iter()
        .any(|sign| outcome.contains(sign))
}

/// The signal and repository events, spread at random over [`SPAN`] (and on while the
/// deploys go on); returns how many of each were sent.
fn run_signals(
    daemon: &TestDaemon,
    rng: &mut Rng,
    config: &str,
    deploying: &AtomicBool,
) -> BTreeMap<&'static str, usize> {
    let mut schedule: Vec<(u64, &'static str)> = Vec::new();
    let mut at = |rng: &mut Rng, what| schedule.push((rng.below(SPAN.as_millis() as u64), what));
    (0..KILLS).for_each(|_| at(rng, "sigkill"));
    (0..STOPS).for_each(|_| at(rng, "sigstop"));
    (0..3).for_each(|_| at(rng, "sighup-good"));
    (0..3).for_each(|_| at(rng, "sighup-broken"));
    at(rng, "corrupt-version");
    at(rng, "unloadable-version");
    schedule.sort();
    let started = Instant::now();
    let mut done = BTreeMap::new();
    for (at_ms, what) in schedule {
        std::thread::sleep(Duration::from_millis(at_ms).saturating_sub(started.elapsed()));
        let sent = match what {
            "sigkill" => random_worker(daemon, rng).map(|pid| signal(pid, Signal::SIGKILL)).is_some(),
            "sigstop" => random_worker(daemon, rng)
                .map(|pid| {
                    signal(pid, Signal::SIGSTOP);
                    std::thread::sleep(Duration::from_millis(300 + rng.below(2500)));
                    signal(pid, Signal::SIGCONT);
                })
                .is_some(),
            "sighup-good" => {
                let changed = config.replace("min_samples = 10", &format!("min_samples = {}", 10 + rng.below(3)));
                daemon.write_config(&changed);
                daemon.signal(Signal::SIGHUP);
                true
            }
            "sighup-broken" => {
                daemon.write_config(&config.replace("workers = 2", "workers = zero"));
                daemon.signal(Signal::SIGHUP);
                std::thread::sleep(Duration::from_millis(300));
                daemon.write_config(config);
                true
            }
            "corrupt-version" => {
                let dir = daemon.path().join("models/lat/90");
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("model.onnx"), b"\x08\x07garbage, not a model").unwrap();
                true
            }
            "unloadable-version" => {
                let dir = daemon.path().join("models/lat/91");
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("model.onnx"), family::wider()).unwrap();
                true
            }
            _ => unreachable!(),
        };
        if sent {
            *done.entry(what).or_default() += 1;
        }
    }
    while deploying.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    done
}

fn random_worker(daemon: &TestDaemon, rng: &mut Rng) -> Option<i32> {
    let pids = daemon.worker_pids();
    (!pids.is_empty()).then(|| pids[rng.below(pids.len() as u64) as usize])
}

fn signal(pid: i32, signal: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

fn print_counts(name: &str, report: &Report) {
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for s in &report.shots {
        let key = match (s.status, s.wrong, intended(s.status, &s.body)) {
            (200, false, _) => "200 right".to_string(),
            (200, true, _) => "200 WRONG".to_string(),
            (status, _, true) => format!("{status} by design"),
            (status, _, false) => format!("{status} UNINTENDED"),
        };
        *by_status.entry(key).or_default() += 1;
    }
    eprintln!("CHAOS {name}: {} requests: {by_status:?}", report.shots.len());
    let mut why: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    for s in report.shots.iter().filter(|s| s.wrong) {
        let entry =
            why.entry(format!("{} {}", s.status, s.body.chars().take(160).collect::<String>())).or_insert((0, s.at));
        entry.0 += 1;
    }
    for (body, (n, first)) in why {
        eprintln!("CHAOS {name}:   {n} x (first at {first:.2} s) {body}");
    }
}

/// The state on the full tmpfs is whole (the last save that fit), and a daemon restarted
/// on it serves.
fn check_state_afterwards(daemon: Arc<TestDaemon>, state_dir: &Path) {
    let saved = std::fs::read(state_dir.join("state.json")).expect("a state file");
    let state: serde_json::Value = serde_json::from_slice(&saved).expect("the state file parses");
    let history = state["history"].as_array().map_or(0, |h| h.len());
    let save_failures = daemon.logs().lines().filter(|l| l.contains("could not write state")).count();
    let (free, tmpfs) = free_bytes(state_dir);
    eprintln!(
        "CHAOS state afterwards: readable, {history} rollouts in its history; {save_failures} saves failed on the \
         full disk ({free} bytes free of {TMPFS_BYTES}, a {}-byte state file)",
        saved.len()
    );
    assert!(tmpfs, "the state directory is the tiny tmpfs");
    assert!(
        free < saved.len() as u64,
        "the disk was really full: {free} bytes free, a state file takes {}",
        saved.len()
    );
    assert!(save_failures > 0, "saves failed on the full disk, and the log said so");
    let daemon = Arc::try_unwrap(daemon).unwrap_or_else(|_| panic!("the daemon is still shared"));
    let daemon = daemon.restart();
    daemon.wait_ready();
    let body = r#"{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 0.5, 0.25]}]}"#;
    assert_eq!(daemon.post("/v2/models/reg/infer", body).status, 200);
    let lat = daemon.post("/v2/models/lat/infer", body);
    assert_eq!((lat.status, lat.version), (200, Some(1)), "the corrupt and incompatible versions never served");
}
