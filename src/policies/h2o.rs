//! `h2o` and `h2o-cumulative` — heavy hitters by attention. Original: Zhang et al., "H2O:
//! Heavy-Hitter Oracle for Efficient Generative Inference of Large Language Models",
//! <https://arxiv.org/abs/2306.14048> (FMInference/H2O).
//!
//! - `h2o` (default, the figure's): the DynTS harness (`inference/h2o.py` L110–114) computes the
//!   accumulated score and then overwrites it with the current step's attention, so the score at
//!   an eviction is Ā(q_t → j) of the single most recent query, averaged over layers and query
//!   heads (TOVA-like). Only the eviction step's attention is observed.
//! - `h2o-cumulative`: the accumulation the code meant and the paper describes — the score of a
//!   slot is the sum over every query that has seen it (prompt queries included) of Ā; evicted
//!   slots take their scores with them, kept ones keep accumulating. Still one selection shared
//!   by all layers and heads (the paper's is per head).
//!
//! Selection: top ⌊r·(L−W)⌋ of the older part plus the window; the prompt is not protected.

use anyhow::Result;

use super::scoring::{older_part, DeviceScores, StepAttention};
use super::{Budget, Policy, PolicyContext, PolicyParams, Selection, StepInfo};
use crate::cache::KvCache;
use crate::cache::observe::{AttentionView, ObserveRequest};

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct H2oParams {
    /// Accumulate over all queries (the paper) instead of the last query (the figure's harness).
    pub cumulative: bool,
}

impl PolicyParams for H2oParams {
    fn instantiate(&self, _: &Budget, _: PolicyContext) -> Result<Box<dyn Policy>> {
        Ok(Box::new(H2o::new(self.clone())))
    }
}

pub struct H2o {
    pub params: H2oParams,
    step: StepAttention,
    /// Per cached slot: the score the next eviction uses.
    scores: DeviceScores,
}

impl H2o {
    pub fn new(params: H2oParams) -> Self {
        Self { params, step: StepAttention::default(), scores: DeviceScores::default() }
    }
}

impl Policy for H2o {
    fn request(&self, step: &StepInfo) -> ObserveRequest {
        ObserveRequest { attention: self.params.cumulative || step.evicts, hidden: false }
    }

    fn attention(&mut self, view: &AttentionView<'_>) -> Result<()> {
        self.step.add(view)
    }

    fn appended(&mut self, _cache: &KvCache, _fed: &[u32], _step: &StepInfo) -> Result<()> {
        if let Some(current) = self.step.take_mean()? {
            if self.params.cumulative {
                self.scores.add(current)?;
            } else {
                self.scores.set(current);
            }
        }
        Ok(())
    }

    fn select(&mut self, cache: &KvCache, budget: &Budget) -> Result<Option<Selection>> {
        let scores = self.scores.to_vec()?;
        let older = older_part(&scores, cache.len(), budget.window, "h2o")?;
        Ok(older.map(|o| Selection::Older(o.to_vec())))
    }

    fn compacted(&mut self, kept: &[usize]) -> Result<()> {
        self.scores.keep(kept)
    }
}
