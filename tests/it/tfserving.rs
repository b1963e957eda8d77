//! TF Serving's REST API, as its clients call it: row and columnar `:predict`,
//! `:classify`, `:regress`, model status (every state: loading, failed, retired by a
//! rollout) and metadata, and its error form.

use crate::onnx::{self, family};
use crate::util::{ModelFiles, Setup, TestDaemon};
use serde_json::{Value, json};

#[test]
fn predict_answers_rows_and_columns_as_tf_serving_does() {
    let daemon = TestDaemon::ready(
        Setup::new()
            .model(ModelFiles::new("m", 1, family::good(1.0)), 1)
            .model(ModelFiles::new("add", 1, onnx::add_same_shape()), 1),
    );
    let rows = daemon.post("/v1/models/m:predict", r#"{"instances": [[1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5]]}"#);
    assert_eq!(rows.status, 200, "{}", rows.body);
    assert_eq!(rows.json(), json!({"predictions": [[10.0], [2.0]]}));
    let columns = daemon.post("/v1/models/m/versions/1:predict", r#"{"inputs": [[1, 2, 3, 4]]}"#);
    assert_eq!(columns.json(), json!({"outputs": [[10.0]]}));
    // A multi-input model: each instance an object of its inputs.
    let two = daemon.post(
        "/v1/models/add:predict",
        r#"{"instances": [{"a": [1, 2], "b": [10, 20]}, {"a": [3, 4], "b": [30, 40]}]}"#,
    );
    assert_eq!(two.json(), json!({"predictions": [[11.0, 22.0], [33.0, 44.0]]}), "{}", two.body);
    let named = daemon.post("/v1/models/add:predict", r#"{"inputs": {"a": [[1, 2]], "b": [[3, 4]]}}"#);
    assert_eq!(named.json(), json!({"outputs": [[4.0, 6.0]]}));
    // Errors are {"error": ...} with the status that fits.
    let missing = daemon.post("/v1/models/add:predict", r#"{"instances": [{"a": [1, 2]}]}"#);
    assert_eq!((missing.status, missing.json()["error"].as_str().unwrap()), (400, "missing input 'b'"));
    let unknown = daemon.post("/v1/models/nope:predict", r#"{"instances": [[1]]}"#);
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["error"].as_str().unwrap().contains("unknown model 'nope'"));
    let neither = daemon.post("/v1/models/m:predict", r#"{"signature_name": "serving_default"}"#);
    assert!(neither.json()["error"].as_str().unwrap().contains("exactly one of"));
    let metrics = daemon.get("/metrics").body;
    assert!(metrics.contains(r#"modeld_requests_total{code="200",model="m",protocol="tfserving",version="1"} 2"#));
}

#[test]
fn classify_and_regress_where_the_model_fits() {
    let daemon = TestDaemon::ready(
        Setup::new().model(ModelFiles::bundled("iris", 2), 1).model(ModelFiles::new("m", 1, family::good(1.0)), 1),
    );
    let classified = daemon
        .post("/v1/models/iris:classify", r#"{"examples": [{"X": [5.1, 3.5, 1.4, 0.2]}, {"X": [6.6, 3, 4.4, 1.4]}]}"#);
    assert_eq!(classified.status, 200, "{}", classified.body);
    let result = classified.json()["result"].clone();
    let best = |i: usize| {
        let classes = result[i].as_array().unwrap();
        classes.iter().max_by(|a, b| a[1].as_f64().partial_cmp(&b[1].as_f64()).unwrap()).unwrap()[0].clone()
    };
    assert_eq!((best(0), best(1)), (json!("setosa"), json!("versicolor")), "{result}");
    assert_eq!(result[0].as_array().unwrap().len(), 3, "every class scored");
    let regressed = daemon.post("/v1/models/m:regress", r#"{"examples": [{"x": [1, 1, 1, 1]}, {"x": [1, 2, 3, 4]}]}"#);
    assert_eq!(regressed.json(), json!({"result": [4.0, 10.0]}), "{}", regressed.body);
    let wrong = daemon.post("/v1/models/m:classify", r#"{"examples": [{"x": [1, 1, 1, 1]}]}"#);
    assert_eq!(wrong.status, 400);
    assert!(wrong.json()["error"].as_str().unwrap().contains("is a regression"), "{}", wrong.body);
}

#[test]
fn status_and_metadata_describe_the_versions() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::new("m", 1, family::good(1.0)), 1));
    let status = daemon.get("/v1/models/m");
    assert_eq!(
        status.json(),
        json!({"model_version_status": [{"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    );
    assert_eq!(daemon.get("/v1/models/m/versions/7").status, 404);
    let meta: Value = daemon.get("/v1/models/m/metadata").json();
    let signature = &meta["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(signature["inputs"]["x"]["dtype"], "DT_FLOAT", "{meta}");
    assert_eq!(
        signature["inputs"]["x"]["tensor_shape"]["dim"],
        json!([{"size": "-1", "name": ""}, {"size": "4", "name": ""}])
    );
    assert_eq!(meta["model_spec"], json!({"name": "m", "signature_name": "", "version": "1"}));
}

/// The states of `model`'s versions as `GET /v1/models/{model}` gives them: (version,
/// state, error_code, error_message), or the HTTP status when it is not 200.
fn version_states(daemon: &TestDaemon, model: &str) -> Result<Vec<(String, String, String, String)>, u16> {
    let answer = daemon.get(&format!("/v1/models/{model}"));
    if answer.status != 200 {
        return Err(answer.status);
    }
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Ok(answer.json()["model_version_status"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let status = &s["status"];
            (text(&s["version"]), text(&s["state"]), text(&status["error_code"]), text(&status["error_message"]))
        })
        .collect())
}

fn state(version: &str, state: &str) -> (String, String, String, String) {
    (version.into(), state.into(), "OK".into(), String::new())
}

#[test]
fn a_version_is_loading_until_it_serves() {
    // 1,024 rows through 40 layers of 512 × 512: seconds of warm-up before it serves.
    let daemon = TestDaemon::start(Setup::new().model(ModelFiles::new("slow", 1, onnx::slow_to_load(1024, 40)), 1));
    let mut seen = Vec::new();
    daemon.wait_until("version 1 AVAILABLE", std::time::Duration::from_secs(120), || {
        let states = version_states(&daemon, "slow").expect("the model is known from the start");
        if seen.last() != Some(&states) {
            seen.push(states.clone());
        }
        states == [state("1", "AVAILABLE")]
    });
    assert_eq!(seen, [vec![state("1", "LOADING")], vec![state("1", "AVAILABLE")]]);
}

#[test]
fn a_version_that_failed_is_end_with_its_error() {
    // Pinned and broken: END with the load's error. With `latest`, the broken newest is
    // retired for the next one, which serves: END beside AVAILABLE.
    let setup = Setup::new()
        .model_with(ModelFiles::new("broken", 1, b"not an onnx model".to_vec()), "version = 1\n")
        .model_with(ModelFiles::new("m", 1, family::good(1.0)), "version = \"latest\"\n")
        .files(ModelFiles::new("m", 2, b"not an onnx model either".to_vec()));
    let daemon = TestDaemon::start(setup);
    let ended = |states: &[(String, String, String, String)], version: &str| {
        states.iter().any(|(v, s, code, message)| {
            v == version && s == "END" && code == "UNKNOWN" && message.contains("could not read ONNX model")
        })
    };
    let timeout = std::time::Duration::from_secs(60);
    daemon.wait_until("broken v1 END", timeout, || version_states(&daemon, "broken").is_ok_and(|s| ended(&s, "1")));
    daemon.wait_until("m v1 AVAILABLE beside v2 END", timeout, || {
        version_states(&daemon, "m").is_ok_and(|s| s.len() == 2 && s[1] == state("1", "AVAILABLE") && ended(&s, "2"))
    });
    let v2 = daemon.get("/v1/models/m/versions/2").json();
    assert_eq!(v2["model_version_status"].as_array().unwrap().len(), 1, "{v2}");
    assert_eq!(v2["model_version_status"][0]["state"], "END");
    assert_eq!(daemon.get("/v1/models/m/versions/3").status, 404);
}

#[test]
fn a_version_retired_by_a_rollout_is_end() {
    // Recreate stops v1 before v2 starts; the rollout pauses for want of traffic to judge
    // until promoted by hand.
    let deploy = "version = 1\ndeploy = { strategy = \"recreate\", bake = \"200ms\", check_every = \"100ms\", on_inconclusive = \"pause\", inconclusive_timeout = \"1s\" }\n";
    let setup = Setup::new().model_with(ModelFiles::new("m", 1, family::good(1.0)), deploy).files(ModelFiles::new(
        "m",
        2,
        family::good(2.0),
    ));
    let daemon = TestDaemon::ready(setup);
    assert_eq!(version_states(&daemon, "m"), Ok(vec![state("1", "AVAILABLE")]));
    let (code, out, err) = daemon.cli(&["deploy", "m", "--version", "2", "--no-follow"]);
    assert_eq!(code, 0, "{out}{err}");
    let mut seen = Vec::new();
    daemon.wait_until("v2 AVAILABLE and v1 END", std::time::Duration::from_secs(60), || {
        let states = version_states(&daemon, "m").unwrap();
        if seen.last() != Some(&states) {
            seen.push(states.clone());
        }
        states == [state("2", "AVAILABLE"), state("1", "END")]
    });
    // On the way: v1 draining or ended while v2 loaded; never an unknown state.
    for states in &seen {
        for (_, s, code, _) in states {
            assert!(["LOADING", "AVAILABLE", "UNLOADING", "END"].contains(&s.as_str()) && code == "OK", "{seen:?}");
        }
    }
    daemon.wait_until("the inconclusive pause", std::time::Duration::from_secs(30), || {
        daemon.cli(&["status"]).1.contains("not enough traffic to judge")
    });
    assert_eq!(daemon.cli(&["promote", "m"]).0, 0);
    daemon.wait_until("the rollout's end", std::time::Duration::from_secs(30), || {
        !daemon.cli(&["status"]).1.contains("not enough traffic to judge")
    });
    assert_eq!(version_states(&daemon, "m"), Ok(vec![state("2", "AVAILABLE"), state("1", "END")]));
    assert_eq!(version_states(&daemon, "m").map(|s| s.len()), Ok(2));
    let v1 = daemon.get("/v1/models/m/versions/1").json();
    assert_eq!(
        v1["model_version_status"],
        json!([{"version": "1", "state": "END", "status": {"error_code": "OK", "error_message": ""}}])
    );
    // The retired version takes no request.
    let pinned = daemon.post("/v1/models/m/versions/1:predict", r#"{"instances": [[1, 2, 3, 4]]}"#);
    assert_eq!(pinned.status, 404, "{}", pinned.body);
}
