//! The decoder for the Llama, Qwen2 and Qwen3 families: pre-norm blocks of grouped-query attention
//! with RoPE and a SwiGLU MLP, RMSNorm, tied or separate `lm_head`.
//!
//! - Llama: <https://arxiv.org/abs/2302.13971>, Llama 3 RoPE scaling as in HF `_compute_llama3_parameters`.
//! - Qwen2: q/k/v projections carry biases. Qwen3: per-head RMSNorm on q and k before RoPE.
//!
//! Weights load by their HF checkpoint names (`model.layers.{i}.self_attn.q_proj.weight`, …).
//! Unlike candle-transformers' models, the KV cache is the caller's [`KvCache`] (post-RoPE,
//! absolute positions, compactable) and attention probabilities are materialised so that an
//! [`Observer`] can see them. Several sequences can go through one forward: their rows are stacked
//! for every Linear layer ([`Proj`]), and attention runs per sequence against its own cache; or,
//! when every sequence decodes one token from a slot of one [`SlotPool`], attention runs once per
//! layer for the whole pool (a fixed number of ops per step, whatever the batch).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, RmsNorm, VarBuilder};

use super::config::{Arch, ModelConfig};
use super::fused::{Kernels, QkNorm, QkvExtras};
use super::ledger::op;
use super::linear::{Proj, Weight};
use crate::cache::observe::{AttentionView, Observer};
use crate::cache::pool::SlotPool;
use crate::cache::KvCache;

mod slot_step;

use slot_step::shared_pool;

/// Positions the RoPE table holds at most: a reasoning trace's prompt and 16k generated tokens fit,
/// a million-token context's table would not be worth its memory (later positions are computed).
const ROPE_TABLE_POSITIONS: usize = 1 << 15;

struct Attention {
    /// q_proj, k_proj and v_proj stacked: `[q | k | v]` per row.
    qkv_proj: Proj,
    o_proj: Proj,
    /// Qwen3's per-head norms of q and k.
    qk_norm: Option<QkNorm>,
    /// qkv_proj's bias and the q/k norms' weights, as the fused `qkv_rope` takes them.
    qkv_extras: Option<QkvExtras>,
}

struct Mlp {
    /// gate_proj and up_proj stacked: `[gate | up]` per row.
    gate_up_proj: Proj,
    down_proj: Proj,
}

struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

pub struct Transformer {
    cfg: ModelConfig,
    embed_tokens: Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    lm_head: Proj,
    inv_freq: Vec<f32>,
    /// On a GPU, cos and sin `[positions, head_dim/2]` for the first positions of the model's
    /// context; on the CPU computing a step's rows costs less than gathering them.
    rope: Option<(Tensor, Tensor)>,
    /// What the batched decode step runs (the per-sequence path always runs candle's ops).
    kernels: Kernels,
    device: Device,
    dtype: DType,
}

/// One sequence's share of a forward step.
pub struct SeqStep<'a> {
    pub cache: &'a mut KvCache,
    pub tokens: &'a [u32],
    /// Explicit absolute positions (default: the cache's counter). Used to replay kept tokens.
    pub positions: Option<&'a [u32]>,
    /// Which already-cached slots the new tokens may attend to (`None`: all). Eviction by masking,
    /// the reference that compaction must equal.
    pub visible: Option<&'a [bool]>,
}

/// GGML-quantized weights that stay quantized (`--weights native`), by their HF checkpoint names
/// (`model.layers.0.self_attn.q_proj.weight`, `lm_head.weight`).
pub type QuantizedWeights = HashMap<String, Arc<QTensor>>;

/// Where the decoder's weights come from: dense tensors by name, and the quantized ones.
struct Weights<'a> {
    vb: VarBuilder<'a>,
    quantized: &'a QuantizedWeights,
}

impl Weights<'_> {
    fn pp(&self, name: impl ToString) -> Self {
        Weights { vb: self.vb.pp(name), quantized: self.quantized }
    }

    /// A projection's weight `[out, in]` (quantized if kept so) and bias.
    fn linear_parts(&self, in_dim: usize, out_dim: usize, bias: bool) -> Result<(Weight, Option<Tensor>)> {
        let name = format!("{}.weight", self.vb.prefix());
        let weight = match self.quantized.get(&name) {
            Some(q) => {
                ensure!(
                    q.shape().dims() == [out_dim, in_dim],
                    "{name}: shape {:?}, expected [{out_dim}, {in_dim}]",
                    q.shape().dims()
                );
                Weight::Quantized(q.clone())
            }
            None => Weight::Dense(self.vb.get((out_dim, in_dim), "weight")?),
        };
        let bias = if bias { Some(self.vb.get(out_dim, "bias")?) } else { None };
        Ok((weight, bias))
    }

    fn linear(&self, in_dim: usize, out_dim: usize, bias: bool) -> Result<Proj> {
        let (weight, bias) = self.linear_parts(in_dim, out_dim, bias)?;
        Proj::from_weight(weight, bias, self.vb.dtype(), self.vb.device())
    }

    fn stacked(&self, parts: Vec<(Weight, Option<Tensor>)>) -> Result<Proj> {
        Proj::stacked(parts, self.vb.dtype(), self.vb.device())
    }
}

fn rms_norm(dim: usize, eps: f64, vb: VarBuilder) -> Result<RmsNorm> {
    Ok(candle_nn::rms_norm(dim, eps, vb)?)
}

impl Transformer {
    pub fn load(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Self::load_with(cfg, vb, &QuantizedWeights::new())
    }

    /// [`Self::load`] with some projection weights kept GGML-quantized (by their HF names).
    pub fn load_with(cfg: &ModelConfig, vb: VarBuilder, quantized: &QuantizedWeights) -> Result<Self> {
        cfg.validate()?;
        let (d, hd) = (cfg.hidden_size, cfg.head_dim);
        let w = Weights { vb: vb.clone(), quantized };
        let vb_m = vb.pp("model");
        let w_m = w.pp("model");
        let embed_tokens =
            candle_nn::embedding(cfg.vocab_size, d, vb_m.pp("embed_tokens")).context("loading model.embed_tokens")?;
        let layers = (0..cfg.num_layers)
            .map(|i| {
                let vb_l = vb_m.pp("layers").pp(i);
                let w_a = w_m.pp("layers").pp(i).pp("self_attn");
                let qk_norm = if cfg.qk_norm {
                    let q = rms_norm(hd, cfg.rms_norm_eps, w_a.vb.pp("q_norm"))?;
                    Some(QkNorm { q, k: rms_norm(hd, cfg.rms_norm_eps, w_a.vb.pp("k_norm"))? })
                } else {
                    None
                };
                let qkv_proj = w_a.stacked(vec![
                    w_a.pp("q_proj").linear_parts(d, cfg.num_heads * hd, cfg.qkv_bias)?,
                    w_a.pp("k_proj").linear_parts(d, cfg.num_kv_heads * hd, cfg.qkv_bias)?,
                    w_a.pp("v_proj").linear_parts(d, cfg.num_kv_heads * hd, cfg.qkv_bias)?,
                ])?;
                let self_attn = Attention {
                    qkv_extras: QkvExtras::new(qkv_proj.bias(), qk_norm.as_ref())?,
                    qkv_proj,
                    o_proj: w_a.pp("o_proj").linear(cfg.num_heads * hd, d, false)?,
                    qk_norm,
                };
                let w_mlp = w_m.pp("layers").pp(i).pp("mlp");
                let mlp = Mlp {
                    gate_up_proj: w_mlp.stacked(vec![
                        w_mlp.pp("gate_proj").linear_parts(d, cfg.intermediate_size, false)?,
                        w_mlp.pp("up_proj").linear_parts(d, cfg.intermediate_size, false)?,
                    ])?,
                    down_proj: w_mlp.pp("down_proj").linear(cfg.intermediate_size, d, false)?,
                };
                Ok(Block {
                    input_layernorm: rms_norm(d, cfg.rms_norm_eps, vb_l.pp("input_layernorm"))?,
                    self_attn,
                    post_attention_layernorm: rms_norm(d, cfg.rms_norm_eps, vb_l.pp("post_attention_layernorm"))?,
                    mlp,
                })
            })
            .collect::<Result<Vec<_>>>()
            .context("loading decoder layers")?;
        let norm = rms_norm(d, cfg.rms_norm_eps, vb_m.pp("norm")).context("loading model.norm")?;
        // A quantized lm_head (the GGUF's output weight, or its token embedding when tied) is kept.
        let lm_head = if cfg.tie_word_embeddings && !quantized.contains_key("lm_head.weight") {
            Proj::new(embed_tokens.embeddings().clone(), None)
        } else {
            w.pp("lm_head").linear(d, cfg.vocab_size, false).context("loading lm_head")?
        };
        let inv_freq = inv_freq(cfg);
        let rope = if vb.device().is_cpu() {
            None
        } else {
            let every_position: Vec<u32> = (0..cfg.max_position_embeddings.min(ROPE_TABLE_POSITIONS) as u32).collect();
            Some(rope_values(&inv_freq, &every_position, vb.dtype(), vb.device())?)
        };
        Ok(Self {
            inv_freq,
            rope,
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            kernels: Kernels::default_for(vb.device()),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Bytes one decode step reads from the weights: every projection and norm once, the
    /// embedding table only as a tied output head.
    pub fn weight_bytes_per_step(&self) -> usize {
        let norm = |n: &RmsNorm| n.weight().elem_count() * self.dtype.size_in_bytes();
        let layers: usize = self
            .layers
            .iter()
            .map(|b| {
                let a = &b.self_attn;
                a.qkv_proj.weight_bytes()
                    + a.o_proj.weight_bytes()
                    + b.mlp.gate_up_proj.weight_bytes()
                    + b.mlp.down_proj.weight_bytes()
                    + norm(&b.input_layernorm)
                    + norm(&b.post_attention_layernorm)
                    + a.qk_norm.as_ref().map_or(0, |n| norm(&n.q) + norm(&n.k))
            })
            .sum();
        layers + norm(&self.norm) + self.lm_head.weight_bytes()
    }

    /// The kernels the batched decode step runs.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Runs the batched decode step on `kernels` instead of the device's default.
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// Whether the projections keep GGML-quantized weights (`--weights native`).
    pub fn is_quantized(&self) -> bool {
        self.lm_head.is_quantized() || self.layers.iter().any(|b| b.self_attn.o_proj.is_quantized())
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// An empty cache shaped for this model.
    pub fn new_cache(&self, capacity: usize) -> Result<KvCache> {
        KvCache::new(self.cfg.num_layers, self.cfg.num_kv_heads, self.cfg.head_dim, capacity, self.dtype, &self.device)
    }

    /// A pool of `slots` caches of `capacity` entries each, for batched decoding.
    pub fn new_pool(&self, slots: usize, capacity: usize) -> Result<SlotPool> {
        let c = &self.cfg;
        SlotPool::new(c.num_layers, c.num_kv_heads, c.head_dim, slots, capacity, self.dtype, &self.device)
    }

    /// RoPE tables `[t, head_dim/2]` for the given absolute positions: on a GPU, rows of the table
    /// built at load gathered on the device (one small upload of positions instead of two tables);
    /// else, and past the table's end, computed afresh (the same values).
    fn rope_tables(&self, positions: &[u32]) -> Result<(Tensor, Tensor)> {
        match &self.rope {
            Some((cos, sin)) if positions.iter().all(|&p| (p as usize) < cos.dims()[0]) => {
                let index = Tensor::from_slice(positions, positions.len(), &self.device)?;
                Ok((cos.index_select(&index, 0)?, sin.index_select(&index, 0)?))
            }
            _ => rope_values(&self.inv_freq, positions, self.dtype, &self.device),
        }
    }

    /// Feeds each sequence's tokens, appends their K/V to its cache, and returns the logits of
    /// each sequence's last token, `[n_seqs, vocab]`.
    pub fn forward(&self, seqs: &mut [SeqStep<'_>], observer: Option<&mut dyn Observer>) -> Result<Tensor> {
        self.check_tokens(seqs)?;
        if let Some(pool) = shared_pool(seqs) {
            return self.forward_slots(seqs, &pool, observer);
        }
        let hidden = self.forward_hidden(seqs, observer)?;
        let last: Vec<u32> = row_offsets(seqs).iter().map(|&(off, t)| (off + t - 1) as u32).collect();
        let n = last.len();
        let last = hidden.index_select(&Tensor::from_vec(last, n, &self.device)?, 0)?;
        self.lm_head.forward(&last)
    }

    /// Like [`Transformer::forward`], but returns the logits of every fed token, `[Σt, vocab]`.
    pub fn forward_all_logits(&self, seqs: &mut [SeqStep<'_>], observer: Option<&mut dyn Observer>) -> Result<Tensor> {
        self.check_tokens(seqs)?;
        if let Some(pool) = shared_pool(seqs) {
            return self.forward_slots(seqs, &pool, observer);
        }
        let hidden = self.forward_hidden(seqs, observer)?;
        self.lm_head.forward(&hidden)
    }

    /// Every sequence feeds at least one token, each inside the vocabulary.
    fn check_tokens(&self, seqs: &[SeqStep<'_>]) -> Result<()> {
        ensure!(!seqs.is_empty(), "forward needs at least one sequence");
        for (i, s) in seqs.iter().enumerate() {
            ensure!(!s.tokens.is_empty(), "sequence {i} has no tokens to feed");
            if let Some(&bad) = s.tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
                anyhow::bail!("token id {bad} is outside the vocabulary ({})", self.cfg.vocab_size);
            }
        }
        Ok(())
    }

    /// Runs the blocks and the final norm; returns the final hidden states `[Σt, hidden]`.
    fn forward_hidden(&self, seqs: &mut [SeqStep<'_>], mut observer: Option<&mut dyn Observer>) -> Result<Tensor> {
        let request = observer.as_ref().map(|o| o.request()).unwrap_or_default();
        let offsets = row_offsets(seqs);
        let mut all_tokens = Vec::new();
        let mut all_positions = Vec::new();
        for s in seqs.iter_mut() {
            let positions = s.cache.begin_append(s.tokens, s.positions)?;
            all_tokens.extend_from_slice(s.tokens);
            all_positions.extend_from_slice(&positions);
        }
        let n = all_tokens.len();
        let ids = Tensor::from_vec(all_tokens, n, &self.device)?;
        let (cos, sin) = self.rope_tables(&all_positions)?;
        let masks = offsets
            .iter()
            .zip(seqs.iter())
            .map(|(&(_, t), s)| causal_mask(t, s.cache.len(), s.visible, &self.device, self.dtype))
            .collect::<Result<Vec<_>>>()?;

        let mut x = self.embed_tokens.forward(&ids)?;
        op("embedding", &x);
        for (li, block) in self.layers.iter().enumerate() {
            let h = block.input_layernorm.forward(&x)?;
            op("rms_norm", &h);
            let attn = self.attention(
                li,
                &block.self_attn,
                &h,
                &cos,
                &sin,
                seqs,
                &offsets,
                &masks,
                &mut observer,
                request.attention,
            )?;
            x = self.block_tail(block, x, attn)?;
        }
        let hidden = self.norm.forward(&x)?;
        op("rms_norm", &hidden);
        if request.hidden {
            if let Some(obs) = observer {
                for (si, &(off, t)) in offsets.iter().enumerate() {
                    obs.hidden(si, &hidden.narrow(0, off, t)?)?;
                }
            }
        }
        let mut pos_off = 0;
        for s in seqs.iter_mut() {
            let t = s.tokens.len();
            s.cache.commit(s.tokens, &all_positions[pos_off..pos_off + t])?;
            pos_off += t;
        }
        Ok(hidden)
    }

    /// The rest of a block after its attention: the residual `x + attn`, then `x + mlp(norm(x))`.
    fn block_tail(&self, block: &Block, x: Tensor, attn: Tensor) -> Result<Tensor> {
        let x = (x + attn)?;
        op("add", &x);
        let h = block.post_attention_layernorm.forward(&x)?;
        op("rms_norm", &h);
        let m = &block.mlp;
        let f = self.cfg.intermediate_size;
        let gate_up = m.gate_up_proj.forward(&h)?;
        let gate = candle_nn::ops::silu(&gate_up.narrow(D::Minus1, 0, f)?)?;
        op("silu", &gate);
        let gated = (gate * gate_up.narrow(D::Minus1, f, f)?)?;
        op("mul", &gated);
        let mlp = m.down_proj.forward(&gated)?;
        let x = (x + mlp)?;
        op("add", &x);
        Ok(x)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        layer: usize,
        a: &Attention,
        h: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        seqs: &mut [SeqStep<'_>],
        offsets: &[(usize, usize)],
        masks: &[Option<Tensor>],
        observer: &mut Option<&mut dyn Observer>,
        observe_attention: bool,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (n, hd, nh, nkv) = (h.dim(0)?, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads);
        let groups = nh / nkv;
        let qkv = a.qkv_proj.forward(h)?;
        let mut q = qkv.narrow(D::Minus1, 0, nh * hd)?.reshape((n, nh, hd))?;
        let mut k = qkv.narrow(D::Minus1, nh * hd, nkv * hd)?.reshape((n, nkv, hd))?;
        let v = qkv.narrow(D::Minus1, (nh + nkv) * hd, nkv * hd)?.reshape((n, nkv, hd))?;
        if let Some(norm) = &a.qk_norm {
            q = norm.q.forward(&q.contiguous()?)?;
            k = norm.k.forward(&k.contiguous()?)?;
        }
        // [heads, n, hd]: RoPE is applied to all stacked rows at once, each row at its own position.
        let q = candle_nn::rotary_emb::rope(&q.transpose(0, 1)?.contiguous()?.unsqueeze(0)?, cos, sin)?.squeeze(0)?;
        let k = candle_nn::rotary_emb::rope(&k.transpose(0, 1)?.contiguous()?.unsqueeze(0)?, cos, sin)?.squeeze(0)?;
        let v = v.transpose(0, 1)?.contiguous()?;
        for (name, t) in [("copy", &q), ("rope", &q), ("copy", &k), ("rope", &k), ("copy", &v)] {
            op(name, t);
        }
        let scale = 1.0 / (hd as f64).sqrt();
        let single = seqs.len() == 1;
        let mut outs = Vec::with_capacity(seqs.len());
        for (si, (s, &(off, t))) in seqs.iter_mut().zip(offsets).enumerate() {
            let (ks, vs) = if single {
                (k.clone(), v.clone())
            } else {
                (k.narrow(1, off, t)?.contiguous()?, v.narrow(1, off, t)?.contiguous()?)
            };
            if !single {
                op("copy", &ks);
                op("copy", &vs);
            }
            s.cache.write(layer, &ks, &vs)?;
            op("write", &ks);
            op("write", &vs);
            let (keys, values) = s.cache.view_with(layer, t)?;
            let len = keys.dim(1)?;
            let qs = if single { q.clone() } else { q.narrow(1, off, t)? };
            let qs = qs.reshape((nkv, groups * t, hd))?;
            let scores = (qs.matmul(&keys.t()?)? * scale)?;
            let scores = match &masks[si] {
                Some(mask) => scores.reshape((nkv, groups, t, len))?.broadcast_add(mask)?,
                None => scores.reshape((nkv, groups, t, len))?,
            };
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            op("matmul", &probs);
            op("scale", &probs);
            if masks[si].is_some() {
                op("add", &probs);
            }
            op("softmax", &probs);
            if observe_attention {
                if let Some(obs) = observer.as_deref_mut() {
                    let queries = qs.reshape((nkv, groups, t, hd))?;
                    obs.attention(
                        si,
                        &AttentionView { layer, probs: &probs, keys: &keys, queries: &queries, head_sum: None },
                    )?;
                }
            }
            let out = probs.reshape((nkv, groups * t, len))?.matmul(&values)?;
            op("matmul", &out);
            outs.push(out.reshape((nh, t, hd))?);
        }
        let out = if single { outs.pop().expect("one sequence") } else { Tensor::cat(&outs, 1)? };
        if !single {
            op("cat", &out);
        }
        let out = out.transpose(0, 1)?.reshape((n, nh * hd))?;
        op("copy", &out);
        a.o_proj.forward(&out)
    }
}

/// `(row offset, token count)` of each sequence in the stacked rows.
fn row_offsets(seqs: &[SeqStep<'_>]) -> Vec<(usize, usize)> {
    let mut off = 0;
    seqs.iter()
        .map(|s| {
            let r = (off, s.tokens.len());
            off += s.tokens.len();
            r
        })
        .collect()
}

/// Additive mask `[t, cached + t]` hiding keys after each query (and cached slots not `visible`);
/// `None` when nothing is hidden (a single new token over the whole cache).
fn causal_mask(
    t: usize,
    cached: usize,
    visible: Option<&[bool]>,
    device: &Device,
    dtype: DType,
) -> Result<Option<Tensor>> {
    if t == 1 && visible.is_none() {
        return Ok(None);
    }
    if let Some(v) = visible {
        ensure!(v.len() == cached, "visibility given for {} slots, the cache holds {cached}", v.len());
    }
    let len = cached + t;
    let hidden = |j: usize| visible.is_some_and(|v| j < cached && !v[j]);
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..len).map(move |j| if j > cached + i || hidden(j) { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Some(Tensor::from_vec(mask, (t, len), device)?.to_dtype(dtype)?))
}

/// RoPE cos and sin `[positions, inv_freq]` computed on the host in f32 as HF does, then converted.
fn rope_values(inv_freq: &[f32], positions: &[u32], dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for &f in inv_freq {
            let angle = p as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    let shape = (positions.len(), half);
    Ok((Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?, Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?))
}

/// RoPE inverse frequencies, with Llama 3 frequency-dependent scaling when configured.
fn inv_freq(cfg: &ModelConfig) -> Vec<f32> {
    let d = cfg.head_dim;
    let base: Vec<f32> = (0..d).step_by(2).map(|i| 1.0 / (cfg.rope_theta as f32).powf(i as f32 / d as f32)).collect();
    match (&cfg.rope_scaling, cfg.arch) {
        (Some(s), _) => {
            let low_wavelen = s.original_max_position_embeddings as f32 / s.low_freq_factor;
            let high_wavelen = s.original_max_position_embeddings as f32 / s.high_freq_factor;
            base.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / s.factor
                    } else {
                        let smooth = (s.original_max_position_embeddings as f32 / wavelen - s.low_freq_factor)
                            / (s.high_freq_factor - s.low_freq_factor);
                        (1.0 - smooth) * f / s.factor + smooth * f
                    }
                })
                .collect()
        }
        (None, Arch::Llama | Arch::Qwen2 | Arch::Qwen3) => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows gathered from the table built at load are the values a step would have computed, bit
    /// for bit, in f32 and in bf16.
    #[test]
    fn rope_rows_gathered_from_the_table_equal_fresh_ones() {
        let inv_freq: Vec<f32> = (0..32).map(|i| 1.0 / 10_000f32.powf(2.0 * i as f32 / 64.0)).collect();
        let positions = [0u32, 1, 7, 511, 1000, 4095, 3];
        for dtype in [DType::F32, DType::BF16] {
            let every: Vec<u32> = (0..4096).collect();
            let (cos, sin) = rope_values(&inv_freq, &every, dtype, &Device::Cpu).unwrap();
            let index = Tensor::from_slice(&positions, positions.len(), &Device::Cpu).unwrap();
            let (fresh_cos, fresh_sin) = rope_values(&inv_freq, &positions, dtype, &Device::Cpu).unwrap();
            let bits = |t: &Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let bits = |t: &Tensor| bits(t).into_iter().map(f32::to_bits).collect::<Vec<_>>();
            assert_eq!(bits(&cos.index_select(&index, 0).unwrap()), bits(&fresh_cos), "{dtype:?}");
            assert_eq!(bits(&sin.index_select(&index, 0).unwrap()), bits(&fresh_sin), "{dtype:?}");
        }
    }
}
