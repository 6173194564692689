//! What tch 0.24 does not bind, taken from libtorch itself through a small C++ shim
//! (`cpp/shim.cpp`, compiled against the headers the torch wheel ships):
//!
//! - [`fused_adamw`], ATen's fused AdamW kernel, as `torch.optim.AdamW(fused=True)`
//!   (HF Trainer's default optimizer, `adamw_torch_fused`), on CPU and CUDA;
//! - [`clip_grad_norm`] and [`zero_`], the foreach ops behind `clip_grad_norm_` and
//!   `zero_grad`, one call for all parameters ([`clip_grad_norm_deferred`] leaves the
//!   scaling to the fused AdamW kernel), and [`set_grads_to_none`], torch's
//!   `zero_grad(set_to_none=True)`;
//! - [`linear_inference`], an fp32 CPU linear layer (and its activation) through
//!   oneDNN when no gradient is recorded, with its weight reordered once
//!   ([`PackedWeight`]);
//! - [`autocast`], as `torch.autocast(device, dtype)` on CPU and CUDA with any dtype
//!   (tch's own `autocast` is CUDA-only and fp16);
//! - [`set_deterministic`], as `torch.use_deterministic_algorithms`;
//! - [`parallel_for`], `at::parallel_for` for Rust loops on libtorch's own threads,
//!   and [`with_intra_op_threads`], a thread's own intra-op thread count;
//! - [`distributed::ProcessGroup`], c10d's TCPStore rendezvous and Gloo process group
//!   (CPU data parallelism, as `torch.distributed` with the `gloo` backend), with an
//!   NCCL communicator for CUDA tensors (`cpp/nccl.cpp`: NCCL's C API, from the
//!   `libnccl.so.2` CUDA builds of torch load, opened at run time).
//!
//! Every call returns a [`TorchError`] instead of letting a C++ exception through.
//!
//! ```
//! use tch::{Device, Kind, Tensor};
//!
//! # fn main() -> Result<(), torch_shim::TorchError> {
//! let x = Tensor::ones([4, 8], (Kind::Float, Device::Cpu));
//! let w = Tensor::ones([3, 8], (Kind::Float, Device::Cpu));
//! // Inside, matmuls run in bfloat16 as under `torch.autocast("cpu", dtype=torch.bfloat16)`.
//! let y = torch_shim::autocast(Device::Cpu, Kind::BFloat16, || x.linear::<Tensor>(&w, None))?;
//! assert_eq!(y.kind(), Kind::BFloat16);
//! assert_eq!(x.linear::<Tensor>(&w, None).kind(), Kind::Float);
//! # Ok(())
//! # }
//! ```

pub mod distributed;
mod ffi;

use tch::{Device, Kind, Tensor};

/// An error raised inside libtorch, first line of its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("libtorch: {0}")]
pub struct TorchError(pub String);

pub type Result<T> = std::result::Result<T, TorchError>;

impl From<tch::TchError> for TorchError {
    fn from(e: tch::TchError) -> Self {
        TorchError(e.to_string().lines().next().unwrap_or_default().to_string())
    }
}

/// The libtorch version this crate was compiled against (`TORCH_VERSION`).
pub fn torch_version() -> &'static str {
    ffi::torch_version()
}

/// Hyperparameters of one AdamW update of one parameter group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

/// One AdamW update of a parameter group with ATen's fused kernel (`_fused_adamw_`):
/// parameters, `exp_avgs` and `exp_avg_sqs` are updated in place. `steps` are
/// float32 0-dim tensors on the parameters' device holding the step count including
/// this update (torch increments them before the call); the kernel only reads them.
/// `grad_scale`, a float32 0-dim tensor there too, divides the gradients as the
/// kernel reads them, and the divided gradients are written back (see
/// [`clip_grad_norm_deferred`]).
pub fn fused_adamw(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avgs: &[&Tensor],
    exp_avg_sqs: &[&Tensor],
    steps: &[&Tensor],
    grad_scale: Option<&Tensor>,
    hyper: AdamWHyper,
) -> Result<()> {
    ffi::fused_adamw(
        &ffi::AdamWLists {
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            steps,
            grad_scale,
        },
        hyper.lr,
        hyper.beta1,
        hyper.beta2,
        hyper.weight_decay,
        hyper.eps,
    )
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` over gradients: scales them in
/// place so that their global L2 norm is at most `max_norm` and returns the norm
/// before clipping as a 0-dim tensor on the gradients' device (no host sync).
pub fn clip_grad_norm(grads: &[&Tensor], max_norm: f64) -> Result<Tensor> {
    let Some(first) = grads.first() else {
        return Ok(Tensor::zeros([], (Kind::Float, Device::Cpu)));
    };
    let total = Tensor::zeros([], (first.kind(), first.device()));
    ffi::clip_grad_norm(grads, max_norm, &total, None)?;
    Ok(total)
}

/// The norm and clipping factor of [`clip_grad_norm`], the gradients left as they
/// are: returns `(norm before clipping, 1 / factor)`, both 0-dim float32 tensors on
/// the gradients' device. Passed to [`fused_adamw`] as `grad_scale`, the divisor
/// clips the gradients inside the update's own pass over them. bf16 gradients count
/// with their fp32 values (norms accumulated in fp32); `fused_adamw` takes float32
/// gradients only, so bf16 ones need an update of their own that divides by it.
/// `None` for no gradients, or gradients of another dtype (clip those with
/// [`clip_grad_norm`]).
pub fn clip_grad_norm_deferred(
    grads: &[&Tensor],
    max_norm: f64,
) -> Result<Option<(Tensor, Tensor)>> {
    let Some(first) = grads.first() else {
        return Ok(None);
    };
    if grads
        .iter()
        .any(|g| !matches!(g.kind(), Kind::Float | Kind::BFloat16))
    {
        return Ok(None);
    }
    let options = (Kind::Float, first.device());
    let (total, divisor) = (Tensor::zeros([], options), Tensor::ones([], options));
    ffi::clip_grad_norm(grads, max_norm, &total, Some(&divisor))?;
    Ok(Some((total, divisor)))
}

/// Sets every tensor to zero in one call (`torch._foreach_zero_`).
pub fn zero_(tensors: &[&Tensor]) -> Result<()> {
    if tensors.is_empty() {
        return Ok(());
    }
    ffi::zero(tensors)
}

/// `at::parallel_for(0, n, grain, body)`: `body(begin, end)` over disjoint sub-ranges
/// that cover `0..n`, run on libtorch's intra-op threads (the OpenMP team its CPU
/// kernels use), so Rust work between ATen ops shares those threads instead of
/// starting a second pool that would compete with them for the cores. Ranges shorter
/// than `grain` stay on the calling thread.
///
/// ```
/// use std::sync::atomic::{AtomicI64, Ordering};
///
/// let sum = AtomicI64::new(0);
/// torch_shim::parallel_for(1000, 10, |begin, end| {
///     sum.fetch_add((begin..end).sum::<i64>(), Ordering::Relaxed);
/// })?;
/// assert_eq!(sum.into_inner(), 999 * 1000 / 2);
/// # Ok::<(), torch_shim::TorchError>(())
/// ```
pub fn parallel_for(n: i64, grain: i64, body: impl Fn(i64, i64) + Sync) -> Result<()> {
    if n <= 0 {
        return Ok(());
    }
    ffi::parallel_for(n, grain.max(1), &body)
}

/// The activation [`linear_inference`] applies to its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    None,
    /// `F.gelu(x)` (erf).
    Gelu,
    /// `F.gelu(x, approximate="tanh")`.
    GeluTanh,
    Relu,
}

/// `act(x @ w^T + b)` (`torch.nn.functional.linear`, then the activation) for
/// inference: in fp32 on CPU, while autograd records nothing (under `no_grad`, or no
/// input requires grad), it runs through oneDNN's matmul (`mkldnn::_linear_pointwise`,
/// what torch.compile's CPU backend emits for a linear layer) instead of MKL's sgemm,
/// ~1.2x the throughput for BERT's layer shapes on an AVX-512 AMD EPYC, with the
/// activation applied by the matmul as it writes its output (a post-op) rather than
/// in a pass of its own; the same fp32 arithmetic up to summation order. Anything else
/// (gradients to record, other dtypes or devices, autocast, a libtorch without oneDNN)
/// is `at::linear` and the activation. `packed`, [`PackedWeight::new`] of `w`, spares
/// oneDNN reordering `w` on every call (fp32), or serves bf16 autocast (bf16).
///
/// ```
/// use tch::{Device, Kind, Tensor};
/// use torch_shim::{Activation, PackedWeight};
///
/// let x = Tensor::ones([5, 8], (Kind::Float, Device::Cpu));
/// let w = Tensor::ones([3, 8], (Kind::Float, Device::Cpu));
/// let b = Tensor::from_slice(&[1f32, 2., 3.]);
/// let y = tch::no_grad(|| torch_shim::linear_inference(&x, &w, None, Some(&b), Activation::None))?;
/// assert!(y.allclose(&x.linear(&w, Some(&b)), 1e-6, 1e-6, false));
/// let packed = PackedWeight::new(&w, Kind::Float, 5)?;
/// let y = tch::no_grad(|| {
///     torch_shim::linear_inference(&x, &w, packed.as_ref(), Some(&b), Activation::Gelu)
/// })?;
/// assert!(y.allclose(&x.linear(&w, Some(&b)).gelu("none"), 1e-6, 1e-6, false));
/// # Ok::<(), torch_shim::TorchError>(())
/// ```
pub fn linear_inference(
    x: &Tensor,
    w: &Tensor,
    packed: Option<&PackedWeight>,
    b: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    let code = match act {
        Activation::None => 0,
        Activation::Gelu => 1,
        Activation::GeluTanh => 2,
        Activation::Relu => 3,
    };
    ffi::linear_inference(x, w, packed.map(|p| &p.0), b, code)
}

/// `x.index_select(0, spread)` for a padding-free encoder's attention, with a backward
/// that gathers instead of scattering: `spread` maps every position of a padded
/// `[batch * seq]` layout to a row of `x` (a token's own row, or at padding a row of
/// its sequence), and `index` maps each of x's first `index.len()` rows back to its
/// position. Row r's gradient is the output gradient at `index[r]`, the rows after
/// those get zeros. That equals index_select's backward (zero-fill, then add every
/// position's gradient into its row, on one thread) whenever the gradient at the
/// positions `index` does not name is zero, as it is at attention's masked padding,
/// up to the sign of zeros.
///
/// ```
/// use tch::{Kind, Tensor};
///
/// let x = Tensor::arange(6, tch::kind::FLOAT_CPU).view([3, 2]).set_requires_grad(true);
/// // Two sequences [a, pad] and [b, c]: positions 0..4 read rows 0, 0, 1, 2.
/// let spread = Tensor::from_slice(&[0i64, 0, 1, 2]);
/// let index = Tensor::from_slice(&[0i64, 2, 3]);
/// let y = torch_shim::spread_rows(&x, &spread, &index)?;
/// assert!(y.equal(&x.index_select(0, &spread)));
/// // A gradient that is zero at the padding position 1.
/// let mask = Tensor::from_slice(&[1f32, 0., 1., 1.]).view([4, 1]);
/// (y * &mask).sum(Kind::Float).backward();
/// assert!(x.grad().equal(&Tensor::ones([3, 2], tch::kind::FLOAT_CPU)));
/// # Ok::<(), torch_shim::TorchError>(())
/// ```
pub fn spread_rows(x: &Tensor, spread: &Tensor, index: &Tensor) -> Result<Tensor> {
    ffi::spread_rows(x, spread, index)
}

/// A linear layer's fp32 CPU weight reordered once into the layout oneDNN's inner
/// product asks for (`mkldnn::_reorder_linear_weight`, as torch.compile's freezing pass
/// prepares a linear layer; for fp32 on an AVX-512 AMD EPYC, the weight transposed), for
/// [`linear_inference`]. Given the plain weight, oneDNN transposes it on every call:
/// 8.5% of an fp32 MRPC evaluation there, the weights coming back from memory each
/// time. A copy of the weight: it does not follow later changes to it.
///
/// A bf16 one serves CPU bf16 autocast: [`linear_inference`] under
/// `autocast(Cpu, BFloat16)` then computes what autocast's linear does (input and bias
/// cast to bf16, the same bf16 output) from the weight cast and packed once.
#[derive(Debug)]
pub struct PackedWeight(Tensor);

// SAFETY: a PackedWeight is only ever read (handed to libtorch as a matmul's input),
// and libtorch may read one tensor from several threads at once.
unsafe impl Sync for PackedWeight {}

impl PackedWeight {
    /// `w`: `[out, in]`, fp32, packed as `kind` (`Float` or `BFloat16`); `rows` > 0
    /// hints the inputs' row count, which can decide the layout and so the kernel (on
    /// an Intel Xeon, fp32 `[1536, 384]`: transposed and a gemm kernel without a hint,
    /// blocked and brgemm, ~1.3x faster, from ~256 rows). `None` off the CPU, or in a
    /// libtorch without oneDNN.
    pub fn new(w: &Tensor, kind: Kind, rows: i64) -> Result<Option<PackedWeight>> {
        let bf16 = match kind {
            Kind::Float => false,
            Kind::BFloat16 => true,
            other => {
                return Err(TorchError(format!(
                    "a packed linear weight is Float or BFloat16, not {other:?}"
                )))
            }
        };
        Ok(ffi::pack_linear_weight(w, rows, bf16)?.map(PackedWeight))
    }
}

/// Runs `f` with this thread's intra-op parallelism limited to `threads` (OpenMP's
/// per-thread team size, which ATen's kernels and oneDNN read, and MKL's thread-local
/// setting), restoring the previous settings afterwards. Other threads keep theirs,
/// so several threads can each run libtorch work single-threaded side by side (inter-op
/// parallelism) without starting more threads than cores.
///
/// ```
/// use tch::{Device, Kind, Tensor};
///
/// let x = Tensor::ones([64, 64], (Kind::Float, Device::Cpu));
/// let y = torch_shim::with_intra_op_threads(1, || x.matmul(&x))?;
/// assert_eq!(y.double_value(&[0, 0]), 64.0);
/// # Ok::<(), torch_shim::TorchError>(())
/// ```
pub fn with_intra_op_threads<T>(threads: usize, f: impl FnOnce() -> T) -> Result<T> {
    let n = i32::try_from(threads.max(1)).unwrap_or(i32::MAX);
    let previous = ffi::set_thread_threads(n, (0, 0))?;
    struct Restore((i32, i32));
    impl Drop for Restore {
        fn drop(&mut self) {
            // Only stores two thread-local values.
            let _ = ffi::set_thread_threads(0, self.0);
        }
    }
    let _restore = Restore(previous);
    Ok(f())
}

/// `optimizer.zero_grad(set_to_none=True)`: drops the gradients, so the next backward
/// writes them afresh instead of accumulating into zeroed buffers.
pub fn set_grads_to_none(params: &[&Tensor]) -> Result<()> {
    if params.is_empty() {
        return Ok(());
    }
    ffi::set_grads_to_none(params)
}

fn autocast_device(device: Device) -> Result<i32> {
    match device {
        Device::Cpu => Ok(0),
        Device::Cuda(_) => Ok(1),
        other => Err(TorchError(format!(
            "autocast is supported on CPU and CUDA, not {other:?}"
        ))),
    }
}

fn scalar_type(kind: Kind) -> Result<i32> {
    // c10/core/ScalarType.h codes.
    match kind {
        Kind::Half => Ok(5),
        Kind::BFloat16 => Ok(15),
        other => Err(TorchError(format!(
            "autocast runs in bfloat16 or float16, not {other:?}"
        ))),
    }
}

/// Restores the thread's previous autocast state, also when `f` panics.
struct AutocastGuard {
    device: i32,
    was_enabled: i32,
    was_dtype: i32,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        // Exit only restores two thread-local values; it has nothing to fail on.
        let _ = ffi::autocast_exit(self.device, self.was_enabled, self.was_dtype);
    }
}

/// Runs `f` under `torch.autocast(device.type, dtype=kind)`: eligible ops (matmuls,
/// linear, attention) compute in `kind`, numerically sensitive ones (softmax in
/// losses, norms on CUDA) in fp32, the rest in their inputs' dtype. Thread-local,
/// as in PyTorch; backward passes need no autocast of their own.
pub fn autocast<T>(device: Device, kind: Kind, f: impl FnOnce() -> T) -> Result<T> {
    autocast_region(device, kind, true, f)
}

/// Runs `f` under `torch.autocast(device.type, enabled=False)`: inside an autocast
/// region, a stretch that must compute in its inputs' dtype (as ATen's own kernels do
/// below the autocast layer).
pub fn without_autocast<T>(device: Device, f: impl FnOnce() -> T) -> Result<T> {
    autocast_region(device, Kind::BFloat16, false, f)
}

fn autocast_region<T>(
    device: Device,
    kind: Kind,
    enabled: bool,
    f: impl FnOnce() -> T,
) -> Result<T> {
    let code = autocast_device(device)?;
    let dtype = scalar_type(kind)?;
    let (was_enabled, was_dtype) = ffi::autocast_enter(code, dtype, enabled)?;
    let _guard = AutocastGuard {
        device: code,
        was_enabled,
        was_dtype,
    };
    Ok(f())
}

/// Whether autocast is on for `device` in this thread.
pub fn autocast_enabled(device: Device) -> bool {
    autocast_device(device).is_ok_and(ffi::autocast_enabled)
}

/// `torch.use_deterministic_algorithms(enabled)` with cuDNN's deterministic mode and
/// no cuDNN benchmarking, as HF's `enable_full_determinism` sets them. Ops without a
/// deterministic implementation then raise instead of running.
pub fn set_deterministic(enabled: bool) -> Result<()> {
    ffi::set_deterministic(enabled)
}

/// Whether `set_deterministic(true)` is in effect.
pub fn deterministic() -> bool {
    ffi::deterministic()
}

/// `torch.backends.cuda.enable_cudnn_sdp(enabled)`: whether scaled-dot-product
/// attention may use cuDNN's kernel. torch 2.11 prefers it for bf16 on Hopper and
/// Blackwell, where it builds an execution plan per new input shape (tens of ms each,
/// and a padded GLUE batch has a new sequence length nearly every step).
pub fn set_cudnn_attention(enabled: bool) -> Result<()> {
    ffi::set_cudnn_attention(enabled)
}

/// Whether scaled-dot-product attention may use cuDNN's kernel.
pub fn cudnn_attention() -> bool {
    ffi::cudnn_attention()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Gradients equal index_select's, bit for bit, when the padding positions'
    /// output gradient is zero: three sequences of 5, 2 and 1 tokens padded to 5,
    /// and two dummy rows after the 8 tokens.
    #[test]
    fn spread_rows_gradient_is_index_selects_when_padding_gets_none() {
        use tch::{Kind, Tensor};
        tch::manual_seed(11);
        let lengths = [5i64, 2, 1];
        let (mut spread, mut index, mut real_mask, mut first) = (vec![], vec![], vec![], 0);
        for &n in &lengths {
            for col in 0..5 {
                if col < n {
                    index.push(spread.len() as i64);
                    spread.push(first + col);
                    real_mask.push(1f32);
                } else {
                    spread.push(first);
                    real_mask.push(0f32);
                }
            }
            first += n;
        }
        let (spread, index) = (Tensor::from_slice(&spread), Tensor::from_slice(&index));
        let mask = Tensor::from_slice(&real_mask).view([15, 1]);
        let upstream = Tensor::randn([15, 6], tch::kind::FLOAT_CPU) * &mask;
        let x = Tensor::randn([10, 6], tch::kind::FLOAT_CPU).set_requires_grad(true);
        let grad_of = |y: Tensor| {
            let loss = (y * &upstream).sum(Kind::Float);
            Tensor::run_backward(&[loss], &[&x], false, false).remove(0)
        };
        let y = super::spread_rows(&x, &spread, &index).unwrap();
        assert!(y.equal(&x.index_select(0, &spread)));
        let ours = grad_of(y);
        let theirs = grad_of(x.index_select(0, &spread));
        assert!(ours.equal(&theirs), "{ours} vs {theirs}");
    }

    #[test]
    fn intra_op_threads_are_the_calling_threads_own_and_restored() {
        let before = tch::get_num_threads();
        let inside = super::with_intra_op_threads(1, || {
            // Another thread keeps the process's setting meanwhile.
            let other = std::thread::spawn(tch::get_num_threads).join().unwrap();
            assert_eq!(other, before);
            // One thread: at::parallel_for runs the whole range in one call.
            let calls = AtomicUsize::new(0);
            super::parallel_for(1000, 1, |_, _| {
                calls.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
            (tch::get_num_threads(), calls.into_inner())
        })
        .unwrap();
        assert_eq!(inside, (1, 1));
        assert_eq!(tch::get_num_threads(), before);
    }

    /// The shim is built with OpenMP, so its loops run on libtorch's intra-op team:
    /// without it at::parallel_for compiles to one call on the calling thread.
    #[test]
    fn parallel_for_runs_on_several_threads() {
        let threads = super::with_intra_op_threads(2, || {
            let ids = std::sync::Mutex::new(std::collections::HashSet::new());
            super::parallel_for(1000, 1, |_, _| {
                ids.lock().unwrap().insert(std::thread::current().id());
            })
            .unwrap();
            ids.into_inner().unwrap().len()
        })
        .unwrap();
        assert_eq!(threads, 2);
    }

    /// An input, weight and bias of a linear layer from 64 to 256 features, 37 rows.
    fn linear_inputs() -> (tch::Tensor, tch::Tensor, tch::Tensor) {
        use tch::{Device, Kind, Tensor};
        tch::manual_seed(0);
        let x = Tensor::randn([37, 64], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([256, 64], (Kind::Float, Device::Cpu)) * 0.2;
        let b = Tensor::randn([256], (Kind::Float, Device::Cpu));
        (x, w, b)
    }

    /// On two threads the gradients are cut into pieces across tensor boundaries (a
    /// word-embedding-sized one among small ones); the norm is still the norm of all
    /// elements, as libtorch computes it over their concatenation, and clipping scales
    /// every element by the same factor.
    #[test]
    fn threaded_norm_and_clip_match_one_concatenated_tensor() {
        use tch::{Device, Kind, Tensor};
        let shapes: [&[i64]; 4] = [&[3000, 96], &[7], &[384, 40], &[1, 1]];
        let grads: Vec<Tensor> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| Tensor::randn(*s, (Kind::Float, Device::Cpu)) * (i + 1) as f64)
            .collect();
        let flat = Tensor::cat(&grads.iter().map(|g| g.view([-1])).collect::<Vec<_>>(), 0);
        let want = flat.norm().double_value(&[]);
        let refs: Vec<&Tensor> = grads.iter().collect();
        let (norm, divisor) =
            super::with_intra_op_threads(2, || super::clip_grad_norm_deferred(&refs, 1.0))
                .unwrap()
                .unwrap()
                .expect("float32 gradients");
        let norm = norm.double_value(&[]);
        assert!((norm - want).abs() <= 1e-6 * want, "{norm} vs {want}");
        let factor = 1.0 / divisor.double_value(&[]);
        assert!((factor - 1.0 / (want + 1e-6)).abs() <= 1e-6 * factor);
        let copies: Vec<Tensor> = grads.iter().map(Tensor::copy).collect();
        let refs: Vec<&Tensor> = copies.iter().collect();
        let in_place = super::with_intra_op_threads(2, || super::clip_grad_norm(&refs, 1.0))
            .unwrap()
            .unwrap();
        assert_eq!(in_place.double_value(&[]), norm);
        for (clipped, g) in copies.iter().zip(&grads) {
            let err = (clipped - g * factor).abs().max().double_value(&[]);
            assert!(err <= 1e-6, "clipped gradients differ by {err}");
        }
    }

    /// Each post-op equals libtorch's own activation applied after `at::linear`, at a
    /// BERT FFN shape (oneDNN's matmul), with and without grad mode.
    #[test]
    fn fused_activations_match_torch() {
        use super::Activation;
        use tch::Kind;
        let (x, w, b) = linear_inputs();
        let y = x.linear(&w, Some(&b));
        let cases = [
            (Activation::None, y.shallow_clone()),
            (Activation::Gelu, y.gelu("none")),
            (Activation::GeluTanh, y.gelu("tanh")),
            (Activation::Relu, y.relu()),
        ];
        let packed = super::PackedWeight::new(&w, Kind::Float, 37).unwrap();
        assert!(packed.is_some(), "libtorch's CPU build has oneDNN");
        for (act, want) in cases {
            for got in [
                tch::no_grad(|| super::linear_inference(&x, &w, None, Some(&b), act)).unwrap(),
                super::linear_inference(&x, &w, None, Some(&b), act).unwrap(),
                tch::no_grad(|| super::linear_inference(&x, &w, packed.as_ref(), Some(&b), act))
                    .unwrap(),
            ] {
                let err = (&got - &want).abs().max().double_value(&[]);
                assert!(err < 1e-5, "{act:?}: max error {err}");
            }
        }
    }

    /// Under CPU bf16 autocast a bf16 packed weight gives autocast's own linear and
    /// activation (bf16 output, the activation on it); an fp32 packed one leaves
    /// autocast to its own routing.
    #[test]
    fn bf16_packed_weight_is_autocasts_linear() {
        use super::Activation;
        use tch::{Device, Kind};
        let (x, w, b) = linear_inputs();
        let bf16 = super::PackedWeight::new(&w, Kind::BFloat16, 0).unwrap();
        let fp32 = super::PackedWeight::new(&w, Kind::Float, 0).unwrap();
        for (act, torch_act) in [(Activation::None, None), (Activation::Gelu, Some("none"))] {
            let (want, got, unpacked) = tch::no_grad(|| {
                super::autocast(Device::Cpu, Kind::BFloat16, || {
                    let y = x.linear(&w, Some(&b));
                    let want = match torch_act {
                        Some(approximate) => y.gelu(approximate),
                        None => y,
                    };
                    let got = super::linear_inference(&x, &w, bf16.as_ref(), Some(&b), act);
                    let unpacked = super::linear_inference(&x, &w, fp32.as_ref(), Some(&b), act);
                    (want, got.unwrap(), unpacked.unwrap())
                })
            })
            .unwrap();
            assert_eq!(got.kind(), Kind::BFloat16);
            assert!(
                unpacked.equal(&want),
                "{act:?}: fp32 packing changed autocast"
            );
            // Bit for bit on the EPYC and Xeon this was written on; elsewhere oneDNN may
            // sum in another order, flipping a rare last bit. A bias left in fp32 or the
            // activation before the bf16 rounding changes a good share of them.
            let (got, want) = (got.to_kind(Kind::Float), want.to_kind(Kind::Float));
            let flipped = got.ne_tensor(&want).to_kind(Kind::Float).mean(Kind::Float);
            let flipped = flipped.double_value(&[]);
            let ulps = ((&got - &want).abs() / (want.abs() + 1e-3) * 128.0).max();
            assert!(
                flipped <= 0.01 && ulps.double_value(&[]) <= 1.0,
                "{act:?}: {:.2}% of the outputs differ from autocast's linear",
                flipped * 100.0
            );
        }
        assert!(super::PackedWeight::new(&w, Kind::Half, 0).is_err());
    }
}
