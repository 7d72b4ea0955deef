//! A counting global allocator: the heap bytes and blocks alive, by size
//! class, so that an idle-connection run can say what each connection
//! holds on the heap (which RSS alone can't: a large block that is never
//! written is not resident).
//!
//! Off until [`enable`]; the throughput subcommands leave it off and pay
//! one relaxed load per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};

/// Size classes: class `c` holds sizes in `(2^(c-1), 2^c]`.
pub const CLASSES: usize = 40;

static ON: AtomicBool = AtomicBool::new(false);
static BYTES: [AtomicI64; CLASSES] = [const { AtomicI64::new(0) }; CLASSES];
static BLOCKS: [AtomicI64; CLASSES] = [const { AtomicI64::new(0) }; CLASSES];
/// All live bytes, and their highest value since [`reset_peak`].
static LIVE: AtomicI64 = AtomicI64::new(0);
static PEAK: AtomicI64 = AtomicI64::new(0);

/// The system allocator, counted while [`enable`]d.
pub struct Counting;

/// Starts counting, for the rest of the process (call it first thing:
/// a block allocated before and freed after would count as negative).
pub fn enable() {
    ON.store(true, Relaxed);
}

/// Starts a new peak from the bytes live now, and returns them.
pub fn reset_peak() -> i64 {
    let live = LIVE.load(Relaxed);
    PEAK.store(live, Relaxed);
    live
}

/// The most bytes live at once since [`reset_peak`].
pub fn peak() -> i64 {
    PEAK.load(Relaxed)
}

fn class(size: usize) -> usize {
    let c = (usize::BITS - size.saturating_sub(1).leading_zeros()) as usize;
    c.min(CLASSES - 1)
}

fn note(size: usize, sign: i64) {
    if ON.load(Relaxed) {
        let c = class(size);
        BYTES[c].fetch_add(sign * size as i64, Relaxed);
        BLOCKS[c].fetch_add(sign, Relaxed);
        let live = LIVE.fetch_add(sign * size as i64, Relaxed) + sign * size as i64;
        PEAK.fetch_max(live, Relaxed);
    }
}

// SAFETY: every call is forwarded to `System` unchanged; the counting
// only touches atomics and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size(), 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size(), 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from `System`.
        unsafe { System.dealloc(ptr, layout) };
        note(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`, as `realloc` needs.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(layout.size(), -1);
            note(new_size, 1);
        }
        p
    }
}

/// The live heap by size class, at one moment (or the difference of two).
#[derive(Clone, Copy, Debug)]
pub struct Heap {
    pub bytes: [i64; CLASSES],
    pub blocks: [i64; CLASSES],
}

impl Heap {
    pub fn now() -> Self {
        Self {
            bytes: std::array::from_fn(|c| BYTES[c].load(Relaxed)),
            blocks: std::array::from_fn(|c| BLOCKS[c].load(Relaxed)),
        }
    }

    /// What was allocated and not freed since `before`.
    pub fn since(&self, before: &Heap) -> Heap {
        Heap {
            bytes: std::array::from_fn(|c| self.bytes[c] - before.bytes[c]),
            blocks: std::array::from_fn(|c| self.blocks[c] - before.blocks[c]),
        }
    }

    pub fn total_bytes(&self) -> i64 {
        self.bytes.iter().sum()
    }

    pub fn total_blocks(&self) -> i64 {
        self.blocks.iter().sum()
    }
}

/// The sizes of class `c`, for a table: "128 B–256 B" (over 128, at
/// most 256), "128 KiB–256 KiB".
pub fn class_label(c: usize) -> String {
    let hi = 1u64 << c;
    if c <= 3 {
        return format!("≤ {hi} B");
    }
    let size = |b: u64| match b {
        b if b >= 1 << 20 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    };
    format!("{}–{}", size(hi / 2), size(hi))
}
