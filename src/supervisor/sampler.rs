//! Samples what the workers and the host use, once a second: each worker's resident
//! memory, CPU time and cores kept busy (into its pool slot and the metrics), and the
//! host's CPU busy share and total memory (for the memory and cpu health checks; the
//! host's CPU is context there, a version is judged by its own workers).

use super::Supervisor;
use crate::health::Host;
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio_util::sync::CancellationToken;

pub const EVERY: Duration = Duration::from_secs(1);

/// Runs until `stop`.
pub async fn run(supervisor: Arc<Supervisor>, host: Arc<Host>, metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut system = match System::new() {
        Ok(system) => system,
        Err(e) => {
            tracing::error!("cannot sample worker and host resources: {e}; memory and cpu checks will lack data");
            return;
        }
    };
    // CPU time already counted per worker pid, so the counter only ever grows.
    let mut counted_cpu_ms: HashMap<u32, u64> = HashMap::new();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Memory freed after a burst of large requests goes back to the system.
        crate::trim::release_free_memory();
        system.refresh_cpu_usage();
        system.refresh_memory();
        host.set(f64::from(system.global_cpu_usage()) / 100.0, system.total_memory());
        let pools = supervisor.pools();
        let pids: Vec<Pid> = pools
            .iter()
            .flat_map(|p| p.slots.iter().map(|s| s.pid.load(Ordering::Relaxed)))
            .filter(|pid| *pid != 0)
            .map(Pid::from_u32)
            .collect();
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            true,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        let mut seen = HashMap::new();
        for pool in &pools {
            let version = pool.version.to_string();
            for (slot_ix, slot) in pool.slots.iter().enumerate() {
                let pid = slot.pid.load(Ordering::Relaxed);
                let Some(process) = (pid != 0).then(|| system.process(Pid::from_u32(pid))).flatten() else {
                    slot.rss_bytes.store(0, Ordering::Relaxed);
                    slot.set_cpu_cores(0.0);
                    continue;
                };
                let cpu_ms = process.accumulated_cpu_time();
                slot.rss_bytes.store(process.memory(), Ordering::Relaxed);
                // Percent of one core since the last refresh (0 at a process's first).
                slot.set_cpu_cores(f64::from(process.cpu_usage()) / 100.0);
                slot.cpu_ms.store(cpu_ms, Ordering::Relaxed);
                let before = counted_cpu_ms.get(&pid).copied().unwrap_or(0);
                // Looked up even without new CPU time, so the series exists from the start.
                let counter = metrics.worker_cpu_seconds.with_label_values(&[
                    pool.model.as_str(),
                    &version,
                    &slot_ix.to_string(),
                ]);
                if cpu_ms > before {
                    counter.inc_by((cpu_ms - before) as f64 / 1000.0);
                }
                seen.insert(pid, cpu_ms.max(before));
            }
        }
        counted_cpu_ms = seen;
    }
}
