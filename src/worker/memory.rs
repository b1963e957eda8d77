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
