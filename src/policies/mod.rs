//! Eviction policies and the shared harness that runs them.
//!
//! The harness is the DynTS repository's (Robin930/DynTS @ a55dc37, `inference/dynts.py`
//! `is_pruning_step` / `pruning2`), which produced the figure every policy is compared in:
//! - **Trigger**: after a decode step's forward, evict when the cache held ≥ B tokens *before* that
//!   step (so eviction fires at B + 1 cached tokens). Prefill is never evicted.
//! - **Selection**: split the cache into older `[0, L−W)` and local `[L−W, L)`; keep the local W
//!   and the top ⌊r·(L−W)⌋ older slots by the policy's score (ties: the earlier slot wins), in
//!   order. One kept set per sequence, shared by every layer and KV head.
//!
//! A policy family is its parameters ([`PolicyParams`], resolved from a preset and immutable) and
//! a small scorer with per-sequence state ([`Policy`]); the harness ([`Evictor`]) owns the
//! trigger, top-k, compaction, statistics and the trace. Policies that keep positional sets
//! (window, StreamingLLM, SepLLM) or per-head sets (the papers' variants) return them directly.

pub mod budget;
pub mod harness;
pub mod registry;
pub mod scoring;
pub mod trace;

/// Declares each policy family's module and registers its parameters under the module's name (the
/// `family` of a preset).
macro_rules! families {
    ($($module:ident::$params:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every family, in this order: its name and the parser of its parameters.
        const FAMILIES: &[(&str, registry::ParseParams)] =
            &[$((stringify!($module), registry::parse::<$module::$params>)),*];
    };
}

// The policy families. Adding a policy: its file here, its preset in `policies/`, one line below.
families! {
    full::FullParams,
    window::WindowParams,
    streamingllm::StreamingLlmParams,
    sepllm::SepLlmParams,
    h2o::H2oParams,
    snapkv::SnapKvParams,
    rkv::RkvParams,
    dynts::DyntsParams,
}

use std::sync::Arc;

use anyhow::Result;
use candle_core::Tensor;

pub use budget::{parse_tokens, Budget};
pub use harness::{EvictionStats, Evictor};
pub use registry::PolicySpec;

use crate::cache::observe::{AttentionView, ObserveRequest, RowHead};
use crate::cache::KvCache;
use crate::rng::Rng;
use dynts::ImportancePredictor;

/// What the harness knows about the step being run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepInfo {
    pub prefill: bool,
    /// Cached tokens before this step's forward.
    pub len_before: usize,
    /// Decode steps completed before this one (0 for the first generated token fed back).
    pub decode_step: usize,
    /// Whether the lazy trigger will fire after this step (known before the forward).
    pub evicts: bool,
}

/// A policy's choice of what survives an eviction.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// Scores of the older part `[0, L−W)`; the harness keeps the top ⌊r·(L−W)⌋ plus the window.
    Older(Vec<f32>),
    /// Exactly these slots (strictly increasing), shared by all layers and heads.
    Slots(Vec<usize>),
    /// Per layer and KV head, slots of one common length.
    PerHead(Vec<Vec<Vec<usize>>>),
}

/// Per-sequence policy state. Hyper-parameters are fixed at construction (see [`PolicySpec`]).
pub trait Policy: Send {
    /// What the coming forward should expose (nothing, by default).
    fn request(&self, _step: &StepInfo) -> ObserveRequest {
        ObserveRequest::default()
    }
    fn attention(&mut self, _view: &AttentionView<'_>) -> Result<()> {
        Ok(())
    }
    fn hidden(&mut self, _hidden: &Tensor) -> Result<()> {
        Ok(())
    }
    /// The head to run over this step's last hidden state instead of [`Policy::hidden`], so that
    /// a batched step runs it once for every row.
    fn row_head(&self) -> Option<Arc<dyn RowHead>> {
        None
    }
    /// The output `[1]` of [`Policy::row_head`] on this sequence's last hidden state.
    fn head_output(&mut self, _out: &Tensor) -> Result<()> {
        Ok(())
    }
    /// After each forward, before any eviction: `fed` were appended to `cache`.
    fn appended(&mut self, _cache: &KvCache, _fed: &[u32], _step: &StepInfo) -> Result<()> {
        Ok(())
    }
    /// Whether to evict after this step: the harness's lazy trigger unless a variant has its own.
    fn should_evict(&self, step: &StepInfo, _cache: &KvCache, budget: &Budget) -> bool {
        step.evicts && step.len_before >= budget.budget
    }
    /// What to keep; `None` keeps everything.
    fn select(&mut self, cache: &KvCache, budget: &Budget) -> Result<Option<Selection>>;
    /// The cache was compacted to `kept` (old slot indices, shared form): realign per-slot state.
    fn compacted(&mut self, _kept: &[usize]) -> Result<()> {
        Ok(())
    }
}

/// A family's hyper-parameters, resolved from its preset: shared by every sequence, they check
/// themselves against a budget and start a policy on one sequence.
pub trait PolicyParams: std::fmt::Debug + Send + Sync {
    /// Per-sequence state for one sample.
    fn instantiate(&self, budget: &Budget, ctx: PolicyContext) -> Result<Box<dyn Policy>>;
    /// Checks beyond [`Budget::validate`], before any model work.
    fn validate(&self, _budget: &Budget) -> Result<()> {
        Ok(())
    }
    /// `false` only for the full cache.
    fn evicts(&self) -> bool {
        true
    }
    /// Never evicts the prompt, so the budget must exceed the prompt length.
    fn protects_prompt(&self) -> bool {
        false
    }
    fn needs_predictor(&self) -> bool {
        false
    }
}

/// What a policy may need from the model, tokenizer and run to start on one sequence.
pub struct PolicyContext {
    pub num_layers: usize,
    pub separator_ids: Vec<u32>,
    pub think_end: Option<u32>,
    pub predictor: Option<Arc<ImportancePredictor>>,
    /// The sample's own stream (for `dynts-random`).
    pub rng: Rng,
}
