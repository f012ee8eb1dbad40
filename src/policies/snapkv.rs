//! `snapkv` and `snapkv-paper` — attention from an observation window. Original: Li et al.,
//! "SnapKV: LLM Knows What You are Looking for Before Generation", <https://arxiv.org/abs/2404.14469>
//! (FasterDecoding/SnapKV).
//!
//! - `snapkv` (default, the figure's; DynTS repo `inference/snapkv.py`): the score is the sum of Ā
//!   (mean over layers and query heads, full softmax, not renormalised) over the decode steps of an
//!   observation window ending at the eviction step, **no pooling**. The window opens at decode
//!   step `B − P − ob_window` (the cache then holds B − ob_window tokens before the step), and
//!   after each eviction at `step + B − len_after − ob_window` — one step earlier in cache terms,
//!   an off-by-one of the reference kept here.
//! - `snapkv-paper`: the original's scoring applied at the same trigger: the same window, then a
//!   1-D pooling of the older part's scores (avg-pool kernel 5, the paper's default; LongBench
//!   configurations use max-pool 7). Selection stays shared across layers and heads.

use anyhow::Result;

use super::scoring::{avg_pool1d, max_pool1d, DeviceScores, StepAttention};
use super::{Budget, Policy, PolicyContext, PolicyParams, Selection, StepInfo};
use crate::cache::KvCache;
use crate::cache::observe::{AttentionView, ObserveRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    None,
    Avg,
    Max,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapKvParams {
    /// Decode steps whose attention is summed before an eviction.
    pub ob_window: usize,
    pub pooling: Pooling,
    pub kernel_size: usize,
}

impl Default for SnapKvParams {
    fn default() -> Self {
        Self { ob_window: 32, pooling: Pooling::None, kernel_size: 5 }
    }
}

/// The observation window shared by SnapKV and R-KV in the DynTS harness: is this step inside it?
pub fn in_observation_window(step: &StepInfo, budget: &Budget, ob_window: usize, evicted_before: bool) -> bool {
    if step.prefill {
        return false;
    }
    let opens_at = (budget.budget as isize) - (ob_window as isize) - if evicted_before { 1 } else { 0 };
    step.len_before as isize >= opens_at
}

impl PolicyParams for SnapKvParams {
    fn instantiate(&self, budget: &Budget, _: PolicyContext) -> Result<Box<dyn Policy>> {
        Ok(Box::new(SnapKv::new(self.clone(), *budget)))
    }
}

pub struct SnapKv {
    pub params: SnapKvParams,
    step: StepAttention,
    /// Σ of Ā over the window so far, per cached slot (empty outside the window).
    window_sum: DeviceScores,
    evicted_before: bool,
    observing: bool,
    budget: Budget,
}

impl SnapKv {
    pub fn new(params: SnapKvParams, budget: Budget) -> Self {
        Self {
            params,
            step: StepAttention::default(),
            window_sum: DeviceScores::default(),
            evicted_before: false,
            observing: false,
            budget,
        }
    }
}

impl Policy for SnapKv {
    fn request(&self, step: &StepInfo) -> ObserveRequest {
        let on = in_observation_window(step, &self.budget, self.params.ob_window, self.evicted_before);
        ObserveRequest { attention: on, hidden: false }
    }

    fn attention(&mut self, view: &AttentionView<'_>) -> Result<()> {
        self.step.add(view)
    }

    fn appended(&mut self, _cache: &KvCache, _fed: &[u32], _step: &StepInfo) -> Result<()> {
        if let Some(current) = self.step.take_mean()? {
            self.window_sum.add(current)?;
            self.observing = true;
        }
        Ok(())
    }

    fn select(&mut self, cache: &KvCache, budget: &Budget) -> Result<Option<Selection>> {
        let len = cache.len();
        if len <= budget.window {
            return Ok(None);
        }
        let mut scores = self.window_sum.take()?;
        scores.resize(len, 0.0); // a window shorter than the cache (long prompts) scores 0
        scores.truncate(len - budget.window);
        let scores = match self.params.pooling {
            Pooling::None => scores,
            Pooling::Avg => avg_pool1d(&scores, self.params.kernel_size),
            Pooling::Max => max_pool1d(&scores, self.params.kernel_size),
        };
        Ok(Some(Selection::Older(scores)))
    }

    fn compacted(&mut self, _kept: &[usize]) -> Result<()> {
        self.evicted_before = true;
        self.observing = false;
        self.window_sum.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_opens_ob_window_steps_before_the_trigger() {
        let b = Budget { budget: 100, window: 20, ratio: 0.5 };
        let step = |len_before| StepInfo { prefill: false, len_before, decode_step: 0, evicts: len_before >= 100 };
        assert!(!in_observation_window(&step(67), &b, 32, false));
        assert!(in_observation_window(&step(68), &b, 32, false));
        assert!(in_observation_window(&step(67), &b, 32, true));
        assert!(!in_observation_window(&step(66), &b, 32, true));
    }
}
