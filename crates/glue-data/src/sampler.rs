//! Example orders for an epoch: sequential, seeded shuffle, or HF's length-grouped
//! sampler (similar lengths share a batch, so dynamic padding pads less).

/// SplitMix64: tiny, seedable and stable across platforms and crate versions,
/// which is what a reproducible (and resumable) run needs from its shuffler.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

/// A seeded permutation of `0..n`; the same `(seed, epoch)` always gives the same order.
pub fn shuffled_indices(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// HF `LengthGroupedSampler`: shuffle, cut into megabatches of
/// `min(n / (4 * batch_size), 50)` batches (at least one), sort each megabatch by
/// length (longest first), and put the longest example first so an out-of-memory
/// error shows on the first step rather than hours in.
pub fn length_grouped_indices(
    lengths: &[usize],
    batch_size: usize,
    seed: u64,
    epoch: u64,
) -> Vec<usize> {
    let order = shuffled_indices(lengths.len(), seed, epoch);
    let batch_size = batch_size.max(1);
    let megabatch = (lengths.len() / (batch_size * 4)).clamp(1, 50) * batch_size;
    let mut megabatches: Vec<Vec<usize>> = order
        .chunks(megabatch)
        .map(|chunk| {
            let mut m = chunk.to_vec();
            m.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
            m
        })
        .collect();
    if let Some((longest_mb, _)) = megabatches
        .iter()
        .enumerate()
        .filter_map(|(k, m)| m.first().map(|&i| (k, lengths[i])))
        .max_by_key(|&(k, len)| (len, std::cmp::Reverse(k)))
    {
        let (first, rest) = megabatches.split_at_mut(1);
        if longest_mb > 0 {
            std::mem::swap(&mut first[0][0], &mut rest[longest_mb - 1][0]);
        }
    }
    megabatches.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let a = shuffled_indices(100, 42, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, shuffled_indices(100, 42, 0));
        assert_ne!(a, shuffled_indices(100, 42, 1));
        assert_ne!(a, shuffled_indices(100, 43, 0));
    }

    #[test]
    fn length_grouping_puts_longest_first_and_keeps_every_index() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 37) % 101).collect();
        let order = length_grouped_indices(&lengths, 4, 1, 0);
        assert_eq!(lengths[order[0]], 100);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        // Within a megabatch (after the first) lengths never increase.
        let mb = &order[200..400];
        assert!(mb.windows(2).all(|w| lengths[w[0]] >= lengths[w[1]]));
    }
}
