//! Dropout as `torch.nn.functional.dropout` computes it (each element zeroed with
//! probability p, the rest scaled by 1/(1-p)), with one difference on CPU (fp32, and
//! bf16 under autocast, where linear outputs are bf16):
//! the mask comes from a counter-based generator (SplitMix64) seeded by one draw from
//! torch's CPU generator, instead of ATen's `bernoulli_`, which draws element by
//! element from mt19937 on CPUs where it does not use MKL's vector RNG (AMD among
//! them): ~30 ms of a ~400 ms MiniLM step there. Same distribution, same seeding
//! (runs and resumes stay reproducible), different masks than torch's.

use tch::{Device, Kind, TchError, Tensor};

/// SplitMix64's output function: 64 well-mixed bits from a counter.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Keep-mask scaled by 1/(1-p): `n` values, each 0 or 1/(1-p).
fn scaled_mask(n: usize, p: f64, seed: u64) -> Vec<f32> {
    let keep_below = ((1.0 - p) * 4_294_967_296.0) as u64;
    let scale = (1.0 / (1.0 - p)) as f32;
    let mut mask = vec![0f32; n];
    for (i, pair) in mask.chunks_mut(2).enumerate() {
        let bits = mix(seed.wrapping_add((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        for (slot, half) in pair.iter_mut().zip([bits & 0xffff_ffff, bits >> 32]) {
            if half < keep_below {
                *slot = scale;
            }
        }
    }
    mask
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
    let seed = Tensor::f_randint(i64::MAX, [1], (Kind::Int64, Device::Cpu))?.f_int64_value(&[0])?;
    let mask = Tensor::f_from_slice(&scaled_mask(x.numel(), p, seed as u64))?
        .f_view(x.size().as_slice())?;
    // In bf16 the mask is rounded to bf16 first, as ATen's bf16 `bernoulli_` mask is,
    // so the product stays bf16.
    x.f_mul(&mask.f_to_kind(x.kind())?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn follows_torch_manual_seed() {
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
