//! One sample end to end: a prompt, a policy at a budget, generation, and what it cost.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};

use crate::generate::{decode_step, CacheHook, GenerateParams, Generation, Sequence};
use crate::model::load::LoadedModel;
use crate::policies::dynts::ImportancePredictor;
use crate::policies::trace::TraceSink;
use crate::policies::{sepllm, Budget, EvictionStats, Evictor, PolicyContext, PolicySpec};
use crate::sampling::Rng;

/// What a policy needs from the loaded model, computed once per run.
pub struct PolicyResources {
    pub separator_ids: Vec<u32>,
    pub think_end: Option<u32>,
    pub predictor: Option<Arc<ImportancePredictor>>,
}

impl PolicyResources {
    pub fn new(lm: &LoadedModel, predictor: Option<&Path>) -> Result<Self> {
        let predictor = match predictor {
            Some(p) => Some(Arc::new(ImportancePredictor::load(
                p,
                lm.model.config().hidden_size,
                lm.model.dtype(),
                lm.model.device(),
            )?)),
            None => None,
        };
        Ok(Self {
            separator_ids: sepllm::separator_ids(&lm.tokenizer, lm.bos_token_id),
            think_end: lm.tokenizer.token_to_id("</think>"),
            predictor,
        })
    }
}

pub struct SampleOutput {
    pub generation: Generation,
    pub stats: EvictionStats,
}

/// A sample in flight: its sequence and its policy, advanced by [`decode_batch`].
pub struct SampleState {
    pub seq: Sequence,
    pub evictor: Evictor,
}

impl SampleState {
    pub fn finished(&self) -> bool {
        self.seq.finished()
    }

    pub fn finish(self) -> SampleOutput {
        SampleOutput { stats: self.evictor.stats().clone(), generation: self.seq.into_generation() }
    }
}

/// Prefills `prompt` under `spec` at `budget` and draws the first token; `rng` is the sample's
/// own stream.
#[allow(clippy::too_many_arguments)]
pub fn start_sample(
    lm: &LoadedModel,
    res: &PolicyResources,
    spec: &PolicySpec,
    budget: &Budget,
    prompt: &[u32],
    params: &GenerateParams,
    rng: Rng,
    trace: Option<(&TraceSink, String)>,
) -> Result<SampleState> {
    if spec.protects_prompt() && budget.budget <= prompt.len() {
        bail!(
            "--budget {} is not above the prompt length {} and {} never evicts the prompt",
            budget.budget,
            prompt.len(),
            spec.name
        );
    }
    // Full-cache runs hold prompt + generation; budgeted ones B + 1 (the step that triggers).
    let capacity = if spec.evicts() {
        budget.budget.max(prompt.len()) + params.prefill_chunk + 1
    } else {
        prompt.len() + params.max_new_tokens
    };
    let cache = lm.model.new_cache(capacity)?;
    let ctx = PolicyContext {
        num_layers: lm.model.config().num_layers,
        separator_ids: res.separator_ids.clone(),
        think_end: res.think_end,
        predictor: res.predictor.clone(),
        rng: Rng::derive(rng.clone().next_u64(), &[0x706f_6c69_6379]), // "policy"
    };
    let mut evictor = Evictor::new(spec.instantiate(budget, ctx)?, *budget);
    if let Some((sink, sample)) = trace {
        evictor = evictor.with_trace(sink.clone(), sample);
    }
    let seq = Sequence::prefill(&lm.model, cache, prompt, params, rng, Some(&mut evictor))?;
    Ok(SampleState { seq, evictor })
}

/// One decode step for every unfinished sample of `batch`, stacked into one forward.
pub fn decode_batch(lm: &LoadedModel, batch: &mut [&mut SampleState]) -> Result<()> {
    let (mut seqs, mut hooks): (Vec<&mut Sequence>, Vec<Option<&mut dyn CacheHook>>) =
        batch.iter_mut().map(|s| (&mut s.seq, Some(&mut s.evictor as &mut dyn CacheHook))).unzip();
    decode_step(&lm.model, &mut seqs, &mut hooks)
}

/// Generates for `prompt` under `spec` at `budget`, alone; `rng` is the sample's own stream.
#[allow(clippy::too_many_arguments)]
pub fn run_sample(
    lm: &LoadedModel,
    res: &PolicyResources,
    spec: &PolicySpec,
    budget: &Budget,
    prompt: &[u32],
    params: &GenerateParams,
    rng: Rng,
    trace: Option<(&TraceSink, String)>,
) -> Result<SampleOutput> {
    let mut state = start_sample(lm, res, spec, budget, prompt, params, rng, trace)?;
    while !state.finished() {
        decode_batch(lm, &mut [&mut state])?;
    }
    Ok(state.finish())
}
