//! The worker's side of its progress block ([`crate::wire::progress`]): each inference
//! takes a slot for its thread while it runs ([`running`]), and the engine steps it as it
//! goes ([`step`]: tract after each node of the plan). Without a block (a worker started
//! by hand) both do nothing.

use crate::wire::progress::Block;
use std::cell::Cell;
use std::sync::OnceLock;

static BLOCK: OnceLock<Block> = OnceLock::new();

thread_local! {
    /// The slot of the inference running on this thread.
    static SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Makes `block` this worker's progress block (once; mapped before the worker gives up
/// its rights).
pub fn install(block: Block) {
    let _ = BLOCK.set(block);
}

/// Held while an inference runs on this thread: its slot says so, and is freed on drop.
pub struct Running {
    slot: Option<usize>,
}

/// Marks the calling thread as running an inference, unless it already is (a nested
/// call keeps the outer one's slot).
pub fn running() -> Running {
    if SLOT.with(Cell::get).is_some() {
        return Running { slot: None };
    }
    let tid = nix::unistd::gettid().as_raw() as u64;
    let slot = BLOCK.get().and_then(|block| block.claim(tid));
    SLOT.with(|s| s.set(slot));
    Running { slot }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let (Some(block), Some(slot)) = (BLOCK.get(), self.slot) {
            block.release(slot);
            SLOT.with(|s| s.set(None));
        }
    }
}

/// One step of the inference running on this thread.
pub fn step() {
    if let (Some(block), Some(slot)) = (BLOCK.get(), SLOT.with(Cell::get)) {
        block.step(slot);
    }
}
