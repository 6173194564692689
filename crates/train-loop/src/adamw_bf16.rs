//! AdamW's update for fp32 master weights whose gradients are bf16: those of the
//! bf16 copies that training's forward multiplies with under autocast
//! ([`bert_model::SequenceClassifier::attach_bf16_copies`]). One pass reads weight,
//! gradient and moments and writes weight, moments and the refreshed copy; the path
//! it replaces cast every weight to bf16 at each forward and widened every gradient
//! to fp32 at each backward (~19 ms of a ~150 ms MiniLM step on a 2-core Xeon).
//!
//! The arithmetic is ATen's fused CPU kernel's (`adam_fused_step_impl`, ADAMW mode)
//! on the widened gradient, element by element and in its order, so the update is
//! `torch.optim.AdamW(fused=True)`'s up to its vector code's rounding.

use tch::{Kind, Tensor};

use crate::error::{Result, TrainError};

/// One master weight, its bf16 copy (whose `.grad` is the gradient) and its moments.
pub(crate) struct Slot<'a> {
    pub master: &'a Tensor,
    pub copy: &'a Tensor,
    pub grad: &'a Tensor,
    pub exp_avg: &'a Tensor,
    pub exp_avg_sq: &'a Tensor,
    pub weight_decay: f64,
}

/// The step's scalars, as ATen's kernel derives them (in f64, then rounded to f32
/// where the kernel builds its vectors).
#[derive(Clone, Copy)]
pub(crate) struct Hyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// The step count after this update.
    pub step: i64,
    /// Clipping's factor's inverse, divided into every gradient as it is read.
    pub grad_divisor: Option<f32>,
}

/// Per-element constants of one tensor's update.
#[derive(Clone, Copy)]
struct Coefficients {
    decay: Option<f32>,
    lerp_weight: f32,
    beta2: f32,
    sq_weight: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
    neg_step_size: f32,
    grad_divisor: Option<f32>,
}

impl Coefficients {
    fn new(h: Hyper, weight_decay: f64) -> Self {
        let bias_correction1 = 1.0 - h.beta1.powf(h.step as f64);
        let bias_correction2 = 1.0 - h.beta2.powf(h.step as f64);
        Coefficients {
            decay: (weight_decay != 0.0).then_some((1.0 - h.lr * weight_decay) as f32),
            lerp_weight: (1.0 - h.beta1) as f32,
            beta2: h.beta2 as f32,
            sq_weight: (1.0 - h.beta2) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            eps: h.eps as f32,
            neg_step_size: (-(h.lr / bias_correction1)) as f32,
            grad_divisor: h.grad_divisor,
        }
    }
}

/// Raw views of one slot's buffers, all of `len` contiguous elements.
#[derive(Clone, Copy)]
struct Buffers {
    master: *mut f32,
    copy: *mut u16,
    grad: *const u16,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    len: usize,
    coefficients: Coefficients,
}

struct Plan(Vec<Buffers>);
// SAFETY: the tasks of one update touch disjoint element ranges of these buffers,
// which outlive the update.
unsafe impl Sync for Plan {}

impl Plan {
    /// Through a method, so closures capture the `Sync` wrapper, not its field.
    fn buffers(&self) -> &[Buffers] {
        &self.0
    }
}

/// Elements per task: enough to amortize a task's start over a memory-bound loop.
const GRAIN: i64 = 1 << 15;

/// Updates every slot's master weight and moments and rewrites its copy.
pub(crate) fn step(slots: &[Slot<'_>], hyper: Hyper) -> Result<()> {
    let mut buffers = Vec::with_capacity(slots.len());
    for s in slots {
        check(s)?;
        buffers.push(Buffers {
            master: s.master.data_ptr() as *mut f32,
            copy: s.copy.data_ptr() as *mut u16,
            grad: s.grad.data_ptr() as *const u16,
            exp_avg: s.exp_avg.data_ptr() as *mut f32,
            exp_avg_sq: s.exp_avg_sq.data_ptr() as *mut f32,
            len: s.master.numel(),
            coefficients: Coefficients::new(hyper, s.weight_decay),
        });
    }
    let plan = Plan(buffers);
    let total: usize = plan.buffers().iter().map(|b| b.len).sum();
    torch_shim::parallel_for(total as i64, GRAIN, |begin, end| {
        let (begin, end) = (begin as usize, end as usize);
        let mut offset = 0;
        for b in plan.buffers() {
            let (lo, hi) = (begin.max(offset), end.min(offset + b.len));
            if lo < hi {
                // SAFETY: [lo - offset, hi - offset) lies inside this slot's buffers
                // (checked contiguous, of `len` elements), and no other task has it.
                unsafe { update_range(b, lo - offset, hi - lo) };
            }
            offset += b.len;
        }
    })?;
    Ok(())
}

fn check(s: &Slot<'_>) -> Result<()> {
    let n = s.master.numel();
    let ok = |t: &Tensor, kind: Kind| {
        t.device() == tch::Device::Cpu && t.kind() == kind && t.is_contiguous() && t.numel() == n
    };
    if ok(s.master, Kind::Float)
        && ok(s.exp_avg, Kind::Float)
        && ok(s.exp_avg_sq, Kind::Float)
        && ok(s.copy, Kind::BFloat16)
        && ok(s.grad, Kind::BFloat16)
    {
        Ok(())
    } else {
        Err(TrainError::InvalidArgs(format!(
            "bf16-copy AdamW needs contiguous CPU tensors of {n} elements: fp32 weight and \
             moments, bf16 copy and gradient; got {:?}/{:?}/{:?}",
            s.master.kind(),
            s.copy.kind(),
            s.grad.kind()
        )))
    }
}

/// # Safety
/// `b`'s buffers hold `start + len` elements each, and nothing else touches
/// `[start, start + len)` of them during the call.
unsafe fn update_range(b: &Buffers, start: usize, len: usize) {
    let slices = unsafe {
        (
            std::slice::from_raw_parts_mut(b.master.add(start), len),
            std::slice::from_raw_parts_mut(b.copy.add(start), len),
            std::slice::from_raw_parts(b.grad.add(start), len),
            std::slice::from_raw_parts_mut(b.exp_avg.add(start), len),
            std::slice::from_raw_parts_mut(b.exp_avg_sq.add(start), len),
        )
    };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        unsafe { update_avx2(slices, b.coefficients) };
        return;
    }
    update(slices, b.coefficients);
}

type Slices<'a> = (
    &'a mut [f32],
    &'a mut [u16],
    &'a [u16],
    &'a mut [f32],
    &'a mut [f32],
);

/// [`update`] compiled for AVX2 with FMA: the same operations (`mul_add` is one
/// rounding on every target), eight lanes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn update_avx2(slices: Slices<'_>, c: Coefficients) {
    update(slices, c);
}

#[inline(always)]
fn update((master, copy, grad, exp_avg, exp_avg_sq): Slices<'_>, c: Coefficients) {
    let n = master.len();
    let (copy, grad, exp_avg, exp_avg_sq) = (
        &mut copy[..n],
        &grad[..n],
        &mut exp_avg[..n],
        &mut exp_avg_sq[..n],
    );
    for i in 0..n {
        let mut g = f32::from_bits((grad[i] as u32) << 16);
        if let Some(d) = c.grad_divisor {
            g /= d;
        }
        let mut p = master[i];
        if let Some(decay) = c.decay {
            p *= decay;
        }
        // exp_avg.lerp_(grad, 1 - beta1), ATen's two-sided lerp.
        let m = if c.lerp_weight.abs() < 0.5 {
            c.lerp_weight.mul_add(g - exp_avg[i], exp_avg[i])
        } else {
            (c.lerp_weight - 1.0).mul_add(g - exp_avg[i], g)
        };
        let v = exp_avg_sq[i] * c.beta2 + c.sq_weight * g * g;
        let denom = v.sqrt() / c.bias_correction2_sqrt + c.eps;
        p += c.neg_step_size * m / denom;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        master[i] = p;
        copy[i] = bf16_bits(p);
    }
}

/// bf16 bits of `v`, rounded to nearest even as ATen's float -> bfloat16 cast rounds
/// (a NaN becomes the canonical quiet NaN, as in c10::BFloat16).
#[inline(always)]
fn bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
    if v.is_nan() {
        0x7fc0
    } else {
        rounded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest difference relative to the reference's magnitude, at least `floor`.
    fn max_rel(a: &Tensor, b: &Tensor, floor: f64) -> f64 {
        let diff = (a - b).abs();
        (diff / b.abs().clamp_min(floor)).max().double_value(&[])
    }

    /// The update against ATen's fused AdamW (`torch.optim.AdamW(fused=True)`'s
    /// kernel) on the widened gradients: sizes with vector tails, weight decay or not,
    /// clipping's divisor or not, both sides of ATen's lerp, and gradients of ~1e-8
    /// where eps inside or outside the square root would differ.
    #[test]
    fn matches_atens_fused_adamw_on_widened_gradients() {
        tch::manual_seed(3);
        for (case, (beta1, weight_decay, divisor, scale)) in [
            (0.9, 0.0, None, 1.0),
            (0.9, 0.01, Some(2.5f32), 1.0),
            (0.3, 0.1, None, 1.0),
            (0.9, 0.0, Some(1.5f32), 1e-8),
        ]
        .into_iter()
        .enumerate()
        {
            let sizes = [1i64, 7, 37, 1000, 70001];
            let master: Vec<Tensor> = sizes
                .iter()
                .map(|&n| Tensor::randn([n], tch::kind::FLOAT_CPU))
                .collect();
            let reference: Vec<Tensor> = master.iter().map(Tensor::copy).collect();
            let zeros = || -> Vec<Tensor> { master.iter().map(Tensor::zeros_like).collect() };
            let (m, v, m_ref, v_ref) = (zeros(), zeros(), zeros(), zeros());
            let copies: Vec<Tensor> = master.iter().map(|t| t.to_kind(Kind::BFloat16)).collect();
            let step_count = Tensor::zeros([], tch::kind::FLOAT_CPU);
            for step_no in 1..=3i64 {
                let grads: Vec<Tensor> = master
                    .iter()
                    .map(|t| (t.randn_like() * scale).to_kind(Kind::BFloat16))
                    .collect();
                let slots: Vec<Slot<'_>> = (0..sizes.len())
                    .map(|i| Slot {
                        master: &master[i],
                        copy: &copies[i],
                        grad: &grads[i],
                        exp_avg: &m[i],
                        exp_avg_sq: &v[i],
                        weight_decay,
                    })
                    .collect();
                let hyper = Hyper {
                    lr: 1e-3,
                    beta1,
                    beta2: 0.999,
                    eps: 1e-8,
                    step: step_no,
                    grad_divisor: divisor,
                };
                step(&slots, hyper).unwrap();

                let widened: Vec<Tensor> = grads.iter().map(|g| g.to_kind(Kind::Float)).collect();
                let _ = step_count.shallow_clone().fill_(step_no as f64);
                let divisor_tensor = divisor.map(Tensor::from);
                torch_shim::fused_adamw(
                    &reference.iter().collect::<Vec<_>>(),
                    &widened.iter().collect::<Vec<_>>(),
                    &m_ref.iter().collect::<Vec<_>>(),
                    &v_ref.iter().collect::<Vec<_>>(),
                    &vec![&step_count; sizes.len()],
                    divisor_tensor.as_ref(),
                    torch_shim::AdamWHyper {
                        lr: 1e-3,
                        beta1,
                        beta2: 0.999,
                        weight_decay,
                        eps: 1e-8,
                    },
                )
                .unwrap();
                for i in 0..sizes.len() {
                    // Weights near 0 are measured against the step's size, lr: the
                    // vector code's rounding of the update is relative to it.
                    for (what, ours, theirs, floor) in [
                        ("weight", &master[i], &reference[i], 1e-3),
                        ("exp_avg", &m[i], &m_ref[i], 1e-37),
                        ("exp_avg_sq", &v[i], &v_ref[i], 1e-37),
                    ] {
                        let rel = max_rel(ours, theirs, floor);
                        assert!(
                            rel < 1e-6,
                            "case {case} step {step_no} size {}: {what} off by {rel:e}",
                            sizes[i]
                        );
                    }
                    assert!(
                        copies[i].equal(&master[i].to_kind(Kind::BFloat16)),
                        "case {case} step {step_no}: the copy is not the weight's bf16 cast"
                    );
                }
            }
        }
    }

    #[test]
    fn rounds_to_bf16_as_aten_casts() {
        let values = [
            0.0f32,
            -0.0,
            1.0,
            1.0 + 1.0 / 256.0, // ties: to even (down)
            1.0078125,
            1.0 + 3.0 / 256.0, // to even (up)
            -3.3e38,
            1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
            3.4e38,
            f32::MAX,
        ];
        let ours: Vec<i16> = values.iter().map(|&v| bf16_bits(v) as i16).collect();
        let aten = Tensor::from_slice(&values)
            .to_kind(Kind::BFloat16)
            .view_dtype(Kind::Int16);
        assert_eq!(ours, Vec::<i16>::try_from(&aten).unwrap());
        assert_eq!(bf16_bits(f32::NAN), 0x7fc0);
    }
}
