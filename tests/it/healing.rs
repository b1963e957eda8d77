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

#[test]
fn a_reload_applies_every_server_key_or_says_it_needs_a_restart() {
    let setup = Setup::new()
        .model_with(ModelFiles::new("m", 1, family::good(1.0)), "version = 1\n")
        .server("max_body = \"64KiB\"");
    let daemon = TestDaemon::ready(setup);
    let config = std::fs::read_to_string(daemon.path().join("modeld.toml")).unwrap();
    let big = format!(
        r#"{{"inputs": [{{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}}], "id": "{}"}}"#,
        "x".repeat(4096)
    );
    assert_eq!(daemon.post("/v2/models/m/infer", &big).status, 200);

    let changed = config.replace("max_body = \"64KiB\"", "max_body = \"2KiB\"\nrequest_timeout = \"7s\"\nmax_inflight_per_model = 64\nworker_start_timeout = \"90s\"\nshutdown_grace = \"3s\"\nheader_read_timeout = \"4s\"\nadmin_socket = \"other.sock\"")
        .replace("log_level = \"debug\"", "log_level = \"warn\"");
    daemon.write_config(&changed);
    let (code, out, err) = daemon.cli(&["reload"]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "server.max_body: 65536 -> 2048: applied to requests from now on",
        "server.request_timeout: 30s -> 7s: applied to requests from now on",
        "server.max_inflight_per_model: 1024 -> 64: applied to every model",
        "server.worker_start_timeout: 300s -> 90s: applied to workers started from now on",
        "server.shutdown_grace: 30s -> 3s: applied to the next stop",
        "server.header_read_timeout: 10s -> 4s: applied to connections from now on",
        "server.log_level: debug -> warn: applied to the daemon now",
        "other.sock: takes effect on restart only (the daemon keeps the old value)",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // Applied at once: the smaller body limit, and the log level (a reload's info line no
    // longer shows).
    let refused = daemon.post("/v2/models/m/infer", &big);
    assert_eq!(refused.status, 413, "{}", refused.body);
    assert!(refused.body.contains("2048-byte limit"), "{}", refused.body);
    assert!(daemon.logs().contains("takes effect on restart only"), "the restart-only key is logged too");
    let lines = daemon.logs().lines().count();
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after: Vec<String> = daemon.logs().lines().skip(lines).map(String::from).collect();
    assert!(after.iter().all(|l| !l.contains("SIGHUP: config applied")), "info logged at warn: {after:?}");

    // A config that does not parse is refused, and the daemon's own log says so.
    daemon.write_config("[server\nbroken");
    let (code, _, err) = daemon.cli(&["reload"]);
    assert_ne!(code, 0);
    assert!(err.contains("not valid TOML"), "{err}");
    assert!(daemon.logs().contains("reload: refusing the new config"), "{}", daemon.logs());
    assert_eq!(daemon.post("/v2/models/m/infer", &big).status, 413, "the running config stays");
}
