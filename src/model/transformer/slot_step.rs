//! The batched decode step over a slot pool: every slot a row, one attention per layer for all of
//! them (the per-sequence path in the parent module is its oracle and serves prefill).

use std::sync::Arc;

use anyhow::Result;
use candle_core::{DType, Module, Tensor};

use super::{SeqStep, Transformer};
use crate::cache::observe::{AttentionView, Observer, RowHead};
use crate::cache::pool::{PoolTensors, CONTEXT_BUCKET};
use crate::model::fused::{self, QkvHeads, Step};
use crate::model::ledger::op;
use crate::model::slot_attention;

impl Transformer {
    /// One decode step for sequences that each feed one token from a slot of `pool`: every slot
    /// is a row (a free slot decodes a dummy token into its scratch entry), so the ops, their
    /// shapes and each row's numbers are the same whichever slots are busy; attention covers the
    /// longest row rounded up to [`CONTEXT_BUCKET`], shorter rows masked. Returns the logits of
    /// `seqs` in their order.
    pub(super) fn forward_slots(
        &self,
        seqs: &mut [SeqStep<'_>],
        pool: &PoolTensors,
        mut observer: Option<&mut dyn Observer>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (rows, width, dev) = (pool.slots, pool.width, &self.device);
        let (hd, nh, nkv) = (cfg.head_dim, cfg.num_heads, cfg.num_kv_heads);
        let groups = nh / nkv;
        let request = observer.as_ref().map(|o| o.request()).unwrap_or_default();
        let mut tokens = vec![0u32; rows];
        let mut positions = vec![0u32; rows];
        // Keys each row attends to (≥ 1, so a free row's softmax stays finite) and where it writes.
        let mut attended = vec![1u32; rows];
        let mut write_at = vec![pool.capacity; rows];
        let mut slot_of = Vec::with_capacity(seqs.len());
        for s in seqs.iter_mut() {
            let slot = s.cache.slot().expect("shared_pool checked every cache").index;
            let pos = s.cache.begin_append(s.tokens, None)?;
            let len = s.cache.len();
            (tokens[slot], positions[slot], attended[slot], write_at[slot]) =
                (s.tokens[0], pos[0], len as u32 + 1, len);
            slot_of.push(slot);
        }
        let longest = *attended.iter().max().expect("a pool has slots") as usize;
        let padded = longest.div_ceil(CONTEXT_BUCKET) * CONTEXT_BUCKET;
        let index: Vec<u32> =
            (0..rows * nkv).flat_map(|r| std::iter::repeat_n(((r * width) + write_at[r / nkv]) as u32, hd)).collect();
        let index = Tensor::from_vec(index, (rows * nkv, hd), dev)?;
        let ids = Tensor::from_vec(tokens, rows, dev)?;
        let (cos, sin) = self.rope_tables(&positions)?;
        // Shared by all layers: the RoPE rows and the lengths, as the step's kernels take them.
        let step = Step::new(self.kernels, cos, sin, &attended, padded)?;
        let eps = cfg.rms_norm_eps as f32;
        let qkv_heads = QkvHeads { q: nh, kv: nkv, dim: hd, eps };
        let scale = 1.0 / (hd as f64).sqrt();

        let mut x = self.embed_tokens.forward(&ids)?;
        op("embedding", &x);
        // Each block's residual sum is fused with the norm that follows it: the next block's
        // input norm, or the final one.
        let mut h = self.layers[0].input_layernorm.forward(&x)?;
        op("rms_norm", &h);
        for (li, block) in self.layers.iter().enumerate() {
            let a = &block.self_attn;
            let (q, k, v) = step.qkv_rope(&h, &a.qkv_proj, a.qk_norm.as_ref(), a.qkv_extras.as_ref(), qkv_heads)?;
            let q = q.reshape((rows, nkv, groups, hd))?;
            let (pk, pv) = (&pool.k[li], &pool.v[li]);
            pk.reshape((rows * nkv * width, hd))?.scatter_set(&index, &k, 0)?;
            op("scatter", pk);
            pv.reshape((rows * nkv * width, hd))?.scatter_set(&index, &v, 0)?;
            op("scatter", pv);
            let (keys, values) = (pk.narrow(2, 0, padded)?, pv.narrow(2, 0, padded)?);
            let scores = slot_attention::scores(&q, &keys, &attended, scale)?;
            op("scores", &scores);
            let probs = step.softmax(&scores)?;
            if request.attention {
                if let Some(obs) = observer.as_deref_mut() {
                    // Summed over heads for every row at once (f32 first: CUDA sums bf16 in bf16).
                    let sums = probs.to_dtype(DType::F32)?.reshape((rows, nh, padded))?.sum(1)?;
                    op("sum", &sums);
                    for (si, &slot) in slot_of.iter().enumerate() {
                        let len = seqs[si].cache.len() + 1;
                        let probs = probs.get(slot)?.narrow(2, 0, len)?.unsqueeze(2)?;
                        let keys = keys.get(slot)?.narrow(1, 0, len)?;
                        let queries = q.get(slot)?.unsqueeze(2)?;
                        let head_sum = sums.get(slot)?.narrow(0, 0, len)?;
                        let view = AttentionView {
                            layer: li,
                            probs: &probs,
                            keys: &keys,
                            queries: &queries,
                            head_sum: Some(&head_sum),
                        };
                        obs.attention(si, &view)?;
                    }
                }
            }
            let out = slot_attention::mix(&probs, &values, &attended)?;
            op("mix", &out);
            let attn = a.o_proj.forward(&out.reshape((rows, nh * hd))?)?;
            let (sum, normed) = fused::add_rms_norm(step.kernels, &x, &attn, &block.post_attention_layernorm, eps)?;
            let gated = fused::silu_mul(step.kernels, &block.mlp.gate_up_proj.forward(&normed)?)?;
            let mlp = block.mlp.down_proj.forward(&gated)?;
            let next_norm = self.layers.get(li + 1).map_or(&self.norm, |b| &b.input_layernorm);
            (x, h) = fused::add_rms_norm(step.kernels, &sum, &mlp, next_norm, eps)?;
        }
        let hidden = h;
        if request.hidden {
            if let Some(obs) = observer {
                // Each row head once over every row (a fixed row count, so batch-invariant).
                let mut heads: Vec<(Arc<dyn RowHead>, Tensor)> = Vec::new();
                for (si, &slot) in slot_of.iter().enumerate() {
                    let Some(head) = obs.row_head(si) else {
                        obs.hidden(si, &hidden.narrow(0, slot, 1)?)?;
                        continue;
                    };
                    let out = match heads.iter().find(|(h, _)| Arc::ptr_eq(h, &head)) {
                        Some((_, out)) => out.clone(),
                        None => {
                            let out = head.forward(&hidden)?;
                            op("row_head", &out);
                            heads.push((head, out.clone()));
                            out
                        }
                    };
                    obs.head_output(si, &out.narrow(0, slot, 1)?)?;
                }
            }
        }
        for s in seqs.iter_mut() {
            let position = s.cache.next_position();
            s.cache.commit(s.tokens, &[position])?;
        }
        // Every row through lm_head (a product's rows do not depend on how many there are only
        // when their number is fixed), then the rows of `seqs`.
        let logits = self.lm_head.forward(&hidden)?;
        let n = slot_of.len();
        let slot_of: Vec<u32> = slot_of.into_iter().map(|s| s as u32).collect();
        let logits = logits.index_select(&Tensor::from_vec(slot_of, n, dev)?, 0)?;
        op("select", &logits);
        Ok(logits)
    }
}

/// The pool whose slots hold every sequence's cache, when each feeds one token at its next
/// position over its whole cache (a decode step) and no two share a slot: then one batched step
/// serves them all.
pub(super) fn shared_pool(seqs: &[SeqStep<'_>]) -> Option<Arc<PoolTensors>> {
    let first = seqs.first()?.cache.slot()?.pool.clone();
    let mut seen = vec![false; first.slots];
    for s in seqs {
        let slot = s.cache.slot()?;
        if s.tokens.len() != 1 || s.positions.is_some() || s.visible.is_some() || !Arc::ptr_eq(&slot.pool, &first) {
            return None;
        }
        if std::mem::replace(&mut seen[slot.index], true) {
            return None;
        }
    }
    Some(first)
}
