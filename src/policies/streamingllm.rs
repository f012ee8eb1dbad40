//! `streamingllm` — attention sinks plus a recent window, as the DynTS harness runs it
//! (DynTS repo `inference/window.py`, `sink_type="native"`). Original: Xiao et al.,
//! "Efficient Streaming Language Models with Attention Sinks", <https://arxiv.org/abs/2309.17453>.
//!
//! At the harness trigger keep the first `sink_size` (10) cached tokens and the last
//! `kept_window`; the first eviction cuts the prompt to its first 10 tokens. No RoPE re-rotation:
//! keys keep their absolute positions (the original re-rotates within the cache and uses 4 sinks).
//! At batch 1 the reference's first-eviction special case (first 10 *non-pad* prompt tokens) is
//! the general rule, since kvbench never pads.

use anyhow::{ensure, Result};

use super::window::WindowParams;
use super::{Budget, Policy, PolicyContext, PolicyParams, Selection};
use crate::cache::KvCache;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingLlmParams {
    /// Initial tokens always kept (attention sinks).
    pub sink_size: usize,
    /// Recent tokens kept; 0 = the harness's post-eviction size W + ⌊r·(B+1−W)⌋.
    pub kept_window: usize,
}

impl Default for StreamingLlmParams {
    fn default() -> Self {
        Self { sink_size: 10, kept_window: 0 }
    }
}

impl PolicyParams for StreamingLlmParams {
    fn instantiate(&self, _: &Budget, _: PolicyContext) -> Result<Box<dyn Policy>> {
        Ok(Box::new(StreamingLlm { params: self.clone() }))
    }

    fn validate(&self, budget: &Budget) -> Result<()> {
        let kept = WindowParams { kept_window: self.kept_window }.kept(budget);
        ensure!(
            self.sink_size + kept <= budget.budget,
            "sink_size {} + kept window {kept} exceeds the budget {}",
            self.sink_size,
            budget.budget
        );
        Ok(())
    }
}

pub struct StreamingLlm {
    pub params: StreamingLlmParams,
}

impl Policy for StreamingLlm {
    fn select(&mut self, cache: &KvCache, budget: &Budget) -> Result<Option<Selection>> {
        let len = cache.len();
        let kept = WindowParams { kept_window: self.params.kept_window }.kept(budget);
        let sinks = self.params.sink_size;
        if len <= kept + sinks {
            return Ok(None);
        }
        Ok(Some(Selection::Slots((0..sinks).chain(len - kept..len).collect())))
    }
}
