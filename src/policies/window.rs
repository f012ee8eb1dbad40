//! `window` — local window only (DynTS repo `inference/window.py`, `sink_type="none"`).
//!
//! At the harness trigger (B) keep only the last `kept_window` tokens; the prompt is dropped at
//! the first eviction, there are no sinks. Not a sliding window: the cache refills to B between
//! evictions. The figure sets `kept_window` to the other methods' post-eviction size
//! (W + ⌊r·(B+1−W)⌋), so memory matches; that is the default here (`kept_window = 0` means it).

use anyhow::{ensure, Result};

use super::{Budget, Policy, PolicyContext, PolicyParams, Selection};
use crate::cache::KvCache;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WindowParams {
    /// Tokens kept at an eviction; 0 = the harness's post-eviction size W + ⌊r·(B+1−W)⌋.
    pub kept_window: usize,
}

impl WindowParams {
    pub fn kept(&self, budget: &Budget) -> usize {
        if self.kept_window == 0 {
            budget.post_eviction_len()
        } else {
            self.kept_window
        }
    }
}

impl PolicyParams for WindowParams {
    fn instantiate(&self, _: &Budget, _: PolicyContext) -> Result<Box<dyn Policy>> {
        Ok(Box::new(Window { params: self.clone() }))
    }

    fn validate(&self, budget: &Budget) -> Result<()> {
        ensure!(self.kept(budget) <= budget.budget, "kept_window {} exceeds the budget {}", self.kept(budget), budget.budget);
        Ok(())
    }
}

pub struct Window {
    pub params: WindowParams,
}

impl Policy for Window {
    fn select(&mut self, cache: &KvCache, budget: &Budget) -> Result<Option<Selection>> {
        let (len, kept) = (cache.len(), self.params.kept(budget));
        if len <= kept {
            return Ok(None);
        }
        Ok(Some(Selection::Slots((len - kept..len).collect())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_kept_window_slots() {
        let b = Budget { budget: 10, window: 4, ratio: 0.5 };
        assert_eq!(WindowParams::default().kept(&b), 4 + 3); // ⌊0.5 · 7⌋ = 3
        assert_eq!(WindowParams { kept_window: 5 }.kept(&b), 5);
    }
}
