//! Token selection: greedy, or temperature → top-p → top-k then a multinomial draw (the order the
//! DynTS evaluation applies its warpers in), from a per-sample random stream.

use anyhow::{bail, Result};
use candle_core::{Tensor, D};

use crate::rng::Rng;

/// Sampling parameters; `temperature == 0` means greedy.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingParams {
    pub temperature: f64,
    pub top_p: f64,
    /// 0 disables top-k.
    pub top_k: usize,
}

impl SamplingParams {
    pub const GREEDY: SamplingParams = SamplingParams { temperature: 0.0, top_p: 1.0, top_k: 0 };
    /// The DynTS paper's setting.
    pub const PAPER: SamplingParams = SamplingParams { temperature: 0.6, top_p: 0.95, top_k: 20 };

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!("--temperature must be a finite number ≥ 0, got {}", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("--top-p must be in (0, 1], got {}", self.top_p);
        }
        Ok(())
    }
}

/// Picks the next token from one row of logits. Only the top-k candidates can be drawn, so they
/// are selected (O(vocab)) and only they are sorted; without top-k, the whole row is.
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut Rng) -> u32 {
    if params.is_greedy() {
        return argmax(logits);
    }
    let order = by_logit(logits);
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    if params.top_k > 0 && params.top_k < idx.len() {
        idx.select_nth_unstable_by(params.top_k - 1, &order);
        idx.truncate(params.top_k);
    }
    idx.sort_unstable_by(order);
    draw(logits, &idx, params, rng)
}

/// The same draw after sorting the whole vocabulary: what [`sample`] is tested against, and what it
/// replaced (`cargo bench --bench sampling` times both).
pub fn sample_sorted(logits: &[f32], params: &SamplingParams, rng: &mut Rng) -> u32 {
    if params.is_greedy() {
        return argmax(logits);
    }
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    idx.sort_unstable_by(by_logit(logits));
    draw(logits, &idx, params, rng)
}

/// Candidates by logit, descending; ties: the lower id first (deterministic).
fn by_logit(logits: &[f32]) -> impl Fn(&u32, &u32) -> std::cmp::Ordering + '_ {
    |a, b| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b))
}

/// Temperature → top-p → top-k → a multinomial draw over `candidates`, the row's best ids in
/// descending order (at least its top-k).
fn draw(logits: &[f32], candidates: &[u32], params: &SamplingParams, rng: &mut Rng) -> u32 {
    let t = params.temperature as f32;
    let scaled = |i: u32| (logits[i as usize] / t) as f64;
    let max = scaled(candidates[0]);
    let weights: Vec<f64> = candidates.iter().map(|&i| (scaled(i) - max).exp()).collect();
    let mut keep = weights.len();
    // Top-p: keep the smallest prefix whose mass reaches top_p of the whole row's (HF keeps tokens
    // whose cumulative mass, counted from the least likely, exceeds 1 − top_p; at least one token).
    if params.top_p < 1.0 {
        let total: f64 = (0..logits.len() as u32).map(|i| (scaled(i) - max).exp()).sum();
        let mut cum = 0.0;
        for (i, w) in weights.iter().enumerate() {
            cum += w / total;
            if cum >= params.top_p {
                keep = i + 1;
                break;
            }
        }
    }
    if params.top_k > 0 {
        keep = keep.min(params.top_k);
    }
    let kept = &weights[..keep.max(1)];
    let mass: f64 = kept.iter().sum();
    let mut u = rng.next_f64() * mass;
    for (i, w) in kept.iter().enumerate() {
        if u < *w {
            return candidates[i];
        }
        u -= w;
    }
    candidates[kept.len() - 1]
}

/// Greedy decoding of one row on the host: the first largest logit, as [`argmax_rows`] picks.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding of every row of `logits` `[n, vocab]` on the device: one u32 per row crosses
/// to the host, not the vocabulary.
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_first_maximum() {
        assert_eq!(sample(&[0.1, 3.0, 3.0, -1.0], &SamplingParams::GREEDY, &mut Rng::new(0)), 1);
    }

    /// Partial selection draws exactly what a full sort draws: on random rows with ties, at the
    /// paper's setting and at settings where top-p or top-k decides.
    #[test]
    fn partial_selection_draws_as_a_full_sort() {
        let mut gen = Rng::new(5);
        for (vocab, params) in [
            (50_000, SamplingParams::PAPER),
            (1_000, SamplingParams { temperature: 1.3, top_p: 1.0, top_k: 7 }),
            (1_000, SamplingParams { temperature: 0.7, top_p: 0.5, top_k: 0 }),
            (300, SamplingParams { temperature: 1.0, top_p: 0.999, top_k: 300 }),
            (5, SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 20 }),
        ] {
            for row in 0..40 {
                // Coarse logits (steps of 0.25) so that ties are common.
                let logits: Vec<f32> = (0..vocab).map(|_| ((gen.next_f64() * 40.0).floor() / 4.0) as f32).collect();
                let (mut a, mut b) = (Rng::new(row), Rng::new(row));
                for _ in 0..5 {
                    assert_eq!(sample(&logits, &params, &mut a), sample_sorted(&logits, &params, &mut b), "{params:?}");
                }
            }
        }
    }

    #[test]
    fn greedy_rows_on_the_device_pick_as_the_host_does() {
        let rows = [[0.1f32, 3.0, 3.0, -1.0], [2.0, -1.0, 2.0, 2.0], [-5.0, -5.0, -5.0, -4.0]];
        let t = Tensor::new(&rows, &candle_core::Device::Cpu).unwrap();
        assert_eq!(argmax_rows(&t).unwrap(), rows.iter().map(|r| argmax(r)).collect::<Vec<_>>());
    }

    #[test]
    fn top_k_and_top_p_restrict_the_support() {
        let logits = [5.0, 4.9, 0.0, -3.0, 4.8];
        let k2 = SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 2 };
        let mut rng = Rng::new(7);
        for _ in 0..500 {
            assert!(matches!(sample(&logits, &k2, &mut rng), 0 | 1));
        }
        // Mass of the top token alone is < 0.5, so top_p = 0.3 keeps exactly it.
        let p = SamplingParams { temperature: 1.0, top_p: 0.3, top_k: 0 };
        for _ in 0..200 {
            assert_eq!(sample(&logits, &p, &mut rng), 0);
        }
    }

    #[test]
    fn sampling_frequencies_follow_softmax() {
        let logits = [0.0f32, (3.0f32).ln()]; // probabilities 1/4, 3/4
        let p = SamplingParams { temperature: 1.0, top_p: 1.0, top_k: 0 };
        let mut rng = Rng::new(1);
        let n = 20_000;
        let ones = (0..n).filter(|_| sample(&logits, &p, &mut rng) == 1).count();
        let freq = ones as f64 / n as f64;
        assert!((freq - 0.75).abs() < 0.015, "{freq}");
    }
}
