//! One sample end to end: a prompt, a policy at a budget, generation, and what it cost.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};

use crate::generate::{generate, GenerateParams, Generation};
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

/// Generates for `prompt` under `spec` at `budget`; `rng` is the sample's own stream.
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
    let mut cache = lm.model.new_cache(capacity)?;
    let mut sampling_rng = rng.clone();
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
    let generation = generate(&lm.model, &mut cache, prompt, params, &mut sampling_rng, Some(&mut evictor))?;
    Ok(SampleOutput { generation, stats: evictor.stats().clone() })
}
