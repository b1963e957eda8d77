//! `modeld upgrade`: handing the daemon over to a new modeld without refusing a connection
//! or making a request wait for a model to load, as nginx's binary upgrade does.
//!
//! The old daemon starts the new binary with its own arguments and passes it its listening
//! sockets (HTTP and admin) and one end of a link ([`super::activation`]'s
//! `MODELD_HANDOVER`). The new daemon loads the config and every model's live version on
//! its own workers, without serving yet, and says `ready` on the link once every model has
//! settled. Only then does the old one step aside: under systemd it makes the new one the
//! service's main process (`MAINPID=`), tells it `main` — from which the new one serves on
//! the shared sockets — and stops as on SIGTERM: it stops accepting, finishes what is in
//! flight, stops its workers and exits, leaving the sockets, which the new daemon holds,
//! in place. No request ever reaches a daemon that is not ready.
//!
//! If the new binary refuses the config, fails to start, cannot start a model's live
//! version, or is not ready within `worker_start_timeout`, the old daemon keeps serving
//! and says why; the new one stops (leaving the shared sockets and files in place). Rollouts in progress are rolled back first (the new daemon serves the live
//! versions), and no rollout starts while a hand-over is under way.

use super::activation::HANDOVER_VAR;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// What the new daemon says on the link when its models are ready.
const READY: &str = "ready";
/// What the old daemon answers once the new one is systemd's main process.
const MAIN: &str = "main";
/// What the new daemon says, and why, when it cannot serve every model the old one serves.
const FAILED: &str = "failed ";

/// How long a new daemon that declined gets to stop by itself.
const DECLINED_STOP: Duration = Duration::from_secs(30);

/// Kills the process it names when dropped (unless emptied first).
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The listening sockets the daemon serves on, passed to its successor.
#[derive(Debug, Clone, Copy)]
pub struct Sockets {
    pub http: RawFd,
    pub admin: RawFd,
}

/// A new daemon that said it is ready.
pub struct Successor {
    pub pid: u32,
    /// From its start to its word that it is ready.
    pub ready_after: Duration,
    link: UnixStream,
}

/// Starts `binary` with this daemon's arguments and sockets, and waits until it is ready
/// (its models loaded), it exits, or `timeout` passes (it is then killed).
pub async fn start_successor(binary: &Path, sockets: Sockets, timeout: Duration) -> Result<Successor, String> {
    let (mine, theirs) = socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
        .map_err(|e| format!("could not make the link to the new modeld: {e}"))?;
    let passed = [sockets.http, sockets.admin, theirs.as_raw_fd()];
    let mut command = tokio::process::Command::new(binary);
    command
        .args(std::env::args_os().skip(1))
        .env(HANDOVER_VAR, format!("http:{},admin:{},link:{}", passed[0], passed[1], passed[2]))
        // systemd's watchdog names this process; the new one's pings count once it is main.
        .env_remove("WATCHDOG_PID")
        .kill_on_drop(false);
    // SAFETY: between fork and exec the closure only calls fcntl(2), which is
    // async-signal-safe, on descriptors this process holds open until the spawn returns.
    unsafe {
        command.pre_exec(move || {
            for fd in passed {
                fcntl(BorrowedFd::borrow_raw(fd), FcntlArg::F_SETFD(FdFlag::empty()))?;
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("could not start the new modeld {}: {e}", binary.display()))?;
    drop(theirs);
    let pid = child.id().unwrap_or_default();
    // Abandoned (this daemon told to stop meanwhile), the new one is killed with this future.
    let mut abandoned = KillOnDrop(Some(pid));
    tracing::info!(pid, binary = %binary.display(), "upgrade: the new modeld is starting; this one serves meanwhile");
    let mut link = BufReader::new(into_tokio(mine)?);
    let mut said = String::new();
    let outcome = tokio::select! {
        read = link.read_line(&mut said) => match read {
            Ok(_) if said.trim() == READY => Ok(()),
            Ok(_) if said.starts_with(FAILED) => Err(NotReady::Declined(said[FAILED.len()..].trim().to_string())),
            _ => Err(NotReady::Failed(match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
                Ok(status) => exited(pid, status),
                Err(_) => format!("the new modeld (PID {pid}) closed its link before it was ready"),
            })),
        },
        status = child.wait() => Err(NotReady::Failed(exited(pid, status))),
        _ = tokio::time::sleep(timeout) => {
            Err(NotReady::Failed(format!("the new modeld (PID {pid}) was not ready within {timeout:?}")))
        }
    };
    abandoned.0 = None;
    match outcome {
        Ok(()) => Ok(Successor { pid, ready_after: started.elapsed(), link: link.into_inner() }),
        Err(NotReady::Declined(why)) => {
            // It stops by itself, leaving the shared sockets alone: give it the time to.
            if tokio::time::timeout(DECLINED_STOP, child.wait()).await.is_err() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            Err(format!("the new modeld (PID {pid}) could not serve every model: {why}. This modeld keeps serving"))
        }
        Err(NotReady::Failed(why)) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            Err(format!("{why}; its messages are in the daemon's log. This modeld keeps serving"))
        }
    }
}

/// Why a new daemon did not become ready.
enum NotReady {
    /// It said why it cannot serve every model, and stops by itself.
    Declined(String),
    /// It exited, went silent or ran out of time: it is killed.
    Failed(String),
}

fn exited(pid: u32, status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => format!("the new modeld (PID {pid}) exited ({status}) before it was ready"),
        Err(e) => format!("lost the new modeld (PID {pid}): {e}"),
    }
}

/// Whether `binary`, named by the caller `uid` rather than taken from this daemon's own
/// path, may be run as this daemon: only root or the daemon's own user may name one (the
/// admin group may upgrade, not choose what runs), and it must be a file that only root or
/// the daemon's user can change.
pub fn vet_binary(binary: &Path, uid: Option<u32>) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let own = nix::unistd::geteuid().as_raw();
    if !uid.is_some_and(|u| u == 0 || u == own) {
        return Err(format!(
            "--binary {}: only root or the daemon's user (uid {own}) may name the binary",
            binary.display()
        ));
    }
    let meta = std::fs::metadata(binary).map_err(|e| format!("--binary {}: {e}", binary.display()))?;
    if !meta.is_file() || meta.mode() & 0o111 == 0 {
        return Err(format!("--binary {}: not an executable file", binary.display()));
    }
    if !(meta.uid() == 0 || meta.uid() == own) || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "--binary {}: owned by uid {} with mode {:o}; it must belong to root or uid {own} and be writable by no one else",
            binary.display(),
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// The new binary's verdict on the config in force, before anything of it starts.
pub async fn check_config(binary: &Path, config: &Path) -> Result<(), String> {
    let checked = tokio::process::Command::new(binary)
        .args(["config", "check", "--config"])
        .arg(config)
        .output()
        .await
        .map_err(|e| format!("could not run the new modeld {}: {e}", binary.display()))?;
    if checked.status.success() {
        return Ok(());
    }
    let said = [checked.stderr, checked.stdout].map(|o| String::from_utf8_lossy(&o).trim().to_string());
    Err(format!(
        "the new modeld {} refuses {} ({}):\n{}\nThis modeld keeps serving",
        binary.display(),
        config.display(),
        checked.status,
        said.iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join("\n")
    ))
}

impl Successor {
    /// Tells the new daemon it is the main process now (after `MAINPID=` under systemd).
    pub async fn crown(mut self) {
        if let Err(e) = self.link.write_all(format!("{MAIN}\n").as_bytes()).await {
            tracing::warn!("upgrade: could not tell the new modeld (PID {}) it took over: {e}", self.pid);
        }
    }
}

/// The new daemon's side: the daemon handing over to it.
pub struct Predecessor {
    link: UnixStream,
}

impl Predecessor {
    pub fn new(link: std::os::unix::net::UnixStream) -> Result<Predecessor, String> {
        Ok(Predecessor { link: into_tokio(link.into())? })
    }

    /// Says this daemon cannot serve every model, and why: the old one keeps serving.
    pub async fn decline(mut self, why: &str) {
        let line = format!("{FAILED}{}\n", why.replace('\n', " "));
        if let Err(e) = self.link.write_all(line.as_bytes()).await {
            tracing::warn!("upgrade: could not tell the old modeld why this one declines: {e}");
        }
    }

    /// Says this daemon is ready, then waits until the old one made it the main process:
    /// true once it did; false when it went away without a word (it was stopped, or
    /// abandoned the upgrade).
    pub async fn ready_then_main(self) -> bool {
        let mut link = BufReader::new(self.link);
        if let Err(e) = link.get_mut().write_all(format!("{READY}\n").as_bytes()).await {
            tracing::warn!("upgrade: could not tell the old modeld this one is ready: {e}");
            return false;
        }
        let mut said = String::new();
        let main = link.read_line(&mut said).await.is_ok() && said.trim() == MAIN;
        if main {
            tracing::info!("upgrade: this modeld took over");
        }
        main
    }
}

fn into_tokio(fd: OwnedFd) -> Result<UnixStream, String> {
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(true).map_err(|e| format!("the upgrade link: {e}"))?;
    UnixStream::from_std(stream).map_err(|e| format!("the upgrade link: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_named_binary_must_come_from_root_or_the_daemon_and_be_writable_by_no_one_else() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("modeld");
        std::fs::write(&binary, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let own = nix::unistd::geteuid().as_raw();
        assert_eq!(vet_binary(&binary, Some(own)), Ok(()));
        let other = own.wrapping_add(4242).max(1);
        if other != 0 {
            assert!(vet_binary(&binary, Some(other)).unwrap_err().contains("only root or the daemon's user"));
        }
        assert!(vet_binary(&binary, None).is_err(), "an unknown caller");
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(vet_binary(&binary, Some(own)).unwrap_err().contains("writable by no one else"));
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(vet_binary(&binary, Some(own)).unwrap_err().contains("not an executable file"));
    }
}
