//! AdamW's update for the gradients ATen's fused kernel cannot take:
//! - bf16 gradients of fp32 master weights: those of the bf16 copies that training's
//!   forward multiplies with under autocast
//!   ([`bert_model::SequenceClassifier::attach_bf16_copies`]). The pass that updates
//!   the weight rewrites its copy; the path this replaces cast every weight to bf16 at
//!   each forward and widened every gradient to fp32 at each backward (~19 ms of a
//!   ~150 ms MiniLM step on a 2-core Xeon).
//! - sparse gradients, the rows a batch looked up in the word embeddings
//!   ([`bert_model::BertModel::set_sparse_word_gradient`]): rows without one are
//!   updated with a zero gradient, as the dense update would, with no dense gradient
//!   filled, scattered and read. Without weight decay, rows whose moments are still
//!   all +0.0 (words no batch has looked up yet: 62% of the vocabulary over MRPC's
//!   training set) are not visited at all: from that state a zero gradient's update
//!   leaves weight and moments bit for bit as they are (see [`Gradient::SparseRows`]).
//!
//! The arithmetic is ATen's fused CPU kernel's (`adam_fused_step_impl`, ADAMW mode)
//! on the fp32 gradient, element by element and in its order, so the update is
//! `torch.optim.AdamW(fused=True)`'s up to its vector code's rounding.

use tch::{Kind, Tensor};

use crate::error::{Result, TrainError};

/// Where a parameter's gradient comes from.
pub(crate) enum Gradient<'a> {
    /// A bf16 copy's dense gradient; the copy is rewritten from the updated weight.
    Bf16 { grad: &'a Tensor, copy: &'a Tensor },
    /// A coalesced sparse COO gradient of whole rows (dim 0), fp32. `live`, one flag
    /// per row, is false only for rows whose moments are all +0.0 (bits zero): without
    /// weight decay such a row's update with a zero gradient is the identity (exp_avg
    /// `+0 + w * (0 - 0) = +0`, exp_avg_sq `+0 * beta2 + (1 - beta2) * 0 * 0 = +0`,
    /// weight `p + (-step * +0) / eps = p + -0 = p`, signed zeros included), so it is
    /// skipped unless the gradient has it. Ignored with weight decay.
    SparseRows {
        grad: &'a Tensor,
        live: Option<&'a [bool]>,
    },
}

/// One fp32 weight, its gradient and its moments.
pub(crate) struct Slot<'a> {
    pub master: &'a Tensor,
    pub gradient: Gradient<'a>,
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

/// Raw view of a slot's gradient.
enum GradientBuffer {
    Bf16 {
        grad: *const u16,
        copy: *mut u16,
    },
    /// `rows`: the sorted row indices holding a gradient; `values`: theirs, row-major.
    SparseRows {
        rows: Vec<usize>,
        values: *const f32,
        row_len: usize,
    },
}

/// Raw views of one slot's buffers, all of `len` contiguous elements.
struct Buffers {
    master: *mut f32,
    exp_avg: *mut f32,
    exp_avg_sq: *mut f32,
    gradient: GradientBuffer,
    len: usize,
    coefficients: Coefficients,
}

/// Elements `[start, start + len)` of buffer `buffer` need updating.
struct Span {
    buffer: usize,
    start: usize,
    len: usize,
}

/// The update's buffers and the spans of them to visit, in order; `ends[i]`: the
/// elements of spans `0..=i`, so tasks split the work rather than the buffers.
struct Plan {
    buffers: Vec<Buffers>,
    spans: Vec<Span>,
    ends: Vec<usize>,
}
// SAFETY: the tasks of one update touch disjoint element ranges of these buffers,
// which outlive the update; the sparse gradients are only read.
unsafe impl Sync for Plan {}

/// Elements per task: enough to amortize a task's start over a memory-bound loop.
const GRAIN: i64 = 1 << 15;

/// Updates every slot's weight and moments (and bf16 copy).
pub(crate) fn step(slots: &[Slot<'_>], hyper: Hyper) -> Result<()> {
    let mut buffers = Vec::with_capacity(slots.len());
    // Keeps the coalesced values alive through the update.
    let mut held = Vec::new();
    for s in slots {
        let n = s.master.numel();
        for (t, what) in [
            (s.master, "weight"),
            (s.exp_avg, "exp_avg"),
            (s.exp_avg_sq, "exp_avg_sq"),
        ] {
            check(t, Kind::Float, n, what)?;
        }
        let gradient = match s.gradient {
            Gradient::Bf16 { grad, copy } => {
                check(grad, Kind::BFloat16, n, "gradient")?;
                check(copy, Kind::BFloat16, n, "bf16 copy")?;
                GradientBuffer::Bf16 {
                    grad: grad.data_ptr() as *const u16,
                    copy: copy.data_ptr() as *mut u16,
                }
            }
            Gradient::SparseRows { grad, .. } => {
                let rows = Vec::<i64>::try_from(grad.f_indices()?.f_view([-1])?)?;
                let values = grad.f_values()?.f_contiguous()?;
                let row_len = n / s.master.size().first().map_or(1, |&r| r.max(1)) as usize;
                check(
                    &values,
                    Kind::Float,
                    rows.len() * row_len,
                    "sparse gradient",
                )?;
                let mut sorted = Vec::with_capacity(rows.len());
                for r in rows {
                    match usize::try_from(r) {
                        Ok(r) if (r + 1) * row_len <= n && sorted.last().is_none_or(|&l| l < r) => {
                            sorted.push(r)
                        }
                        _ => {
                            return Err(invalid(
                                "a coalesced sparse gradient of rows inside the weight",
                            ))
                        }
                    }
                }
                let values_ptr = values.data_ptr() as *const f32;
                held.push(values);
                GradientBuffer::SparseRows {
                    rows: sorted,
                    values: values_ptr,
                    row_len,
                }
            }
        };
        buffers.push(Buffers {
            master: s.master.data_ptr() as *mut f32,
            exp_avg: s.exp_avg.data_ptr() as *mut f32,
            exp_avg_sq: s.exp_avg_sq.data_ptr() as *mut f32,
            gradient,
            len: n,
            coefficients: Coefficients::new(hyper, s.weight_decay),
        });
    }
    let mut spans = Vec::new();
    for (i, (s, b)) in slots.iter().zip(&buffers).enumerate() {
        match (&s.gradient, &b.gradient) {
            (
                Gradient::SparseRows {
                    live: Some(live), ..
                },
                GradientBuffer::SparseRows { rows, row_len, .. },
            ) if s.weight_decay == 0.0 => {
                if live.len() * row_len != b.len {
                    return Err(invalid(
                        "one liveness flag per row of a sparse gradient's weight",
                    ));
                }
                spans.extend(
                    needed_rows(live, rows)
                        .into_iter()
                        .map(|(first, count)| Span {
                            buffer: i,
                            start: first * row_len,
                            len: count * row_len,
                        }),
                );
            }
            _ => spans.push(Span {
                buffer: i,
                start: 0,
                len: b.len,
            }),
        }
    }
    let ends: Vec<usize> = spans
        .iter()
        .scan(0, |end, s| {
            *end += s.len;
            Some(*end)
        })
        .collect();
    let plan = Plan {
        buffers,
        spans,
        ends,
    };
    let total = plan.ends.last().copied().unwrap_or(0);
    torch_shim::parallel_for(total as i64, GRAIN, |begin, end| {
        let (begin, end) = (begin as usize, end as usize);
        let plan = &plan;
        let first = plan.ends.partition_point(|&e| e <= begin);
        for (span, &span_end) in plan.spans[first..].iter().zip(&plan.ends[first..]) {
            let offset = span_end - span.len;
            if offset >= end {
                break;
            }
            let (lo, hi) = (begin.max(offset), end.min(span_end));
            // SAFETY: [lo - offset, hi - offset) of the span lies inside its slot's
            // buffers (checked contiguous, of `len` elements; spans are inside them
            // and disjoint), and no other task has it.
            unsafe {
                update_range(
                    &plan.buffers[span.buffer],
                    span.start + lo - offset,
                    hi - lo,
                )
            };
        }
    })?;
    drop(held);
    Ok(())
}

/// Runs of rows that are live or have a gradient, as (first row, row count):
/// `rows` sorted, inside `live`.
fn needed_rows(live: &[bool], rows: &[usize]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut next = rows.iter().peekable();
    for (r, &is_live) in live.iter().enumerate() {
        let has_gradient = next.next_if_eq(&&r).is_some();
        if !(is_live || has_gradient) {
            continue;
        }
        match runs.last_mut() {
            Some((first, count)) if *first + *count == r => *count += 1,
            _ => runs.push((r, 1)),
        }
    }
    runs
}

fn invalid(what: &str) -> TrainError {
    TrainError::InvalidArgs(format!("AdamW's own update needs {what}"))
}

fn check(t: &Tensor, kind: Kind, n: usize, what: &str) -> Result<()> {
    if t.device() == tch::Device::Cpu && t.kind() == kind && t.is_contiguous() && t.numel() == n {
        Ok(())
    } else {
        Err(invalid(&format!(
            "a contiguous CPU {what} of {n} {kind:?} elements; got {} {:?} on {:?}",
            t.numel(),
            t.kind(),
            t.device()
        )))
    }
}

/// # Safety
/// `b`'s buffers hold `start + len` elements each, and nothing else touches
/// `[start, start + len)` of them during the call.
unsafe fn update_range(b: &Buffers, start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for; the rest
        // is the caller's promise.
        unsafe { update_range_avx2(b, start, len) };
        return;
    }
    // SAFETY: the caller's promise.
    unsafe { update_range_any(b, start, len) }
}

/// [`update_range_any`] compiled for AVX2 with FMA: the same operations (`mul_add` is
/// one rounding on every target), eight lanes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn update_range_avx2(b: &Buffers, start: usize, len: usize) {
    // SAFETY: the caller's promise.
    unsafe { update_range_any(b, start, len) }
}

/// # Safety
/// As [`update_range`].
#[inline(always)]
unsafe fn update_range_any(b: &Buffers, start: usize, len: usize) {
    let c = b.coefficients;
    // SAFETY: in bounds and unshared, by the caller's promise.
    let state = |from: usize, n: usize| unsafe {
        (
            std::slice::from_raw_parts_mut(b.master.add(from), n),
            std::slice::from_raw_parts_mut(b.exp_avg.add(from), n),
            std::slice::from_raw_parts_mut(b.exp_avg_sq.add(from), n),
        )
    };
    match &b.gradient {
        GradientBuffer::Bf16 { grad, copy } => {
            // SAFETY: as above.
            let (grad, copy) = unsafe {
                (
                    std::slice::from_raw_parts(grad.add(start), len),
                    std::slice::from_raw_parts_mut(copy.add(start), len),
                )
            };
            update(
                state(start, len),
                Some(copy),
                |i| f32::from_bits((grad[i] as u32) << 16),
                c,
            );
        }
        GradientBuffer::SparseRows {
            rows,
            values,
            row_len,
        } => {
            let (end, row_len) = (start + len, *row_len);
            let mut k = rows.partition_point(|&r| r < start / row_len);
            let mut at = start;
            while at < end {
                let row = at / row_len;
                if rows.get(k) == Some(&row) {
                    let stop = end.min((row + 1) * row_len);
                    // SAFETY: value row k holds `row_len` elements.
                    let g = unsafe {
                        std::slice::from_raw_parts(
                            values.add(k * row_len + at - row * row_len),
                            stop - at,
                        )
                    };
                    update(state(at, stop - at), None, |i| g[i], c);
                    k += 1;
                    at = stop;
                } else {
                    // Up to the next row with a gradient: a zero gradient.
                    let stop = rows.get(k).map_or(end, |&r| end.min(r * row_len));
                    update(state(at, stop - at), None, |_| 0.0, c);
                    at = stop;
                }
            }
        }
    }
}

#[inline(always)]
fn update(
    (master, exp_avg, exp_avg_sq): (&mut [f32], &mut [f32], &mut [f32]),
    mut copy: Option<&mut [u16]>,
    grad: impl Fn(usize) -> f32,
    c: Coefficients,
) {
    let n = master.len();
    let (exp_avg, exp_avg_sq) = (&mut exp_avg[..n], &mut exp_avg_sq[..n]);
    if let Some(copy) = copy.as_mut() {
        assert_eq!(copy.len(), n);
    }
    for i in 0..n {
        let mut g = grad(i);
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
        if let Some(copy) = copy.as_mut() {
            copy[i] = bf16_bits(p);
        }
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
                        gradient: Gradient::Bf16 {
                            grad: &grads[i],
                            copy: &copies[i],
                        },
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

    /// The sparse tests' step: lr 1e-3, torch's default betas and eps.
    fn sparse_test_hyper(step: i64, grad_divisor: f32) -> Hyper {
        Hyper {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step,
            grad_divisor: Some(grad_divisor),
        }
    }

    /// Sparse row gradients (a batch's word-embedding rows, some repeated) against
    /// ATen's fused AdamW on the dense gradient: rows without a gradient move too.
    #[test]
    fn sparse_rows_match_atens_fused_adamw_on_the_dense_gradient() {
        tch::manual_seed(5);
        let (vocab, hidden) = (1000i64, 24i64);
        let master = Tensor::randn([vocab, hidden], tch::kind::FLOAT_CPU);
        let reference = master.copy();
        let (m, v) = (master.zeros_like(), master.zeros_like());
        let (m_ref, v_ref) = (master.zeros_like(), master.zeros_like());
        let step_count = Tensor::zeros([], tch::kind::FLOAT_CPU);
        for step_no in 1..=3i64 {
            // Rows 0 and vocab - 1 (range edges), and repeats.
            let ids = Tensor::cat(
                &[
                    Tensor::randint(vocab, [60], (Kind::Int64, tch::Device::Cpu)),
                    Tensor::from_slice(&[0i64, vocab - 1, 17, 17]),
                ],
                0,
            );
            let values = Tensor::randn([64, hidden], tch::kind::FLOAT_CPU);
            let grad = Tensor::sparse_coo_tensor_indices_size(
                &ids.unsqueeze(0),
                &values,
                [vocab, hidden],
                tch::kind::FLOAT_CPU,
                false,
            )
            .coalesce();
            let slot = Slot {
                master: &master,
                gradient: Gradient::SparseRows {
                    grad: &grad,
                    live: None,
                },
                exp_avg: &m,
                exp_avg_sq: &v,
                weight_decay: 0.01,
            };
            let hyper = sparse_test_hyper(step_no, 1.25);
            step(&[slot], hyper).unwrap();

            let dense = grad.to_dense(None, false);
            let _ = step_count.shallow_clone().fill_(step_no as f64);
            let divisor = Tensor::from(1.25f32);
            torch_shim::fused_adamw(
                &[&reference],
                &[&dense],
                &[&m_ref],
                &[&v_ref],
                &[&step_count],
                Some(&divisor),
                torch_shim::AdamWHyper {
                    lr: 1e-3,
                    beta1: 0.9,
                    beta2: 0.999,
                    weight_decay: 0.01,
                    eps: 1e-8,
                },
            )
            .unwrap();
            for (what, ours, theirs, floor) in [
                ("weight", &master, &reference, 1e-3),
                ("exp_avg", &m, &m_ref, 1e-37),
                ("exp_avg_sq", &v, &v_ref, 1e-37),
            ] {
                let rel = max_rel(ours, theirs, floor);
                assert!(rel < 1e-6, "step {step_no}: {what} off by {rel:e}");
            }
        }
    }

    /// Without weight decay, skipping the rows whose moments are still +0.0 changes
    /// nothing: weights and moments bit for bit those of visiting every row, over
    /// steps that look up overlapping sets of rows (and the vocabulary's edges).
    #[test]
    fn skipping_dormant_rows_is_bit_identical_to_visiting_them() {
        tch::manual_seed(7);
        let (vocab, hidden) = (3000i64, 40i64);
        let init = Tensor::randn([vocab, hidden], tch::kind::FLOAT_CPU);
        // One weight -0.0, one +0.0: a dormant row must keep its signed zeros.
        let _ = init.get(2999).get(0).fill_(-0.0);
        let _ = init.get(2999).get(1).fill_(0.0);
        let runs: Vec<[Tensor; 3]> = (0..2)
            .map(|_| [init.copy(), init.zeros_like(), init.zeros_like()])
            .collect();
        let mut live = vec![false; vocab as usize];
        for step_no in 1..=4i64 {
            let ids = Tensor::cat(
                &[
                    Tensor::randint(vocab / 4 * step_no, [50], (Kind::Int64, tch::Device::Cpu)),
                    Tensor::from_slice(&[0i64, 17, 17]),
                ],
                0,
            );
            let grad = Tensor::sparse_coo_tensor_indices_size(
                &ids.unsqueeze(0),
                &Tensor::randn([53, hidden], tch::kind::FLOAT_CPU),
                [vocab, hidden],
                tch::kind::FLOAT_CPU,
                false,
            )
            .coalesce();
            for r in Vec::<i64>::try_from(grad.indices().view([-1])).unwrap() {
                live[r as usize] = true;
            }
            let hyper = sparse_test_hyper(step_no, 1.5);
            for (run, flags) in runs.iter().zip([None, Some(live.as_slice())]) {
                let slot = Slot {
                    master: &run[0],
                    gradient: Gradient::SparseRows {
                        grad: &grad,
                        live: flags,
                    },
                    exp_avg: &run[1],
                    exp_avg_sq: &run[2],
                    weight_decay: 0.0,
                };
                step(&[slot], hyper).unwrap();
            }
            for (what, k) in [("weight", 0), ("exp_avg", 1), ("exp_avg_sq", 2)] {
                let bits = |t: &Tensor| t.view_dtype(Kind::Int);
                assert!(
                    bits(&runs[0][k]).equal(&bits(&runs[1][k])),
                    "step {step_no}: {what} differs when dormant rows are skipped"
                );
            }
        }
        assert!(live.iter().any(|l| !l), "some rows stayed dormant");
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
