//! Serving the reference models and the bundled classifier: the numbers must be ONNX
//! Runtime's (or scikit-learn's) within tolerance, through every protocol.

use crate::onnx;
use crate::util::{ModelFiles, Setup, TestDaemon, fixtures, infer_body};
use serde_json::{Value, json};

/// (model, input name, output name, abs tolerance, rel tolerance)
pub const REFERENCES: [(&str, &str, &str, f32, f32); 4] = [
    ("tabular_mlp", "features", "probabilities", 1e-4, 1e-3),
    ("lstm_clf", "frames", "probs", 1e-4, 1e-3),
    ("kws_conv_gru", "mfcc", "logits", 2e-4, 2e-3),
    ("squeezenet1_1", "input", "logits", 2e-4, 2e-3),
];

pub fn npz(model: &str, key: &str) -> (Vec<usize>, Vec<f32>) {
    let path = fixtures().join("reference").join(format!("{model}.ref.npz"));
    let mut archive = npyz::npz::NpzArchive::open(&path).expect("npz opens");
    let array = archive.by_name(key).expect("npz readable").unwrap_or_else(|| panic!("{key} in {model}.ref.npz"));
    let shape = array.shape().iter().map(|d| *d as usize).collect();
    (shape, array.into_vec::<f32>().expect("f32 array"))
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= atol + rtol * w.abs(), "{what}[{i}]: got {g}, ONNX Runtime gave {w}");
    }
}

pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

#[test]
fn reference_models_give_onnx_runtime_outputs() {
    let mut setup = Setup::new();
    for (model, ..) in REFERENCES {
        setup = setup.model(ModelFiles::reference(model), 1);
    }
    let daemon = TestDaemon::ready(setup);
    for (model, input, output, atol, rtol) in REFERENCES {
        let (shape, data) = npz(model, &format!("input_{input}"));
        let (want_shape, want) = npz(model, &format!("output_{output}"));
        let answer = daemon.post(&format!("/v2/models/{model}/infer"), &infer_body(input, &shape, &data));
        assert_eq!(answer.status, 200, "{model}: {}", answer.body);
        let body = answer.json();
        assert_eq!(body["model_name"], model);
        assert_eq!(body["model_version"], "1");
        let out = &body["outputs"][0];
        assert_eq!(out["name"], output);
        assert_eq!(out["datatype"], "FP32");
        let got_shape: Vec<usize> = serde_json::from_value(out["shape"].clone()).unwrap();
        assert_eq!(got_shape, want_shape, "{model} output shape");
        assert_close(model, &floats(&out["data"]), &want, atol, rtol);
    }
}

#[test]
fn metadata_shows_open_dims_versions_and_platform() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::reference("lstm_clf"), 1));
    let meta = daemon.get("/v2/models/lstm_clf").json();
    assert_eq!(meta["platform"], "onnx_onnxv1");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(meta["inputs"][0], json!({"name": "frames", "datatype": "FP32", "shape": [-1, -1, 40]}));
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 5]));
    assert_eq!(daemon.get("/v2/models/lstm_clf/versions/1").json()["name"], "lstm_clf");
    assert_eq!(daemon.get("/v2").json()["name"], "modeld");
    assert_eq!(daemon.get("/v2/health/live").status, 200);
    assert_eq!(daemon.get("/v2/health/ready").json(), json!({"ready": true}));
    assert_eq!(daemon.get("/v2/models/lstm_clf/ready").json()["ready"], true);
    assert_eq!(daemon.get("/v2/models/lstm_clf/versions/1/ready").status, 200);
}

#[test]
fn any_batch_size_and_sequence_length_runs() {
    let daemon = TestDaemon::ready(
        Setup::new().model(ModelFiles::reference("tabular_mlp"), 1).model(ModelFiles::reference("lstm_clf"), 1),
    );
    let (_, rows) = npz("tabular_mlp", "input_features");
    let (_, want) = npz("tabular_mlp", "output_probabilities");
    for batch in [1usize, 3, 4] {
        let body = infer_body("features", &[batch, 30], &rows[..batch * 30]);
        let answer = daemon.post("/v2/models/tabular_mlp/versions/1/infer", &body);
        assert_eq!(answer.status, 200, "batch {batch}: {}", answer.body);
        let out = &answer.json()["outputs"][0];
        assert_eq!(out["shape"], json!([batch, 2]));
        assert_close("batch", &floats(&out["data"]), &want[..batch * 2], 1e-4, 1e-3);
    }
    for (batch, steps) in [(1usize, 7usize), (5, 50), (2, 120)] {
        let data = vec![0.25f32; batch * steps * 40];
        let answer = daemon.post("/v2/models/lstm_clf/infer", &infer_body("frames", &[batch, steps, 40], &data));
        assert_eq!(answer.status, 200, "lstm {batch}x{steps}: {}", answer.body);
        assert_eq!(answer.json()["outputs"][0]["shape"], json!([batch, 5]));
    }
}

#[test]
fn nested_data_and_requested_outputs() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::bundled("iris", 1), 1));
    let body = json!({
        "id": "req-7",
        "inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP32", "data": [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 5.1, 1.8]]}],
        "outputs": [{"name": "output_label"}]
    });
    let answer = daemon.post("/v2/models/iris/infer", &body.to_string());
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["id"], "req-7");
    assert_eq!(body["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(
        body["outputs"][0],
        json!({"name": "output_label", "datatype": "BYTES", "shape": [2], "data": ["setosa", "virginica"]})
    );
}

#[test]
fn the_zipmap_classifier_serves_probabilities_and_labels() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::bundled("iris", 1), 1));
    let meta = daemon.get("/v2/models/iris").json();
    assert_eq!(meta["outputs"][1], json!({"name": "output_probability", "datatype": "FP32", "shape": [-1, 3]}));
    let answer = daemon.post("/v2/models/iris/infer", &infer_body("X", &[1, 4], &[5.1, 3.5, 1.4, 0.2]));
    let out = &answer.json()["outputs"][1];
    // scikit-learn's predict_proba for this row (models/make_iris.py, version 1).
    assert_close("iris", &floats(&out["data"]), &[0.9815729, 0.01842713, 1.478114e-08], 1e-4, 1e-3);
}

#[test]
fn predict_and_batch_predict_answer_labels() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::bundled("iris", 1), 2));
    let one = daemon.post("/predict", r#"{"features": [6.6, 3.0, 4.4, 1.4]}"#);
    assert_eq!(one.status, 200, "{}", one.body);
    let one = one.json();
    assert_eq!(one["prediction"], "versicolor");
    assert!((one["probability"].as_f64().unwrap() - 0.9201621).abs() < 1e-4, "{one}");
    assert_eq!(one["model_version"], "1");

    let batch = daemon.post(
        "/batch_predict",
        r#"[{"features": [5.1, 3.5, 1.4, 0.2], "model": "iris"}, {"features": [5.9, 3.0, 5.1, 1.8]}]"#,
    );
    assert_eq!(batch.status, 200, "{}", batch.body);
    let batch = batch.json();
    assert_eq!(batch[0]["prediction"], "setosa");
    assert_eq!(batch[1]["prediction"], "virginica");
    assert!((batch[1]["probability"].as_f64().unwrap() - 0.7645971).abs() < 1e-4);
}

#[test]
fn predict_without_labels_answers_class_index_or_value() {
    let regression = onnx::slow(4, 1);
    let daemon = TestDaemon::ready(
        Setup::new().model(ModelFiles::reference("tabular_mlp"), 1).model(ModelFiles::new("reg", 1, regression), 1),
    );
    let features: Vec<f32> = (0..30).map(|i| i as f32 / 30.0).collect();
    let body = json!({"model": "tabular_mlp", "features": features}).to_string();
    let answer = daemon.post("/predict", &body).json();
    assert!(answer["prediction"].is_u64(), "{answer}");
    assert!(answer["probability"].as_f64().unwrap() >= 0.5);
    let answer = daemon.post("/predict", r#"{"model": "reg", "features": [0.1, 0.2, 0.3, 0.4]}"#).json();
    assert!(answer["prediction"].is_f64(), "{answer}");
    assert!(answer.get("probability").is_none(), "{answer}");
}

#[test]
fn every_element_type_crosses_intact() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::new("types", 1, onnx::passthrough_types()), 1));
    element_types_cross_intact(&daemon, "types");
}

/// Every element type through `model` (serving `onnx::passthrough_types`), both ways.
pub fn element_types_cross_intact(daemon: &TestDaemon, model: &str) {
    let cases = [
        ("f32", "FP32", json!([1.5, -2.25, 3.0, 1e-7])),
        ("f64", "FP64", json!([1.000000000001, -2.5, 1e300, 0.0])),
        ("i64", "INT64", json!([9007199254740993i64, -9223372036854775807i64, 0, 1])),
        ("i32", "INT32", json!([2147483647, -2147483648, 0, 5])),
        ("i8", "INT8", json!([127, -128, 0, 1])),
        ("u8", "UINT8", json!([255, 0, 7, 1])),
        ("bool", "BOOL", json!([true, false, false, true])),
    ];
    let inputs: Vec<Value> = cases
        .iter()
        .map(|(n, t, data)| json!({"name": format!("x_{n}"), "shape": [2, 2], "datatype": t, "data": data}))
        .collect();
    let answer = daemon.post(&format!("/v2/models/{model}/infer"), &json!({ "inputs": inputs }).to_string());
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    for (n, t, data) in cases {
        let out = body["outputs"].as_array().unwrap().iter().find(|o| o["name"] == format!("y_{n}")).unwrap();
        assert_eq!(out["datatype"], t);
        assert_eq!(out["shape"], json!([2, 2]));
        assert_eq!(out["data"], data, "{n}");
    }
}

#[test]
fn models_tract_refuses_by_default_load_through_the_fallbacks() {
    let daemon = TestDaemon::ready(
        Setup::new()
            .model(ModelFiles::new("declared_wrong", 1, onnx::wrong_output_shape()), 1)
            .model(ModelFiles::new("flatten", 1, onnx::flatten_two_open_dims()), 1)
            .model(ModelFiles::reference("tabular_mlp"), 1),
    );
    let mode = |m: &str| daemon.get(&format!("/v2/models/{m}")).json()["parameters"]["load_mode"].clone();
    assert_eq!(mode("tabular_mlp"), "strict");
    assert_eq!(mode("declared_wrong"), "ignore_output_shapes");
    assert_eq!(mode("flatten"), "concrete_shapes", "{}", daemon.logs());
    assert_eq!(daemon.health()["models"]["flatten"]["versions"]["1"]["load_mode"], "concrete_shapes");
    // Typed only per request, its output still shows the rank and sizes the graph declares.
    assert_eq!(daemon.get("/v2/models/flatten").json()["outputs"][0]["shape"], json!([1, -1]));
    assert!(daemon.logs().contains("loaded after fallback"), "{}", daemon.logs());

    let answer = daemon.post("/v2/models/declared_wrong/infer", &infer_body("x", &[2, 3], &[1., 2., 3., 4., 5., 6.]));
    assert_eq!(answer.json()["outputs"][0]["data"], json!([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    for (a, b) in [(1usize, 1usize), (2, 3), (4, 5)] {
        let data: Vec<f32> = (0..a * b * 2).map(|i| i as f32).collect();
        let answer = daemon.post("/v2/models/flatten/infer", &infer_body("x", &[a, b, 2], &data));
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json()["outputs"][0]["shape"], json!([1, a * b * 2]));
        assert_eq!(floats(&answer.json()["outputs"][0]["data"]), data);
    }
}

#[test]
fn metrics_count_requests_by_model_version_protocol_and_code() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::bundled("iris", 1), 1));
    for _ in 0..3 {
        assert_eq!(daemon.post("/v2/models/iris/infer", &infer_body("X", &[1, 4], &[5.0, 3.0, 1.0, 0.2])).status, 200);
    }
    assert_eq!(daemon.post("/v2/models/iris/infer", &infer_body("X", &[1, 3], &[5.0, 3.0, 1.0])).status, 400);
    assert_eq!(daemon.post("/predict", r#"{"features": [5.0, 3.0, 1.0, 0.2]}"#).status, 200);
    let metrics = daemon.get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.body;
    for line in [
        r#"modeld_requests_total{code="200",model="iris",protocol="oip",version="1"} 3"#,
        r#"modeld_requests_total{code="400",model="iris",protocol="oip",version="1"} 1"#,
        r#"modeld_requests_total{code="200",model="iris",protocol="predict",version="1"} 1"#,
        r#"modeld_request_duration_seconds_count{model="iris",protocol="oip",version="1"} 4"#,
        r#"modeld_workers_up{model="iris",version="1"} 1"#,
        r#"modeld_inflight_requests{model="iris"} 0"#,
        r#"modeld_model_load_duration_seconds_count{model="iris",version="1"} 1"#,
    ] {
        assert!(text.contains(line), "missing {line}:\n{text}");
    }
    assert!(text.contains("modeld_build_info{version=\""), "{text}");
}
