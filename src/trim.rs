//! Giving freed memory back to the system, in the supervisor and in each worker (both
//! call it about once a second). Depends on nothing of ours.

/// Gives the memory the allocator holds free back to the system.
///
/// glibc's malloc keeps freed memory for reuse: after a burst of large requests (64 images
/// in flight: their JSON bodies, tensors and activations) a process stayed three times its
/// idle size for good, since its mmap threshold grows with the large blocks it has freed
/// and its per-thread arenas only trim their top. `malloc_trim(3)` releases the free pages
/// of every arena, wherever they lie. It costs a walk of the heap, so callers run it about
/// once a second (the supervisor's sampler, each worker's trimmer thread).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only takes the allocator's own locks and may run at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Starts a thread that releases free memory every `every`, for the life of the process.
pub fn trim_every(every: std::time::Duration) {
    let spawned = std::thread::Builder::new().name("trim".into()).spawn(move || {
        loop {
            std::thread::sleep(every);
            release_free_memory();
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("could not start the memory trimmer: {e}; memory freed after bursts stays with the process");
    }
}
