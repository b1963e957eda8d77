//! Bad input gets the right status and a JSON error naming the problem, and never crashes
//! a worker; a broken model fails alone.

use crate::onnx;
use crate::util::{ModelFiles, Setup, TestDaemon, infer_body};
use serde_json::json;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn assert_error(answer: &crate::util::Answer, status: u16, needle: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    let message =
        answer.json()["error"].as_str().unwrap_or_else(|| panic!("no error field: {}", answer.body)).to_string();
    assert!(message.contains(needle), "error {message:?} should mention {needle:?}");
    // The machine-readable kind agrees with the status.
    let kinds: &[&str] = match status {
        400 => &["bad_request", "invalid_input"],
        404 => &["not_found"],
        405 => &["method_not_allowed"],
        413 => &["payload_too_large"],
        415 => &["unsupported_encoding"],
        500 => &["internal"],
        503 => &["unavailable"],
        504 => &["timeout"],
        _ => &[],
    };
    let kind = answer.json()["error_type"].as_str().unwrap_or_default().to_string();
    assert!(kinds.contains(&kind.as_str()), "error_type {kind:?} for {status}: {}", answer.body);
}

fn error_type(answer: &crate::util::Answer) -> String {
    answer.json()["error_type"].as_str().unwrap_or_default().to_string()
}

fn mlp_daemon() -> TestDaemon {
    TestDaemon::ready(
        Setup::new()
            .model(ModelFiles::reference("tabular_mlp"), 1)
            .server("max_body = \"64KiB\"")
            .server("header_read_timeout = \"1s\""),
    )
}

#[test]
fn bad_requests_are_answered_with_what_is_wrong() {
    let daemon = mlp_daemon();
    let infer = "/v2/models/tabular_mlp/infer";
    let row = vec![0.5f32; 30];
    let input = |name: &str, shape: serde_json::Value, datatype: &str, data: serde_json::Value| {
        json!({"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}).to_string()
    };

    assert_error(&daemon.post(infer, "{\"inputs\": [}"), 400, "malformed JSON");
    let malformed = daemon.post(infer, "{}");
    assert_error(&malformed, 400, "missing field `inputs`");
    assert_eq!(error_type(&malformed), "bad_request", "malformed whatever the version");
    assert_error(
        &daemon.post("/v2/models/nope/infer", &infer_body("features", &[1, 30], &row)),
        404,
        "unknown model 'nope'",
    );
    assert_error(
        &daemon.post("/v2/models/tabular_mlp/versions/9/infer", &infer_body("features", &[1, 30], &row)),
        404,
        "no version 9",
    );
    assert_error(&daemon.post(infer, r#"{"inputs": []}"#), 400, "missing input 'features'");
    let wrong_name = daemon.post(infer, &infer_body("feature", &[1, 30], &row));
    assert_error(&wrong_name, 400, "unexpected input 'feature'");
    assert_eq!(error_type(&wrong_name), "invalid_input", "refused by the version's signature");
    let extra = json!({"inputs": [
        {"name": "features", "shape": [1, 30], "datatype": "FP32", "data": row},
        {"name": "mask", "shape": [1], "datatype": "FP32", "data": [1.0]}
    ]});
    assert_error(&daemon.post(infer, &extra.to_string()), 400, "unexpected input 'mask'");
    assert_error(
        &daemon.post(infer, &input("features", json!([1, 30]), "INT64", json!(vec![1; 30]))),
        400,
        "expected datatype FP32, got INT64",
    );
    assert_error(
        &daemon.post(infer, &input("features", json!([1, 30]), "FLOAT", json!(row))),
        400,
        "unknown datatype 'FLOAT'",
    );
    assert_error(&daemon.post(infer, &infer_body("features", &[30], &row)), 400, "expected rank 2");
    assert_error(
        &daemon.post(infer, &infer_body("features", &[1, 29], &row[..29])),
        400,
        "dimension 1 must be 30, got 29",
    );
    assert_error(
        &daemon.post(infer, &infer_body("features", &[2, 30], &row)),
        400,
        "holds 60 elements but 30 were given",
    );
    assert_error(
        &daemon.post(infer, &input("features", json!([1, -30]), "FP32", json!(row))),
        400,
        "negative dimension",
    );
    assert_error(
        &daemon.post(infer, &input("features", json!([1, 30]), "FP32", json!(vec!["a"; 30]))),
        400,
        "not a valid FP32",
    );
    let outputs = json!({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": row}], "outputs": [{"name": "logits"}]});
    assert_error(&daemon.post(infer, &outputs.to_string()), 400, "unknown output 'logits'");

    assert_error(&daemon.post("/predict", "not json"), 400, "malformed body");
    assert_error(&daemon.post("/predict", r#"{"features": [1, 2, 3]}"#), 400, "expected shape [30]");
    assert_error(&daemon.post("/predict", r#"{"features": [1], "model": "other"}"#), 404, "unknown model 'other'");
    assert_error(&daemon.post("/predict", r#"{"feature": [1]}"#), 400, "unknown field `feature`");
    assert_error(&daemon.post("/batch_predict", "[]"), 400, "at least one example");

    assert_too_large(&daemon, infer);

    let wrong_method = daemon.get(infer);
    assert_error(&wrong_method, 405, "GET is not allowed");
    assert_eq!(wrong_method.allow.as_deref(), Some("POST"));
    assert_error(&daemon.post("/health", "{}"), 405, "POST is not allowed");
    assert_error(&daemon.get("/v3/anything"), 404, "no endpoint");

    // None of that reached a worker in a way that could hurt it.
    let health = daemon.health();
    let version = &health["models"]["tabular_mlp"]["versions"]["1"];
    assert_eq!(version["workers"]["restarts"], 0, "{health}");
    // What the version's signature refused (missing, unexpected or mistyped inputs, wrong
    // rank or dimension, unknown output, /predict's wrong shape) counts against it; what
    // no version could take (malformed JSON, unknown datatype names, negative or unfilled
    // shapes, non-numbers) is the client's alone: refused as the body is read, it reaches
    // no version.
    assert_eq!(version["window"]["refused"], 8, "{version}");
    assert_eq!(version["window"]["requests"], 8, "{version}");
    assert_eq!(daemon.post(infer, &infer_body("features", &[1, 30], &row)).status, 200);
}

/// A body over the limit is refused with 413 as soon as its declared length is read, or
/// as soon as a chunked body passes the limit.
fn assert_too_large(daemon: &TestDaemon, path: &str) {
    let exchange = |head: String, body: &[u8]| {
        let mut stream = std::net::TcpStream::connect(daemon.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        let _ = stream.write_all(body);
        let mut response = vec![0u8; 4096];
        let n = stream.read(&mut response).unwrap();
        String::from_utf8_lossy(&response[..n]).to_string()
    };
    let declared = exchange(format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"), b"");
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    assert!(declared.contains("exceeds the 65536-byte limit"), "{declared}");
    let chunk = vec![b'1'; 70_000];
    let mut body = format!("{:x}\r\n", chunk.len()).into_bytes();
    body.extend_from_slice(&chunk);
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let chunked = exchange(format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"), &body);
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
}

#[test]
fn inputs_that_disagree_on_a_shared_dimension_get_400() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::new("add", 1, onnx::add_same_shape()), 1));
    let body = |wa: usize, wb: usize| {
        json!({"inputs": [
            {"name": "a", "shape": [1, wa], "datatype": "FP32", "data": vec![1.0; wa]},
            {"name": "b", "shape": [1, wb], "datatype": "FP32", "data": vec![2.0; wb]}
        ]})
        .to_string()
    };
    assert_error(&daemon.post("/v2/models/add/infer", &body(3, 4)), 400, "is 3 in one input and 4 in another");
    let ok = daemon.post("/v2/models/add/infer", &body(3, 3));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["outputs"][0]["data"], json!([3.0, 3.0, 3.0]));
    assert_eq!(daemon.health()["models"]["add"]["versions"]["1"]["workers"]["restarts"], 0);
}

#[test]
fn a_stalled_client_is_disconnected() {
    let daemon = TestDaemon::ready(
        Setup::new().model(ModelFiles::reference("tabular_mlp"), 1).server("header_read_timeout = \"1s\""),
    );
    let mut stream = std::net::TcpStream::connect(daemon.addr).unwrap();
    stream.write_all(b"POST /v2/models/tabular_mlp/infer HTTP/1.1\r\nHost: x\r\n").unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The server gives up on the headers after header_read_timeout (1 s) and closes.
    let _ = stream.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(8), "connection held for {waited:?}");
    assert_eq!(daemon.get_fresh("/health").status, 200);
}

#[test]
fn a_corrupt_model_fails_alone_with_tract_reason() {
    let garbage = b"this is not an onnx file at all".to_vec();
    let mut truncated = ModelFiles::reference("tabular_mlp").onnx;
    truncated.truncate(truncated.len() / 2);
    let daemon = TestDaemon::start(
        Setup::new()
            .model(ModelFiles::reference("tabular_mlp"), 1)
            .model(ModelFiles::new("garbage", 1, garbage), 1)
            .model(ModelFiles::new("truncated", 1, truncated), 1),
    );
    daemon.wait_until("both broken versions to fail and the good one to load", Duration::from_secs(30), || {
        let h = daemon.health();
        h["models"]["garbage"]["versions"]["1"]["state"] == "failed"
            && h["models"]["truncated"]["versions"]["1"]["state"] == "failed"
            && h["models"]["tabular_mlp"]["versions"]["1"]["state"] != "loading"
    });
    let health = daemon.health();
    assert_eq!(health["status"], "unhealthy");
    for name in ["garbage", "truncated"] {
        let reason = health["models"][name]["versions"]["1"]["reason"].as_str().unwrap().to_string();
        assert!(reason.contains("could not read ONNX model"), "{name}: {reason}");
        assert!(reason.contains(&format!("{name}/1/model.onnx")), "{name}: {reason}");
    }
    assert_eq!(health["models"]["tabular_mlp"]["versions"]["1"]["state"], "ready");
    let ready = daemon.get("/ready");
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("garbage") && ready.body.contains("truncated"), "{}", ready.body);
    assert_eq!(daemon.post("/v2/models/tabular_mlp/infer", &infer_body("features", &[1, 30], &[0.1; 30])).status, 200);
    assert_error(&daemon.post("/v2/models/garbage/infer", &infer_body("x", &[1], &[0.0])), 503, "failed");
}

#[test]
fn a_model_without_files_is_reported_not_fatal() {
    let daemon = TestDaemon::start(
        Setup::new().model(ModelFiles::reference("tabular_mlp"), 1).configure("ghost", "version = 3\n"),
    );
    daemon.wait_until("tabular_mlp ready", Duration::from_secs(30), || {
        daemon.health()["models"]["tabular_mlp"]["ready"] == true
    });
    let ghost = &daemon.health()["models"]["ghost"];
    assert_eq!(ghost["ready"], false);
    assert!(ghost["reason"].as_str().unwrap().contains("version 3 not found"), "{ghost}");
    let body = infer_body("x", &[1, 1], &[1.0]);
    assert_error(&daemon.post("/v2/models/ghost/infer", &body), 503, "version 3 not found");
}

#[test]
fn a_model_failing_at_run_time_answers_500_and_keeps_serving() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::new("lookup", 1, onnx::lookup()), 1));
    let body = |i: i64| json!({"inputs": [{"name": "i", "shape": [1], "datatype": "INT64", "data": [i]}]}).to_string();
    let bad = daemon.post("/v2/models/lookup/infer", &body(9));
    assert_eq!(bad.status, 500, "{}", bad.body);
    // tract panics on the out-of-range index; the worker catches it and answers.
    assert!(
        bad.json()["error"].as_str().unwrap().starts_with("inference panicked: index out of bounds"),
        "{}",
        bad.body
    );
    let good = daemon.post("/v2/models/lookup/infer", &body(2));
    assert_eq!(good.json()["outputs"][0]["data"], json!([12.0]));
    assert_eq!(daemon.health()["models"]["lookup"]["versions"]["1"]["workers"]["restarts"], 0);
}

#[test]
fn a_version_failing_its_golden_example_never_takes_traffic() {
    let wrong = r#"
[[golden]]
inputs.features = { shape = [1, 30], data = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0] }
outputs.probabilities = { shape = [1, 2], data = [0.99, 0.01] }
"#;
    let daemon = TestDaemon::start(Setup::new().model(ModelFiles::reference("tabular_mlp").with_manifest(wrong), 2));
    daemon.wait_until("the version to fail", Duration::from_secs(30), || {
        daemon.health()["models"]["tabular_mlp"]["versions"]["1"]["state"] == "failed"
    });
    let reason = daemon.health()["models"]["tabular_mlp"]["versions"]["1"]["reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("golden example 0 failed: output 'probabilities' element 0"), "{reason}");
    assert!(reason.contains("expected 0.99"), "{reason}");
    assert_error(
        &daemon.post("/v2/models/tabular_mlp/infer", &infer_body("features", &[1, 30], &[0.0; 30])),
        503,
        "golden example 0 failed",
    );
    // The failure is the model's: it is not retried as a crash.
    assert_eq!(daemon.health()["models"]["tabular_mlp"]["versions"]["1"]["workers"]["restarts"], 0);
    assert!(daemon.path().join("models/tabular_mlp/1/model.toml").exists());
}
