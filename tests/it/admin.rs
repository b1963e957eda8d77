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

/// The daemon checks who connects (SO_PEERCRED), not only the socket's mode: with the mode
/// loosened, `nobody` is still refused; a mutating command is logged with who sent it; an
/// endless request line is cut off.
#[test]
fn the_admin_socket_admits_by_peer_credentials_and_bounds_its_lines() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::bundled("iris", 1), 1));
    let socket = daemon.path().join("run/admin.sock");

    let (code, out, err) = daemon.cli(&["pause", "iris"]);
    assert_ne!(code, 0, "no rollout to pause: {out}");
    assert!(!err.is_empty());
    let me = nix::unistd::geteuid().as_raw();
    // The log line reaches the test's reader thread a moment after the CLI returns.
    daemon.wait_until("the command logged with its sender", std::time::Duration::from_secs(5), || {
        daemon
            .logs()
            .lines()
            .any(|l| l.contains("admin command") && l.contains(&format!("uid={me}")) && l.contains("Pause"))
    });

    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    std::io::Write::write_all(&mut stream, &vec![b'a'; 70_000]).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.contains("admin request over 65536 bytes"), "{answer}");

    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping the `nobody` half: running the CLI as another user needs root");
        return;
    }
    // Let `nobody` reach and open the socket, so that only the credential check refuses it.
    for dir in [daemon.path().to_path_buf(), daemon.path().join("run")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("a nobody user");
    // The checkout may lie where only its owner may enter (a 0700 home, `mktemp -d`):
    // `nobody` runs a copy of the binary from a directory it can enter.
    let (_copy, bin) = binary_anyone_can_run();
    use std::os::unix::process::CommandExt;
    let out = Command::new(&bin)
        .args(["status", "--socket"])
        .arg(&socket)
        .uid(nobody.uid.as_raw())
        .gid(nobody.gid.as_raw())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("permission denied: user nobody") && err.contains("is not root"), "{err}");
    assert!(daemon.logs().contains("admin connection refused"), "{}", daemon.logs());
}

/// A copy of the binary in a new directory of mode 0755 (and the directory, kept alive
/// while the copy is used).
fn binary_anyone_can_run() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new().prefix("modeld-bin").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("modeld");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}
