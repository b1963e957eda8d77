//! Versions that left a model's routing table, remembered so their end can be told: TF
//! Serving's model status lists a version it unloaded as `END` (with the error that ended
//! it, if one did), not as unknown, and `UNLOADING` while it still drains.
//!
//! Filled by [`super::ModelRoute::swap`], the one place tables change; read by the front.
//! Only the last [`KEPT`] versions are kept, as TF Serving keeps a bounded log of states.

use super::pool::{Phase, Pool};
use super::table::RoutingTable;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

/// How many retired versions a model remembers.
pub const KEPT: usize = 16;

/// One version taken out of a routing table.
#[derive(Debug, Clone)]
pub struct Retired {
    pub version: u64,
    /// The pool while something (the supervisor stopping it, a rollout) still holds it.
    pool: Weak<Pool>,
    /// Why it failed, when it left the table failed (the pool's reason at that moment).
    failure: Option<String>,
}

/// Where a retired version is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A worker of it still runs (draining, being stopped).
    Unloading,
    /// Stopped; `failure` when it had failed.
    Ended { failure: Option<String> },
}

impl Retired {
    /// Where the version is now: unloading while a worker of its pool still runs, else
    /// ended (with the failure its pool ended with, if it failed).
    pub fn end(&self) -> End {
        let Some(pool) = self.pool.upgrade() else { return End::Ended { failure: self.failure.clone() } };
        let running = pool.slots.iter().any(|s| process_runs(s.pid.load(Ordering::Relaxed)));
        match &*pool.phase() {
            Phase::Failed { reason } => End::Ended { failure: Some(reason.clone()) },
            _ if running => End::Unloading,
            _ => End::Ended { failure: self.failure.clone() },
        }
    }
}

/// Whether worker `pid` still runs. A slot keeps its last worker's pid after stopping it
/// (0 only when none was started or one exited by itself), so the kernel is asked: the
/// supervisor reaps its workers, so a stopped one has no process left.
fn process_runs(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    pid != 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// The versions a model retired, newest last.
#[derive(Debug, Default)]
pub struct Log {
    retired: Mutex<VecDeque<Retired>>,
}

impl Log {
    /// Notes the versions of `old` that `new` no longer holds, and forgets the ones `new`
    /// serves again (a rollback to a retired version).
    pub fn note(&self, old: &RoutingTable, new: &RoutingTable) {
        let kept = |pool: &Arc<Pool>| new.all_pools().any(|p| p.version == pool.version);
        let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|r| !new.all_pools().any(|p| p.version == r.version));
        for pool in old.all_pools().filter(|p| !kept(p)) {
            retired.retain(|r| r.version != pool.version);
            let failure = match &*pool.phase() {
                Phase::Failed { reason } => Some(reason.clone()),
                _ => None,
            };
            retired.push_back(Retired { version: pool.version, pool: Arc::downgrade(pool), failure });
        }
        while retired.len() > KEPT {
            retired.pop_front();
        }
    }

    /// The retired versions, oldest first.
    pub fn versions(&self) -> Vec<Retired> {
        self.retired.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::pool::PoolSpec;

    fn pool(version: u64) -> Arc<Pool> {
        Arc::new(Pool::new(PoolSpec { model: "m".into(), version, workers: 1, ..PoolSpec::default() }))
    }

    fn versions(log: &Log) -> Vec<(u64, End)> {
        log.versions().iter().map(|r| (r.version, r.end())).collect()
    }

    #[test]
    fn a_version_swapped_out_unloads_then_ends_and_a_failed_one_keeps_its_reason() {
        let log = Log::default();
        let (v1, v2) = (pool(1), pool(2));
        // This test's own process stands for a worker that still runs.
        v1.slots[0].pid.store(std::process::id(), Ordering::Relaxed);
        log.note(&RoutingTable::stable(v1.clone()), &RoutingTable::stable(v2.clone()));
        v1.set_phase(Phase::Stopping);
        assert_eq!(versions(&log), [(1, End::Unloading)], "its worker still runs");
        // Stopped and reaped, its pid left in the slot: ended, though the pool is held.
        let mut worker = std::process::Command::new("true").spawn().unwrap();
        worker.wait().unwrap();
        v1.slots[0].pid.store(worker.id(), Ordering::Relaxed);
        assert_eq!(versions(&log), [(1, End::Ended { failure: None })], "still held, but stopped");
        drop(v1);
        assert_eq!(versions(&log), [(1, End::Ended { failure: None })]);

        let v3 = pool(3);
        v3.set_phase(Phase::Failed { reason: "could not read ONNX model".into() });
        log.note(&RoutingTable::stable(v3.clone()), &RoutingTable::stable(v2.clone()));
        drop(v3);
        let failure = Some("could not read ONNX model".to_string());
        assert_eq!(versions(&log), [(1, End::Ended { failure: None }), (3, End::Ended { failure })]);
    }

    #[test]
    fn a_version_served_again_is_forgotten_and_the_log_is_bounded() {
        let log = Log::default();
        let v1 = pool(1);
        log.note(&RoutingTable::stable(v1.clone()), &RoutingTable::stable(pool(2)));
        log.note(&RoutingTable::stable(pool(2)), &RoutingTable::stable(v1));
        assert_eq!(log.versions().iter().map(|r| r.version).collect::<Vec<_>>(), [2]);
        for version in 10..10 + KEPT as u64 + 3 {
            log.note(&RoutingTable::stable(pool(version)), &RoutingTable::default());
        }
        let kept: Vec<u64> = log.versions().iter().map(|r| r.version).collect();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept.last(), Some(&(9 + KEPT as u64 + 3)));
    }
}
