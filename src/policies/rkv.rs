//! `rkv` and `rkv-paper` — importance plus redundancy. Original: Cai et al., "R-KV:
//! Redundancy-aware KV Cache Compression for Reasoning Models", <https://arxiv.org/abs/2505.24133>
//! (Zefan-Cai/R-KV).
//!
//! - `rkv` (default, the figure's; DynTS repo `inference/rkv.py`): at the harness trigger,
//!   importance = (Σ of Ā over the observation window, `ob_window` = 8 steps, as SnapKV's window)
//!   / 8 on the older part, max-pooled (kernel 7, stride 1, padding 3); redundancy per layer and KV
//!   head on the *full* cache keys: unit-normalise, cosine matrix S with a zero diagonal, per row
//!   zero the entry of the largest index j with S > 0.5 (or column 0 when there is none — the
//!   reference's `topk(...)[..., 0]` quirk: `retain_ratio` is inert), then softmax over keys of the
//!   row mean; averaged over layers and KV heads and sliced to the older part.
//!   final = λ·importance − (1−λ)·redundancy, λ = 0.1; top ⌊r·(L−W)⌋ plus W, shared.
//! - `rkv-paper` (`rkv/compression/r1_kv.py`): per layer and KV head. Every `buffer` (128) decoded
//!   tokens, once the cache holds ≥ B, compress to B per head: always keep the last `ob_window` (8)
//!   tokens; importance from the last 8 queries (GQA: max over the query group of the raw logits,
//!   softmax over the older keys only, mean over the queries, max-pool 7); λ = 0.07 (code default).

use std::collections::VecDeque;

use anyhow::{ensure, Result};
use candle_core::{DType, Tensor, D};

use super::scoring::{accumulate, max_pool1d, top_k_sorted, DeviceScores, StepAttention};
use super::snapkv::in_observation_window;
use super::{Budget, Policy, PolicyContext, PolicyParams, Selection, StepInfo};
use crate::cache::KvCache;
use crate::cache::observe::{AttentionView, ObserveRequest};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RkvParams {
    pub ob_window: usize,
    pub sim_threshold: f32,
    pub mix_lambda: f32,
    pub max_pool_kernel_size: usize,
    /// Per layer and KV head selection with its own trigger (the paper's code).
    pub per_head: bool,
    /// With `per_head`: compress every `buffer` decoded tokens once the cache holds ≥ B.
    pub buffer: usize,
}

impl Default for RkvParams {
    fn default() -> Self {
        Self {
            ob_window: 8,
            sim_threshold: 0.5,
            mix_lambda: 0.1,
            max_pool_kernel_size: 7,
            per_head: false,
            buffer: 128,
        }
    }
}

/// R-KV redundancy of one KV head's keys `[L, d]`: softmax over keys of the row mean of the
/// cosine matrix after the diagonal and each row's most recent near-duplicate are zeroed.
pub fn redundancy(keys: &Tensor, threshold: f32) -> Result<Vec<f32>> {
    let k = keys.to_dtype(DType::F32)?;
    let l = k.dim(0)?;
    let norms = (k.sqr()?.sum_keepdim(1)?.sqrt()? + 1e-8)?;
    let kn = k.broadcast_div(&norms)?;
    let s = kn.matmul(&kn.t()?)?; // [L, L]
    let colsum: Vec<f32> = s.sum(0)?.to_vec1()?;
    let diag: Vec<f32> = kn.sqr()?.sum(1)?.to_vec1()?;
    let off_diag = (Tensor::ones((l, l), DType::F32, k.device())? - Tensor::eye(l, DType::F32, k.device())?)?;
    let above = s.gt(threshold as f64)?.to_dtype(DType::F32)?.mul(&off_diag)?;
    let arange = Tensor::arange(0f32, l as f32, k.device())?.reshape((1, l))?;
    // Largest index above the threshold per row; 0 when there is none.
    let last = above.broadcast_mul(&arange)?.max(D::Minus1)?.to_dtype(DType::U32)?;
    let last_val: Vec<f32> = s.gather(&last.reshape((l, 1))?, 1)?.flatten_all()?.to_vec1()?;
    let last: Vec<u32> = last.to_vec1()?;
    let mut col = colsum;
    for j in 0..l {
        col[j] -= diag[j];
    }
    for i in 0..l {
        let j = last[i] as usize;
        if j != i {
            col[j] -= last_val[i];
        }
    }
    let mean: Vec<f32> = col.iter().map(|c| c / l as f32).collect();
    Ok(softmax(&mean))
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

impl PolicyParams for RkvParams {
    fn instantiate(&self, budget: &Budget, ctx: PolicyContext) -> Result<Box<dyn Policy>> {
        Ok(Box::new(Rkv::new(self.clone(), *budget, ctx.num_layers)))
    }

    fn validate(&self, budget: &Budget) -> Result<()> {
        ensure!(
            !self.per_head || self.ob_window < budget.budget,
            "ob_window {} must be below the budget {}",
            self.ob_window,
            budget.budget
        );
        Ok(())
    }
}

pub struct Rkv {
    pub params: RkvParams,
    budget: Budget,
    step: StepAttention,
    window_sum: DeviceScores,
    evicted_before: bool,
    /// `rkv-paper`: the last `ob_window` post-RoPE queries per layer, `[kv_heads, groups, 1, d]`.
    queries: Vec<VecDeque<Tensor>>,
}

impl Rkv {
    pub fn new(params: RkvParams, budget: Budget, num_layers: usize) -> Self {
        Self {
            params,
            budget,
            step: StepAttention::default(),
            window_sum: DeviceScores::default(),
            evicted_before: false,
            queries: vec![VecDeque::new(); num_layers],
        }
    }

    fn select_shared(&mut self, cache: &KvCache, budget: &Budget) -> Result<Option<Selection>> {
        let len = cache.len();
        if len <= budget.window {
            return Ok(None);
        }
        let older = len - budget.window;
        let mut attn = self.window_sum.take()?;
        attn.resize(len, 0.0);
        let imp: Vec<f32> = attn[..older].iter().map(|a| a / self.params.ob_window as f32).collect();
        let imp = max_pool1d(&imp, self.params.max_pool_kernel_size);
        let mut red = vec![0f32; len];
        let mut count = 0;
        for layer in 0..cache.num_layers() {
            let keys = cache.keys(layer)?;
            for h in 0..cache.kv_heads() {
                let r = redundancy(&keys.get(h)?, self.params.sim_threshold)?;
                accumulate(&mut red, &r);
                count += 1;
            }
        }
        let lambda = self.params.mix_lambda;
        let scores = (0..older).map(|j| lambda * imp[j] - (1.0 - lambda) * red[j] / count as f32).collect();
        Ok(Some(Selection::Older(scores)))
    }

    fn select_per_head(&mut self, cache: &KvCache) -> Result<Option<Selection>> {
        let (len, alpha, b) = (cache.len(), self.params.ob_window, self.budget.budget);
        if len <= b {
            return Ok(None);
        }
        let older = len - alpha;
        let keep_older = b - alpha;
        let mut sets = Vec::with_capacity(cache.num_layers());
        for layer in 0..cache.num_layers() {
            let keys = cache.keys(layer)?;
            ensure!(!self.queries[layer].is_empty(), "rkv-paper has no queries for layer {layer}");
            let q = Tensor::cat(&self.queries[layer].iter().collect::<Vec<_>>(), 2)?.to_dtype(DType::F32)?; // [kv, g, n, d]
            let (kv, _g, n, d) = q.dims4()?;
            let older_keys = keys.narrow(1, 0, older)?.to_dtype(DType::F32)?; // [kv, older, d]
                                                                              // logits [kv, g, n, older]: max over the group, softmax over the older keys, mean over queries.
            let logits =
                (q.reshape((kv, (), d))?.matmul(&older_keys.t()?)? / (d as f64).sqrt())?.reshape((kv, (), n, older))?;
            let attn = candle_nn::ops::softmax_last_dim(&logits.max(1)?)?.mean(1)?; // [kv, older]
            let attn: Vec<Vec<f32>> = attn.to_vec2()?;
            let mut heads = Vec::with_capacity(kv);
            for (h, a) in attn.iter().enumerate() {
                let imp = max_pool1d(a, self.params.max_pool_kernel_size);
                let red = redundancy(&keys.get(h)?, self.params.sim_threshold)?;
                let lambda = self.params.mix_lambda;
                let scores: Vec<f32> = (0..older).map(|j| lambda * imp[j] - (1.0 - lambda) * red[j]).collect();
                let mut keep = top_k_sorted(&scores, keep_older);
                keep.extend(older..len);
                heads.push(keep);
            }
            sets.push(heads);
        }
        Ok(Some(Selection::PerHead(sets)))
    }
}

impl Policy for Rkv {
    fn request(&self, step: &StepInfo) -> ObserveRequest {
        let attention = if self.params.per_head {
            !step.prefill
        } else {
            in_observation_window(step, &self.budget, self.params.ob_window, self.evicted_before)
        };
        ObserveRequest { attention, hidden: false }
    }

    fn attention(&mut self, view: &AttentionView<'_>) -> Result<()> {
        if self.params.per_head {
            let t = view.queries.dim(2)?;
            let q = view.queries.narrow(2, t - 1, 1)?;
            let window = &mut self.queries[view.layer];
            window.push_back(q);
            while window.len() > self.params.ob_window {
                window.pop_front();
            }
            Ok(())
        } else {
            self.step.add(view)
        }
    }

    fn appended(&mut self, _cache: &KvCache, _fed: &[u32], _step: &StepInfo) -> Result<()> {
        if let Some(current) = self.step.take_mean()? {
            self.window_sum.add(current)?;
        }
        Ok(())
    }

    fn should_evict(&self, step: &StepInfo, cache: &KvCache, budget: &Budget) -> bool {
        if self.params.per_head {
            !step.prefill && (step.decode_step + 1).is_multiple_of(self.params.buffer) && cache.len() >= budget.budget
        } else {
            step.evicts
        }
    }

    fn select(&mut self, cache: &KvCache, budget: &Budget) -> Result<Option<Selection>> {
        if self.params.per_head {
            self.select_per_head(cache)
        } else {
            self.select_shared(cache, budget)
        }
    }

    fn compacted(&mut self, _kept: &[usize]) -> Result<()> {
        self.evicted_before = true;
        self.window_sum.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Expected values worked by hand from the reference rule.
    #[test]
    fn most_recent_near_duplicate_is_not_penalised() {
        // Keys: 0 and 2 are identical, 1 is orthogonal, 3 is a copy of 1.
        let k = Tensor::new(&[[1f32, 0.], [0., 1.], [1., 0.], [0., 1.]], &Device::Cpu).unwrap();
        // Cosine S (diag zeroed): row0 [0,0,1,0], row1 [0,0,0,1], row2 [1,0,0,0], row3 [0,1,0,0].
        // Row 0's most recent duplicate is 2 → S[0,2]=0; row 1's is 3 → S[1,3]=0; row 2's is 0
        // → S[2,0]=0; row 3's is 1 → S[3,1]=0. Every duplicate is exempt: all column means 0.
        let r = redundancy(&k, 0.5).unwrap();
        for v in &r {
            assert!((v - 0.25).abs() < 1e-6, "{r:?}");
        }
        // Three copies: row 0 exempts only its most recent (2); the pair (0,1) still counts.
        let k = Tensor::new(&[[1f32, 0.], [1., 0.], [1., 0.], [0., 1.]], &Device::Cpu).unwrap();
        // After exemptions: row0 keeps S[0,1]=1; row1 keeps S[1,0]=1; row2 keeps S[2,0]=1 (its
        // most recent duplicate is 1); row3 has none → its column-0 entry (0) is zeroed.
        // Column means: col0 = 2/4, col1 = 1/4, col2 = 0, col3 = 0.
        let r = redundancy(&k, 0.5).unwrap();
        let expect = softmax(&[0.5, 0.25, 0.0, 0.0]);
        for (a, b) in r.iter().zip(&expect) {
            assert!((a - b).abs() < 1e-6, "{r:?} vs {expect:?}");
        }
    }
}
