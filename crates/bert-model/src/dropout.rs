//! Dropout as `torch.nn.functional.dropout` computes it (each element zeroed with
//! probability p, the rest scaled by 1/(1-p)), with one difference on CPU (fp32, and
//! bf16 under autocast, where linear outputs are bf16):
//! the mask comes from a counter-based generator (SplitMix64) seeded by one draw from
//! torch's CPU generator, instead of ATen's `bernoulli_`, which draws element by
//! element from mt19937 on CPUs where it does not use MKL's vector RNG (AMD among
//! them): ~30 ms of a ~400 ms MiniLM step there. Same distribution, same seeding
//! (runs and resumes stay reproducible), different masks than torch's. The mask is
//! written straight into a tensor of the input's dtype by libtorch's intra-op
//! threads; each value depends on its index and the seed only, so how the work is
//! split never changes it.

use tch::{Device, Kind, TchError, Tensor};

/// SplitMix64's output function: 64 well-mixed bits from a counter.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Golden-ratio stride between the counters of neighbouring pairs.
const STRIDE: u64 = 0x9e37_79b9_7f4a_7c15;

/// Pairs of mask values per task when the mask is filled on several threads.
const PAIRS_PER_TASK: i64 = 16_384;

/// Writes the keep-mask for elements `2 * first_pair ..` into `out`: each value
/// `keep` (1/(1-p) in the mask's dtype) or `drop` (0), element `i` decided by half of
/// the bits of pair `i / 2`. Every value depends on its index and the seed only, so
/// any split of the mask into ranges gives the same mask.
fn write_mask<T: Copy>(out: &mut [T], first_pair: u64, p: f64, seed: u64, keep: T, drop: T) {
    let keep_below = ((1.0 - p) * 4_294_967_296.0) as u64;
    for (i, pair) in out.chunks_mut(2).enumerate() {
        let bits = mix(seed.wrapping_add((first_pair + i as u64).wrapping_mul(STRIDE)));
        for (slot, half) in pair.iter_mut().zip([bits & 0xffff_ffff, bits >> 32]) {
            *slot = if half < keep_below { keep } else { drop };
        }
    }
}

/// Keep-mask scaled by 1/(1-p): `n` values, each 0 or 1/(1-p).
#[cfg(test)]
fn scaled_mask(n: usize, p: f64, seed: u64) -> Vec<f32> {
    let mut mask = vec![0f32; n];
    write_mask(&mut mask, 0, p, seed, (1.0 / (1.0 - p)) as f32, 0.0);
    mask
}

/// bf16 bits of `v`, rounded to nearest even as ATen's float -> bfloat16 cast rounds.
fn bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// A raw pointer that tasks writing disjoint ranges may share.
#[derive(Clone, Copy)]
struct SharedPtr<T>(*mut T);
// SAFETY: every task writes a disjoint range of the buffer behind the pointer.
unsafe impl<T> Sync for SharedPtr<T> {}

impl<T> SharedPtr<T> {
    /// Through a method, so closures capture the `Sync` wrapper, not its raw field.
    fn get(self) -> *mut T {
        self.0
    }
}

/// Fills `mask` (a new contiguous CPU tensor of `n` elements) on libtorch's intra-op
/// threads, the pairs split into ranges: the same values as one serial pass.
fn fill_mask<T: Copy + Send + Sync>(
    mask: &Tensor,
    n: usize,
    p: f64,
    seed: u64,
    keep: T,
    drop: T,
) -> Result<(), TchError> {
    let data = SharedPtr(mask.data_ptr() as *mut T);
    let pairs = n.div_ceil(2) as i64;
    torch_shim::parallel_for(pairs, PAIRS_PER_TASK, |begin, end| {
        let (first, last) = (2 * begin as usize, (2 * end as usize).min(n));
        // SAFETY: `mask` holds `n` contiguous `T`s and stays alive during the call;
        // ranges of different tasks do not overlap.
        let out = unsafe { std::slice::from_raw_parts_mut(data.get().add(first), last - first) };
        write_mask(out, begin as u64, p, seed, keep, drop);
    })
    .map_err(|e| TchError::Torch(e.to_string()))
}

/// `x.dropout(p, train)`; see the module docs for the CPU fp32/bf16 path.
pub(crate) fn dropout(x: &Tensor, p: f64, train: bool) -> Result<Tensor, TchError> {
    if !train || p <= 0.0 {
        return Ok(x.shallow_clone());
    }
    if x.device() != Device::Cpu || !matches!(x.kind(), Kind::Float | Kind::BFloat16) || p >= 1.0 {
        return x.f_dropout(p, train);
    }
    // One value from torch's generator, so manual_seed governs the masks.
    let seed =
        Tensor::f_randint(i64::MAX, [1], (Kind::Int64, Device::Cpu))?.f_int64_value(&[0])? as u64;
    let mask = Tensor::f_empty(x.size(), (x.kind(), Device::Cpu))?;
    let n = x.numel();
    let scale = (1.0 / (1.0 - p)) as f32;
    match x.kind() {
        // In bf16 the scale is rounded to bf16, as ATen's bf16 `bernoulli_` mask
        // divided by 1 - p is, so the product stays bf16.
        Kind::BFloat16 => fill_mask(&mask, n, p, seed, bf16_bits(scale), 0u16)?,
        _ => fill_mask(&mask, n, p, seed, scale, 0f32)?,
    }
    x.f_mul(&mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests that seed torch's global generator take turns (the harness runs tests
    /// on several threads, and one's `manual_seed` would move another's draws).
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn keeps_about_one_minus_p_and_scales_them() {
        let mask = scaled_mask(1_000_000, 0.1, 42);
        let kept: Vec<&f32> = mask.iter().filter(|&&m| m != 0.0).collect();
        let rate = kept.len() as f64 / mask.len() as f64;
        assert!((rate - 0.9).abs() < 0.002, "kept {rate}");
        assert!(kept.iter().all(|&&m| (m - 1.0 / 0.9).abs() < 1e-6));
        // Neighbouring elements and seeds are not correlated in the obvious ways.
        assert_ne!(scaled_mask(64, 0.5, 1), scaled_mask(64, 0.5, 2));
        let pairs = mask
            .chunks(2)
            .filter(|p| p.len() == 2 && (p[0] == 0.0) == (p[1] == 0.0))
            .count();
        let expected = 500_000.0 * (0.9 * 0.9 + 0.1 * 0.1);
        assert!((pairs as f64 - expected).abs() / expected < 0.01);
    }

    #[test]
    fn mask_filled_on_several_threads_is_the_serial_mask() {
        // Odd and long enough for several tasks: the split must not move any value.
        // (A given seed, not torch's generator, which concurrent tests share.)
        let n = 4 * PAIRS_PER_TASK as usize * 2 + 3;
        let serial = Tensor::from_slice(&scaled_mask(n, 0.1, 42));
        let scale = (1.0 / 0.9) as f32;
        let mask = Tensor::empty([n as i64], (Kind::Float, Device::Cpu));
        fill_mask(&mask, n, 0.1, 42, scale, 0f32).unwrap();
        assert!(mask.equal(&serial));
        let mask = Tensor::empty([n as i64], (Kind::BFloat16, Device::Cpu));
        fill_mask(&mask, n, 0.1, 42, bf16_bits(scale), 0u16).unwrap();
        assert!(mask.equal(&serial.to_kind(Kind::BFloat16)));
    }

    #[test]
    fn follows_torch_manual_seed() {
        let _turn = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        let x = Tensor::ones([300, 7], (Kind::Float, Device::Cpu));
        tch::manual_seed(3);
        let a = dropout(&x, 0.2, true).unwrap();
        tch::manual_seed(3);
        let b = dropout(&x, 0.2, true).unwrap();
        assert!(a.equal(&b));
        assert!(dropout(&x, 0.2, false).unwrap().equal(&x));
    }

    #[test]
    fn bf16_stays_bf16_with_atens_rounded_scale() {
        let _turn = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        let x = Tensor::ones([100_000], (Kind::BFloat16, Device::Cpu));
        tch::manual_seed(5);
        let y = dropout(&x, 0.1, true).unwrap();
        assert_eq!(y.kind(), Kind::BFloat16);
        // ATen divides its bf16 ones-mask by 0.9: 1/0.9 rounded to bf16 (1.109375).
        let scale = Tensor::from(1.0f32 / 0.9)
            .to_kind(Kind::BFloat16)
            .double_value(&[]);
        assert_eq!(scale, 1.109375);
        let kept = y.ne(0.0);
        assert!(y.masked_select(&kept).eq(scale).all().int64_value(&[]) == 1);
        let rate = kept
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[]);
        assert!((rate - 0.9).abs() < 0.005, "kept {rate}");
    }
}
