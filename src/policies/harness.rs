//! The harness: runs one policy on one sequence as a [`CacheHook`], owning the trigger, the top-k
//! of scored selections, compaction, statistics and the trace (the rules are in the module above).

use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Result};
use candle_core::Tensor;

use super::trace::{TraceEvent, TraceSink};
use super::{scoring, Budget, Policy, Selection, StepInfo};
use crate::cache::observe::{AttentionView, CacheHook, ObserveRequest, Observer, RowHead};
use crate::cache::{KvCache, SlotMap};

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
                        SlotMap::PerHead { positions } => positions.clone(),
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
        self.policy.compacted(&kept)?;
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

    fn row_head(&self, _seq: usize) -> Option<Arc<dyn RowHead>> {
        self.policy.row_head()
    }

    fn head_output(&mut self, _seq: usize, out: &Tensor) -> Result<()> {
        self.policy.head_output(out)
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
