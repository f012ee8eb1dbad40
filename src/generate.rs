//! Generation for one sequence: chunked prefill, then one token per step until a stop token or
//! the token limit. A [`CacheHook`] (an eviction policy) sees every step and may compact the cache.

use std::time::Instant;

use anyhow::{ensure, Result};
use candle_core::Tensor;

use crate::cache::KvCache;
use crate::model::{SeqStep, Transformer};
use crate::observe::Observer;
use crate::sampling::{sample, Rng, SamplingParams};

#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub stop_tokens: Vec<u32>,
    /// Prompt tokens per prefill forward (bounds the `[chunk, context]` score tensors).
    pub prefill_chunk: usize,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    StopToken,
    MaxNewTokens,
}

#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated tokens, the stop token included when one ended generation.
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub stop: StopReason,
    /// Largest number of cached tokens per layer after any step's eviction (the reference's
    /// `peak_kvcache`; the step that triggers an eviction holds B + 1 for its duration).
    pub peak_kv: usize,
    /// Σ over decode steps of the cached tokens per layer (time-integrated cache size).
    pub kv_footprint: u64,
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

impl Generation {
    pub fn decode_tokens_per_sec(&self) -> f64 {
        if self.decode_secs > 0.0 {
            self.tokens.len() as f64 / self.decode_secs
        } else {
            0.0
        }
    }
}

fn logits_row_to_token(logits: &Tensor, params: &SamplingParams, rng: &mut Rng) -> Result<u32> {
    if params.is_greedy() {
        // Argmax on the device: one u32 crosses to the host, not the vocabulary.
        return Ok(crate::model::transformer::argmax_rows(logits)?[0]);
    }
    let row: Vec<f32> = logits.squeeze(0)?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
    Ok(sample(&row, params, rng))
}

pub fn generate(
    model: &Transformer,
    cache: &mut KvCache,
    prompt: &[u32],
    params: &GenerateParams,
    rng: &mut Rng,
    mut hook: Option<&mut dyn CacheHook>,
) -> Result<Generation> {
    ensure!(!prompt.is_empty(), "the prompt is empty");
    ensure!(params.prefill_chunk > 0, "prefill chunk must be positive");
    let start = Instant::now();
    let mut logits = None;
    let mut peak_kv = 0;
    for chunk in prompt.chunks(params.prefill_chunk) {
        if let Some(h) = hook.as_deref_mut() {
            h.before_forward(cache, chunk, true)?;
        }
        let mut step = [SeqStep { cache: &mut *cache, tokens: chunk, positions: None, visible: None }];
        logits = Some(model.forward(&mut step, hook.as_deref_mut().map(|h| h as &mut dyn Observer))?);
        if let Some(h) = hook.as_deref_mut() {
            h.after_forward(cache, chunk, true)?;
        }
        peak_kv = peak_kv.max(cache.len());
    }
    let mut logits = logits.expect("prompt is not empty");
    let prefill_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut tokens = Vec::new();
    let mut kv_footprint = 0u64;
    let mut stop = StopReason::MaxNewTokens;
    while tokens.len() < params.max_new_tokens {
        let next = logits_row_to_token(&logits, &params.sampling, rng)?;
        tokens.push(next);
        if params.stop_tokens.contains(&next) {
            stop = StopReason::StopToken;
            break;
        }
        if tokens.len() == params.max_new_tokens {
            break;
        }
        let fed = [next];
        if let Some(h) = hook.as_deref_mut() {
            h.before_forward(cache, &fed, false)?;
        }
        let mut step = [SeqStep { cache: &mut *cache, tokens: &fed, positions: None, visible: None }];
        logits = model.forward(&mut step, hook.as_deref_mut().map(|h| h as &mut dyn Observer))?;
        if let Some(h) = hook.as_deref_mut() {
            h.after_forward(cache, &fed, false)?;
        }
        peak_kv = peak_kv.max(cache.len());
        kv_footprint += cache.len() as u64;
    }
    Ok(Generation {
        tokens,
        prompt_tokens: prompt.len(),
        stop,
        peak_kv,
        kv_footprint,
        prefill_secs,
        decode_secs: start.elapsed().as_secs_f64(),
    })
}
