//! The admin socket: `modeld status` as text and JSON, its permissions, and the guard
//! against a second daemon on the same run directory.

use crate::util::{BIN, ModelFiles, Setup, TestDaemon};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn status(daemon: &TestDaemon, args: &[&str]) -> (bool, String, String) {
    let socket = daemon.path().join("run/admin.sock");
    let out = Command::new(BIN).arg("status").arg("--socket").arg(&socket).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn status_shows_versions_roles_weights_and_workers() {
    let daemon =
        TestDaemon::start(Setup::new().model(ModelFiles::bundled("iris", 1), 2).configure("ghost", "version = 4\n"));
    daemon.wait_until("iris ready", std::time::Duration::from_secs(30), || {
        daemon.health()["models"]["iris"]["versions"]["1"]["state"] == "ready"
    });
    let (ok, text, err) = status(&daemon, &[]);
    assert!(ok, "{err}");
    assert!(text.starts_with("modeld: unhealthy"), "{text}");
    let iris = text.lines().find(|l| l.starts_with("iris")).unwrap_or_else(|| panic!("{text}"));
    let cols: Vec<&str> = iris.split_whitespace().collect();
    assert_eq!(cols, ["iris", "1", "stable", "100%", "ready", "2/2", "0", "strict"], "{text}");
    assert!(text.lines().any(|l| l.starts_with("ghost") && l.contains("version 4 not found")), "{text}");

    let (ok, json, _) = status(&daemon, &["--output", "json"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["health"], "unhealthy");
    let iris = json["models"].as_array().unwrap().iter().find(|m| m["name"] == "iris").unwrap();
    assert_eq!(iris["versions"][0]["weight"], 100);
    assert_eq!(iris["versions"][0]["workers_ready"], 2);

    let mode = std::fs::metadata(daemon.path().join("run/admin.sock")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
}

#[test]
fn the_admin_socket_takes_the_configured_group() {
    use std::os::unix::fs::MetadataExt;
    // The test runs as some user: its primary group is one that surely exists.
    let gid = nix::unistd::getgid();
    let group = nix::unistd::Group::from_gid(gid).unwrap().unwrap();
    let daemon = TestDaemon::ready(
        Setup::new()
            .model(ModelFiles::reference("tabular_mlp"), 1)
            .server(&format!("admin_group = \"{}\"", group.name)),
    );
    let meta = std::fs::metadata(daemon.path().join("run/admin.sock")).unwrap();
    assert_eq!(meta.gid(), gid.as_raw());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(daemon.path().join("modeld.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(
        daemon.path().join("bad.toml"),
        "[server]\nadmin_group = \"no-such-group-xyz\"\n[[model]]\nname = \"m\"\n",
    )
    .unwrap();
    let out =
        Command::new(BIN).args(["config", "check", "--config"]).arg(daemon.path().join("bad.toml")).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("server.admin_group: group 'no-such-group-xyz' does not exist")
    );
}

#[test]
fn status_without_a_daemon_says_so() {
    let out = Command::new(BIN).args(["status", "--socket", "/nonexistent/admin.sock"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not reach modeld at /nonexistent/admin.sock"));
}

#[test]
fn a_second_daemon_on_the_same_run_dir_refuses_to_start() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::reference("tabular_mlp"), 1));
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(daemon.path().join("modeld.toml"))
        .args(["--listen", "127.0.0.1:0", "--run-dir"])
        .arg(daemon.path().join("run"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("another modeld is already running"));
    // The first one is untouched.
    assert_eq!(daemon.get("/ready").status, 200);
}
