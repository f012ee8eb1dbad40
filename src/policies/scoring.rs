//! Building blocks shared by the score-based policies: the layer- and head-averaged attention of a
//! step (Ā), top-k with a fixed tie rule, and 1-D pooling as PyTorch does it.

use anyhow::Result;
use candle_core::{DType, Tensor};

use crate::cache::observe::AttentionView;

/// Accumulates one step's attention over layers, heads and queries on the device.
#[derive(Default)]
pub struct StepAttention {
    sum: Option<Tensor>,
    /// Number of (layer, query head) pairs summed.
    heads: usize,
}

impl StepAttention {
    /// Adds one layer's probabilities `[kv_heads, groups, t, len]`.
    pub fn add(&mut self, view: &AttentionView<'_>) -> Result<()> {
        let (kv, g, t, len) = view.probs.dims4()?;
        // f32 before the sum: candle's CUDA sum of a bf16 tensor accumulates in bf16.
        let layer_sum = match view.head_sum {
            Some(sum) => sum.clone(),
            None => view.probs.reshape((kv * g * t, len))?.to_dtype(DType::F32)?.sum(0)?,
        };
        self.sum = Some(match self.sum.take() {
            Some(s) => (s + layer_sum)?,
            None => layer_sum,
        });
        self.heads += kv * g;
        Ok(())
    }

    /// Ā for every key, on the device: the mean over layers and query heads, summed over the
    /// step's queries (one query when decoding); then resets.
    pub fn take_mean(&mut self) -> Result<Option<Tensor>> {
        let Some(sum) = self.sum.take() else { return Ok(None) };
        let heads = std::mem::take(&mut self.heads) as f32;
        // A true division, as on the host (a multiplication by 1/heads would round differently).
        Ok(Some(sum.broadcast_div(&Tensor::new(heads, sum.device())?)?))
    }
}

/// Per-slot attention scores accumulated on the device across steps, read back only when a
/// policy selects (one host copy per eviction, not per step).
#[derive(Debug, Default)]
pub struct DeviceScores {
    sum: Option<Tensor>,
}

impl DeviceScores {
    /// Adds `step` (f32, one entry per cached slot); either side may cover slots the other does
    /// not yet: they count as zero (`F.pad(acc, (0, n))`).
    pub fn add(&mut self, step: Tensor) -> Result<()> {
        self.sum = Some(match self.sum.take() {
            None => step,
            Some(acc) => {
                let n = acc.dim(0)?.max(step.dim(0)?);
                (zero_padded(acc, n)? + zero_padded(step, n)?)?
            }
        });
        Ok(())
    }

    /// Replaces the scores with `step`.
    pub fn set(&mut self, step: Tensor) {
        self.sum = Some(step);
    }

    pub fn clear(&mut self) {
        self.sum = None;
    }

    /// The scores on the host (empty when none were added).
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        Ok(match &self.sum {
            Some(s) => s.to_vec1()?,
            None => Vec::new(),
        })
    }

    /// The scores on the host, and clears them.
    pub fn take(&mut self) -> Result<Vec<f32>> {
        let v = self.to_vec()?;
        self.clear();
        Ok(v)
    }

    /// Keeps the scores of the slots `kept` (old indices, increasing), as the cache did.
    pub fn keep(&mut self, kept: &[usize]) -> Result<()> {
        if let Some(s) = self.sum.take() {
            let idx: Vec<u32> = kept.iter().map(|&i| i as u32).collect();
            self.sum = Some(s.index_select(&Tensor::from_vec(idx, kept.len(), s.device())?, 0)?);
        }
        Ok(())
    }
}

/// `t` followed by zeros up to `n` entries.
fn zero_padded(t: Tensor, n: usize) -> Result<Tensor> {
    let len = t.dim(0)?;
    if len == n {
        return Ok(t);
    }
    Ok(Tensor::cat(&[&t, &Tensor::zeros(n - len, t.dtype(), t.device())?], 0)?)
}

fn key(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x
    }
}

/// Indices of the `k` largest scores, in increasing index order. Ties: the earlier index wins
/// (the question before the answer under DynTS's +∞ scores). NaN counts as −∞. On the host, after
/// one copy of the scores: candle's device `arg_sort_last_dim` fails beyond 8192 columns on CUDA.
pub fn top_k_sorted(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| key(scores[b]).total_cmp(&key(scores[a])).then(a.cmp(&b)));
    idx.truncate(k.min(scores.len()));
    idx.sort_unstable();
    idx
}

/// `F.max_pool1d(x, kernel, stride=1, padding=kernel/2)`: the padding never wins.
pub fn max_pool1d(x: &[f32], kernel: usize) -> Vec<f32> {
    let half = kernel / 2;
    (0..x.len())
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + kernel - half).min(x.len());
            x[lo..hi].iter().copied().fold(f32::NEG_INFINITY, f32::max)
        })
        .collect()
}

/// `F.avg_pool1d(x, kernel, stride=1, padding=kernel/2)` with `count_include_pad=True`.
pub fn avg_pool1d(x: &[f32], kernel: usize) -> Vec<f32> {
    let half = kernel / 2;
    (0..x.len())
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + kernel - half).min(x.len());
            x[lo..hi].iter().sum::<f32>() / kernel as f32
        })
        .collect()
}

/// The older part `[0, L−W)` of per-slot scores kept in step with the cache, or `None` when the
/// cache is no longer than the window (nothing to choose from).
pub fn older_part<'a>(scores: &'a [f32], len: usize, window: usize, policy: &str) -> Result<Option<&'a [f32]>> {
    if len <= window {
        return Ok(None);
    }
    anyhow::ensure!(scores.len() == len, "{policy} has scores for {} slots, the cache holds {len}", scores.len());
    Ok(Some(&scores[..len - window]))
}

/// Adds `step` (one entry per cached slot) to `acc`, which covers the slots of an earlier step
/// and so may be shorter: new slots start from zero (`F.pad(acc, (0, n))`).
pub fn accumulate(acc: &mut Vec<f32>, step: &[f32]) {
    if acc.len() < step.len() {
        acc.resize(step.len(), 0.0);
    }
    for (a, s) in acc.iter_mut().zip(step) {
        *a += s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_breaks_ties_toward_earlier_slots() {
        let s = [1.0, 3.0, f32::INFINITY, 3.0, f32::INFINITY, f32::NAN, 2.0];
        assert_eq!(top_k_sorted(&s, 3), vec![1, 2, 4]);
        assert_eq!(top_k_sorted(&s, 1), vec![2]);
        assert_eq!(top_k_sorted(&s, 0), Vec::<usize>::new());
        assert_eq!(top_k_sorted(&s, 99).len(), 7);
    }

    #[test]
    fn top_k_is_exact_beyond_8192_slots() {
        // 3·8192 + 17 slots: past the column limit of candle's CUDA arg sort. Scores repeat every
        // 1000 slots (ties across the whole range), with NaNs and +∞ sprinkled in.
        let n = 3 * 8192 + 17;
        let s: Vec<f32> = (0..n)
            .map(|i| match i % 997 {
                0 => f32::NAN,
                13 => f32::INFINITY,
                _ => ((i * 7919) % 1000) as f32,
            })
            .collect();
        for k in [0, 1, 30, 8192, 8193, 20_000, n] {
            let got = top_k_sorted(&s, k);
            assert_eq!(got.len(), k);
            assert!(got.windows(2).all(|w| w[0] < w[1]));
            // Every kept slot beats or ties every dropped one, and a tie keeps the earlier slot.
            let kept: std::collections::HashSet<usize> = got.iter().copied().collect();
            let worst_kept = got.iter().map(|&i| (key(s[i]), i)).min_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
            if let Some((v, i)) = worst_kept {
                for j in (0..n).filter(|j| !kept.contains(j)) {
                    let d = key(s[j]);
                    assert!(d < v || (d == v && j > i), "dropped {j} ({d}) over kept {i} ({v}), k = {k}");
                }
            }
        }
    }

    #[test]
    fn pooling_matches_pytorch() {
        // torch: F.max_pool1d(t([[1,5,2,0,0,3,1]]), 3, 1, 1) → [5,5,5,2,3,3,3]
        assert_eq!(max_pool1d(&[1., 5., 2., 0., 0., 3., 1.], 3), vec![5., 5., 5., 2., 3., 3., 3.]);
        // torch: F.avg_pool1d(t([[3,3,3]]), 3, 1, 1) → [2, 3, 2] (zero padding counted)
        assert_eq!(avg_pool1d(&[3., 3., 3.], 3), vec![2., 3., 2.]);
        assert_eq!(max_pool1d(&[-1., -2.], 7), vec![-1., -1.]);
    }

    /// On the device, the same numbers as on the host: padding, accumulation and compaction.
    #[test]
    fn device_scores_accumulate_as_the_host_does() {
        let dev = candle_core::Device::Cpu;
        let steps: Vec<Vec<f32>> = vec![vec![0.1, 0.7], vec![0.3, 0.2, 0.9], vec![0.25, 0.5, 0.125, 1.0 / 3.0]];
        let (mut host, mut device) = (Vec::new(), DeviceScores::default());
        for s in &steps {
            accumulate(&mut host, s);
            device.add(Tensor::new(s.as_slice(), &dev).unwrap()).unwrap();
        }
        assert_eq!(device.to_vec().unwrap(), host);
        device.keep(&[0, 2, 3]).unwrap();
        let kept: Vec<f32> = [0, 2, 3].iter().map(|&i| host[i]).collect();
        assert_eq!(device.to_vec().unwrap(), kept);
        // A shorter step leaves the later slots as they were.
        device.add(Tensor::new(&[1f32], &dev).unwrap()).unwrap();
        assert_eq!(device.take().unwrap(), vec![kept[0] + 1.0, kept[1], kept[2]]);
        assert!(device.to_vec().unwrap().is_empty());
    }

    #[test]
    fn accumulation_pads_new_slots_with_zero() {
        let mut acc = vec![1.0, 1.0];
        accumulate(&mut acc, &[0.5, 0.5, 0.25]);
        assert_eq!(acc, vec![1.5, 1.5, 0.25]);
    }
}
