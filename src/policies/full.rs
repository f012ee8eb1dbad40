//! `full` — Transformers, the full cache: nothing is ever evicted. The baseline bar.

use anyhow::Result;

use super::{Budget, Policy, PolicyContext, PolicyParams, Selection};
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

impl PolicyParams for FullParams {
    fn instantiate(&self, _: &Budget, _: PolicyContext) -> Result<Box<dyn Policy>> {
        Ok(Box::new(Full))
    }

    fn evicts(&self) -> bool {
        false
    }
}
