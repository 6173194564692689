//! The C ABI of cpp/shim.cpp and the one file with `unsafe` in this crate.

use std::ffi::{c_char, c_int, c_longlong, c_void, CStr, CString};

use tch::Tensor;

use crate::TorchError;

type AtTensor = torch_sys::C_tensor;

extern "C" {
    fn glue_shim_free(message: *mut c_char);
    fn glue_shim_torch_version() -> *const c_char;
    fn glue_shim_fused_adamw(
        params: *const *mut AtTensor,
        grads: *const *mut AtTensor,
        exp_avgs: *const *mut AtTensor,
        exp_avg_sqs: *const *mut AtTensor,
        steps: *const *mut AtTensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        grad_scale: *mut AtTensor,
    ) -> *mut c_char;
    fn glue_shim_clip_grad_norm(
        grads: *const *mut AtTensor,
        n: usize,
        max_norm: f64,
        total: *mut AtTensor,
        divisor: *mut AtTensor,
    ) -> *mut c_char;
    fn glue_shim_zero(list: *const *mut AtTensor, n: usize) -> *mut c_char;
    fn glue_shim_parallel_for(
        n: i64,
        grain: i64,
        body: extern "C" fn(ctx: *mut c_void, begin: i64, end: i64),
        ctx: *mut c_void,
    ) -> *mut c_char;
    fn glue_shim_set_grads_to_none(params: *const *mut AtTensor, n: usize) -> *mut c_char;
    fn glue_shim_linear_inference(
        x: *mut AtTensor,
        w: *mut AtTensor,
        packed: *mut AtTensor,
        b: *mut AtTensor,
        act: c_int,
        out: *mut *mut AtTensor,
    ) -> *mut c_char;
    fn glue_shim_spread_rows(
        x: *mut AtTensor,
        spread: *mut AtTensor,
        index: *mut AtTensor,
        out: *mut *mut AtTensor,
    ) -> *mut c_char;
    fn glue_shim_pack_linear_weight(
        w: *mut AtTensor,
        rows: i64,
        bf16: c_int,
        out: *mut *mut AtTensor,
    ) -> *mut c_char;
    fn glue_shim_set_thread_threads(
        n: c_int,
        restore_omp: c_int,
        restore_mkl: c_int,
        previous_omp: *mut c_int,
        previous_mkl: *mut c_int,
    ) -> *mut c_char;
    fn glue_shim_autocast_enter(
        device: c_int,
        dtype: c_int,
        enabled: c_int,
        was_enabled: *mut c_int,
        was_dtype: *mut c_int,
    ) -> *mut c_char;
    fn glue_shim_autocast_exit(device: c_int, was_enabled: c_int, was_dtype: c_int) -> *mut c_char;
    fn glue_shim_autocast_enabled(device: c_int) -> c_int;
    fn glue_shim_set_deterministic(enabled: c_int) -> *mut c_char;
    fn glue_shim_deterministic() -> c_int;
    fn glue_shim_set_cudnn_attention(enabled: c_int) -> *mut c_char;
    fn glue_shim_cudnn_attention() -> c_int;
    fn glue_shim_has_gloo() -> c_int;
    fn glue_shim_pg_new_gloo(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        host_store: c_int,
        timeout_ms: c_longlong,
        bind_host: *const c_char,
        prefix: *const c_char,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn glue_shim_pg_free(handle: *mut c_void);
    fn glue_shim_pg_all_reduce_sum(handle: *mut c_void, tensor: *mut AtTensor) -> *mut c_char;
    fn glue_shim_pg_broadcast(
        handle: *mut c_void,
        tensor: *mut AtTensor,
        root: c_int,
    ) -> *mut c_char;
    fn glue_shim_pg_all_gather(
        handle: *mut c_void,
        input: *mut AtTensor,
        outputs: *const *mut AtTensor,
        n: usize,
    ) -> *mut c_char;
    fn glue_shim_pg_barrier(handle: *mut c_void) -> *mut c_char;
    fn glue_shim_nccl_version(out: *mut c_int) -> *mut c_char;
    fn glue_shim_nccl_unique_id(out: *mut u8) -> *mut c_char;
    fn glue_shim_nccl_comm_new(
        id: *const u8,
        rank: c_int,
        world: c_int,
        device: c_int,
        timeout_ms: c_longlong,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn glue_shim_nccl_comm_free(handle: *mut c_void);
    fn glue_shim_nccl_all_reduce_sum(handle: *mut c_void, tensor: *mut AtTensor) -> *mut c_char;
    fn glue_shim_nccl_broadcast(
        handle: *mut c_void,
        tensor: *mut AtTensor,
        root: c_int,
    ) -> *mut c_char;
}

/// Turns the shim's error convention (null, or a malloc'ed message) into a Result.
fn check(message: *mut c_char) -> Result<(), TorchError> {
    if message.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null return is a NUL-terminated string from malloc that we own.
    let text = unsafe { CStr::from_ptr(message) }
        .to_string_lossy()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    // SAFETY: freed once, with the allocator that made it.
    unsafe { glue_shim_free(message) };
    Err(TorchError(text))
}

/// tch's tensor handles are `at::Tensor*`; the C++ side only reads the handles and
/// changes the tensors' data, which tch allows through `&Tensor` too.
fn handles(list: &[&Tensor]) -> Vec<*mut AtTensor> {
    list.iter().map(|t| t.as_ptr() as *mut AtTensor).collect()
}

/// A tensor handle, or null for none.
fn optional_handle(t: Option<&Tensor>) -> *mut AtTensor {
    t.map_or(std::ptr::null_mut(), |t| t.as_ptr() as *mut AtTensor)
}

pub fn torch_version() -> &'static str {
    // SAFETY: a static NUL-terminated string literal in the shim.
    unsafe { CStr::from_ptr(glue_shim_torch_version()) }
        .to_str()
        .unwrap_or("unknown")
}

pub struct AdamWLists<'a> {
    pub params: &'a [&'a Tensor],
    pub grads: &'a [&'a Tensor],
    pub exp_avgs: &'a [&'a Tensor],
    pub exp_avg_sqs: &'a [&'a Tensor],
    pub steps: &'a [&'a Tensor],
    pub grad_scale: Option<&'a Tensor>,
}

pub fn fused_adamw(
    lists: &AdamWLists<'_>,
    lr: f64,
    beta1: f64,
    beta2: f64,
    weight_decay: f64,
    eps: f64,
) -> Result<(), TorchError> {
    let n = lists.params.len();
    for (name, len) in [
        ("grads", lists.grads.len()),
        ("exp_avgs", lists.exp_avgs.len()),
        ("exp_avg_sqs", lists.exp_avg_sqs.len()),
        ("steps", lists.steps.len()),
    ] {
        if len != n {
            return Err(TorchError(format!(
                "fused AdamW: {n} parameters but {len} {name}"
            )));
        }
    }
    let (p, g, m, v, s) = (
        handles(lists.params),
        handles(lists.grads),
        handles(lists.exp_avgs),
        handles(lists.exp_avg_sqs),
        handles(lists.steps),
    );
    let grad_scale = optional_handle(lists.grad_scale);
    // SAFETY: five arrays of `n` live tensor handles and an optional live one,
    // borrowed for the call.
    check(unsafe {
        glue_shim_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n,
            lr,
            beta1,
            beta2,
            weight_decay,
            eps,
            grad_scale,
        )
    })
}

/// `divisor`: where the clipping factor's inverse goes, gradients left unscaled.
pub fn clip_grad_norm(
    grads: &[&Tensor],
    max_norm: f64,
    total: &Tensor,
    divisor: Option<&Tensor>,
) -> Result<(), TorchError> {
    let g = handles(grads);
    // SAFETY: `n` live handles and one or two live output tensors, borrowed for the call.
    check(unsafe {
        glue_shim_clip_grad_norm(
            g.as_ptr(),
            g.len(),
            max_norm,
            total.as_ptr() as *mut AtTensor,
            optional_handle(divisor),
        )
    })
}

pub fn zero(list: &[&Tensor]) -> Result<(), TorchError> {
    let l = handles(list);
    // SAFETY: `n` live handles, borrowed for the call.
    check(unsafe { glue_shim_zero(l.as_ptr(), l.len()) })
}

/// Calls `body(begin, end)` on disjoint sub-ranges covering `0..n`, from libtorch's
/// intra-op threads; a panic in `body` comes back as an error after the loop.
pub fn parallel_for<F: Fn(i64, i64) + Sync>(
    n: i64,
    grain: i64,
    body: &F,
) -> Result<(), TorchError> {
    struct Ctx<'a, F> {
        body: &'a F,
        panicked: std::sync::atomic::AtomicBool,
    }
    extern "C" fn trampoline<F: Fn(i64, i64) + Sync>(ctx: *mut c_void, begin: i64, end: i64) {
        // SAFETY: `ctx` is the `Ctx<F>` below, alive until glue_shim_parallel_for returns.
        let ctx = unsafe { &*(ctx as *const Ctx<F>) };
        let run = std::panic::AssertUnwindSafe(|| (ctx.body)(begin, end));
        if std::panic::catch_unwind(run).is_err() {
            ctx.panicked
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let ctx = Ctx {
        body,
        panicked: std::sync::atomic::AtomicBool::new(false),
    };
    // SAFETY: the callback only reads `ctx`, which outlives the call; it never unwinds.
    check(unsafe {
        glue_shim_parallel_for(
            n,
            grain,
            trampoline::<F>,
            &ctx as *const Ctx<F> as *mut c_void,
        )
    })?;
    if ctx.panicked.into_inner() {
        return Err(TorchError("a parallel_for body panicked".into()));
    }
    Ok(())
}

pub fn set_grads_to_none(params: &[&Tensor]) -> Result<(), TorchError> {
    let p = handles(params);
    // SAFETY: `n` live handles, borrowed for the call; only their .grad is reset.
    check(unsafe { glue_shim_set_grads_to_none(p.as_ptr(), p.len()) })
}

/// Returns the previous (enabled, dtype) state to restore on exit.
pub fn autocast_enter(
    device: c_int,
    dtype: c_int,
    enabled: bool,
) -> Result<(c_int, c_int), TorchError> {
    let (mut was_enabled, mut previous) = (0, 0);
    // SAFETY: two out-parameters on our stack.
    check(unsafe {
        glue_shim_autocast_enter(
            device,
            dtype,
            c_int::from(enabled),
            &mut was_enabled,
            &mut previous,
        )
    })?;
    Ok((was_enabled, previous))
}

pub fn linear_inference(
    x: &Tensor,
    w: &Tensor,
    packed: Option<&Tensor>,
    b: Option<&Tensor>,
    act: c_int,
) -> Result<Tensor, TorchError> {
    let mut out: *mut AtTensor = std::ptr::null_mut();
    // SAFETY: live tensor handles (packed and bias may be null) and one out-parameter
    // on our stack.
    check(unsafe {
        glue_shim_linear_inference(
            x.as_ptr() as *mut AtTensor,
            w.as_ptr() as *mut AtTensor,
            optional_handle(packed),
            optional_handle(b),
            act,
            &mut out,
        )
    })?;
    // SAFETY: on success `out` is a new `at::Tensor*` that we own, as tch's own
    // constructors return them.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// `w` (cast to bf16 with `bf16`) in oneDNN's matmul layout, or `None` off the CPU.
pub fn pack_linear_weight(w: &Tensor, rows: i64, bf16: bool) -> Result<Option<Tensor>, TorchError> {
    let mut out: *mut AtTensor = std::ptr::null_mut();
    // SAFETY: a live tensor handle and one out-parameter on our stack.
    check(unsafe {
        glue_shim_pack_linear_weight(
            w.as_ptr() as *mut AtTensor,
            rows,
            c_int::from(bf16),
            &mut out,
        )
    })?;
    // SAFETY: when not null, `out` is a new `at::Tensor*` that we own.
    Ok((!out.is_null()).then(|| unsafe { Tensor::from_ptr(out) }))
}

pub fn spread_rows(x: &Tensor, spread: &Tensor, index: &Tensor) -> Result<Tensor, TorchError> {
    let mut out: *mut AtTensor = std::ptr::null_mut();
    // SAFETY: live tensor handles and one out-parameter on our stack.
    check(unsafe {
        glue_shim_spread_rows(
            x.as_ptr() as *mut AtTensor,
            spread.as_ptr() as *mut AtTensor,
            index.as_ptr() as *mut AtTensor,
            &mut out,
        )
    })?;
    // SAFETY: on success `out` is a new `at::Tensor*` that we own.
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// Sets this thread's intra-op thread counts (`n` > 0), or restores `restore`
/// (`n` = 0); returns the previous (OpenMP, MKL-local) values.
pub fn set_thread_threads(n: c_int, restore: (c_int, c_int)) -> Result<(c_int, c_int), TorchError> {
    let (mut omp, mut mkl) = (0, 0);
    // SAFETY: plain values and two out-parameters on our stack.
    check(unsafe { glue_shim_set_thread_threads(n, restore.0, restore.1, &mut omp, &mut mkl) })?;
    Ok((omp, mkl))
}

pub fn autocast_exit(
    device: c_int,
    was_enabled: c_int,
    was_dtype: c_int,
) -> Result<(), TorchError> {
    // SAFETY: plain values.
    check(unsafe { glue_shim_autocast_exit(device, was_enabled, was_dtype) })
}

pub fn autocast_enabled(device: c_int) -> bool {
    // SAFETY: plain value.
    unsafe { glue_shim_autocast_enabled(device) != 0 }
}

pub fn set_deterministic(enabled: bool) -> Result<(), TorchError> {
    // SAFETY: plain value.
    check(unsafe { glue_shim_set_deterministic(c_int::from(enabled)) })
}

pub fn deterministic() -> bool {
    // SAFETY: no arguments.
    unsafe { glue_shim_deterministic() != 0 }
}

pub fn set_cudnn_attention(enabled: bool) -> Result<(), TorchError> {
    // SAFETY: plain value.
    check(unsafe { glue_shim_set_cudnn_attention(c_int::from(enabled)) })
}

pub fn cudnn_attention() -> bool {
    // SAFETY: no arguments.
    unsafe { glue_shim_cudnn_attention() != 0 }
}

pub fn has_gloo() -> bool {
    // SAFETY: no arguments.
    unsafe { glue_shim_has_gloo() != 0 }
}

/// A c10d Gloo group owned by the shim (`Group*`), freed on drop.
pub struct GroupHandle(*mut c_void);

// SAFETY: c10d process groups are used from any thread (DDP's reducer does); the
// handle is only freed once, by Drop.
unsafe impl Send for GroupHandle {}
unsafe impl Sync for GroupHandle {}

impl Drop for GroupHandle {
    fn drop(&mut self) {
        // SAFETY: a live handle from glue_shim_pg_new_gloo, freed once.
        unsafe { glue_shim_pg_free(self.0) }
    }
}

fn c_string(text: &str) -> Result<CString, TorchError> {
    CString::new(text).map_err(|_| TorchError(format!("`{text}` contains a NUL byte")))
}

pub struct GlooSpec<'a> {
    pub host: &'a str,
    pub port: u16,
    pub rank: i64,
    pub world_size: i64,
    pub host_store: bool,
    pub timeout_ms: i64,
    pub bind_host: &'a str,
    pub prefix: &'a str,
}

pub fn new_gloo(spec: &GlooSpec<'_>) -> Result<GroupHandle, TorchError> {
    let (host, bind, prefix) = (
        c_string(spec.host)?,
        c_string(spec.bind_host)?,
        c_string(spec.prefix)?,
    );
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: NUL-terminated strings and an out-pointer, all alive for the call.
    check(unsafe {
        glue_shim_pg_new_gloo(
            host.as_ptr(),
            c_int::from(spec.port),
            spec.rank as c_int,
            spec.world_size as c_int,
            c_int::from(spec.host_store),
            spec.timeout_ms,
            bind.as_ptr(),
            prefix.as_ptr(),
            &mut out,
        )
    })?;
    Ok(GroupHandle(out))
}

pub fn all_reduce_sum(group: &GroupHandle, tensor: &Tensor) -> Result<(), TorchError> {
    // SAFETY: a live group and a live tensor handle, borrowed for the call.
    check(unsafe { glue_shim_pg_all_reduce_sum(group.0, tensor.as_ptr() as *mut AtTensor) })
}

pub fn broadcast(group: &GroupHandle, tensor: &Tensor, root: i64) -> Result<(), TorchError> {
    // SAFETY: as all_reduce_sum.
    check(unsafe {
        glue_shim_pg_broadcast(group.0, tensor.as_ptr() as *mut AtTensor, root as c_int)
    })
}

pub fn all_gather(
    group: &GroupHandle,
    input: &Tensor,
    outputs: &[&Tensor],
) -> Result<(), TorchError> {
    let o = handles(outputs);
    // SAFETY: a live group, a live input and `n` live output handles, borrowed.
    check(unsafe {
        glue_shim_pg_all_gather(
            group.0,
            input.as_ptr() as *mut AtTensor,
            o.as_ptr(),
            o.len(),
        )
    })
}

pub fn barrier(group: &GroupHandle) -> Result<(), TorchError> {
    // SAFETY: a live group.
    check(unsafe { glue_shim_pg_barrier(group.0) })
}

/// NCCL's version (e.g. 22703 for 2.27.3); fails when libnccl.so.2 cannot be loaded.
pub fn nccl_version() -> Result<i32, TorchError> {
    let mut version: c_int = 0;
    // SAFETY: an out-pointer alive for the call.
    check(unsafe { glue_shim_nccl_version(&mut version) })?;
    Ok(version)
}

/// Bytes of an `ncclUniqueId`.
pub const NCCL_ID_BYTES: usize = 128;

pub fn nccl_unique_id() -> Result<[u8; NCCL_ID_BYTES], TorchError> {
    let mut id = [0u8; NCCL_ID_BYTES];
    // SAFETY: a buffer of the 128 bytes the shim writes.
    check(unsafe { glue_shim_nccl_unique_id(id.as_mut_ptr()) })?;
    Ok(id)
}

/// An NCCL communicator owned by the shim, destroyed on drop.
pub struct NcclHandle(*mut c_void);

// SAFETY: as GroupHandle; NCCL communicators are used from one thread at a time here
// (the training loop), and freed once, by Drop.
unsafe impl Send for NcclHandle {}
unsafe impl Sync for NcclHandle {}

impl Drop for NcclHandle {
    fn drop(&mut self) {
        // SAFETY: a live handle from glue_shim_nccl_comm_new, freed once.
        unsafe { glue_shim_nccl_comm_free(self.0) }
    }
}

pub fn nccl_comm(
    id: &[u8; NCCL_ID_BYTES],
    rank: i64,
    world_size: i64,
    device: usize,
    timeout_ms: i64,
) -> Result<NcclHandle, TorchError> {
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: 128 id bytes and an out-pointer, alive for the call.
    check(unsafe {
        glue_shim_nccl_comm_new(
            id.as_ptr(),
            rank as c_int,
            world_size as c_int,
            device as c_int,
            timeout_ms,
            &mut out,
        )
    })?;
    Ok(NcclHandle(out))
}

pub fn nccl_all_reduce_sum(comm: &NcclHandle, tensor: &Tensor) -> Result<(), TorchError> {
    // SAFETY: a live communicator and a live tensor handle, borrowed for the call.
    check(unsafe { glue_shim_nccl_all_reduce_sum(comm.0, tensor.as_ptr() as *mut AtTensor) })
}

pub fn nccl_broadcast(comm: &NcclHandle, tensor: &Tensor, root: i64) -> Result<(), TorchError> {
    // SAFETY: as nccl_all_reduce_sum.
    check(unsafe {
        glue_shim_nccl_broadcast(comm.0, tensor.as_ptr() as *mut AtTensor, root as c_int)
    })
}
