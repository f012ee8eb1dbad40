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
//! A policy is a small scorer ([`Policy`]) with per-sequence state; the harness ([`Evictor`]) owns
//! the trigger, top-k, compaction, statistics and the trace. Policies that keep positional sets
//! (window, StreamingLLM, SepLLM) or per-head sets (the papers' variants) return them directly.

pub mod budget;
pub mod dynts;
pub mod full;
pub mod h2o;
pub mod registry;
pub mod rkv;
pub mod scoring;
pub mod sepllm;
pub mod snapkv;
pub mod streamingllm;
pub mod trace;
pub mod window;

use std::time::Instant;

use anyhow::{ensure, Result};
use candle_core::Tensor;

pub use budget::{parse_tokens, Budget};
pub use registry::{PolicyContext, PolicySpec};

use crate::cache::KvCache;
use crate::generate::CacheHook;
use crate::observe::{AttentionView, ObserveRequest, Observer};
use trace::{TraceEvent, TraceSink};

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
    fn compacted(&mut self, _kept: &[usize]) {}
}

/// Counters of one sequence's evictions.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct EvictionStats {
    pub evictions: usize,
    /// Seconds spent in the policy: observing, scoring, selecting and compacting.
    pub policy_secs: f64,
}

/// The harness: a [`CacheHook`] that runs one policy on one sequence.
pub struct Evictor {
    policy: Box<dyn Policy>,
    budget: Budget,
    step: StepInfo,
    decode_steps: usize,
    stats: EvictionStats,
    trace: Option<(TraceSink, String)>,
}

impl Evictor {
    pub fn new(policy: Box<dyn Policy>, budget: Budget) -> Self {
        Self {
            policy,
            budget,
            step: StepInfo::default(),
            decode_steps: 0,
            stats: EvictionStats::default(),
            trace: None,
        }
    }

    /// Writes one trace line per eviction, tagged with `sample`.
    pub fn with_trace(mut self, sink: TraceSink, sample: String) -> Self {
        self.trace = Some((sink, sample));
        self
    }

    pub fn stats(&self) -> &EvictionStats {
        &self.stats
    }

    fn apply(&mut self, cache: &mut KvCache, selection: Selection) -> Result<()> {
        let len_before = cache.len();
        let (kept, scores) = match selection {
            Selection::Older(scores) => {
                let older = len_before.saturating_sub(self.budget.window);
                ensure!(scores.len() == older, "policy scored {} older slots, the cache has {older}", scores.len());
                let mut kept = scoring::top_k_sorted(&scores, self.budget.kept_older(len_before));
                kept.extend(older..len_before);
                (kept, Some(scores))
            }
            Selection::Slots(kept) => (kept, None),
            Selection::PerHead(sets) => {
                cache.keep_per_head(&sets)?;
                self.stats.evictions += 1;
                if let Some((sink, sample)) = &self.trace {
                    let positions = match cache.slots() {
                        crate::cache::SlotMap::PerHead { positions } => positions.clone(),
                        _ => unreachable!("keep_per_head leaves per-head slots"),
                    };
                    for (layer, heads) in positions.into_iter().enumerate() {
                        sink.write(&TraceEvent::per_head(
                            sample,
                            layer,
                            self.decode_steps,
                            len_before,
                            cache.len(),
                            heads,
                        ))?;
                    }
                }
                return Ok(());
            }
        };
        let positions_before = cache.positions().map(|p| p.to_vec());
        cache.keep(&kept)?;
        self.policy.compacted(&kept);
        self.stats.evictions += 1;
        if let Some((sink, sample)) = &self.trace {
            let kept_positions = match positions_before {
                Some(p) => kept.iter().map(|&i| p[i]).collect(),
                None => Vec::new(),
            };
            sink.write(&TraceEvent::shared(
                sample,
                self.decode_steps,
                len_before,
                cache.len(),
                kept_positions,
                scores,
            ))?;
        }
        Ok(())
    }
}

impl Observer for Evictor {
    fn request(&self) -> ObserveRequest {
        self.policy.request(&self.step)
    }

    fn attention(&mut self, _seq: usize, view: &AttentionView<'_>) -> Result<()> {
        let t = Instant::now();
        let r = self.policy.attention(view);
        self.stats.policy_secs += t.elapsed().as_secs_f64();
        r
    }

    fn hidden(&mut self, _seq: usize, hidden: &Tensor) -> Result<()> {
        let t = Instant::now();
        let r = self.policy.hidden(hidden);
        self.stats.policy_secs += t.elapsed().as_secs_f64();
        r
    }
}

impl CacheHook for Evictor {
    fn before_forward(&mut self, cache: &KvCache, _fed: &[u32], prefill: bool) -> Result<()> {
        self.step = StepInfo {
            prefill,
            len_before: cache.len(),
            decode_step: self.decode_steps,
            evicts: !prefill && cache.len() >= self.budget.budget,
        };
        Ok(())
    }

    fn after_forward(&mut self, cache: &mut KvCache, fed: &[u32], prefill: bool) -> Result<()> {
        let t = Instant::now();
        let step = self.step;
        self.policy.appended(cache, fed, &step)?;
        if self.policy.should_evict(&step, cache, &self.budget) {
            if let Some(selection) = self.policy.select(cache, &self.budget)? {
                self.apply(cache, selection)?;
            }
        }
        if !prefill {
            self.decode_steps += 1;
        }
        self.stats.policy_secs += t.elapsed().as_secs_f64();
        Ok(())
    }
}
