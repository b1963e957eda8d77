//! A worker's progress, in a small file both processes map: the supervisor creates it
//! beside the worker's socket and reads it; the worker writes it as it computes. What the
//! supervisor judges a hang by is progress, not answers — a worker waiting on a GPU
//! kernel or throttled by its CPU quota is slow and alive, while one whose inference
//! thread deadlocked may still answer pings from its reader thread.
//!
//! One slot per inference thread: while a thread runs a request its slot holds the
//! thread's id (so the supervisor can read its CPU time in `/proc`), when the request
//! started, how many steps it has made (tract: a node of the plan evaluated) and when the
//! last one was made. The header keeps the longest time one step has taken so far in
//! this worker, which sizes the default hang timeout to the model.
//!
//! ```text
//! header   magic:u64 slots:u64 longest_step_ns:u64 reserved:u64
//! slot     tid:u64 busy_since_ns:u64 (0: idle) steps:u64 last_step_ns:u64
//! ```
//!
//! Times are `CLOCK_MONOTONIC` nanoseconds, the same clock in every process of the host.

use memmap2::MmapRaw;
use std::fs::OpenOptions;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const MAGIC: u64 = u64::from_le_bytes(*b"mdprog01");
const HEADER_WORDS: usize = 4;
const SLOT_WORDS: usize = 4;
/// More inference threads than this share the last slots' bookkeeping (never happens:
/// `threads` is bounded far lower by the config).
const MAX_SLOTS: usize = 1024;

/// The mapped block. Every word is an `AtomicU64`: both processes read and write it at
/// any time, and any bit pattern is a valid value.
pub struct Block {
    map: MmapRaw,
    slots: usize,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block").field("slots", &self.slots).field("busy", &self.busy()).finish()
    }
}

/// One inference thread's slot as the supervisor reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub slot: usize,
    pub tid: u64,
    /// How long the thread has held its request.
    pub held: Duration,
    pub steps: u64,
    /// Since its last step (or since the request started, before any).
    pub since_step: Duration,
}

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn now_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is readable");
    (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64
}

impl Block {
    /// Creates (or empties) the block at `path` for `slots` inference threads: the
    /// supervisor, before starting the worker.
    pub fn create(path: &Path, slots: usize) -> std::io::Result<Block> {
        let slots = slots.clamp(1, MAX_SLOTS);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.set_len(((HEADER_WORDS + slots * SLOT_WORDS) * 8) as u64)?;
        let block = Block { map: MmapRaw::map_raw(&file)?, slots };
        block.word(0).store(MAGIC, Ordering::Release);
        block.word(1).store(slots as u64, Ordering::Release);
        Ok(block)
    }

    /// Maps the block the supervisor created: the worker, before it gives up its rights.
    pub fn open(path: &Path) -> std::io::Result<Block> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len() as usize;
        let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        if len < HEADER_WORDS * 8 {
            return Err(invalid(format!("{} holds {len} bytes, too few for a progress block", path.display())));
        }
        let mut block = Block { map: MmapRaw::map_raw(&file)?, slots: 0 };
        if block.word(0).load(Ordering::Acquire) != MAGIC {
            return Err(invalid(format!("{} is not a progress block", path.display())));
        }
        let slots = block.word(1).load(Ordering::Acquire) as usize;
        if slots == 0 || len < (HEADER_WORDS + slots * SLOT_WORDS) * 8 {
            return Err(invalid(format!("{} is shorter than its {slots} slots", path.display())));
        }
        block.slots = slots;
        Ok(block)
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        assert!(index < self.map.len() / 8, "progress word {index} is outside the block");
        // SAFETY: the mapping is page-aligned (so 8-byte aligned), at least `index + 1`
        // words long (asserted), shared with the other process only through atomic
        // operations, and lives as long as `self`, which the reference borrows.
        unsafe { &*(self.map.as_mut_ptr().cast::<AtomicU64>().add(index)) }
    }

    fn slot_word(&self, slot: usize, field: usize) -> &AtomicU64 {
        self.word(HEADER_WORDS + slot * SLOT_WORDS + field)
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Takes an idle slot for the calling thread's request (`None` when every slot is
    /// busy: more requests run at once than the block was made for).
    pub fn claim(&self, tid: u64) -> Option<usize> {
        let now = now_ns().max(1);
        let slot = (0..self.slots)
            .find(|&s| self.slot_word(s, 1).compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed).is_ok())?;
        self.slot_word(slot, 0).store(tid, Ordering::Release);
        self.slot_word(slot, 2).store(0, Ordering::Release);
        self.slot_word(slot, 3).store(now, Ordering::Release);
        Some(slot)
    }

    /// Notes one step of the request in `slot`, and how long it took.
    pub fn step(&self, slot: usize) {
        let now = now_ns();
        let last = self.slot_word(slot, 3).swap(now, Ordering::AcqRel);
        self.slot_word(slot, 2).fetch_add(1, Ordering::AcqRel);
        self.note_step(now.saturating_sub(last));
    }

    /// Frees `slot` once its request is answered (its last step ends there).
    pub fn release(&self, slot: usize) {
        let now = now_ns();
        let last = self.slot_word(slot, 3).load(Ordering::Acquire);
        self.note_step(now.saturating_sub(last));
        self.slot_word(slot, 1).store(0, Ordering::Release);
    }

    fn note_step(&self, took_ns: u64) {
        self.word(2).fetch_max(took_ns, Ordering::AcqRel);
    }

    /// The longest one step has taken in this worker.
    pub fn longest_step(&self) -> Duration {
        Duration::from_nanos(self.word(2).load(Ordering::Acquire))
    }

    /// The slots holding a request now.
    pub fn busy(&self) -> Vec<Busy> {
        let now = now_ns();
        (0..self.slots)
            .filter_map(|slot| {
                let since = self.slot_word(slot, 1).load(Ordering::Acquire);
                (since != 0).then(|| Busy {
                    slot,
                    tid: self.slot_word(slot, 0).load(Ordering::Acquire),
                    held: Duration::from_nanos(now.saturating_sub(since)),
                    steps: self.slot_word(slot, 2).load(Ordering::Acquire),
                    since_step: Duration::from_nanos(
                        now.saturating_sub(self.slot_word(slot, 3).load(Ordering::Acquire)),
                    ),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workers_writes_are_what_the_supervisor_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.progress");
        let supervisor = Block::create(&path, 2).unwrap();
        let worker = Block::open(&path).unwrap();
        assert_eq!(worker.slots(), 2);
        assert!(supervisor.busy().is_empty());
        let a = worker.claim(41).unwrap();
        let b = worker.claim(42).unwrap();
        assert_ne!(a, b);
        assert_eq!(worker.claim(43), None, "two slots, two requests");
        std::thread::sleep(Duration::from_millis(20));
        worker.step(a);
        worker.step(a);
        let busy = supervisor.busy();
        assert_eq!(busy.len(), 2);
        let first = busy.iter().find(|x| x.slot == a).unwrap();
        assert_eq!((first.tid, first.steps), (41, 2));
        assert!(first.since_step < first.held, "{first:?}");
        assert!(supervisor.longest_step() >= Duration::from_millis(20));
        worker.release(a);
        assert_eq!(supervisor.busy().iter().map(|x| x.tid).collect::<Vec<_>>(), [42]);
        assert_eq!(worker.claim(44), Some(a), "a freed slot is taken again");
    }

    #[test]
    fn anything_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk");
        std::fs::write(&path, [7u8; 64]).unwrap();
        assert!(Block::open(&path).unwrap_err().to_string().contains("is not a progress block"));
        std::fs::write(&path, [0u8; 3]).unwrap();
        assert!(Block::open(&path).unwrap_err().to_string().contains("too few"));
    }
}
