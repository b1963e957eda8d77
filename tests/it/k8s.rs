//! `modeld k8s render`: golden files per strategy and controller, the thresholds carried
//! into the Argo analysis, and clear refusals. (Schema validation of the same renders
//! against Kubernetes, Istio and Argo's own schemas is `tests/k8s/run`, in `.ci/run`.)
//!
//! Regenerate the golden files after an intended change with
//! `UPDATE_GOLDEN=1 cargo test --test it k8s`, and review the diff.

use crate::util::BIN;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const STRATEGIES: [&str; 5] = ["blue_green", "canary", "rolling", "recreate", "ab_test"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k8s")
}

fn render(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["k8s", "render", "--config"])
        .arg(config)
        .args(["--image", "registry.example/modeld:1.0"])
        .args(args)
        .output()
        .expect("modeld runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every strategy under both controllers renders exactly its golden files (recreate has
/// no Argo form and is refused instead).
#[test]
fn every_strategy_renders_its_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for strategy in STRATEGIES {
        for rollouts in ["kubernetes", "argo"] {
            let out = tempfile::tempdir().unwrap();
            let dir = out.path().join("m");
            let config = fixtures().join(format!("{strategy}.toml"));
            let result =
                render(&config, &["--rollouts", rollouts, "--namespace", "ml", "--out", &dir.display().to_string()]);
            if (strategy, rollouts) == ("recreate", "argo") {
                assert!(!result.status.success());
                assert!(
                    text(&result.stderr).contains("Argo Rollouts has no recreate strategy"),
                    "{}",
                    text(&result.stderr)
                );
                continue;
            }
            assert!(result.status.success(), "{strategy} {rollouts}: {}", text(&result.stderr));
            let golden = fixtures().join("golden").join(format!("{strategy}-{rollouts}"));
            compare(&dir, &golden, &out.path().display().to_string(), update);
        }
    }
}

/// The rendered files equal the golden ones (the runbook names the output directory: the
/// temp dir's path is written as `OUT`).
fn compare(dir: &Path, golden: &Path, temp: &str, update: bool) {
    let mut rendered: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .map(|(name, body)| (name, body.replace(temp, "OUT")))
        .collect();
    rendered.sort();
    if update {
        let _ = std::fs::remove_dir_all(golden);
        std::fs::create_dir_all(golden).unwrap();
        for (name, body) in &rendered {
            std::fs::write(golden.join(name), body).unwrap();
        }
        return;
    }
    let mut expected: Vec<String> = std::fs::read_dir(golden)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", golden.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    let names: Vec<&String> = rendered.iter().map(|(n, _)| n).collect();
    assert_eq!(names, expected.iter().collect::<Vec<_>>(), "files of {}", golden.display());
    for (name, body) in &rendered {
        let want = std::fs::read_to_string(golden.join(name)).unwrap();
        if *body != want {
            let line = body.lines().zip(want.lines()).position(|(a, b)| a != b).unwrap_or(0);
            panic!(
                "{}/{name} differs from the golden file at line {}:\n  rendered: {:?}\n  golden:   {:?}\n(UPDATE_GOLDEN=1 cargo test --test it k8s rewrites them)",
                golden.display(),
                line + 1,
                body.lines().nth(line),
                want.lines().nth(line)
            );
        }
    }
}

/// The stream to stdout holds the same objects, separated as kubectl reads them, with
/// the runbook as comments and notes on stderr.
#[test]
fn the_stream_holds_every_object_and_the_runbook() {
    let result = render(&fixtures().join("canary.toml"), &["--rollouts", "argo"]);
    assert!(result.status.success(), "{}", text(&result.stderr));
    let stream = text(&result.stdout);
    let kinds: Vec<&str> = stream.lines().filter_map(|l| l.strip_prefix("kind: ")).collect();
    assert_eq!(
        kinds,
        [
            "\"ConfigMap\"",
            "\"Service\"",
            "\"VirtualService\"",
            "\"DestinationRule\"",
            "\"Rollout\"",
            "\"AnalysisTemplate\"",
            "\"HorizontalPodAutoscaler\"",
            "\"PodDisruptionBudget\""
        ]
    );
    // One separator before each object, the first after the runbook.
    assert_eq!(stream.matches("\n---\n").count(), 8, "{stream}");
    assert!(stream.starts_with("# # modeld: rollout runbook"));
    assert!(stream.contains("#     kubectl argo rollouts -n default abort modeld"));
    // tabular_mlp's on_inconclusive = "fail" cannot be expressed: said, not dropped.
    assert!(
        text(&result.stderr).contains("note: model 'tabular_mlp': on_inconclusive = \"fail\""),
        "{}",
        text(&result.stderr)
    );
}

#[test]
fn what_cannot_be_rendered_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let two = dir.path().join("two.toml");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    std::fs::write(
        &two,
        format!(
            "[server]\nrepository = {repo:?}\n[[model]]\nname = \"iris\"\nversion = 2\n[model.deploy]\nstrategy = \"canary\"\n\
             [[model]]\nname = \"tabular_mlp\"\nversion = 1\n[model.deploy]\nstrategy = \"blue_green\"\n"
        ),
    )
    .unwrap();
    let result = render(&two, &[]);
    assert!(!result.status.success());
    assert!(
        text(&result.stderr).contains("strategies differ (iris: canary, tabular_mlp: blue_green)"),
        "{}",
        text(&result.stderr)
    );
    assert!(render(&two, &["--model", "tabular_mlp"]).status.success());
    let unknown = render(&two, &["--model", "nope"]);
    assert!(text(&unknown.stderr).contains("--model nope: the config has no such model (iris, tabular_mlp)"));
    let bad_name = render(&two, &["--model", "iris", "--namespace", "ML_Prod"]);
    assert!(text(&bad_name.stderr).contains("'ML_Prod' is not a Kubernetes name"), "{}", text(&bad_name.stderr));
    let bad_models = render(&two, &["--models", "nfs"]);
    assert!(text(&bad_models.stderr).contains("expected \"image\" or \"pvc:CLAIM\""), "{}", text(&bad_models.stderr));

    // "latest" is pinned from the repository; an empty repository cannot pin it.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("iris")).unwrap();
    let latest = dir.path().join("latest.toml");
    std::fs::write(
        &latest,
        format!("[server]\nrepository = {empty:?}\n[[model]]\nname = \"iris\"\nversion = \"latest\"\n"),
    )
    .unwrap();
    let result = render(&latest, &[]);
    assert!(!result.status.success());
    assert!(text(&result.stderr).contains("model 'iris' has version = \"latest\""), "{}", text(&result.stderr));
    assert!(text(&result.stderr).contains("set version = N"));
    std::fs::write(
        &latest,
        format!("[server]\nrepository = {repo:?}\n[[model]]\nname = \"iris\"\nversion = \"latest\"\n"),
    )
    .unwrap();
    let pinned = render(&latest, &[]);
    assert!(pinned.status.success(), "{}", text(&pinned.stderr));
    assert!(text(&pinned.stdout).contains("    version = 2\n"), "latest pinned to the highest version");

    // A model with its own repository cannot share the container's.
    let own = dir.path().join("own.toml");
    std::fs::write(&own, format!("[[model]]\nname = \"iris\"\nversion = 2\nrepository = {repo:?}\n")).unwrap();
    let result = render(&own, &[]);
    assert!(text(&result.stderr).contains("model 'iris' has its own repository"), "{}", text(&result.stderr));
}

/// Renders the bundled iris v2 with `lines` added to its `[[model]]`; (stdout, stderr) of a
/// render that must succeed.
fn render_iris_with(lines: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("modeld.toml");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    std::fs::write(
        &config,
        format!("[server]\nrepository = {repo:?}\n[[model]]\nname = \"iris\"\nversion = 2\n{lines}"),
    )
    .unwrap();
    let result = render(&config, &[]);
    assert!(result.status.success(), "{}", text(&result.stderr));
    (text(&result.stdout), text(&result.stderr))
}

/// A model on ONNX Runtime renders, with a note that the image must carry the library.
#[test]
fn a_model_on_onnxruntime_is_rendered_with_a_note_on_its_library() {
    let (stdout, stderr) = render_iris_with("engine = \"onnxruntime\"\n");
    assert!(stderr.contains("note: engine onnxruntime (iris): the image must carry libonnxruntime.so"), "{stderr}");
    assert!(stdout.contains("engine = \"onnxruntime\""), "the ConfigMap keeps the engine");
}

/// A model on GPUs asks the pod for as many as it names, spreads over what the pod gets
/// (numbered from 0 there), and says what the image and nodes need.
#[test]
fn a_model_on_gpus_asks_for_them_and_spreads_over_the_pods() {
    let (stdout, stderr) = render_iris_with("workers = 2\ndevice = \"cuda:2,3\"\n");
    assert!(stderr.contains("note: device cuda (iris): the pod asks for nvidia.com/gpu"), "{stderr}");
    let gpus: Vec<&str> = stdout.lines().filter(|l| l.contains("nvidia.com/gpu:")).map(str::trim).collect();
    assert!(!gpus.is_empty() && gpus.iter().all(|l| *l == "nvidia.com/gpu: \"2\""), "2 GPUs asked for: {gpus:?}");
    assert!(stdout.contains("device = \"cuda\""), "host GPU indices replaced in the ConfigMap:\n{stdout}");
    assert!(!stdout.contains("cuda:2,3"), "{stdout}");
}

/// A block scalar (`key: |`) of a rendered YAML file, de-indented.
fn block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let head = lines.next().unwrap_or_else(|| panic!("no {key}: | in\n{yaml}"));
    let indent = head.len() - head.trim_start().len() + 2;
    let body: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.len() - l.trim_start().len() >= indent)
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect();
    body.join("\n").trim_end().to_string() + "\n"
}

/// The exec command of the probe `probe` (`livenessProbe`, ...) in a rendered Deployment.
fn exec_command(yaml: &str, probe: &str) -> Vec<String> {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{probe}:"));
    lines.next().unwrap_or_else(|| panic!("no {probe} in\n{yaml}"));
    let mut lines = lines.skip_while(|l| l.trim() != "command:");
    lines.next().unwrap_or_else(|| panic!("{probe} has no exec command:\n{yaml}"));
    lines
        .map_while(|l| l.trim().strip_prefix("- "))
        .map(|item| serde_json::from_str::<String>(item).unwrap_or_else(|_| item.to_string()))
        .collect()
}

/// With tokens and `open_probes = false`, the render needs a token of the probes scope and
/// then keeps probes and the scrape working: the tokens file and the probes' token become
/// Secrets mounted read-only (mode 0440), never the ConfigMap; the probes are exec probes
/// of `modeld probe` reading the token from its Secret; the pods invite no scrape without
/// it and the runbook gives Prometheus' job with the token. Then the rendered config and
/// probe commands run here, the mounted files laid out as the pod has them (under a
/// temporary root): every probe passes with its token and is refused without it.
#[test]
fn closed_probes_render_with_a_token_the_kubelet_and_prometheus_can_use() {
    let dir = tempfile::tempdir().unwrap();
    let probe_token = "mdl_probe_for_the_kubelet";
    let tokens = format!(
        "[[token]]\nname = \"kubelet\"\nsha256 = \"{}\"\nmodels = [\"*\"]\nscopes = [\"probes\"]\n\n\
         [[token]]\nname = \"app\"\nsha256 = \"{}\"\nmodels = [\"iris\"]\nscopes = [\"infer\"]\n",
        modeld::front::auth::hash_hex(probe_token),
        modeld::front::auth::hash_hex("mdl_app")
    );
    std::fs::write(dir.path().join("tokens.toml"), &tokens).unwrap();
    std::fs::set_permissions(dir.path().join("tokens.toml"), std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let config = dir.path().join("modeld.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nrepository = {repo:?}\n[auth]\nopen_probes = false\ntokens_file = \"tokens.toml\"\n\
             [[model]]\nname = \"iris\"\nversion = 2\n"
        ),
    )
    .unwrap();

    // Without a probes token the render refuses, saying what to change.
    let refused = render(&config, &[]);
    assert!(!refused.status.success());
    let why = text(&refused.stderr);
    assert!(why.contains("--probe-token-file") && why.contains("open_probes = true"), "{why}");
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "mdl_app\n").unwrap();
    let why = text(&render(&config, &["--probe-token-file", wrong.to_str().unwrap()]).stderr);
    assert!(why.contains("not one of the config's with the probes scope"), "{why}");

    let token_file = dir.path().join("probe-token");
    std::fs::write(&token_file, format!("{probe_token}\n")).unwrap();
    let out = dir.path().join("out");
    let rendered =
        render(&config, &["--probe-token-file", token_file.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(rendered.status.success(), "{}", text(&rendered.stderr));
    let file = |prefix: &str| {
        let entry = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix));
        std::fs::read_to_string(entry.unwrap_or_else(|| panic!("no {prefix}* rendered"))).unwrap()
    };
    let config_map = file("configmap-");
    let container_config = block(&config_map, "modeld.toml");
    assert!(!container_config.contains("sha256"), "no token hash inlined in the ConfigMap:\n{container_config}");
    assert!(
        container_config.contains("tokens_file = \"/var/run/secrets/modeld/tokens/tokens.toml\""),
        "{container_config}"
    );
    let tokens_secret = file("secret-modeld-tokens");
    assert_eq!(block(&tokens_secret, "tokens.toml"), tokens, "the tokens file, as a Secret");
    let probe_secret = file("secret-modeld-probe-token");
    assert_eq!(block(&probe_secret, "token").trim(), probe_token);
    let deployment = file("deployment-");
    assert!(deployment.contains("defaultMode: 288"), "Secrets mounted mode 0440:\n{deployment}");
    assert!(!deployment.contains("httpGet") && !deployment.contains("prometheus.io/scrape"), "{deployment}");
    let runbook = std::fs::read_to_string(out.join("RUNBOOK.md")).unwrap();
    assert!(runbook.contains("credentials_file: /etc/prometheus/secrets/modeld-probe-token/token"), "{runbook}");

    // The pod, here: its files under `root`, its port a free one.
    let root = dir.path().join("root");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let in_root = |text: &str| {
        ["/etc/modeld", "/var/run/secrets/modeld", "/run/modeld", "/var/lib/modeld"]
            .iter()
            .fold(text.to_string(), |t, p| t.replace(p, &format!("{}{p}", root.display())))
            .replace("0.0.0.0:8080", &format!("127.0.0.1:{port}"))
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
    };
    let write = |path: &str, content: &str, mode: u32| {
        let path = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    };
    write("/etc/modeld/modeld.toml", &in_root(&container_config), 0o644);
    write("/var/run/secrets/modeld/tokens/tokens.toml", &block(&tokens_secret, "tokens.toml"), 0o440);
    write("/var/run/secrets/modeld/probe/token", &block(&probe_secret, "token"), 0o440);
    for entry in std::fs::read_dir(repo.join("iris/2")).unwrap() {
        let entry = entry.unwrap().path();
        let bytes = std::fs::read(&entry).unwrap();
        let to = root.join("var/lib/modeld/models/iris/2").join(entry.file_name().unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::write(to, bytes).unwrap();
    }
    for d in ["run/modeld", "var/lib/modeld/state"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let args: Vec<String> = ["serve", "--config", "/etc/modeld/modeld.toml"].iter().map(|a| in_root(a)).collect();
    assert!(deployment.contains("- \"serve\"") && deployment.contains("- \"/etc/modeld/modeld.toml\""), "{deployment}");
    let mut daemon = Command::new(BIN).args(&args).stderr(std::process::Stdio::null()).spawn().unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut daemon);
    let run = |command: &[String]| {
        let command: Vec<String> = command.iter().map(|c| in_root(c)).collect();
        assert_eq!(command[0], in_root("/usr/bin/modeld"));
        Command::new(BIN).args(&command[1..]).output().unwrap()
    };
    let startup = exec_command(&deployment, "startupProbe");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !run(&startup).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "the startup probe never passed: {}",
            text(&run(&startup).stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let command = exec_command(&deployment, probe);
        assert!(command.contains(&"--token-file".to_string()), "{probe}: {command:?}");
        let passed = run(&command);
        assert!(passed.status.success(), "{probe} {command:?}: {}", text(&passed.stderr));
        // The same probe without the token is refused.
        let at = command.iter().position(|c| c == "--token-file").unwrap();
        let without: Vec<String> = command[..at].iter().chain(&command[at + 2..]).cloned().collect();
        let refused = run(&without);
        assert!(
            !refused.status.success() && text(&refused.stderr).contains("401"),
            "{probe}: {}",
            text(&refused.stderr)
        );
    }
    // The scrape: /metrics with the token Prometheus is given, refused without.
    let agent = ureq::Agent::new_with_defaults();
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let scraped = agent.get(&metrics).header("Authorization", &format!("Bearer {probe_token}")).call().unwrap();
    assert_eq!(scraped.status(), 200);
    let anonymous = agent.get(&metrics).call();
    assert!(matches!(anonymous, Err(ureq::Error::StatusCode(401))), "{anonymous:?}");
}

/// Rendered pods schedule and scale as a user expects: CPU requested below its limit and
/// at most 3.5 cores (a pod fits a 4-vCPU node) while the limit lets every inference thread
/// run; the canary scales on its own load from one pod; blue-green's idle slot keeps one
/// pod; the notes say what share non-mesh traffic really gets and that a LoadBalancer
/// bypasses the weights; `--istio-gateway` binds the route to the gateway too.
#[test]
fn rendered_pods_fit_nodes_and_scale_by_track() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let config = |strategy: &str, workers: usize| {
        let path = dir.path().join(format!("{strategy}-{workers}.toml"));
        std::fs::write(
            &path,
            format!(
                "[server]\nrepository = {repo:?}\n[[model]]\nname = \"iris\"\nversion = 2\nworkers = {workers}\nthreads = 2\n\
                 [model.deploy]\nstrategy = \"{strategy}\"\n"
            ),
        )
        .unwrap();
        path
    };
    // 8 workers x 2 threads: a 16.5-core limit, a request capped at 3.5 cores.
    let big = render(&config("canary", 8), &["--load-balancer"]);
    assert!(big.status.success(), "{}", text(&big.stderr));
    let (stream, notes) = (text(&big.stdout), text(&big.stderr));
    assert!(stream.contains("cpu: \"16500m\"") && stream.contains("cpu: \"3500m\""), "{stream}");
    assert!(stream.contains("name: \"modeld-canary\"") && stream.contains("kind: \"HorizontalPodAutoscaler\""));
    let canary_hpa = stream
        .split("---\n")
        .find(|d| d.contains("kind: \"HorizontalPodAutoscaler\"") && d.contains("modeld-canary"))
        .unwrap();
    assert!(canary_hpa.contains("minReplicas: 1"), "{canary_hpa}");
    assert!(notes.contains("the canary's 1 of 4 pods get about 25 %") && notes.contains("not the step's"), "{notes}");
    assert!(
        notes.contains("--load-balancer: a LoadBalancer Service sends outside clients straight to the pods"),
        "{notes}"
    );
    // One worker: half of 2.5 cores requested.
    let small = text(&render(&config("rolling", 1), &[]).stdout);
    assert!(small.contains("cpu: \"1250m\"") && small.contains("cpu: \"2500m\""), "{small}");

    let bg = text(&render(&config("blue_green", 2), &[]).stdout);
    let green = bg.split("---\n").find(|d| d.contains("kind: \"Deployment\"") && d.contains("modeld-green")).unwrap();
    assert!(green.contains("replicas: 1"), "the idle slot keeps one pod: {green}");
    let refused = render(&config("blue_green", 2), &["--istio-gateway", "istio-system/gw", "--host", "m.example"]);
    assert!(text(&refused.stderr).contains("--istio-gateway: only canary and ab_test route through Istio"));

    let gw = render(&config("canary", 2), &["--istio-gateway", "istio-system/gw", "--host", "m.example"]);
    let vs = text(&gw.stdout);
    let vs = vs.split("---\n").find(|d| d.contains("kind: \"VirtualService\"")).unwrap();
    assert!(
        vs.contains("- \"istio-system/gw\"") && vs.contains("- \"mesh\"") && vs.contains("- \"m.example\""),
        "{vs}"
    );
}

/// An autoscaled model keeps the pods' HPA; the pod is sized for its `max` workers and the
/// ConfigMap keeps the bounds, so workers scale inside each pod as pods scale in the cluster.
#[test]
fn an_autoscaled_model_keeps_the_pod_hpa_and_sizes_the_pod_for_its_max() {
    let (stdout, _) = render_iris_with("workers = { min = 1, max = 4 }\n[model.scale]\ninterval = \"2s\"\n");
    assert!(stdout.contains("kind: \"HorizontalPodAutoscaler\""), "{stdout}");
    let (fixed, _) = render_iris_with("workers = 4\n");
    let cpu = |yaml: &str| yaml.lines().find(|l| l.trim_start().starts_with("cpu:")).map(str::trim).map(String::from);
    assert_eq!(cpu(&stdout), cpu(&fixed), "the pod's CPU is what max workers use at once");
    let config = block(&stdout, "modeld.toml");
    assert!(config.contains("[model.workers]\nmin = 1\nmax = 4\n") && config.contains("[model.scale]"), "{config}");
}
