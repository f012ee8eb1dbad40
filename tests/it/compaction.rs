//! The property every policy relies on: compacting the cache to a subset of slots and continuing
//! computes exactly what the full model computes with the evicted slots hidden.
//! - One layer: a fresh forward over only the kept tokens at their original positions (their K/V
//!   depend on nothing else) gives the same logits.
//! - Any depth: the full cache with the evicted slots masked out gives the same logits (deeper
//!   layers' K/V depend on the context they were computed in, which compaction keeps).

use crate::common::*;
use kvbench::model::{Arch, ModelConfig, SeqStep, Transformer};

/// A deterministic pseudo-random subset of `0..len` (never empty).
fn subset(len: usize, seed: u64) -> Vec<usize> {
    let mut s = seed;
    let mut keep: Vec<usize> = (0..len)
        .filter(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            !(s >> 40).is_multiple_of(3)
        })
        .collect();
    if keep.is_empty() {
        keep.push(len - 1);
    }
    keep
}

fn step(
    model: &Transformer,
    cache: &mut kvbench::cache::KvCache,
    tokens: &[u32],
    positions: Option<&[u32]>,
    visible: Option<&[bool]>,
) -> candle_core::Tensor {
    model.forward(&mut [SeqStep { cache, tokens, positions, visible }], None).unwrap()
}

/// Prefill 20 tokens, decode 6, compact to a random subset; returns (model, compacted cache, kept).
fn compacted(
    cfg: &ModelConfig,
    seed: u64,
    round: u64,
) -> (Transformer, kvbench::cache::KvCache, kvbench::cache::KvCache, Vec<usize>) {
    let model = build(cfg, &random_weights(cfg, seed));
    let prompt = tokens(20, cfg.vocab_size, seed + 1);
    let more = tokens(6, cfg.vocab_size, seed + 2);
    let mut full = model.new_cache(64).unwrap();
    let mut cache = model.new_cache(64).unwrap();
    for c in [&mut full, &mut cache] {
        step(&model, c, &prompt, None, None);
        for t in &more {
            step(&model, c, &[*t], None, None);
        }
    }
    let keep = subset(cache.len(), seed * 100 + round);
    cache.keep(&keep).unwrap();
    assert_eq!(cache.positions().unwrap(), keep.iter().map(|&i| i as u32).collect::<Vec<_>>());
    (model, full, cache, keep)
}

fn check_against_mask(arch: Arch, seed: u64) {
    let cfg = small_config(arch);
    for round in 0..4 {
        let (model, mut full, mut cache, keep) = compacted(&cfg, seed, round);
        let next = tokens(4, cfg.vocab_size, seed + 3);
        let mut visible = vec![false; full.len()];
        keep.iter().for_each(|&i| visible[i] = true);
        for (i, t) in next.iter().enumerate() {
            let a = step(&model, &mut cache, &[*t], None, None);
            let b = step(&model, &mut full, &[*t], None, Some(&visible));
            visible.push(true);
            let d = max_abs_diff(&a, &b);
            assert!(d <= 1e-4, "{arch:?} round {round} step {i}: {d}");
        }
        assert_eq!(cache.next_position(), 30, "RoPE counter must not follow the cache length");
    }
}

fn check_against_fresh_forward(arch: Arch, seed: u64) {
    let mut cfg = small_config(arch);
    cfg.num_layers = 1;
    for round in 0..4 {
        let (model, _, mut cache, _) = compacted(&cfg, seed, round);
        let kept_pos = cache.positions().unwrap().to_vec();
        let kept_tok = cache.token_ids().unwrap().to_vec();
        let mut fresh = model.new_cache(8).unwrap();
        step(&model, &mut fresh, &kept_tok, Some(&kept_pos), None);
        for (i, t) in tokens(4, cfg.vocab_size, seed + 3).iter().enumerate() {
            let pos = [26 + i as u32];
            let a = step(&model, &mut cache, &[*t], None, None);
            let b = step(&model, &mut fresh, &[*t], Some(&pos), None);
            let d = max_abs_diff(&a, &b);
            assert!(d <= 1e-4, "{arch:?} round {round} step {i}: {d}");
        }
    }
}

#[test]
fn compaction_equals_masking_llama() {
    check_against_mask(Arch::Llama, 3);
}

#[test]
fn compaction_equals_masking_qwen2() {
    check_against_mask(Arch::Qwen2, 5);
}

#[test]
fn compaction_equals_masking_qwen3() {
    check_against_mask(Arch::Qwen3, 7);
}

#[test]
fn compaction_equals_fresh_forward_one_layer() {
    check_against_fresh_forward(Arch::Llama, 13);
    check_against_fresh_forward(Arch::Qwen2, 15);
    check_against_fresh_forward(Arch::Qwen3, 17);
}

/// Per-head compaction with the same set in every head is the shared compaction.
#[test]
fn per_head_keep_with_equal_sets_equals_shared_keep() {
    let cfg = small_config(Arch::Llama);
    let model = build(&cfg, &random_weights(&cfg, 9));
    let prompt = tokens(16, cfg.vocab_size, 10);
    let keep = subset(16, 11);
    let mut a = model.new_cache(32).unwrap();
    let mut b = model.new_cache(32).unwrap();
    for c in [&mut a, &mut b] {
        step(&model, c, &prompt, None, None);
    }
    a.keep(&keep).unwrap();
    b.keep_per_head(&vec![vec![keep.clone(); cfg.num_kv_heads]; cfg.num_layers]).unwrap();
    let la = step(&model, &mut a, &[5], None, None);
    let lb = step(&model, &mut b, &[5], None, None);
    assert_eq!(max_abs_diff(&la, &lb), 0.0);
}
