//! Self-healing and start-up edges: a corrupt state file, what an idle daemon says, and
//! what each reload applies.

use crate::onnx::family;
use crate::util::{ModelFiles, Setup, TestDaemon};

#[test]
fn a_corrupt_state_file_is_set_aside_and_the_config_serves() {
    let setup = Setup::new().model_with(ModelFiles::new("m", 1, family::good(1.0)), "version = 1\n");
    let daemon = TestDaemon::ready(setup);
    std::fs::write(daemon.path().join("state/state.json"), b"{\"models\": {\"m\": {\"live\": \"two\"").unwrap();
    let daemon = daemon.restart();
    daemon.wait_ready();
    let answer = daemon.post(
        "/v2/models/m/infer",
        r#"{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}"#,
    );
    assert_eq!((answer.status, answer.version), (200, Some(1)), "{}", answer.body);
    let logs = daemon.logs();
    assert!(logs.contains("state.json is not valid") && logs.contains("moved it to"), "{logs}");
    let aside = std::fs::read_dir(daemon.path().join("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("state.json.corrupt-"));
    assert!(aside, "the corrupt file was not kept for a post-mortem");
    // And a state the daemon can read again: a second restart needs no setting aside.
    let daemon = daemon.restart();
    daemon.wait_ready();
    assert!(!daemon.logs().contains("is not valid"), "{}", daemon.logs());
}
