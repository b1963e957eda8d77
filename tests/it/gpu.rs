//! GPU hosts, as far as a host without one can prove them: a model asking for CUDA fails
//! its version with the reason (never a silent fall back to the CPU), `cuda-or-cpu` serves
//! on the CPU and says why, its worker is prepared as a GPU worker would be, GPU telemetry
//! is absent without error, and `config check` says what it found. What needs a GPU
//! (outputs on CUDA, a CPU-to-GPU swap under load, real telemetry) is `bench/gpu_check.sh`.

use crate::serving::{assert_close, npz};
use crate::util::{BIN, ModelFiles, Setup, TestDaemon, infer_body};
use std::time::Duration;

/// Whether this host has an NVIDIA driver (then the absent-GPU assertions do not apply).
fn host_has_nvidia_driver() -> bool {
    std::path::Path::new("/dev/nvidiactl").exists()
}

fn tabular_request() -> (String, Vec<f32>) {
    let (_, rows) = npz("tabular_mlp", "input_features");
    let (_, want) = npz("tabular_mlp", "output_probabilities");
    (infer_body("features", &[1, 30], &rows[..30]), want[..2].to_vec())
}

#[test]
fn cuda_without_a_gpu_fails_the_version_with_the_reason() {
    if host_has_nvidia_driver() {
        eprintln!("skipped: this host has an NVIDIA driver");
        return;
    }
    let daemon =
        TestDaemon::start(Setup::new().model_with(ModelFiles::reference("tabular_mlp"), "device = \"cuda\"\n"));
    daemon.wait_until("the version failed", Duration::from_secs(60), || {
        daemon.health().to_string().contains("device cuda: ")
    });
    let health = daemon.health();
    let reason = health["models"]["tabular_mlp"]["versions"]["1"]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.starts_with("device cuda: ") && reason.contains("libcuda.so"), "{health}");
    // Nothing answers in the GPU's place.
    let (body, _) = tabular_request();
    let answer = daemon.post("/v2/models/tabular_mlp/infer", &body);
    assert_eq!(answer.status, 503, "the CPU must not answer for a failed GPU version: {}", answer.body);
    // No telemetry, and no error about it: no GPU section, no GPU series.
    assert!(health.get("gpus").is_none(), "{health}");
    let metrics = daemon.get("/metrics").body;
    assert!(!metrics.contains("modeld_gpu_"), "GPU series without a GPU:\n{metrics}");
    // Said once, as information: nothing is wrong with a host that has no GPU.
    let logs = daemon.logs();
    let said: Vec<&str> = logs.lines().filter(|l| l.contains("GPU telemetry") || l.contains("NVML")).collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains(" INFO ") && said[0].contains("GPU telemetry off: NVML not available"), "{said:?}");
}

#[test]
fn cuda_or_cpu_serves_on_the_cpu_and_says_why() {
    if host_has_nvidia_driver() {
        eprintln!("skipped: this host has an NVIDIA driver");
        return;
    }
    let daemon = TestDaemon::ready(
        Setup::new().model_with(ModelFiles::reference("tabular_mlp"), "device = \"cuda-or-cpu\"\nworkers = 2\n"),
    );
    let health = daemon.health();
    let version = &health["models"]["tabular_mlp"]["versions"]["1"];
    let device = version["device"].as_str().unwrap_or_default();
    assert!(device.starts_with("cpu (cuda-or-cpu: no usable GPU: "), "{health}");
    // Judged as a CPU version: no GPU checks.
    assert!(version["checks"].get("gpu_memory").is_none(), "{health}");
    let (body, want) = tabular_request();
    let answer = daemon.post("/v2/models/tabular_mlp/infer", &body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let got: Vec<f32> =
        answer.json()["outputs"][0]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    assert_close("tabular_mlp on cuda-or-cpu", &got, &want, 1e-4, 1e-3);
    // Its workers were started as GPU workers: NVML's numbering, and a kernel cache that
    // outlives them.
    for pid in daemon.worker_pids() {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let vars: Vec<String> = environ.split(|b| *b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect();
        assert!(vars.iter().any(|v| v == "CUDA_DEVICE_ORDER=PCI_BUS_ID"), "{vars:?}");
        let cache = vars.iter().find_map(|v| v.strip_prefix("XDG_CACHE_HOME=")).expect("XDG_CACHE_HOME");
        assert!(cache.ends_with("kernel-cache") && std::path::Path::new(cache).is_dir(), "{cache}");
    }
}

#[test]
fn config_check_names_bad_devices_and_says_what_it_found() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("modeld.toml");
    let check = |models: &str| {
        std::fs::write(&config, format!("[server]\n{models}")).unwrap();
        let out = std::process::Command::new(BIN).args(["config", "check", "--config"]).arg(&config).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    };
    let (code, text) = check(
        "[[model]]\nname = \"a\"\ndevice = \"gpu\"\n\n[[model]]\nname = \"b\"\ndevice = \"cuda:0,0\"\n\n\
         [[model]]\nname = \"c\"\ndevice = \"cuda\"\nengine = \"onnxruntime\"\n",
    );
    assert_eq!(code, Some(2), "{text}");
    for expected in [
        "model[0].device: 'gpu' is not a device (cpu, cuda, cuda:N, cuda:N,M… or cuda-or-cpu)",
        "model[1].device: 'cuda:0,0' names GPU 0 twice",
        "model[2].device: 'cuda' needs engine = \"tract\"",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let (code, text) = check("[[model]]\nname = \"g\"\ndevice = \"cuda:1\"\n");
    assert_eq!(code, Some(0), "{text}");
    match host_has_nvidia_driver() {
        true => assert!(text.contains("gpus for g: driver "), "{text}"),
        false => assert!(text.contains("warning: gpus for g: NVML not available"), "{text}"),
    }
}
