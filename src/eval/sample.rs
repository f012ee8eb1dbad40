//! One sample end to end: a prompt, a policy at a budget, generation, and what it cost; in a run,
//! a job's prompt and random stream in, its graded record out.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};

use super::prompt::render_prompt;
use crate::cache::observe::CacheHook;
use crate::cache::pool::SlotPool;
use crate::decode::generate::{decode_step, GenerateParams, Generation, Sequence, StopReason};
use crate::grading;
use crate::model::source::LoadedModel;
use crate::plan::{Job, Plan};
use crate::policies::dynts::ImportancePredictor;
use crate::policies::trace::TraceSink;
use crate::policies::{sepllm, Budget, EvictionStats, Evictor, PolicyContext, PolicySpec};
use crate::results::record::SampleRecord;
use crate::rng::Rng;

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

/// One sample to decode: a prompt under a policy at a budget, with its own random stream.
pub struct Sample<'a> {
    pub policy: &'a PolicySpec,
    /// `None`: no budget, the full cache (only for policies that never evict).
    pub budget: Option<Budget>,
    pub prompt: &'a [u32],
    pub params: &'a GenerateParams,
    /// The sample's own stream: its tokens never depend on order, threads or batch-mates.
    pub rng: Rng,
    /// Writes one line per eviction to the sink, tagged with the name.
    pub trace: Option<(&'a TraceSink, String)>,
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

/// The budget a sample runs under: its own, or none for a policy that never evicts.
fn effective_budget(spec: &PolicySpec, budget: Option<Budget>) -> Result<Budget> {
    match budget {
        Some(b) => Ok(b),
        None if !spec.evicts() => Ok(Budget::UNBOUNDED),
        None => bail!("policy {} evicts, so it needs a budget", spec.name),
    }
}

/// Cache entries a sample needs at most: full-cache runs hold prompt + generation; budgeted ones
/// B + 1 (the step that triggers) or the prompt, plus a prefill chunk appended before pruning.
pub fn cache_capacity(spec: &PolicySpec, budget: Option<Budget>, prompt_len: usize, params: &GenerateParams) -> usize {
    match budget {
        Some(b) if spec.evicts() => b.budget.max(prompt_len) + params.prefill_chunk + 1,
        _ => prompt_len + params.max_new_tokens,
    }
}

/// Prefills the sample's prompt under its policy, in a cache of its own, and draws the first token.
pub fn start_sample(lm: &LoadedModel, res: &PolicyResources, sample: Sample<'_>) -> Result<SampleState> {
    start_sample_in(lm, res, sample, None)
}

/// Like [`start_sample`], with the cache in a free slot of `pool` when one is given (then the
/// sample decodes in the pool's batched steps).
pub fn start_sample_in(
    lm: &LoadedModel,
    res: &PolicyResources,
    sample: Sample<'_>,
    pool: Option<&SlotPool>,
) -> Result<SampleState> {
    let Sample { policy: spec, budget, prompt, params, rng, trace } = sample;
    let capacity = cache_capacity(spec, budget, prompt.len(), params);
    let budget = effective_budget(spec, budget)?;
    if spec.protects_prompt() && budget.budget <= prompt.len() {
        bail!(
            "--budget {} is not above the prompt length {} and {} never evicts the prompt",
            budget.budget,
            prompt.len(),
            spec.name
        );
    }
    let cache = match pool {
        Some(pool) => {
            ensure!(
                capacity <= pool.capacity(),
                "the sample needs {capacity} cache entries, the pool's slots hold {}",
                pool.capacity()
            );
            pool.checkout()?.context("every slot of the pool is taken")?
        }
        None => lm.model.new_cache(capacity)?,
    };
    let ctx = PolicyContext {
        num_layers: lm.model.config().num_layers,
        separator_ids: res.separator_ids.clone(),
        think_end: res.think_end,
        predictor: res.predictor.clone(),
        rng: Rng::derive(rng.clone().next_u64(), &[0x706f_6c69_6379]), // "policy"
    };
    let mut evictor = Evictor::new(spec.instantiate(&budget, ctx)?, budget);
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

/// Decodes one sample alone, to the end.
pub fn run_sample(lm: &LoadedModel, res: &PolicyResources, sample: Sample<'_>) -> Result<SampleOutput> {
    let mut state = start_sample(lm, res, sample)?;
    while !state.finished() {
        decode_batch(lm, &mut [&mut state])?;
    }
    Ok(state.finish())
}

/// Prefills a job's prompt under its policy and draws the first token.
pub fn start_job(
    lm: &LoadedModel,
    res: &PolicyResources,
    specs: &[PolicySpec],
    plan: &Plan,
    job: &Job,
    pool: Option<&SlotPool>,
) -> Result<SampleState> {
    let prompt = render_prompt(lm, plan, &job.question)?;
    let params = job_params(lm, plan);
    // The sample's stream depends on what it is, never on order, threads, shards or resumption.
    let dataset_hash =
        job.dataset.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let rng = Rng::derive(plan.seed, &[dataset_hash, job.question.index as u64, job.sample as u64]);
    let sample =
        Sample { policy: &specs[job.policy], budget: job.budget, prompt: &prompt, params: &params, rng, trace: None };
    start_sample_in(lm, res, sample, pool).with_context(|| format!("sample {}", job.key(plan)))
}

/// How a plan's samples generate.
pub fn job_params(lm: &LoadedModel, plan: &Plan) -> GenerateParams {
    GenerateParams {
        max_new_tokens: plan.max_new_tokens,
        sampling: plan.sampling,
        stop_tokens: lm.eos_token_ids.clone(),
        prefill_chunk: plan.prefill_chunk,
    }
}

/// Grades a finished job into its `samples.jsonl` record.
pub fn finish_job(
    lm: &LoadedModel,
    specs: &[PolicySpec],
    plan: &Plan,
    job: &Job,
    state: SampleState,
) -> Result<SampleRecord> {
    let spec = &specs[job.policy];
    let out = state.finish();
    let g = &out.generation;
    let completion = lm.completion(&g.tokens)?;
    let kind = grading::kind_for_dataset(&job.dataset).with_context(|| format!("no grader for {}", job.dataset))?;
    let grading::Graded { extracted, reference, verdict } =
        grading::grade_completion(&completion, &job.question.reference, &job.dataset, kind);
    let steps = g.tokens.len().saturating_sub(1).max(1);
    let (budget, window, ratio) = Budget::columns(job.budget.as_ref());
    Ok(SampleRecord {
        key: job.key(plan),
        dataset: job.dataset.clone(),
        question_index: job.question.index,
        question_id: job.question.id.clone(),
        policy: spec.name.clone(),
        budget,
        window,
        ratio,
        sample: job.sample,
        prompt_tokens: g.prompt_tokens,
        generated_tokens: g.tokens.len(),
        stop: g.stop,
        think_closed: extracted.think_closed,
        truncated: g.stop == StopReason::MaxNewTokens,
        completion,
        extracted: extracted.answer,
        extraction: extracted.method.to_string(),
        reference,
        correct: verdict.correct,
        reason: verdict.reason,
        peak_kv: g.peak_kv,
        mean_kv: g.kv_footprint as f64 / steps as f64,
        kv_footprint: g.kv_footprint,
        evictions: out.stats.evictions,
        prefill_secs: g.prefill_secs,
        decode_secs: g.decode_secs,
        policy_secs: out.stats.policy_secs,
    })
}
