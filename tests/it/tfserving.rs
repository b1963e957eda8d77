//! TF Serving's REST API, as its clients call it: row and columnar `:predict`,
//! `:classify`, `:regress`, model status and metadata, and its error form.

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
