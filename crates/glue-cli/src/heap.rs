//! How the process allocates and keeps memory.

/// jemalloc is the allocator of the whole process: built unprefixed, its `malloc`,
/// `free` and `posix_memalign` are the ones libtorch, oneDNN and libgomp call too (the
/// executable's symbols come first in the dynamic linker's lookup). glibc's malloc
/// cost time and memory in a training step's pattern: thousands of small allocations
/// on the main thread (tensor and autograd bookkeeping; perf put 7% of a bf16 step's
/// main-thread time in `_int_malloc`/`_int_free`, which the other core waits out) and
/// activations of a different size every batch, which fragmented its heap (peak RSS
/// grew from ~740 to ~1000 MiB through a 3-epoch MRPC run until it was trimmed every 50
/// steps, at the cost of page faults). Measured with the same binary built both ways,
/// 200 MRPC steps interleaved: bf16 17.5-18.0 -> 15.5-17.4 s, fp32 26.2-28.6 -> 25.7-28.7
/// s, fp32 peak RSS 816-837 -> 601-604 MiB; the weights bit for bit the same.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at the process's first allocation; `MALLOC_CONF` in the
/// environment, read after them, wins. By default jemalloc hands every free extent of
/// 8 MiB or more straight back to the kernel (its "oversize" threshold, for large
/// allocations it expects to be rare). A training step frees and allocates the same
/// large buffers every time (bert-base's gradients: the 94 MB word embeddings', 9.4 MB
/// per FFN weight), so the next step took every page of them back with a page fault
/// and a zeroing: 10% of bert-base's training samples were in the kernel, mostly
/// faults under MKL's sgemm writing a fresh gradient. A threshold of 1 TiB (no
/// allocation is that large) puts those extents under the ordinary decay; that
/// decay at 2 s (10 s by default) keeps peak RSS where it was, since freed pages go back
/// within a few steps. bert-base, 20 MRPC steps, three interleaved pairs: 19.5-20.0 ->
/// 16.8-18.0 s, system time 6.3-6.7 -> 2.7-3.3 s, peak RSS 1.98-2.01 -> 2.01-2.03 GB;
/// the test model's fp32 training 3-5% faster (RSS +20-40 MB), bf16 within noise.
/// Never purging (`dirty_decay_ms:-1`) was no faster, and peak RSS grew by 0.5 GB.
#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
static malloc_conf: &[u8; 53] = b"oversize_threshold:1099511627776,dirty_decay_ms:2000\0";

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
