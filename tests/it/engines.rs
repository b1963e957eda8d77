//! The ONNX Runtime engine beside tract: ONNX Runtime's own reference outputs and tract's,
//! one signature for both, a clear failure without a usable library (never tract in its
//! place), and an engine switch by an ordinary rollout under load.
//!
//! The tests that need the library are `#[ignore]`d in a plain `cargo test` (a fresh
//! machine has none). `.ci/run` installs the onnxruntime wheel into a throwaway venv and
//! runs them with `ORT_DYLIB_PATH` naming its libonnxruntime.so, and `MODELD_OLD_ORT`
//! naming an older ONNX Runtime than the engine takes.

use crate::onnx::family;
use crate::rollouts;
use crate::serving::{REFERENCES, assert_close, floats, npz};
use crate::util::{ModelFiles, Setup, TestDaemon, fixtures, infer_body};
use std::time::Duration;

/// The library the ignored tests run with.
fn library(variable: &str) -> String {
    match std::env::var(variable) {
        Ok(path) if !path.is_empty() => path,
        _ => panic!("{variable} must name a libonnxruntime.so for this test (.ci/run installs one)"),
    }
}

fn server_library(path: &str) -> String {
    format!("onnxruntime_library = \"{path}\"")
}

/// Every reference model on ONNX Runtime gives ONNX Runtime's reference outputs, within
/// tolerance of tract's, and both engines describe it alike.
#[test]
#[ignore = "needs libonnxruntime.so in ORT_DYLIB_PATH; run by .ci/run"]
fn reference_models_on_onnxruntime_match_the_references_and_tract() {
    let mut setup = Setup::new().server(&server_library(&library("ORT_DYLIB_PATH")));
    for (model, ..) in REFERENCES {
        let onnx = std::fs::read(fixtures().join("reference").join(format!("{model}.onnx"))).unwrap();
        setup = setup
            .model(ModelFiles::reference(model), 1)
            .model_with(ModelFiles::new(&format!("{model}_ort"), 1, onnx), "engine = \"onnxruntime\"\n");
    }
    let types = crate::onnx::passthrough_types();
    let setup = setup.model_with(ModelFiles::new("types", 1, types), "engine = \"onnxruntime\"\n");
    let daemon = TestDaemon::ready(setup);
    // Every element type, booleans normalised, crosses ONNX Runtime intact.
    crate::serving::element_types_cross_intact(&daemon, "types");
    for (model, input, output, atol, rtol) in REFERENCES {
        let ort = format!("{model}_ort");
        let tract_meta = daemon.get(&format!("/v2/models/{model}")).json();
        let ort_meta = daemon.get(&format!("/v2/models/{ort}")).json();
        assert_eq!(ort_meta["parameters"]["load_mode"], "onnxruntime");
        assert_eq!(tract_meta["inputs"], ort_meta["inputs"], "{model}: inputs as tract describes them");
        assert_eq!(tract_meta["outputs"], ort_meta["outputs"], "{model}: outputs as tract describes them");

        let (shape, data) = npz(model, &format!("input_{input}"));
        let (want_shape, want) = npz(model, &format!("output_{output}"));
        let body = infer_body(input, &shape, &data);
        let answer = |name: &str| {
            let answer = daemon.post(&format!("/v2/models/{name}/infer"), &body);
            assert_eq!(answer.status, 200, "{name}: {}", answer.body);
            let out = answer.json()["outputs"][0].clone();
            assert_eq!(out["name"], output);
            let got_shape: Vec<usize> = serde_json::from_value(out["shape"].clone()).unwrap();
            assert_eq!(got_shape, want_shape, "{name} output shape");
            floats(&out["data"])
        };
        let (on_ort, on_tract) = (answer(&ort), answer(model));
        assert_close(&format!("{ort} vs ONNX Runtime's reference"), &on_ort, &want, atol, rtol);
        assert_close(&format!("{ort} vs tract"), &on_ort, &on_tract, atol, rtol);
    }
    // The bundled classifier: ZipMap and string labels, the same answers on both engines.
    let iris = Setup::new()
        .server(&server_library(&library("ORT_DYLIB_PATH")))
        .model_with(ModelFiles::bundled("iris", 1), "engine = \"onnxruntime\"\n");
    let daemon = TestDaemon::ready(iris);
    let answer = daemon.post("/predict", r#"{"model": "iris", "features": [5.1, 3.5, 1.4, 0.2]}"#);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["prediction"], "setosa");
    let meta = daemon.get("/v2/models/iris").json();
    assert_eq!(meta["outputs"][1]["shape"], serde_json::json!([-1, 3]), "{meta}");
}

/// No library, or a file that is none: the version fails with the path and the loader's
/// reason, and nothing answers in its place.
#[test]
fn without_a_usable_library_the_version_fails_with_the_reason() {
    for (library, reason) in
        [("/nonexistent/libonnxruntime.so", "No such file or directory"), ("not-a-library.so", "not-a-library.so")]
    {
        let daemon = TestDaemon::start(
            Setup::new()
                .server(&server_library(library))
                .model_with(ModelFiles::reference("tabular_mlp"), "engine = \"onnxruntime\"\n")
                .before_start(|dir| std::fs::write(dir.join("not-a-library.so"), b"not an ELF file").unwrap()),
        );
        daemon.wait_until("the version failed", Duration::from_secs(30), || {
            daemon.health().to_string().contains("ONNX Runtime library")
        });
        let health = daemon.health().to_string();
        assert!(health.contains(library) && health.contains(reason), "{health}");
        let (_, data) = npz("tabular_mlp", "input_features");
        let body = infer_body("features", &[1, 30], &data[..30]);
        let answer = daemon.post("/v2/models/tabular_mlp/infer", &body);
        assert_eq!(answer.status, 503, "tract must not answer in ONNX Runtime's place: {}", answer.body);
        let (code, out, _) = daemon.cli(&["status"]);
        assert_eq!(code, 0);
        assert!(out.contains("failed"), "{out}");
    }
}

/// `config check` says which library it found and its version, or why there is none.
#[test]
#[ignore = "needs libonnxruntime.so in ORT_DYLIB_PATH and an older one in MODELD_OLD_ORT; run by .ci/run"]
fn config_check_reports_the_library_and_an_incompatible_one_fails_with_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("modeld.toml");
    let check = |library: &str| {
        let text =
            format!("[server]\n{}\n\n[[model]]\nname = \"m\"\nengine = \"onnxruntime\"\n", server_library(library));
        std::fs::write(&config, text).unwrap();
        let out =
            std::process::Command::new(crate::util::BIN).args(["config", "check", "--config"]).arg(&config).output();
        String::from_utf8_lossy(&out.unwrap().stdout).into_owned()
    };
    let good = library("ORT_DYLIB_PATH");
    let text = check(&good);
    assert!(text.contains("onnxruntime for m: ") && text.contains("(version 1."), "{text}");

    let old = library("MODELD_OLD_ORT");
    let text = check(&old);
    assert!(text.contains("warning: onnxruntime for m:") && text.contains(&old), "{text}");
    assert!(text.contains("expected version >= '1.20.x'") && text.contains("but got '1.19"), "{text}");

    // A worker on the old library fails its version with the same words.
    let daemon = TestDaemon::start(
        Setup::new()
            .server(&server_library(&old))
            .model_with(ModelFiles::reference("tabular_mlp"), "engine = \"onnxruntime\"\n"),
    );
    daemon.wait_until("the version failed", Duration::from_secs(30), || {
        daemon.health().to_string().contains("but got '1.19")
    });
}

/// v1 on tract, v2 the same model on ONNX Runtime (its model.toml says so): an ordinary
/// canary under load, with a shadow phase comparing the two, promotes it with no failed
/// request; and back to tract the same way.
#[test]
#[ignore = "needs libonnxruntime.so in ORT_DYLIB_PATH; run by .ci/run"]
fn an_engine_switch_is_an_ordinary_rollout() {
    let settings = "strategy = \"canary\", steps = [20, 50, 100], bake = \"1s\"";
    let setup = Setup::new()
        .server(&server_library(&library("ORT_DYLIB_PATH")))
        .server_section(rollouts::HEALTH)
        .model_with(ModelFiles::new("m", 1, family::good(1.0)), &rollouts::deploy_line(settings))
        .files(ModelFiles::new("m", 2, family::good(1.0)).with_manifest("engine = \"onnxruntime\"\n"))
        .files(ModelFiles::new("m", 3, family::good(1.0)).with_manifest("engine = \"tract\"\n"));
    let daemon = TestDaemon::ready(setup);
    for (version, mode) in [(2, "onnxruntime"), (3, "strict")] {
        let (report, _) = rollouts::promote_under_load(&daemon, version, &[]);
        eprintln!("FIGURE engine switch to v{version} ({mode}): {} requests, none failed", report.shots.len());
        let meta = daemon.get("/v2/models/m").json();
        assert_eq!(meta["parameters"]["version"], version.to_string());
        assert_eq!(meta["parameters"]["load_mode"], mode);
    }
}
