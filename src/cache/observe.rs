//! The hooks: what a policy may see of each forward step ([`Observer`]), and what it may do to the
//! cache around it ([`CacheHook`]).
//!
//! The decoder materialises attention probabilities anyway (matmul + softmax + matmul was faster on
//! CPU than candle's fused kernel), so handing them out costs nothing; with no observer attached
//! (`None`) the forward pass does no extra work at all.

use std::sync::Arc;

use anyhow::Result;
use candle_core::Tensor;

use super::KvCache;

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
    /// `probs` summed over KV heads, query heads and queries, in f32 `[len]`, when the decoder
    /// computed it for a whole batch at once (then an observer need not reduce per sequence).
    pub head_sum: Option<&'a Tensor>,
}

/// A small model over final hidden states (DynTS's importance predictor): `[rows, hidden]` in,
/// one value per row `[rows]` out. A batched decode step runs each one once for all its rows.
pub trait RowHead: Send + Sync {
    fn forward(&self, hidden: &Tensor) -> candle_core::Result<Tensor>;
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

    /// The head sequence `seq` applies to its last hidden state this step, when it asked for
    /// `hidden`: a batched step then runs the head over all rows at once and calls
    /// [`Observer::head_output`] instead of [`Observer::hidden`].
    fn row_head(&self, _seq: usize) -> Option<Arc<dyn RowHead>> {
        None
    }

    /// The head's output for sequence `seq`'s row, `[1]`.
    fn head_output(&mut self, _seq: usize, _out: &Tensor) -> Result<()> {
        Ok(())
    }
}

/// The seam where a policy acts: it observes each forward (through [`Observer`]) and then may
/// evict from the cache. `fed` are the tokens whose K/V the step just appended.
pub trait CacheHook: Observer {
    /// Before each forward: the cache as it is, the tokens about to be fed.
    fn before_forward(&mut self, _cache: &KvCache, _fed: &[u32], _prefill: bool) -> Result<()> {
        Ok(())
    }
    fn after_forward(&mut self, cache: &mut KvCache, fed: &[u32], prefill: bool) -> Result<()>;
}
