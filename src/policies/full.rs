//! `full` — Transformers, the full cache: nothing is ever evicted (spec §4.1). The baseline bar.

use anyhow::Result;

use super::{Budget, Policy, Selection};
use crate::cache::KvCache;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullParams {}

pub struct Full;

impl Policy for Full {
    fn should_evict(&self, _: &super::StepInfo, _: &KvCache, _: &Budget) -> bool {
        false
    }

    fn select(&mut self, _: &KvCache, _: &Budget) -> Result<Option<Selection>> {
        Ok(None)
    }
}
