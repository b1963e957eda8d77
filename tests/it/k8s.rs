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
