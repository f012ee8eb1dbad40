//! Generation for one sequence: chunked prefill, then one token per step until a stop token or
//! the token limit. A [`CacheHook`] (an eviction policy) sees every step and may compact the cache.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Result};
use candle_core::Tensor;

use super::sampling::{argmax_rows, sample, SamplingParams};
use crate::cache::observe::{AttentionView, CacheHook, ObserveRequest, Observer, RowHead};
use crate::cache::KvCache;
use crate::model::{SeqStep, Transformer};
use crate::rng::Rng;

#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub stop_tokens: Vec<u32>,
    /// Prompt tokens per prefill forward (bounds the `[chunk, context]` score tensors).
    pub prefill_chunk: usize,
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

/// One sequence being decoded: its cache, random stream and output so far. Prefilled alone, then
/// advanced by [`decode_step`], alone or together with other sequences (one stacked forward).
pub struct Sequence {
    pub cache: KvCache,
    params: GenerateParams,
    rng: Rng,
    prompt_tokens: usize,
    tokens: Vec<u32>,
    stop: Option<StopReason>,
    peak_kv: usize,
    kv_footprint: u64,
    prefill_secs: f64,
    decode_secs: f64,
}

impl Sequence {
    /// Prefills `prompt` in chunks and draws the first token.
    pub fn prefill(
        model: &Transformer,
        mut cache: KvCache,
        prompt: &[u32],
        params: &GenerateParams,
        rng: Rng,
        mut hook: Option<&mut dyn CacheHook>,
    ) -> Result<Self> {
        ensure!(!prompt.is_empty(), "the prompt is empty");
        ensure!(params.prefill_chunk > 0, "prefill chunk must be positive");
        let start = Instant::now();
        let mut logits = None;
        let mut peak_kv = 0;
        for chunk in prompt.chunks(params.prefill_chunk) {
            if let Some(h) = hook.as_deref_mut() {
                h.before_forward(&cache, chunk, true)?;
            }
            let mut step = [SeqStep { cache: &mut cache, tokens: chunk, positions: None, visible: None }];
            logits = Some(model.forward(&mut step, hook.as_deref_mut().map(|h| h as &mut dyn Observer))?);
            if let Some(h) = hook.as_deref_mut() {
                h.after_forward(&mut cache, chunk, true)?;
            }
            peak_kv = peak_kv.max(cache.len());
        }
        let logits = logits.expect("prompt is not empty");
        let prefill_secs = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut seq = Sequence {
            cache,
            params: params.clone(),
            rng,
            prompt_tokens: prompt.len(),
            tokens: Vec::new(),
            stop: None,
            peak_kv,
            kv_footprint: 0,
            prefill_secs,
            decode_secs: 0.0,
        };
        if params.max_new_tokens == 0 {
            seq.stop = Some(StopReason::MaxNewTokens);
        } else {
            let next = next_tokens(&logits, &mut [&mut seq])?[0];
            seq.push(next);
        }
        seq.decode_secs = start.elapsed().as_secs_f64();
        Ok(seq)
    }

    fn push(&mut self, token: u32) {
        self.tokens.push(token);
        if self.params.stop_tokens.contains(&token) {
            self.stop = Some(StopReason::StopToken);
        } else if self.tokens.len() >= self.params.max_new_tokens {
            self.stop = Some(StopReason::MaxNewTokens);
        }
    }

    pub fn finished(&self) -> bool {
        self.stop.is_some()
    }

    pub fn into_generation(self) -> Generation {
        Generation {
            tokens: self.tokens,
            prompt_tokens: self.prompt_tokens,
            stop: self.stop.unwrap_or(StopReason::MaxNewTokens),
            peak_kv: self.peak_kv,
            kv_footprint: self.kv_footprint,
            prefill_secs: self.prefill_secs,
            decode_secs: self.decode_secs,
        }
    }
}

/// The next token of every row of `logits` `[n, vocab]`: row i with `seqs[i]`'s sampling
/// parameters, drawn from its own stream.
fn next_tokens(logits: &Tensor, seqs: &mut [&mut Sequence]) -> Result<Vec<u32>> {
    if seqs.iter().all(|s| s.params.sampling.is_greedy()) {
        return argmax_rows(logits);
    }
    let rows: Vec<Vec<f32>> = logits.to_dtype(candle_core::DType::F32)?.to_vec2()?;
    Ok(rows.iter().zip(seqs).map(|(row, s)| sample(row, &s.params.sampling, &mut s.rng)).collect())
}

/// Routes a stacked forward's observations to each sequence's own hook (which sees itself as
/// sequence 0), and only what that hook asked for.
struct BatchObserver<'a, 'h> {
    hooks: &'a mut [Option<&'h mut dyn CacheHook>],
    requests: Vec<ObserveRequest>,
}

impl Observer for BatchObserver<'_, '_> {
    fn request(&self) -> ObserveRequest {
        self.requests.iter().fold(ObserveRequest::default(), |a, r| ObserveRequest {
            attention: a.attention || r.attention,
            hidden: a.hidden || r.hidden,
        })
    }

    fn attention(&mut self, seq: usize, view: &AttentionView<'_>) -> Result<()> {
        match &mut self.hooks[seq] {
            Some(h) if self.requests[seq].attention => h.attention(0, view),
            _ => Ok(()),
        }
    }

    fn hidden(&mut self, seq: usize, hidden: &Tensor) -> Result<()> {
        match &mut self.hooks[seq] {
            Some(h) if self.requests[seq].hidden => h.hidden(0, hidden),
            _ => Ok(()),
        }
    }

    fn row_head(&self, seq: usize) -> Option<Arc<dyn RowHead>> {
        match &self.hooks[seq] {
            Some(h) if self.requests[seq].hidden => h.row_head(0),
            _ => None,
        }
    }

    fn head_output(&mut self, seq: usize, out: &Tensor) -> Result<()> {
        match &mut self.hooks[seq] {
            Some(h) if self.requests[seq].hidden => h.head_output(0, out),
            _ => Ok(()),
        }
    }
}

/// One decode step for every unfinished sequence of `seqs`, in one stacked forward; `hooks[i]`
/// belongs to `seqs[i]`. Every sequence in the step is charged the step's wall time.
pub fn decode_step(
    model: &Transformer,
    seqs: &mut [&mut Sequence],
    hooks: &mut [Option<&mut dyn CacheHook>],
) -> Result<()> {
    ensure!(seqs.len() == hooks.len(), "one hook slot per sequence");
    let start = Instant::now();
    let active: Vec<bool> = seqs.iter().map(|s| !s.finished()).collect();
    if !active.contains(&true) {
        return Ok(());
    }
    let fed: Vec<[u32; 1]> =
        seqs.iter().filter(|s| !s.finished()).map(|s| [*s.tokens.last().expect("a token was drawn")]).collect();
    // The active sequences and their hooks, in the order of the stacked rows.
    let mut live: Vec<&mut Sequence> = seqs.iter_mut().filter(|s| !s.finished()).map(|s| &mut **s).collect();
    let mut live_hooks: Vec<Option<&mut dyn CacheHook>> =
        hooks.iter_mut().zip(&active).filter(|(_, &a)| a).map(|(h, _)| reborrow(h)).collect();
    for ((seq, hook), fed) in live.iter().zip(live_hooks.iter_mut()).zip(&fed) {
        if let Some(h) = hook.as_deref_mut() {
            h.before_forward(&seq.cache, fed, false)?;
        }
    }
    let requests = live_hooks.iter().map(|h| h.as_ref().map(|h| h.request()).unwrap_or_default()).collect();
    let logits = {
        let mut steps: Vec<SeqStep<'_>> = live
            .iter_mut()
            .zip(&fed)
            .map(|(seq, fed)| SeqStep { cache: &mut seq.cache, tokens: fed, positions: None, visible: None })
            .collect();
        let mut observer = BatchObserver { hooks: &mut live_hooks, requests };
        model.forward(&mut steps, Some(&mut observer))?
    };
    let next = next_tokens(&logits, &mut live)?;
    let elapsed = start.elapsed().as_secs_f64();
    for (k, seq) in live.iter_mut().enumerate() {
        if let Some(h) = live_hooks[k].as_deref_mut() {
            h.after_forward(&mut seq.cache, &fed[k], false)?;
        }
        seq.peak_kv = seq.peak_kv.max(seq.cache.len());
        seq.kv_footprint += seq.cache.len() as u64;
        seq.push(next[k]);
        seq.decode_secs += elapsed;
    }
    Ok(())
}

/// A shorter-lived handle on a hook (the cast shortens the trait object's lifetime too).
fn reborrow<'a>(hook: &'a mut Option<&mut dyn CacheHook>) -> Option<&'a mut dyn CacheHook> {
    hook.as_deref_mut().map(|h| h as &mut dyn CacheHook)
}

/// Generates for one sequence: prefill, then one token per step until a stop token or the limit.
pub fn generate(
    model: &Transformer,
    cache: &mut KvCache,
    prompt: &[u32],
    params: &GenerateParams,
    rng: &mut Rng,
    mut hook: Option<&mut dyn CacheHook>,
) -> Result<Generation> {
    let taken = std::mem::replace(cache, model.new_cache(1)?);
    let mut seq = Sequence::prefill(model, taken, prompt, params, rng.clone(), reborrow(&mut hook))?;
    while !seq.finished() {
        decode_step(model, &mut [&mut seq], &mut [reborrow(&mut hook)])?;
    }
    *rng = seq.rng.clone();
    std::mem::swap(cache, &mut seq.cache);
    Ok(seq.into_generation())
}
