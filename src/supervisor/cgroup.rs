//! Per-worker cgroups (v2), when the daemon's own cgroup is delegated to it (systemd
//! `Delegate=yes`): the kernel then enforces each worker's `memory.max` and counts its OOM
//! kills in `memory.events`.
//!
//! cgroup v2 lets a cgroup either hold processes or delegate controllers to children, not
//! both, so the supervisor first moves itself into a `supervisor` child, then enables the
//! memory controller for the children and creates one `worker-<model>-<version>-<pool>-<slot>`
//! per worker. Anything missing (no cgroup2, not writable, no memory controller) means no
//! cgroups, and workers fall back to `RLIMIT_DATA` ([`crate::worker::memory`]).

use std::path::{Path, PathBuf};

/// The daemon's delegated cgroup.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
}

impl Cgroups {
    /// Sets up delegation under this process's own cgroup, if the system allows it.
    pub fn detect() -> Option<Cgroups> {
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mut dir = Path::new("/sys/fs/cgroup").join(unified_path(&own)?.trim_start_matches('/'));
        // A daemon handed over to (`modeld upgrade`) starts in its predecessor's leaf: the
        // delegated cgroup is the one above it.
        if dir.file_name().is_some_and(|n| n == "supervisor") {
            dir.pop();
        }
        match Cgroups::delegate(&dir, std::process::id()) {
            Ok(cgroups) => {
                tracing::info!(cgroup = %dir.display(), "worker memory limits enforced with cgroup v2");
                Some(cgroups)
            }
            Err(e) => {
                tracing::info!("no delegated cgroup v2 ({e}); worker memory limits use RLIMIT_DATA");
                None
            }
        }
    }

    /// Moves `pid` into `<dir>/supervisor` and enables the memory controller for the
    /// children of `dir`.
    pub fn delegate(dir: &Path, pid: u32) -> std::io::Result<Cgroups> {
        let controllers = std::fs::read_to_string(dir.join("cgroup.controllers"))?;
        if !controllers.split_whitespace().any(|c| c == "memory") {
            return Err(std::io::Error::other(format!("{} offers no memory controller", dir.display())));
        }
        let supervisor = dir.join("supervisor");
        create(&supervisor)?;
        std::fs::write(supervisor.join("cgroup.procs"), pid.to_string())?;
        std::fs::write(dir.join("cgroup.subtree_control"), "+memory")?;
        Ok(Cgroups { root: dir.to_path_buf() })
    }

    /// Removes a worker's cgroup once its process is gone (an empty cgroup only).
    pub fn remove_worker(&self, name: &str) {
        let _ = std::fs::remove_dir(self.root.join(format!("worker-{name}")));
    }

    /// Creates (or reuses) a worker's cgroup with `memory.max = limit` and no swap.
    pub fn worker(&self, name: &str, limit: u64) -> std::io::Result<PathBuf> {
        let dir = self.root.join(format!("worker-{name}"));
        create(&dir)?;
        std::fs::write(dir.join("memory.max"), limit.to_string())?;
        // Without swap limited too, a worker would swap instead of dying at its limit.
        if let Err(e) = std::fs::write(dir.join("memory.swap.max"), "0") {
            tracing::debug!("could not set memory.swap.max in {}: {e}", dir.display());
        }
        Ok(dir)
    }
}

fn create(dir: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// The cgroup v2 path in `/proc/self/cgroup` (the `0::` line).
pub fn unified_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup.lines().find_map(|l| l.strip_prefix("0::")).filter(|p| !p.is_empty())
}

/// The `oom_kill` count in a cgroup's `memory.events`.
pub fn oom_kills(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("memory.events"))
        .ok()
        .and_then(|events| events.lines().find_map(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse().ok())))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_hierarchy_line() {
        assert_eq!(unified_path("0::/system.slice/modeld.service\n"), Some("/system.slice/modeld.service"));
        assert_eq!(unified_path("4:memory:/x\n0::/\n"), Some("/"));
        assert_eq!(unified_path("4:memory:/x\n"), None);
    }

    #[test]
    fn delegation_and_worker_cgroups_write_the_expected_files() {
        // A directory shaped like a delegated cgroup (the kernel's files are plain files here).
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        let cgroups = Cgroups::delegate(root, 4242).unwrap();
        assert_eq!(std::fs::read_to_string(root.join("supervisor/cgroup.procs")).unwrap(), "4242");
        assert_eq!(std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap(), "+memory");
        let worker = cgroups.worker("iris-1-0", 512 << 20).unwrap();
        assert_eq!(std::fs::read_to_string(worker.join("memory.max")).unwrap(), "536870912");
        assert_eq!(std::fs::read_to_string(worker.join("memory.swap.max")).unwrap(), "0");
        std::fs::write(worker.join("memory.events"), "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
        assert_eq!(oom_kills(&worker), 1);
    }

    #[test]
    fn no_memory_controller_means_no_cgroups() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("cgroup.controllers"), "cpu pids\n").unwrap();
        assert!(Cgroups::delegate(tmp.path(), 1).is_err());
    }
}
