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

/// Picks the next token from one row of logits.
pub fn sample(logits: &[f32], params: &SamplingParams, rng: &mut Rng) -> u32 {
    if params.is_greedy() {
        return argmax(logits);
    }
    let t = params.temperature as f32;
    // Candidates sorted by logit, descending (ties: lower id first, deterministic).
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    idx.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
    let scaled: Vec<f64> = idx.iter().map(|&i| (logits[i as usize] / t) as f64).collect();
    let max = scaled[0];
    let weights: Vec<f64> = scaled.iter().map(|&s| (s - max).exp()).collect();
    let total: f64 = weights.iter().sum();
    // Top-p: keep the smallest prefix whose mass reaches top_p (HF keeps tokens whose cumulative
    // mass, counted from the least likely, exceeds 1 − top_p; at least one token).
    let mut keep = weights.len();
    if params.top_p < 1.0 {
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
            return idx[i];
        }
        u -= w;
    }
    idx[kept.len() - 1]
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
