//! `modeld config check` and `modeld serve` on broken configs: every problem named with
//! its key and line, a non-zero exit, and nothing started.

use crate::util::BIN;
use std::process::Command;

fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("modeld.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

const BROKEN: &str = r#"[server]
listen = "localhost"
max_body = "lots"

[[model]]
name = "a"
workers = 0

[[model]]
name = "b/c"
version = 0
threads = "many"
"#;

#[test]
fn config_check_names_every_broken_key() {
    let (_dir, path) = write(BROKEN);
    let out = Command::new(BIN).args(["config", "check", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "modeld.toml:2: error: server.listen: 'localhost' is not an IP:PORT address",
        "modeld.toml:3: error: server.max_body: 'lots'",
        "modeld.toml:7: error: model[0].workers: must be between 1 and 256, got 0",
        "modeld.toml:12: error: model[1]: invalid type: string \"many\", expected i64",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(text.contains("4 errors found"), "{text}");
}

#[test]
fn serve_refuses_an_invalid_config_with_the_same_report() {
    let (dir, path) = write(BROKEN);
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--listen", "127.0.0.1:0", "--run-dir"])
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("model[0].workers: must be between 1 and 256, got 0"), "{text}");
    assert!(!dir.path().join("run").exists(), "nothing may start on an invalid config");
}

#[test]
fn config_check_accepts_the_bundled_config() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/modeld.toml");
    let out = Command::new(BIN).args(["config", "check", "--config"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 models)"));
}

#[test]
fn every_example_config_is_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new(BIN).args(["config", "check", "--config"]).arg(&path).output().unwrap();
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        checked += 1;
    }
    assert_eq!(checked, 5, "one example per strategy");
}

#[test]
fn config_check_reports_syntax_errors_and_unknown_keys() {
    let (_dir, path) = write("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n[[model]]\nname = \"m\"\n");
    let out = Command::new(BIN).args(["config", "check", "--config"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(text.contains(":3: error:") && text.contains("unknown field `listen_port`"), "{text}");

    let (_dir, path) = write("[server\n");
    let out = Command::new(BIN).args(["config", "check", "--config"]).arg(&path).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid TOML"));

    let out = Command::new(BIN).args(["config", "check", "--config", "/nonexistent/modeld.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not read config /nonexistent/modeld.toml"));
}

#[test]
fn a_worker_user_that_does_not_exist_is_an_error() {
    let (_dir, path) = write("[server]\nworker_user = \"no-such-user-here\"\n\n[[model]]\nname = \"a\"\n");
    let out = Command::new(BIN).args(["config", "check", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("modeld.toml:2: error: server.worker_user: user 'no-such-user-here' does not exist"),
        "{text}"
    );
}
