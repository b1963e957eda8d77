//! CPU-heavy steps of a request — decoding a large body (JSON numbers, gzip), encoding a
//! large answer — run where they do not hold up the runtime's threads. Those threads also
//! carry every worker connection's reader and writer and the liveness watch: a burst of
//! 64 JSON images decoded on them (2 cores) left workers' requests half-written and their
//! replies unread for seconds, which the watch read as the workers' silence, and killed
//! two healthy workers.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Bodies from this size are decoded and encoded off the runtime's threads: decoding
/// 64 KiB of JSON numbers takes about a third of a millisecond on one core (release
/// build), some ten times what handing the thread's tasks over costs.
pub const HEAVY_BYTES: usize = 64 * 1024;

/// Runs `work` over `bytes` of body: from [`HEAVY_BYTES`] on in `block_in_place`, which
/// hands this thread's other tasks to another thread while it runs; smaller ones at
/// once. Outside a multi-threaded runtime (unit tests) it always runs at once.
pub fn cpu<R>(bytes: usize, work: impl FnOnce() -> R) -> R {
    // Most bodies are small: they pay one comparison, not a look at the runtime.
    if bytes < HEAVY_BYTES {
        return work();
    }
    match Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread) {
        true => tokio::task::block_in_place(work),
        false => work(),
    }
}

/// The bytes of tensors' data: what encoding them as an answer grows with.
pub fn bytes_of(tensors: &[crate::tensor::Tensor]) -> usize {
    tensors.iter().map(|t| t.data.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn heavy_work_leaves_the_runtime_free_for_other_tasks() {
        // One runtime thread: the work waits for a timer task to speak, as a worker
        // connection's writer must run while a large body is decoded. Run in place, the
        // work would hold the only thread and hear nothing.
        let (tx, rx) = std::sync::mpsc::channel();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tx.send(());
        });
        tokio::task::yield_now().await;
        let heard = cpu(HEAVY_BYTES, || rx.recv_timeout(Duration::from_secs(10)).is_ok());
        assert!(heard, "the other task could not run while the work held the thread");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn light_work_runs_on_the_calling_thread() {
        let caller = std::thread::current().id();
        assert_eq!(cpu(HEAVY_BYTES - 1, || std::thread::current().id()), caller);
    }

    #[test]
    fn outside_a_runtime_work_runs_at_once() {
        assert_eq!(cpu(HEAVY_BYTES * 10, || 7), 7);
    }
}
