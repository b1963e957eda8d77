//! A worker's memory limit, and how its death by the limit is told apart from a crash.
//!
//! Two ways to enforce `memory_limit`, best first:
//! - a cgroup v2 the supervisor created for this worker (`memory.max`), which the worker
//!   joins first thing; the kernel OOM-kills it past the limit and the cgroup's
//!   `memory.events` counts it;
//! - otherwise `RLIMIT_DATA` (heap and private anonymous mappings, not the mapped model
//!   file), where an allocation past the limit fails: the global allocator ([`OomExit`])
//!   then exits with [`OOM_EXIT_CODE`], which the supervisor counts as an OOM kill.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::wire::OOM_EXIT_CODE;

static EXIT_ON_OOM: AtomicBool = AtomicBool::new(false);

/// The system allocator, except that in a memory-limited worker a failed allocation ends
/// the process with [`OOM_EXIT_CODE`] instead of an abort that looks like any crash.
pub struct OomExit;

// SAFETY: every method forwards to `System` with the same arguments and returns its
// result unchanged; the only addition runs when `System` returned null, and never returns.
unsafe impl GlobalAlloc for OomExit {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on as is.
        checked(unsafe { System.alloc(layout) }, layout.size())
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        checked(unsafe { System.alloc_zeroed(layout) }, layout.size())
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`; `ptr` and `layout` come from this allocator, i.e. `System`.
        checked(unsafe { System.realloc(ptr, layout, new_size) }, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn checked(ptr: *mut u8, size: usize) -> *mut u8 {
    if ptr.is_null() && EXIT_ON_OOM.load(Ordering::Relaxed) {
        out_of_memory(size);
    }
    ptr
}

/// Says why on stderr without allocating, then exits at once.
fn out_of_memory(size: usize) -> ! {
    let mut digits = [0u8; 20];
    let mut n = size;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let parts: [&[u8]; 3] = [b"modeld worker: allocation of ", &digits[i..], b" bytes failed: over memory_limit\n"];
    for part in parts {
        // SAFETY: writes `part.len()` bytes from a valid slice to fd 2; the result does not
        // matter, the process is ending.
        unsafe { libc::write(2, part.as_ptr().cast(), part.len()) };
    }
    // SAFETY: _exit ends the process without running handlers that could allocate.
    unsafe { libc::_exit(OOM_EXIT_CODE) }
}

/// How the limit ended up enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    Cgroup,
    Rlimit,
}

/// Applies `limit` bytes to this process: joins `cgroup` when given (the supervisor set
/// its `memory.max`), else sets `RLIMIT_DATA`.
pub fn enforce(limit: u64, cgroup: Option<&Path>) -> std::io::Result<Enforced> {
    if let Some(dir) = cgroup {
        match std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()) {
            Ok(()) => return Ok(Enforced::Cgroup),
            Err(e) => tracing::warn!("could not join cgroup {}: {e}; limiting with RLIMIT_DATA", dir.display()),
        }
    }
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_DATA, limit, limit)?;
    EXIT_ON_OOM.store(true, Ordering::Relaxed);
    Ok(Enforced::Rlimit)
}

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
        tracing::warn!("could not start the memory trimmer: {e}; memory freed after bursts stays with the worker");
    }
}
