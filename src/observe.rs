//! The observation hook: what a policy may see of each forward step.
//!
//! The decoder materialises attention probabilities anyway (matmul + softmax + matmul was faster on
//! CPU than candle's fused kernel), so handing them out costs nothing; with no observer attached
//! (`None`) the forward pass does no extra work at all.

use anyhow::Result;
use candle_core::Tensor;

/// What an observer wants to be shown; anything not asked for is never computed for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ObserveRequest {
    /// Attention probabilities and keys, per layer.
    pub attention: bool,
    /// Final hidden states (after the final RMSNorm, the input of `lm_head`).
    pub hidden: bool,
}

/// One layer's attention for one sequence in one step.
pub struct AttentionView<'a> {
    pub layer: usize,
    /// Post-softmax probabilities `[kv_heads, groups, t, len]`: query head `g * groups + j` is
    /// `probs[g][j]`; `len` covers the cache including this step's `t` new entries.
    pub probs: &'a Tensor,
    /// Post-RoPE keys `[kv_heads, len, head_dim]` (a view of the cache).
    pub keys: &'a Tensor,
    /// Queries after RoPE `[kv_heads, groups, t, head_dim]`.
    pub queries: &'a Tensor,
}

pub trait Observer {
    fn request(&self) -> ObserveRequest;

    /// Called per layer for sequence `seq` of the batch, when `request().attention`.
    fn attention(&mut self, _seq: usize, _view: &AttentionView<'_>) -> Result<()> {
        Ok(())
    }

    /// Called once per step with the final hidden states `[t, hidden]` of sequence `seq`'s input
    /// tokens, when `request().hidden`.
    fn hidden(&mut self, _seq: usize, _hidden: &Tensor) -> Result<()> {
        Ok(())
    }
}
