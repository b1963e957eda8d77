//! Least privilege for workers: no_new_privs, a minimal environment, a sockets directory
//! only the supervisor's user enters, a worker that serves only its supervisor, and model
//! files confined to the repository.

use crate::util::{ModelFiles, Setup, TestDaemon};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn iris() -> TestDaemon {
    TestDaemon::ready(Setup::new().model(ModelFiles::bundled("iris", 1), 1))
}

#[test]
fn workers_run_without_new_privileges_and_with_a_minimal_environment() {
    let daemon = iris();
    let workers = daemon.worker_pids();
    assert!(!workers.is_empty());
    for pid in workers {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "worker {pid}:\n{status}");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let keys: Vec<String> = environ
            .split(|b| *b == 0)
            .filter(|kv| !kv.is_empty())
            .map(|kv| String::from_utf8_lossy(kv).split('=').next().unwrap_or_default().to_string())
            .collect();
        let allowed = ["PATH", "LANG", "LC_ALL", "TZ", "RUST_BACKTRACE", "JOURNAL_STREAM", "MODELD_LOG"];
        // The test runner's environment (CARGO_*, HOME, ...) reached the daemon, not its workers.
        assert!(keys.iter().all(|k| allowed.contains(&k.as_str())), "worker {pid} environment: {keys:?}");
        assert!(keys.contains(&"MODELD_LOG".to_string()));
    }
    let mode = std::fs::metadata(daemon.path().join("run/workers")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "the sockets directory is the supervisor's alone");
}

/// A process other than the supervisor (here: the test, the same user) is refused.
#[test]
fn a_worker_socket_refuses_a_connection_not_from_its_supervisor() {
    let daemon = iris();
    let socket = std::fs::read_dir(daemon.path().join("run/workers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "sock"))
        .expect("a worker socket");
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let hello = modeld::wire::Frame::Hello { protocol: modeld::wire::PROTOCOL_VERSION }.encode();
    let _ = stream.write_all(&hello);
    let mut answer = Vec::new();
    // Closed with no answer: an end of stream, or a reset (our Hello was left unread).
    let read = stream.read_to_end(&mut answer);
    let closed = match &read {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed && answer.is_empty(), "closed without a word: {read:?} {answer:?}");
    daemon.wait_until("the refusal logged", Duration::from_secs(5), || {
        daemon.logs().contains("refused a connection on the worker socket")
            && daemon.logs().contains("is not the supervisor")
    });
    // The supervisor's own connection still serves.
    let body = r#"{"model": "iris", "features": [5.1, 3.5, 1.4, 0.2]}"#;
    assert_eq!(daemon.post("/predict", body).status, 200);
}

/// A model file that is a symlink leading out of the repository is not loaded.
#[test]
fn a_symlink_out_of_the_repository_is_refused() {
    let daemon = TestDaemon::start(Setup::new().model(ModelFiles::bundled("iris", 1), 1).before_start(|dir| {
        let outside = dir.join("outside.onnx");
        let inside = dir.join("models/iris/1/model.onnx");
        std::fs::rename(&inside, &outside).unwrap();
        std::os::unix::fs::symlink(&outside, &inside).unwrap();
    }));
    daemon.wait_until("iris refused", Duration::from_secs(20), || {
        daemon.health().to_string().contains("leads outside the model repository")
    });
    assert_ne!(daemon.post("/predict", r#"{"model": "iris", "features": [1, 2, 3, 4]}"#).status, 200);
}
