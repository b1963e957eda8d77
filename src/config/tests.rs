//! Config parsing and validation, end to end from TOML text.

use super::*;
use std::time::Duration;

fn check(text: &str) -> Result<Config, Report> {
    let mut problems = Vec::new();
    let config = parse(Path::new("/etc/modeld/modeld.toml"), text, &Overrides::default(), None, &mut problems);
    let report = Report { file: "modeld.toml".into(), problems };
    match config {
        Some(c) if !report.has_errors() => Ok(c),
        _ => Err(report),
    }
}

fn errors(text: &str) -> Vec<Problem> {
    check(text).unwrap_err().errors().cloned().collect()
}

#[test]
fn minimal_config_gets_defaults() {
    let c = check("[[model]]\nname = \"iris\"\n").unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.run_dir, PathBuf::from("/run/modeld"));
    assert_eq!(c.server.admin_socket, PathBuf::from("/run/modeld/admin.sock"));
    assert_eq!(c.models[0].dir, PathBuf::from("/var/lib/modeld/models/iris"));
    assert_eq!(c.models[0].version, super::VersionSpec::Latest);
    assert_eq!((c.models[0].workers, c.models[0].threads), (Workers::fixed(1), 1));
}

#[test]
fn relative_paths_resolve_against_the_config_file() {
    let c = check("[server]\nrun_dir = \"run\"\nrepository = \"../models\"\n[[model]]\nname = \"m\"\n").unwrap();
    assert_eq!(c.server.run_dir, PathBuf::from("/etc/modeld/run"));
    assert_eq!(c.models[0].dir, PathBuf::from("/etc/modeld/../models/m"));
}

#[test]
fn every_problem_is_reported_with_key_and_line() {
    let text = r#"
[server]
listen = "nowhere"
request_timeout = "fast"

[[model]]
name = "a"
workers = 0

[[model]]
name = "a"
version = "newest"

[[model]]
name = "b"
colour = "blue"
"#;
    let found = errors(text);
    let keys: Vec<(&str, Option<usize>)> = found.iter().map(|p| (p.key.as_str(), p.line)).collect();
    assert!(keys.contains(&("server.listen", Some(3))), "{found:?}");
    assert!(keys.contains(&("server.request_timeout", Some(4))), "{found:?}");
    assert!(keys.contains(&("model[0].workers", Some(8))), "{found:?}");
    assert!(keys.contains(&("model[1].name", Some(11))), "{found:?}");
    assert!(keys.contains(&("model[1].version", Some(12))), "{found:?}");
    let unknown = found.iter().find(|p| p.key == "model[2]").expect("unknown key reported");
    assert!(unknown.message.contains("colour"), "{unknown:?}");
    assert_eq!(unknown.line, Some(16));
}

#[test]
fn syntax_errors_name_the_line() {
    let found = errors("[server]\nlisten = \n");
    assert_eq!(found[0].line, Some(2));
    assert!(found[0].message.contains("not valid TOML"));
}

#[test]
fn unknown_sections_and_missing_models_are_errors() {
    let found = errors("[serve]\nlisten = \"127.0.0.1:1\"\n");
    assert!(found.iter().any(|p| p.key == "serve" && p.line == Some(1)));
    assert!(found.iter().any(|p| p.key == "model"));
}

#[test]
fn overrides_win_over_the_file() {
    let mut problems = Vec::new();
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".into()),
        run_dir: Some("/tmp/r".into()),
        state_dir: Some("/tmp/s".into()),
    };
    let c = parse(
        Path::new("/x/m.toml"),
        "[server]\nlisten = \"1.2.3.4:5\"\n[[model]]\nname = \"m\"\n",
        &overrides,
        None,
        &mut problems,
    )
    .unwrap();
    assert_eq!(c.server.listen.port(), 0);
    assert_eq!(c.server.run_dir, PathBuf::from("/tmp/r"));
    assert_eq!(c.server.admin_socket, PathBuf::from("/tmp/r/admin.sock"));
    assert_eq!(c.server.state_dir, PathBuf::from("/tmp/s"));
}

#[test]
fn missing_model_files_are_warnings() {
    let c = check("[[model]]\nname = \"absent\"\nversion = 3\n");
    assert!(c.is_ok());
    let mut problems = Vec::new();
    // The repository's answer, as crate::repo gives it: version 3 is not there.
    let absent = |_: &Path, _: VersionSpec| Err("version 3 not found".to_string());
    let text = "[[model]]\nname = \"absent\"\nversion = 3\n";
    parse(Path::new("/x/m.toml"), text, &Overrides::default(), Some(&absent), &mut problems);
    // (A root without the service user is also warned of, about server.worker_user.)
    problems.retain(|p| p.key != "server.worker_user");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].severity, Severity::Warning);
    assert_eq!(problems[0].key, "model[0].version");
    assert_eq!(problems[0].message, "version 3 not found");
}

#[test]
fn hang_timeout_is_per_model_kept_with_its_health_and_bounded() {
    let c = check("[[model]]\nname = \"a\"\n[[model]]\nname = \"b\"\nhang_timeout = \"5s\"\n").unwrap();
    assert_eq!(c.models[0].health.hang_timeout, None, "sized from the model when unset");
    assert_eq!(c.models[1].health.hang_timeout, Some(Duration::from_secs(5)));
    let e = errors("[[model]]\nname = \"a\"\nhang_timeout = \"20ms\"\n");
    assert!(e.iter().any(|p| p.key == "model[0].hang_timeout" && p.message.contains("at least 100ms")), "{e:?}");
    let e = errors("[[model]]\nname = \"a\"\nhang_timeout = \"soon\"\n");
    assert!(e.iter().any(|p| p.key == "model[0].hang_timeout"), "{e:?}");
}

#[test]
fn a_critical_cpu_level_is_ignored_with_a_warning() {
    let mut problems = Vec::new();
    let text = "[health]\ncpu = { warning = 70.0, critical = 95.0 }\n[[model]]\nname = \"m\"\n";
    let c = parse(Path::new("/x/m.toml"), text, &Overrides::default(), None, &mut problems).unwrap();
    problems.retain(|p| p.key != "server.worker_user");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!((problems[0].severity, problems[0].key.as_str()), (Severity::Warning, "health.cpu.critical"));
    assert!(problems[0].message.contains("never critical"), "{}", problems[0].message);
    assert_eq!(c.models[0].health.cpu, Levels { warning: Some(0.70), critical: None });
}

#[test]
fn health_defaults_are_the_protocol_numbers_and_models_override_them() {
    let c = check(
        r#"
[health]
window = "30s"
error_rate = { critical = 10.0 }

[[model]]
name = "a"
memory_limit = "512MiB"

[[model]]
name = "b"
health = { p95_latency = { warning = "100ms" }, min_samples = 5 }
"#,
    )
    .unwrap();
    assert_eq!(c.health.window, Duration::from_secs(30));
    assert_eq!(c.health.error_rate, Levels { warning: Some(0.01), critical: Some(0.10) });
    assert_eq!(c.health.p99_latency.critical, Some(Duration::from_secs(1)));
    assert_eq!(c.health.availability.critical, Some(0.95));
    assert_eq!(c.models[0].health, c.health);
    assert_eq!(c.models[0].memory_limit, Some(512 << 20));
    assert_eq!(c.models[1].health.p95_latency.warning, Some(Duration::from_millis(100)));
    assert_eq!(c.models[1].health.p95_latency.critical, Some(Duration::from_secs(1)));
    assert_eq!(c.models[1].health.min_samples, 5);
    assert_eq!(c.models[1].health.window, Duration::from_secs(30));
}

#[test]
fn health_thresholds_are_checked() {
    let found = errors(
        r#"
[health]
error_rate = { warning = 10.0, critical = 5.0 }
availability = { critical = 120.0 }
p95_latency = { warning = "2s", critical = "1s" }

[[model]]
name = "a"
memory_limit = "1KiB"
health = { window = "0s" }
"#,
    );
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "health.error_rate",
            "health.availability",
            "health.p95_latency",
            "model[0].memory_limit",
            "model[0].health.window"
        ],
        "{found:?}"
    );
}

#[test]
fn deploy_settings_default_per_strategy_and_are_checked() {
    let c = check(
        r#"
[[model]]
name = "a"

[[model]]
name = "b"
workers = 3
deploy = { strategy = "blue_green", bake = "10s" }

[[model]]
name = "c"
workers = 4
deploy = { strategy = "rolling", max_surge = 2, max_unavailable = 1 }

[[model]]
name = "d"
deploy = { strategy = "ab_test", split = 20, sticky_header = "X-User-Id", duration = "2h" }
"#,
    )
    .unwrap();
    let (a, b, c4, d) = (&c.models[0].deploy, &c.models[1].deploy, &c.models[2].deploy, &c.models[3].deploy);
    assert_eq!(a.strategy, Strategy::Canary);
    assert_eq!(a.steps, vec![10, 25, 50, 100]);
    assert_eq!(b.strategy, Strategy::BlueGreen);
    assert_eq!(b.bake, Duration::from_secs(10));
    assert_eq!(b.keep_previous, Duration::from_secs(600));
    assert_eq!((c4.max_surge, c4.max_unavailable), (2, 1));
    assert_eq!((d.split, d.sticky_header.as_deref()), (20, Some("x-user-id")));
    assert_eq!(d.duration, Duration::from_secs(7200));

    let found = errors(
        r#"
[[model]]
name = "a"
deploy = { strategy = "yolo" }

[[model]]
name = "b"
deploy = { steps = [50, 25] }

[[model]]
name = "c"
deploy = { steps = [10, 50] }

[[model]]
name = "d"
workers = 2
deploy = { max_surge = 0, max_unavailable = 0, split = 100, on_inconclusive = "shrug" }
"#,
    );
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "model[0].deploy.strategy",
            "model[1].deploy.steps",
            "model[2].deploy.steps",
            "model[3].deploy.max_surge",
            "model[3].deploy.split",
            "model[3].deploy.on_inconclusive"
        ],
        "{found:?}"
    );
    assert!(found[2].message.contains("must end at 100"));
}

#[test]
fn busy_poll_is_off_by_default_and_bounded() {
    let c = check("[[model]]\nname = \"a\"\n[[model]]\nname = \"b\"\nbusy_poll = \"100us\"\n").unwrap();
    assert_eq!(c.models[0].busy_poll, Duration::ZERO);
    assert_eq!(c.models[1].busy_poll, Duration::from_micros(100));
    let found = errors("[[model]]\nname = \"a\"\nbusy_poll = \"1s\"\n[[model]]\nname = \"b\"\nbusy_poll = \"soon\"\n");
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["model[0].busy_poll", "model[1].busy_poll"], "{found:?}");
    assert!(found[0].message.contains("over the 10ms"), "{found:?}");
    assert!(found[1].message.contains("'soon' is not a duration"), "{found:?}");
}

#[test]
fn rollout_safety_settings_default_on_and_are_checked() {
    let c = check(
        r#"
[[model]]
name = "a"

[[model]]
name = "b"
deploy = { strategy = "recreate" }

[[model]]
name = "c"
deploy = { shadow = "5s", shadow_requests = 300, min_agreement = 80, agreement_tolerance = 1.5, max_client_error_increase = 0.5, allow_signature_change = true }

[[model]]
name = "d"
deploy = { strategy = "blue_green", shadow = "off" }
"#,
    )
    .unwrap();
    let (a, b, c3, d) = (&c.models[0].deploy, &c.models[1].deploy, &c.models[2].deploy, &c.models[3].deploy);
    assert_eq!(a.shadow, Duration::from_secs(30), "on by default");
    assert_eq!((a.min_agreement, a.agreement_tolerance, a.max_client_error_increase), (0.5, 0.1, 0.02));
    assert!(!a.allow_signature_change);
    assert_eq!(b.shadow, Duration::ZERO, "recreate has nothing to mirror");
    assert_eq!((c3.shadow, c3.shadow_requests), (Duration::from_secs(5), 300));
    assert_eq!((c3.min_agreement, c3.agreement_tolerance, c3.max_client_error_increase), (0.8, 0.015, 0.005));
    assert!(c3.allow_signature_change);
    assert_eq!(d.shadow, Duration::ZERO);

    let found = errors(
        r#"
[[model]]
name = "a"
deploy = { strategy = "recreate", shadow = "10s" }

[[model]]
name = "b"
deploy = { shadow = "soon", min_agreement = 120, shadow_requests = -1 }
"#,
    );
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "model[0].deploy.shadow",
            "model[1].deploy.shadow",
            "model[1].deploy.min_agreement",
            "model[1].deploy.shadow_requests"
        ],
        "{found:?}"
    );
    assert!(found[0].message.contains("no live traffic to mirror"), "{found:?}");
}

#[test]
fn another_strategy_keeps_the_models_gate_and_defaults_only_what_the_config_lacks() {
    let c = check(
        r#"
[[model]]
name = "m"
deploy = { strategy = "canary", check_every = "250ms", consecutive_breaches = 3, max_error_rate_increase = 1.0, max_latency_ratio = 1.5, min_agreement = 70, keep_previous = "0s", sticky_header = "x-user" }
"#,
    )
    .unwrap();
    let canary = &c.models[0].deploy;
    let bg = canary.with_strategy(Strategy::BlueGreen);
    assert_eq!(bg.strategy, Strategy::BlueGreen);
    assert_eq!(bg.check_every, Duration::from_millis(250));
    assert_eq!(bg.consecutive_breaches, 3);
    assert_eq!((bg.max_error_rate_increase, bg.max_latency_ratio, bg.min_agreement), (0.01, 1.5, 0.7));
    assert_eq!(bg.sticky_header.as_deref(), Some("x-user"));
    assert_eq!(bg.keep_previous, Duration::ZERO, "set by the config: kept");
    assert_eq!(bg.bake, Duration::from_secs(300), "not set: blue-green's own default");
    let recreate = canary.with_strategy(Strategy::Recreate);
    assert_eq!((recreate.shadow, recreate.check_every), (Duration::ZERO, Duration::from_millis(250)));
    assert_eq!(canary.with_strategy(Strategy::Canary), *canary);
}

#[test]
fn devices_parse_and_spread_and_leave_batching_off() {
    assert_eq!(Device::parse("cpu"), Ok(Device::Cpu));
    assert_eq!(Device::parse("cuda:1, 3"), Ok(Device::Cuda { gpus: vec![1, 3], or_cpu: false }));
    assert!(Device::parse("cuda:").unwrap_err().contains("'' is not a GPU index"));
    assert!(Device::parse("cuda:256").is_err());
    assert!(Device::parse("CUDA").is_err());
    // Worker i on GPU i mod the GPUs: the listed ones, or all the host has.
    let listed = Device::parse("cuda:2,0").unwrap();
    assert_eq!((0..3).map(|slot| listed.gpu_for(slot, Some(8))).collect::<Vec<_>>(), [Some(2), Some(0), Some(2)]);
    let all = Device::parse("cuda").unwrap();
    assert_eq!((0..3).map(|slot| all.gpu_for(slot, Some(2))).collect::<Vec<_>>(), [Some(0), Some(1), Some(0)]);
    assert_eq!(all.gpu_for(1, None), None, "unknown GPUs: the worker sees them all");
    assert_eq!(Device::Cpu.gpu_for(0, Some(2)), None);

    // Batching stays off on a GPU unless asked for: the one GPU run measured it at 0.80x.
    let c = check(
        "[[model]]\nname = \"g\"\ndevice = \"cuda\"\n\n[[model]]\nname = \"h\"\ndevice = \"cuda\"\n\
         [model.batching]\nmax_batch = 16\ndelay = \"5ms\"\n",
    )
    .unwrap();
    assert_eq!((c.models[0].batching.max_batch, c.models[0].batching.delay), (1, Duration::ZERO));
    assert_eq!((c.models[1].batching.max_batch, c.models[1].batching.delay), (16, Duration::from_millis(5)));
    assert_eq!(c.models[1].batching.plan_sizes, [1, 2, 4, 8, 16]);
}

#[test]
fn gpu_memory_thresholds_are_percent_like_memory() {
    let c = check("[health]\ngpu_memory = { warning = 70.0, critical = 90.0 }\n[[model]]\nname = \"m\"\n").unwrap();
    assert_eq!(c.models[0].health.gpu_memory, Levels { warning: Some(0.70), critical: Some(0.90) });
}

/// The choices the config offers and the worker's command line takes are named alike,
/// both ways: the config keeps its own types (it depends on nothing of ours, the worker
/// does not read it), so this is where the two are held to agree.
#[test]
fn config_and_worker_name_the_same_choices() {
    use crate::wire;
    use std::collections::BTreeSet;
    fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> BTreeSet<&'static str> {
        all.iter().map(|t| name(*t)).collect()
    }
    assert_eq!(
        names(&batching::Buckets::ALL, batching::Buckets::name),
        names(&wire::Buckets::ALL, wire::Buckets::name)
    );
    let engines: BTreeSet<&str> = Engine::NAMES.iter().map(|(n, _)| *n).collect();
    assert_eq!(engines, names(&wire::engine::EngineKind::ALL, wire::engine::EngineKind::name));
    let devices =
        [Device::Cpu, Device::Cuda { gpus: vec![], or_cpu: false }, Device::Cuda { gpus: vec![1], or_cpu: true }];
    let devices: BTreeSet<&str> = devices.iter().map(Device::worker_kind).collect();
    assert_eq!(devices, names(&wire::engine::DeviceKind::ALL, wire::engine::DeviceKind::name));
    let levels: BTreeSet<&str> = OPTIMIZATION_LEVELS.into_iter().collect();
    assert_eq!(levels, names(&wire::engine::GraphOptimization::ALL, wire::engine::GraphOptimization::name));
    assert_eq!(OnnxRuntimeOptions::default().optimization, wire::engine::GraphOptimization::default().name());
    assert!(wire::Buckets::parse("pow3").unwrap_err().contains("'pow3' is not a bucket policy (exact, pow2)"));
}

#[test]
fn workers_take_a_count_or_autoscaling_bounds_with_hpa_like_defaults() {
    let c = check("[[model]]\nname = \"a\"\nworkers = 1\n[[model]]\nname = \"b\"\nworkers = { min = 1, max = 8 }\n")
        .unwrap();
    assert_eq!(c.models[0].workers, Workers::fixed(1));
    assert!(!c.models[0].workers.autoscaled());
    assert_eq!(c.models[1].workers, Workers { min: 1, max: 8 });
    let s = &c.models[1].scale;
    assert_eq!((s.target_inflight, s.max_cpu, s.max_memory), (1.0, 0.70, 0.80));
    assert_eq!(s.up.stabilization, Duration::ZERO);
    assert_eq!(s.down.stabilization, Duration::from_secs(300));
    assert_eq!(s.up.select, scale::Select::Max);
    assert_eq!(s.up.policies.len(), 2);
    // `min` defaults to 1.
    let c = check("[[model]]\nname = \"a\"\nworkers = { max = 4 }\n").unwrap();
    assert_eq!(c.models[0].workers, Workers { min: 1, max: 4 });
}

#[test]
fn scale_sections_are_read_and_checked_key_by_key() {
    let c = check(
        r#"
[[model]]
name = "a"
workers = { min = 2, max = 6 }
[model.scale]
target_inflight = 2.5
target_queue = "20ms"
max_cpu = 60
interval = "1s"
[model.scale.up]
stabilization = "10s"
policies = [{ workers = 1, period = "30s" }]
select = "min"
[model.scale.down]
stabilization = "1m"
policies = [{ percent = 50, period = "1m" }]
"#,
    )
    .unwrap();
    let s = &c.models[0].scale;
    assert_eq!((s.target_inflight, s.target_queue, s.max_cpu), (2.5, Duration::from_millis(20), 0.60));
    assert_eq!(s.interval, Duration::from_secs(1));
    assert_eq!(
        s.up.policies,
        vec![scale::Policy { change: scale::Change::Workers(1), period: Duration::from_secs(30) }]
    );
    assert_eq!(s.up.select, scale::Select::Min);
    assert_eq!(s.down.policies[0].change, scale::Change::Percent(50));
    assert!(s.summary(c.models[0].workers).starts_with("2..6 workers, aiming at 2.5 in-flight"));

    let found = errors(
        r#"
[[model]]
name = "a"
workers = { min = 5, max = 2 }
[[model]]
name = "b"
workers = { min = 1, max = 300 }
[[model]]
name = "c"
workers = { min = 1, max = 4 }
[model.scale]
target_inflight = 0
max_cpu = 150
[model.scale.up]
select = "most"
policies = [{ workers = 2, percent = 50, period = "15s" }, { percent = 10, period = "0s" }]
"#,
    );
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    for key in [
        "model[0].workers",
        "model[1].workers.max",
        "model[2].scale.target_inflight",
        "model[2].scale.max_cpu",
        "model[2].scale.up.select",
        "model[2].scale.up.policies[0]",
        "model[2].scale.up.policies[1].period",
    ] {
        assert!(keys.contains(&key), "{key} not in {found:?}");
    }
    assert!(found.iter().any(|p| p.message.contains("min (5) is more than max (2)")), "{found:?}");
    let misspelt = errors("[[model]]\nname = \"a\"\nworkers = { minimum = 2, max = 4 }\n");
    assert!(misspelt.iter().any(|p| p.message == "unknown key 'minimum': workers takes min and max"), "{misspelt:?}");
    let no_max = errors("[[model]]\nname = \"a\"\nworkers = { min = 2 }\n");
    assert!(no_max.iter().any(|p| p.key == "model[0].workers" && p.message.starts_with("needs max")), "{no_max:?}");
}

#[test]
fn a_scale_table_on_a_fixed_count_is_warned_of_and_the_mins_must_fit_the_budget() {
    let mut problems = Vec::new();
    let text = "[[model]]\nname = \"a\"\nworkers = 2\n[model.scale]\ntarget_inflight = 2.0\n";
    parse(Path::new("/m.toml"), text, &Overrides::default(), None, &mut problems).unwrap();
    assert!(problems.iter().any(|p| p.key == "model[0].scale" && p.message.contains("ignored")), "{problems:?}");

    let found = errors(
        r#"
[server.budget]
cores = 3
[[model]]
name = "a"
workers = { min = 2, max = 4 }
threads = 1
[[model]]
name = "b"
workers = 1
threads = 2
"#,
    );
    let budget = found.iter().find(|p| p.key == "server.budget.cores").expect("a budget error");
    assert!(budget.message.contains("hold 4 cores (a 2x1, b 1x2), over the budget's 3"), "{}", budget.message);
}
