//! Least privilege for workers: no_new_privs, a minimal environment, a sockets directory
//! only the supervisor's user enters, a worker that serves only its supervisor, and model
//! files confined to the repository.

use crate::load::{Load, Pattern};
use crate::onnx::family;
use crate::rollouts;
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
        // The variables the supervisor passes on (where CUDA's and ONNX Runtime's libraries
        // are among them: cargo sets LD_LIBRARY_PATH), and the log format it sets.
        let allowed: Vec<&str> =
            modeld::supervisor::process::WORKER_ENV.iter().copied().chain(["MODELD_LOG"]).collect();
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

/// Running the test as root is what a root supervisor needs; as another user these are
/// skipped with a word.
fn root_or_skip(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("skipping {test}: a supervisor hands workers to another user only when it runs as root");
    }
    root
}

/// The ids a process runs with, as /proc says: "Uid:" and "Gid:" (real, effective,
/// saved, filesystem) and "Groups:".
fn ids(pid: i32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    (field("Uid:").unwrap(), field("Gid:").unwrap(), field("Groups:").unwrap_or_default())
}

/// A supervisor started as root hands its workers (and the signature reading of a
/// deploy) to `worker_user`, while their sockets stay in its own 0700 directory.
#[test]
fn workers_of_a_root_supervisor_run_as_the_worker_user() {
    if !root_or_skip("workers_of_a_root_supervisor_run_as_the_worker_user") {
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("a nobody user");
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    let setup = Setup::new()
        .server("worker_user = \"nobody\"")
        .server_section(rollouts::HEALTH)
        .model_with(
            ModelFiles::new("m", 1, family::good(1.0)),
            &rollouts::deploy_line("strategy = \"blue_green\", bake = \"1s\""),
        )
        .files(ModelFiles::new("m", 2, family::good(1.05)))
        // The repository must be readable by the worker user.
        .before_start(|dir| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap());
    let mut daemon = TestDaemon::ready(setup);
    assert!(daemon.logs().contains("workers run as an unprivileged user"), "{}", daemon.logs());
    let workers = daemon.worker_pids();
    assert_eq!(workers.len(), 2);
    for pid in &workers {
        let (uids, gids, groups) = ids(*pid);
        assert_eq!(uids, vec![uid.to_string(); 4].join(" "), "worker {pid} uids");
        assert_eq!(gids, vec![gid.to_string(); 4].join(" "), "worker {pid} gids");
        assert!(groups.split_whitespace().all(|g| g == gid.to_string()), "worker {pid} kept root's groups: {groups}");
    }
    let sockets = daemon.path().join("run/workers");
    let meta = std::fs::metadata(&sockets).unwrap();
    assert_eq!((meta.permissions().mode() & 0o777, std::os::unix::fs::MetadataExt::uid(&meta)), (0o700, 0));

    // A deploy under load reads v2's signature as the worker user too, and its workers
    // are nobody's; every request is answered right.
    let load = Load::start(&daemon, "m", Pattern::default());
    let (code, out, _) = rollouts::deploy(&daemon, &[]);
    let report = load.stop();
    assert_eq!(code, 0, "{out}\n{}", daemon.logs());
    report.assert_failures_only_from(None);
    // (v1's workers may still be kept for a quick rollback.)
    let v2: Vec<i32> = daemon.worker_pids().into_iter().filter(|p| !workers.contains(p)).collect();
    assert_eq!(v2.len(), 2, "v2's workers beside {workers:?}");
    assert!(v2.iter().all(|p| ids(*p).0 == vec![uid.to_string(); 4].join(" ")));

    // The sockets a worker could not remove (it is not the directory's owner) are removed
    // by the supervisor.
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(20)).success());
    let left: Vec<_> = std::fs::read_dir(&sockets).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "sockets left behind: {left:?}");
}

/// A repository the worker user cannot read fails the version with the reason, instead of
/// quietly loading the model as root.
#[test]
fn a_model_the_worker_user_cannot_read_fails_with_the_reason() {
    if !root_or_skip("a_model_the_worker_user_cannot_read_fails_with_the_reason") {
        return;
    }
    // The test's directory is root's alone: nobody cannot enter it.
    let daemon = TestDaemon::start(
        Setup::new()
            .server("worker_user = \"nobody\"")
            .model(ModelFiles::bundled("iris", 1), 1)
            .before_start(|dir| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap()),
    );
    daemon.wait_until("iris failed", Duration::from_secs(20), || {
        let health = daemon.health().to_string();
        health.contains("Permission denied") || health.contains("permission denied")
    });
    let health = daemon.health().to_string();
    assert!(health.contains("models/iris/1"), "the reason names the path: {health}");
    assert_ne!(daemon.post("/predict", r#"{"model": "iris", "features": [1, 2, 3, 4]}"#).status, 200);
}
