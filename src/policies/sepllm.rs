//! `sepllm` — separator tokens plus a recent window, as the DynTS harness runs it (DynTS repo
//! `inference/sep.py`, separators from `utils/utils.py`). Original: Chen et al.,
//! "SepLLM: Accelerate Large Language Models by Compressing One Segment into One Separator",
//! <https://arxiv.org/abs/2412.12094>.
//!
//! At the harness trigger, in the older part `[0, L−W)` of length L_o: keep the most recent
//! separator tokens, at most ⌊r·L_o⌋ of them, plus the local W. Separators are the vocabulary
//! tokens `.` `,` `?` `!` `;` `:`, a lone newline (`Ċ`), a lone space (`Ġ`), and BOS — exact
//! token strings, so `ĊĊ` and space-prefixed punctuation are not separators. No dedicated initial
//! tokens, no question protection; it may keep fewer tokens than the other policies.
//!
//! The reference pads a batch to its largest separator count (capped) with each sequence's
//! rightmost non-separators; kvbench decodes each sequence on its own cache, so the "batch" is one
//! sequence and no padding occurs. [`separator_slots`] implements the padded rule in full.

use anyhow::Result;

use super::{Budget, Policy, PolicyContext, PolicyParams, Selection};
use crate::cache::KvCache;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SepLlmParams {}

impl PolicyParams for SepLlmParams {
    fn instantiate(&self, _: &Budget, ctx: PolicyContext) -> Result<Box<dyn Policy>> {
        Ok(Box::new(SepLlm { separator_ids: ctx.separator_ids }))
    }
}

/// The separator strings of the DynTS list (byte-level BPE spellings).
pub const SEPARATORS: [&str; 8] = [".", ",", "?", "!", ";", ":", "Ċ", "Ġ"];

/// The separator ids of a tokenizer: the [`SEPARATORS`] strings it has as tokens, plus BOS.
pub fn separator_ids(tokenizer: &tokenizers::Tokenizer, bos: Option<u32>) -> Vec<u32> {
    let mut ids: Vec<u32> = SEPARATORS.iter().filter_map(|s| tokenizer.token_to_id(s)).chain(bos).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

pub struct SepLlm {
    /// Token ids counted as separators (the list above, found in the vocabulary, plus BOS).
    pub separator_ids: Vec<u32>,
}

/// Slots kept from the older part: the last `target` separators; when a sequence has fewer than
/// `target` (only in a padded batch), its rightmost non-separators fill the gap. Increasing order.
pub fn separator_slots(is_separator: &[bool], target: usize) -> Vec<usize> {
    let seps: Vec<usize> = (0..is_separator.len()).filter(|&i| is_separator[i]).collect();
    let mut keep: Vec<usize> = if seps.len() >= target {
        seps[seps.len() - target..].to_vec()
    } else {
        let others: Vec<usize> = (0..is_separator.len()).filter(|&i| !is_separator[i]).collect();
        let need = (target - seps.len()).min(others.len());
        seps.into_iter().chain(others[others.len() - need..].iter().copied()).collect()
    };
    keep.sort_unstable();
    keep
}

impl Policy for SepLlm {
    fn select(&mut self, cache: &KvCache, budget: &Budget) -> Result<Option<Selection>> {
        let len = cache.len();
        if len <= budget.window {
            return Ok(None);
        }
        let older = len - budget.window;
        let tokens = cache.token_ids().ok_or_else(|| anyhow::anyhow!("sepllm needs a shared cache layout"))?;
        let is_sep: Vec<bool> = tokens[..older].iter().map(|t| self.separator_ids.contains(t)).collect();
        let threshold = budget.kept_older(len);
        // A batch of one: the target is the sequence's own count, capped.
        let target = is_sep.iter().filter(|&&s| s).count().min(threshold);
        let mut keep = separator_slots(&is_sep, target);
        keep.extend(older..len);
        Ok(Some(Selection::Slots(keep)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_most_recent_separators_capped() {
        let s = [true, false, true, true, false, true];
        assert_eq!(separator_slots(&s, 2), vec![3, 5]);
        assert_eq!(separator_slots(&s, 4), vec![0, 2, 3, 5]);
        assert_eq!(separator_slots(&s, 0), Vec::<usize>::new());
    }

    #[test]
    fn pads_with_rightmost_non_separators_when_scarce() {
        let s = [false, true, false, false, false];
        assert_eq!(separator_slots(&s, 3), vec![1, 3, 4]);
        assert_eq!(separator_slots(&[false, false], 5), vec![0, 1]);
    }
}
