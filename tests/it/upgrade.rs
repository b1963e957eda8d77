//! `modeld upgrade`: the daemon hands over to a new modeld on the same sockets. The new one
//! checks the config and loads every live model before the old one steps aside, so no
//! connection is refused and no request waits for a model to load; a binary that refuses
//! the config leaves the running daemon serving.

use crate::activation::Clients;
use crate::onnx::family;
use crate::rollouts::{HEALTH, deploy_line, history, stable_version};
use crate::util::{ModelFiles, Setup, TestDaemon};
use std::time::{Duration, Instant};

/// The daemon that took over, stopped when the test ends (it is no child of the test's).
struct Successor(i32);

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !gone(self.0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether a process has exited (a zombie counts: its parent is no longer the test).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// The `socket:[inode]` names of the TCP sockets listening on `port`.
fn listening_inodes(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f.get(3) == Some(&"0A") {
                found.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    found
}

#[test]
fn an_upgrade_hands_over_with_no_connection_refused_and_the_models_loaded_first() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::bundled("iris", 2), 2));
    let old = daemon.pid();
    let clients = Clients::start(daemon.addr, 4);
    std::thread::sleep(Duration::from_millis(500));
    let began = Instant::now();
    let (code, out, err) = daemon.cli(&["upgrade"]);
    let answered = began.elapsed();
    assert_eq!(code, 0, "{out}{err}\n{}", daemon.logs());
    let new: i32 = out.split("PID ").nth(1).and_then(|p| p.split(' ').next()).and_then(|p| p.parse().ok()).unwrap();
    let _successor = Successor(new);
    daemon.wait_until("the old daemon to exit", Duration::from_secs(30), || gone(old));
    let old_gone = began.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let shots = clients.stop();
    let refused = shots.iter().filter(|s| s.refused).count();
    let failed: Vec<u16> = shots.iter().filter(|s| !s.refused && s.status != 200).map(|s| s.status).collect();
    let slowest = shots.iter().map(|s| s.took).max().unwrap();
    eprintln!(
        "FIGURE upgrade hand-over: {} requests, {refused} refused, {} failed; `modeld upgrade` answered after {:.2} s \
         (the new daemon's models ready), the old daemon gone after {:.2} s; slowest request {:.3} s",
        shots.len(),
        failed.len(),
        answered.as_secs_f64(),
        old_gone.as_secs_f64(),
        slowest.as_secs_f64()
    );
    assert_eq!(refused, 0, "connections refused during the upgrade");
    assert!(failed.is_empty(), "requests failed during the upgrade: {failed:?}\n{}", daemon.logs());
    assert!(shots.len() > 50, "only {} requests", shots.len());
    // The new daemon answers on the same admin socket, with workers of its own.
    let (code, status, _) = daemon.cli(&["status"]);
    assert_eq!(code, 0, "{status}");
    let sockets: Vec<String> = std::fs::read_dir(daemon.path().join("run/workers"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".sock"))
        .collect();
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    assert!(sockets.iter().all(|n| n.starts_with(&format!("{new}."))), "{sockets:?}");
    // Its workers hold none of the sockets it was passed (they are close-on-exec).
    let passed = listening_inodes(daemon.addr.port());
    assert!(!passed.is_empty(), "no listening socket found for {}", daemon.addr);
    let workers = crate::util::children_of(new);
    assert_eq!(workers.len(), 2, "{workers:?}");
    for worker in workers {
        let held: Vec<String> = std::fs::read_dir(format!("/proc/{worker}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|l| l.to_string_lossy().into_owned())
            .collect();
        assert!(passed.iter().all(|p| !held.contains(p)), "worker {worker} holds {passed:?}: {held:?}");
    }
    // It took over only once its models were ready.
    let logs = daemon.logs();
    let ready = logs.rfind("start-up done").unwrap();
    let took_over = logs.find("upgrade: this modeld took over").unwrap();
    assert!(ready < took_over, "{logs}");
}

#[test]
fn a_binary_that_refuses_the_config_leaves_the_daemon_serving_and_a_rollout_is_rolled_back_at_an_upgrade() {
    let setup = Setup::new()
        .server_section(HEALTH)
        .model(ModelFiles::bundled("iris", 2), 1)
        .model_with(
            ModelFiles::new("m", 1, family::good(1.0)),
            &deploy_line("strategy = \"canary\", steps = [50, 100], bake = \"60s\""),
        )
        .files(ModelFiles::new("m", 2, family::good(1.0)));
    let daemon = TestDaemon::ready(setup);
    let broken = daemon.path().join("broken-modeld");
    std::fs::write(&broken, "#!/bin/sh\necho 'modeld (a broken build): cannot read any config' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let clients = Clients::start(daemon.addr, 2);
    let (code, out, err) = daemon.cli(&["deploy", "m", "--version", "2", "--no-follow"]);
    assert_eq!(code, 0, "{out}{err}");

    let (code, out, err) = daemon.cli(&["upgrade", "--binary", broken.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    for said in ["refuses", "cannot read any config", "This modeld keeps serving"] {
        assert!(err.contains(said), "no '{said}' in: {err}");
    }
    assert!(!gone(daemon.pid()), "the daemon is gone");
    // Refused before anything changed: the rollout in progress goes on.
    assert!(history(&daemon).last().unwrap()["outcome"].is_null(), "{:?}", history(&daemon));

    // The real upgrade rolls it back first: the new daemon serves the live version.
    let (code, out, err) = daemon.cli(&["upgrade"]);
    assert_eq!(code, 0, "{out}{err}\n{}", daemon.logs());
    let new: i32 = out.split("PID ").nth(1).and_then(|p| p.split(' ').next()).and_then(|p| p.parse().ok()).unwrap();
    let _successor = Successor(new);
    daemon.wait_until("the old daemon to exit", Duration::from_secs(30), || gone(daemon.pid()));
    let last = history(&daemon).pop().unwrap();
    assert!(!last["outcome"].is_null() && last["outcome"] != "promoted", "{last}");
    assert_eq!(stable_version(&daemon), 1);
    let shots = clients.stop();
    let failed = shots.iter().filter(|s| s.refused || s.status != 200).count();
    assert_eq!(failed, 0, "of {} requests\n{}", shots.len(), daemon.logs());
    eprintln!(
        "FIGURE upgrade with a rollout in progress: {} requests, 0 failed; the rollout ended {}",
        shots.len(),
        last["outcome"]
    );
}

#[test]
fn a_new_daemon_that_cannot_load_a_live_model_declines_and_the_old_one_serves() {
    let daemon = TestDaemon::ready(Setup::new().model(ModelFiles::bundled("iris", 2), 1));
    // The live version's file broke on disk after the running daemon loaded it.
    let file = daemon.path().join("models/iris/2/model.onnx");
    std::fs::write(&file, b"not an onnx model").unwrap();
    let clients = Clients::start(daemon.addr, 2);
    let (code, out, err) = daemon.cli(&["upgrade"]);
    assert_eq!(code, 1, "{out}{err}\n{}", daemon.logs());
    for said in ["could not serve every model", "iris v2", "This modeld keeps serving"] {
        assert!(err.contains(said), "no '{said}' in: {err}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(!gone(daemon.pid()), "the daemon is gone");
    let shots = clients.stop();
    let failed = shots.iter().filter(|s| s.refused || s.status != 200).count();
    assert_eq!(failed, 0, "of {} requests\n{}", shots.len(), daemon.logs());
    assert_eq!(daemon.cli(&["status"]).0, 0, "the admin socket is still the old daemon's");
    assert!(daemon.path().join("run/http.addr").exists(), "the declining daemon removed the address file");
}
