//! How the process keeps and returns freed memory (glibc malloc).

use train_loop::{Control, TrainerCallback, TrainerState};

/// glibc hands every freed block above its mmap threshold (at most 32 MiB) back to
/// the kernel at once, so each training step page-faults its activations and
/// gradients (the word-embedding gradient alone is 47 MB for MiniLM) in again: a full
/// MRPC run took 45.7M minor faults and 96 s of system time. Keeping freed memory in
/// the heap for reuse avoids that; [`TrimHeap`] bounds what it costs in memory.
pub fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; called before any threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// At most one malloc arena per intra-op thread. glibc gives each new thread an arena
/// of its own (up to 8 per core), and what a thread frees stays in its arena (the trim
/// threshold above is the maximum): evaluation's worker threads, one per intra-op
/// thread, built arenas of their own next to training's and kept ~70 MB more resident
/// on MRPC. Capped, they share the arenas training's threads already hold. (One arena
/// for all threads saved more but made bf16 training ~9% slower, the threads waiting
/// on one lock.) `MALLOC_ARENA_MAX`, when set, wins.
pub fn share_arenas(threads: usize) {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(
            libc::M_ARENA_MAX,
            threads.clamp(1, i32::MAX as usize) as i32,
        );
    }
}

/// Bounds oneDNN's primitive cache for fp32 work on the CPU. In fp32, oneDNN runs
/// GELU in training and the linear layers in evaluation, one compiled primitive per
/// row count; its cache keeps up to 1024 of them, and a 3-epoch MRPC run kept ~45 MB
/// of them on the heap after the first evaluation (~50 kB more per training step in
/// the first epoch), never used again. An evaluation uses a handful at a time (its
/// batches run in length order), so 64 cost no measurable speed. bf16 runs keep
/// oneDNN's default: every matmul goes through it and training reuses its primitives
/// across steps. oneDNN reads the variable when it creates its first primitive, so this
/// runs before the model loads; `ONEDNN_PRIMITIVE_CACHE_CAPACITY`, when set, wins.
pub fn bound_onednn_cache(device: tch::Device, bf16: bool) {
    if device != tch::Device::Cpu || bf16 {
        return;
    }
    if std::env::var_os("ONEDNN_PRIMITIVE_CACHE_CAPACITY").is_none() {
        std::env::set_var("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64");
    }
}

/// Hands the heap's free pages back to the kernel every `every` optimizer steps.
///
/// Batches differ in length, so the blocks freed by one step rarely fit the next
/// step's tensors exactly; the heap fragments and its touched pages grow through a
/// run (MRPC, MiniLM: peak RSS 736 MiB after 14 s, 921 MiB after one epoch, about
/// 1000 MiB after three). `malloc_trim` returns the free pages of every free block
/// (not only the heap's top); the next steps fault some of them in again. Measured on
/// MRPC, 100 steps: every 10 steps, +500k minor faults and +1.7 s of system time
/// (~4%), peak after one epoch 867 MiB; every 50 steps, +100k faults and +0.4 s
/// (~1%), peak 881 MiB.
pub struct TrimHeap {
    pub every: u64,
}

impl Default for TrimHeap {
    fn default() -> Self {
        TrimHeap { every: 50 }
    }
}

impl TrainerCallback for TrimHeap {
    fn on_step_end(&mut self, state: &TrainerState) -> Control {
        if self.every > 0 && state.global_step.is_multiple_of(self.every) {
            // SAFETY: malloc_trim only returns free pages; allocations are untouched.
            unsafe {
                libc::malloc_trim(0);
            }
        }
        Control::default()
    }
}
