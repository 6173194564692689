//! DeBERTa's relative positions (transformers' `modeling_deberta_v2.py`:
//! `make_log_bucket_position`, `build_relative_position`) and the indices its
//! disentangled attention gathers with.

use tch::{Kind, TchError, Tensor};

type TchResult<T> = std::result::Result<T, TchError>;

fn scalar<T: tch::kind::Element>(value: T) -> Tensor {
    Tensor::from(value)
}

/// `make_log_bucket_position(relative_pos, bucket_size, max_position)`: distances
/// inside `bucket_size / 2` kept, longer ones log-bucketed. The same float32 ops as
/// HF, so the bucket edges fall where HF's do.
fn log_bucket(relative: &Tensor, bucket_size: i64, max_position: i64) -> TchResult<Tensor> {
    let mid = bucket_size / 2;
    let sign = relative.f_sign()?;
    let inside = relative
        .f_lt_tensor(&scalar(mid))?
        .f_logical_and(&relative.f_gt_tensor(&scalar(-mid))?)?;
    let abs_pos = relative
        .f_abs()?
        .f_masked_fill_tensor(&inside, &scalar(mid - 1))?;
    let denominator = Tensor::from(((max_position - 1) as f64 / mid as f64) as f32).f_log()?;
    let log_pos = abs_pos
        .f_div(&scalar(mid))?
        .f_log()?
        .f_div(&denominator)?
        .f_mul(&scalar((mid - 1) as f32))?
        .f_ceil()?
        .f_add(&scalar(mid as f32))?;
    let near = abs_pos.f_le_tensor(&scalar(mid))?;
    log_pos
        .f_mul(&sign.f_to_kind(Kind::Float)?)?
        .f_where_self(&near.f_logical_not()?, &relative.f_to_kind(Kind::Float)?)?
        .f_to_kind(Kind::Int64)
}

/// `build_relative_position`: `[seq, seq]` query position minus key position,
/// log-bucketed when `bucket_size > 0`.
pub(crate) fn relative_positions(
    seq: i64,
    bucket_size: i64,
    max_position: i64,
    device: tch::Device,
) -> TchResult<Tensor> {
    let ids = Tensor::f_arange(seq, (Kind::Int64, device))?;
    let relative = ids.f_unsqueeze(1)?.f_sub(&ids.f_unsqueeze(0)?)?;
    if bucket_size > 0 && max_position > 0 {
        log_bucket(&relative, bucket_size, max_position)
    } else {
        Ok(relative)
    }
}

/// The rows of the `2 * span` relative embeddings that content-to-position (`c2p`)
/// and position-to-content (`p2c`) attention read, `[seq, seq]` each:
/// `clamp(±relative + span, 0, 2 * span - 1)`.
pub(crate) struct RelativeIndex {
    pub c2p: Tensor,
    pub p2c: Tensor,
}

impl RelativeIndex {
    pub(crate) fn new(relative: &Tensor, span: i64) -> TchResult<Self> {
        let clamp = |t: Tensor| -> TchResult<Tensor> {
            t.f_add(&scalar(span))?
                .f_clamp_tensor(Some(&scalar(0i64)), Some(&scalar(2 * span - 1)))
        };
        Ok(RelativeIndex {
            c2p: clamp(relative.shallow_clone())?,
            p2c: clamp(relative.f_neg()?)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HF's `build_relative_position(q, k, bucket_size=8, max_position=64)` row 0 and
    /// row 23 of a 24-token sequence (printed by transformers 5.24).
    #[test]
    fn buckets_as_transformers() {
        let r = relative_positions(24, 8, 64, tch::Device::Cpu).unwrap();
        let row = |i: i64| Vec::<i64>::try_from(r.get(i)).unwrap();
        assert_eq!(
            row(0),
            [
                0, -1, -2, -3, -4, -5, -5, -5, -5, -5, -5, -6, -6, -6, -6, -6, -6, -6, -6, -6, -6,
                -6, -6, -6
            ]
        );
        assert_eq!(
            row(23),
            [6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5, 5, 5, 5, 5, 5, 4, 3, 2, 1, 0]
        );
    }
}
