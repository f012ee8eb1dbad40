//! Batched decoding over a slot pool (one attention per layer for every sequence) computes what
//! each sequence computes alone through the per-sequence path: logits within 1e-5 relative and the
//! same greedy tokens over 60 steps, from prompts of 3 to 129 tokens, also after compactions that
//! keep a different subset in each slot (shared and per head). And, bit for bit, a row's numbers do
//! not depend on its neighbours: not on a long one raising the padded length, not on which slot it
//! has, not on what a reused slot held before. The ops a step issues do not grow with the batch, and
//! the fused kernels give the bits of the candle ops they replace.

use crate::common::*;
use kvbench::cache::pool::SlotPool;
use kvbench::cache::KvCache;
use kvbench::model::fused::Kernels;
use kvbench::model::ledger;
use kvbench::model::{Arch, SeqStep, Transformer};

const PROMPTS: [usize; 4] = [3, 17, 64, 129];
const STEPS: usize = 60;

/// What to do to a sequence's cache after a decode step.
#[derive(Clone)]
enum Compact {
    Shared(Vec<usize>),
    PerHead(Vec<Vec<Vec<usize>>>),
}

/// Per sequence: (after which decode step, what to keep).
type Plan = Vec<Vec<(usize, Compact)>>;

fn argmax(xs: &[f32]) -> u32 {
    xs.iter().enumerate().fold(0, |best, (i, &x)| if x > xs[best] { i } else { best }) as u32
}

/// A deterministic subset of `0..len` of exactly `n` slots.
fn subset(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut s = seed;
    for i in (1..len).rev() {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        order.swap(i, (s >> 33) as usize % (i + 1));
    }
    let mut keep = order[..n].to_vec();
    keep.sort_unstable();
    keep
}

fn compact(cache: &mut KvCache, c: &Compact) {
    match c {
        Compact::Shared(keep) => cache.keep(keep).unwrap(),
        Compact::PerHead(sets) => cache.keep_per_head(sets).unwrap(),
    }
}

/// Logits of every decode step and the greedy tokens, per sequence.
type Decoded = Vec<(Vec<Vec<f32>>, Vec<u32>)>;

/// Each prompt decoded greedily for `steps`, in `caches` (prefilled one by one, then decoded
/// together in one forward per step), compacted as `plan` says.
fn decode(model: &Transformer, mut caches: Vec<KvCache>, prompts: &[Vec<u32>], steps: usize, plan: &Plan) -> Decoded {
    let mut out: Decoded = Vec::new();
    for (cache, p) in caches.iter_mut().zip(prompts) {
        let logits = model.forward(&mut [SeqStep { cache, tokens: p, positions: None, visible: None }], None).unwrap();
        let row: Vec<f32> = logits.squeeze(0).unwrap().to_vec1().unwrap();
        out.push((Vec::new(), vec![argmax(&row)]));
    }
    for step in 0..steps {
        let fed: Vec<[u32; 1]> = out.iter().map(|(_, t)| [*t.last().unwrap()]).collect();
        let mut seqs: Vec<SeqStep> = caches
            .iter_mut()
            .zip(&fed)
            .map(|(cache, f)| SeqStep { cache, tokens: f, positions: None, visible: None })
            .collect();
        let logits: Vec<Vec<f32>> = model.forward(&mut seqs, None).unwrap().to_vec2().unwrap();
        for (i, row) in logits.into_iter().enumerate() {
            out[i].1.push(argmax(&row));
            out[i].0.push(row);
            for (_, c) in plan[i].iter().filter(|(at, _)| *at == step) {
                compact(&mut caches[i], c);
            }
        }
    }
    out
}

/// Each prompt alone, in a cache of its own (the per-sequence path: the oracle).
fn alone(model: &Transformer, prompts: &[Vec<u32>], steps: usize, plan: &Plan) -> Decoded {
    prompts
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            let cache = model.new_cache(p.len() + steps + 1).unwrap();
            decode(model, vec![cache], std::slice::from_ref(p), steps, &vec![plan[i].clone()])
        })
        .collect()
}

fn pooled(model: &Transformer, pool: &SlotPool, prompts: &[Vec<u32>], steps: usize, plan: &Plan) -> Decoded {
    let caches = prompts.iter().map(|_| pool.checkout().unwrap().expect("a free slot")).collect();
    decode(model, caches, prompts, steps, plan)
}

fn assert_close(got: &Decoded, want: &Decoded, what: &str) {
    for (i, ((gl, gt), (wl, wt))) in got.iter().zip(want).enumerate() {
        assert_eq!(gt, wt, "{what}: sequence {i}'s greedy tokens differ");
        for (s, (g, w)) in gl.iter().zip(wl).enumerate() {
            let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
            let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1e-5 * scale, "{what}: sequence {i} step {s}: logits differ by {diff:e} (scale {scale})");
        }
    }
}

/// How many logits of sequence 0 differ in any bit.
fn bits_differ(a: &Decoded, b: &Decoded) -> usize {
    a[0].0.iter().flatten().zip(b[0].0.iter().flatten()).filter(|(x, y)| x.to_bits() != y.to_bits()).count()
}

fn prompts(vocab: usize) -> Vec<Vec<u32>> {
    PROMPTS.iter().enumerate().map(|(i, &n)| tokens(n, vocab, 40 + i as u64)).collect()
}

/// Mid-run compactions with a different kept subset per sequence: shared sets at step 20 and per
/// head at step 35 (sequences 1 and 3), shared again at 50.
fn compactions(model: &Transformer, prompts: &[Vec<u32>]) -> Plan {
    let cfg = model.config();
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let len20 = p.len() + 21;
            let kept20 = len20 * 2 / 3;
            let mut plan = vec![(20, Compact::Shared(subset(len20, kept20, i as u64)))];
            let len35 = kept20 + 15;
            if i % 2 == 1 {
                let sets = (0..cfg.num_layers)
                    .map(|l| {
                        (0..cfg.num_kv_heads).map(|h| subset(len35, len35 - 5, (i * 100 + l * 10 + h) as u64)).collect()
                    })
                    .collect();
                plan.push((35, Compact::PerHead(sets)));
            }
            let len50 = if i % 2 == 1 { len35 - 5 + 15 } else { len35 + 15 };
            plan.push((50, Compact::Shared(subset(len50, len50 / 2, 7 + i as u64))));
            plan
        })
        .collect()
}

#[test]
fn batched_decode_equals_each_sequence_alone() {
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3] {
        let cfg = small_config(arch);
        let model = build(&cfg, &random_weights(&cfg, 11));
        let prompts = prompts(cfg.vocab_size);
        for (what, plan) in [("no eviction", vec![Vec::new(); 4]), ("compacted", compactions(&model, &prompts))] {
            let want = alone(&model, &prompts, STEPS, &plan);
            let pool = model.new_pool(5, 129 + STEPS + 1).unwrap();
            let got = pooled(&model, &pool, &prompts, STEPS, &plan);
            assert_close(&got, &want, &format!("{arch:?}, {what}"));
        }
    }
}

#[test]
fn batched_decode_of_the_test_model_equals_each_sequence_alone() {
    let Some(path) = test_model() else { return };
    let lm = kvbench::model::load(&kvbench::model::ModelSource::Gguf { path }, &Default::default()).unwrap();
    let prompts = prompts(lm.model.config().vocab_size);
    let plan = compactions(&lm.model, &prompts);
    let want = alone(&lm.model, &prompts, STEPS, &plan);
    let pool = lm.model.new_pool(4, 129 + STEPS + 1).unwrap();
    assert_close(&pooled(&lm.model, &pool, &prompts, STEPS, &plan), &want, "SmolLM2");
}

/// A row's logits, bit for bit, whatever its neighbours: alone in the pool; next to a long
/// sequence that pads every row to 200+ entries; in the last slot instead of the first; in a slot
/// that a longer sequence used before.
#[test]
fn a_row_does_not_depend_on_its_neighbours() {
    let cfg = small_config(Arch::Qwen2);
    let model = build(&cfg, &random_weights(&cfg, 5));
    let short = vec![tokens(9, cfg.vocab_size, 1)];
    let long = tokens(200, cfg.vocab_size, 2);
    let none: Plan = vec![Vec::new(); 3];
    let fresh = || model.new_pool(3, 200 + STEPS + 1).unwrap();

    let pool = fresh();
    let reference = pooled(&model, &pool, &short, STEPS, &none);
    assert_close(&reference, &alone(&model, &short, STEPS, &none), "short alone");

    let pool = fresh();
    let with_long = pooled(&model, &pool, &[short[0].clone(), long.clone()], STEPS, &none);
    assert_eq!(bits_differ(&with_long, &reference), 0, "a long neighbour changed the row");

    let pool = fresh();
    let (_a, _b) = (pool.checkout().unwrap().unwrap(), pool.checkout().unwrap().unwrap());
    let last_slot = pooled(&model, &pool, &short, STEPS, &none);
    assert_eq!(bits_differ(&last_slot, &reference), 0, "the slot index changed the row");

    let pool = fresh();
    drop(pooled(&model, &pool, &[long.clone(), long], STEPS, &none));
    assert_eq!(pool.occupied(), 0, "finished caches free their slots");
    let reused = pooled(&model, &pool, &short, STEPS, &none);
    assert_eq!(bits_differ(&reused, &reference), 0, "a reused slot changed the row");
}

/// A slot cannot grow: outrunning its capacity is an error naming the pool, not a reallocation.
#[test]
fn a_slot_refuses_to_outgrow_its_capacity() {
    let cfg = small_config(Arch::Llama);
    let model = build(&cfg, &random_weights(&cfg, 3));
    let pool = model.new_pool(2, 8).unwrap();
    let mut cache = pool.checkout().unwrap().unwrap();
    let p = tokens(9, cfg.vocab_size, 4);
    let err = model.forward(&mut [SeqStep { cache: &mut cache, tokens: &p, positions: None, visible: None }], None);
    let msg = format!("{:#}", err.unwrap_err());
    assert!(msg.contains("pool slot") && msg.contains("holds 8"), "{msg}");
}

/// The kernels of one step of a Qwen2 model (q/k/v biases) from the slot pool, by name: before
/// the layers, per layer, after them; with candle's ops and with the fused kernels.
const REFERENCE_STEP: [&str; 3] = [
    "arange lt where embedding rms_norm",
    "matmul bias copy copy copy rope rope scatter scatter scores add softmax mix matmul add rms_norm \
     matmul silu mul matmul add rms_norm",
    "matmul select",
];
const FUSED_STEP: [&str; 3] = [
    "cat embedding rms_norm",
    "matmul qkv_rope scatter scatter scores masked_softmax mix matmul add_rms_norm matmul silu_mul matmul \
     add_rms_norm",
    "matmul select",
];

fn step_names([head, layer, tail]: [&'static str; 3], layers: usize) -> Vec<&'static str> {
    let mut names: Vec<&str> = head.split_whitespace().collect();
    (0..layers).for_each(|_| names.extend(layer.split_whitespace()));
    names.extend(tail.split_whitespace());
    names
}

/// The ops of one decode step, by the model's ledger: exactly the kernels listed above, as many at
/// 32 sequences as at one, and the same kernels on the same shapes from one step to the next within
/// a length bucket (what graph capture needs). The per-sequence path issues ~10 more per layer and
/// sequence.
#[test]
fn ops_per_step_do_not_grow_with_the_batch() {
    let cfg = small_config(Arch::Qwen2);
    let mut model = build(&cfg, &random_weights(&cfg, 9));
    let step_ops = |model: &Transformer, batch: usize, pooled: bool| {
        let mut caches: Vec<KvCache> = if pooled {
            let pool = model.new_pool(batch, 64).unwrap();
            (0..batch).map(|_| pool.checkout().unwrap().unwrap()).collect()
        } else {
            (0..batch).map(|_| model.new_cache(64).unwrap()).collect()
        };
        for (i, c) in caches.iter_mut().enumerate() {
            let p = tokens(5 + i % 7, cfg.vocab_size, i as u64);
            model.forward(&mut [SeqStep { cache: c, tokens: &p, positions: None, visible: None }], None).unwrap();
        }
        let mut logs = Vec::new();
        for step in 0..3u32 {
            let fed: Vec<[u32; 1]> = (0..batch).map(|i| [(i as u32 + step) % 50]).collect();
            let mut seqs: Vec<SeqStep> = caches
                .iter_mut()
                .zip(&fed)
                .map(|(cache, f)| SeqStep { cache, tokens: f, positions: None, visible: None })
                .collect();
            logs.push(ledger::record(|| model.forward(&mut seqs, None).unwrap()).1);
        }
        logs
    };
    let layers = cfg.num_layers;
    let fused = step_names(FUSED_STEP, layers);
    for (kernels, names) in [(Kernels::Fused, fused), (Kernels::Reference, step_names(REFERENCE_STEP, layers))] {
        model.set_kernels(kernels);
        let one = step_ops(&model, 1, true);
        let many = step_ops(&model, 32, true);
        for (b, ops) in [(1, &one[0]), (32, &many[0])] {
            assert_eq!(ops.iter().map(|o| o.name).collect::<Vec<_>>(), names, "{kernels:?} at B={b}");
        }
        // Lengths 6..=14 plus 3 steps stay within one 32-entry bucket.
        assert_eq!(many[0], many[1], "{kernels:?}: ops or shapes changed between steps");
        assert_eq!(many[1], many[2], "{kernels:?}: ops or shapes changed between steps");
        let per_sequence = step_ops(&model, 32, false);
        assert!(per_sequence[0].len() > many[0].len() + 5 * 32 * layers, "{}", per_sequence[0].len());
    }
}

/// The fused kernels of the batched step give candle's ops' bits on the CPU: every logit of every
/// sequence over 60 steps with compactions, for each architecture and the test model.
#[test]
fn fused_kernels_give_the_reference_bits() {
    let same_bits = |model: &mut Transformer, pool_cap: usize, what: &str| {
        let prompts = prompts(model.config().vocab_size);
        let plan = compactions(model, &prompts);
        assert_eq!(model.kernels(), Kernels::Fused, "the CPU default");
        let fused = pooled(model, &model.new_pool(4, pool_cap).unwrap(), &prompts, STEPS, &plan);
        model.set_kernels(Kernels::Reference);
        let reference = pooled(model, &model.new_pool(4, pool_cap).unwrap(), &prompts, STEPS, &plan);
        for (i, ((fl, ft), (rl, rt))) in fused.iter().zip(&reference).enumerate() {
            assert_eq!(ft, rt, "{what}: sequence {i}'s greedy tokens differ");
            let differ = fl.iter().flatten().zip(rl.iter().flatten()).filter(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(differ.count(), 0, "{what}: sequence {i}'s logits differ in bits");
        }
    };
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Qwen3] {
        let cfg = small_config(arch);
        same_bits(&mut build(&cfg, &random_weights(&cfg, 13)), 129 + STEPS + 1, &format!("{arch:?}"));
    }
    let Some(path) = test_model() else { return };
    let mut lm = kvbench::model::load(&kvbench::model::ModelSource::Gguf { path }, &Default::default()).unwrap();
    same_bits(&mut lm.model, 129 + STEPS + 1, "SmolLM2");
}
