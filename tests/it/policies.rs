//! Every policy on handcrafted caches: the exact kept positions (ties, the window boundary, prompt
//! and `</think>` protection, SepLLM's cap, R-KV's near-duplicate rule), and invariants over
//! hundreds of random inputs. A small driver stands in for the decoder: it appends tokens with
//! chosen keys and reports chosen attention and hidden states through the policy's hook, exactly
//! in the order `generate` does.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::Linear;
use kvbench::cache::observe::CacheHook;
use kvbench::cache::observe::{AttentionView, Observer};
use kvbench::cache::KvCache;
use kvbench::policies::dynts::ImportancePredictor;
use kvbench::policies::{Budget, Evictor, PolicyContext, PolicySpec};
use kvbench::rng::Rng;

const LAYERS: usize = 2;
const DIM: usize = 8;
const THINK_END: u32 = 50;
const SEP: u32 = 99;

struct Sim {
    cache: KvCache,
    evictor: Evictor,
    attention_calls: usize,
    hidden_calls: usize,
}

/// The predictor `softplus∘softplus∘softplus`: monotonic in a one-dimensional hidden state.
fn identity_predictor() -> Arc<ImportancePredictor> {
    let one = |bias: bool| {
        Linear::new(
            Tensor::ones((1, 1), DType::F32, &Device::Cpu).unwrap(),
            bias.then(|| Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap()),
        )
    };
    Arc::new(ImportancePredictor::new(one(false), one(true), one(true)))
}

impl Sim {
    fn new(policy: &str, overrides: &str, budget: Budget) -> Self {
        let o: toml::Table = toml::from_str(overrides).unwrap();
        let spec = PolicySpec::resolve(policy, Some(&o)).unwrap();
        let ctx = PolicyContext {
            num_layers: LAYERS,
            separator_ids: vec![SEP],
            think_end: Some(THINK_END),
            predictor: Some(identity_predictor()),
            rng: Rng::new(7),
        };
        let policy = spec.instantiate(&budget, ctx).unwrap();
        Self {
            cache: KvCache::new(LAYERS, 1, DIM, 4, DType::F32, &Device::Cpu).unwrap(),
            evictor: Evictor::new(policy, budget),
            attention_calls: 0,
            hidden_calls: 0,
        }
    }

    /// One step: `keys` one row per fed token; `attn` the last query's probabilities over the
    /// cache after appending (shorter vectors are zero-padded); `hidden` the fed token's state.
    fn feed(&mut self, tokens: &[u32], keys: &[[f32; DIM]], prefill: bool, attn: &[f32], hidden: f32) {
        self.evictor.before_forward(&self.cache, tokens, prefill).unwrap();
        let request = self.evictor.request();
        let t = tokens.len();
        let k =
            Tensor::from_vec(keys.iter().flatten().copied().collect::<Vec<f32>>(), (1, t, DIM), &Device::Cpu).unwrap();
        let ks = vec![k.clone(); LAYERS];
        self.cache.append(tokens, &ks, &ks).unwrap();
        let len = self.cache.len();
        if request.attention {
            let mut a = attn.to_vec();
            a.resize(len, 0.0);
            let mut rows = vec![0f32; (t - 1) * len];
            rows.extend(a);
            let probs = Tensor::from_vec(rows, (1, 1, t, len), &Device::Cpu).unwrap();
            let queries = Tensor::zeros((1, 1, t, DIM), DType::F32, &Device::Cpu).unwrap();
            for layer in 0..LAYERS {
                let keys = self.cache.keys(layer).unwrap();
                self.evictor
                    .attention(
                        0,
                        &AttentionView { layer, probs: &probs, keys: &keys, queries: &queries, head_sum: None },
                    )
                    .unwrap();
            }
            self.attention_calls += 1;
        }
        if request.hidden {
            let h = Tensor::from_vec(vec![hidden; t], (t, 1), &Device::Cpu).unwrap();
            self.evictor.hidden(0, &h).unwrap();
            self.hidden_calls += 1;
        }
        self.evictor.after_forward(&mut self.cache, tokens, prefill).unwrap();
    }

    fn decode(&mut self, token: u32) {
        self.feed(&[token], &[key(token as usize % DIM)], false, &[], 0.0)
    }

    fn positions(&self) -> Vec<u32> {
        self.cache.positions().unwrap().to_vec()
    }
}

fn key(axis: usize) -> [f32; DIM] {
    let mut k = [0f32; DIM];
    k[axis % DIM] = 1.0;
    k
}

fn keys_for(tokens: &[u32]) -> Vec<[f32; DIM]> {
    tokens.iter().map(|&t| key(t as usize)).collect()
}

const B10: Budget = Budget { budget: 10, window: 4, ratio: 0.5 };

/// Prefill 5, then decode until the first eviction (after the step that brings the cache to 11).
fn until_first_eviction(sim: &mut Sim, decoded: &[u32]) {
    sim.feed(&[1, 2, 3, 4, 5], &keys_for(&[1, 2, 3, 4, 5]), true, &[], 0.0);
    for &t in decoded {
        sim.decode(t);
    }
}

fn range(a: u32, b: u32) -> Vec<u32> {
    (a..=b).collect()
}

#[test]
fn full_never_evicts() {
    let mut sim = Sim::new("full", "", B10);
    until_first_eviction(&mut sim, &[6; 20]);
    assert_eq!(sim.cache.len(), 25);
    assert_eq!(sim.evictor.stats().evictions, 0);
}

#[test]
fn window_keeps_the_post_eviction_size_of_recent_tokens() {
    let mut sim = Sim::new("window", "", B10);
    until_first_eviction(&mut sim, &[6, 7, 8, 9, 10]);
    assert_eq!(sim.positions(), range(0, 9), "no eviction while the cache held < B before the step");
    sim.decode(11);
    // 11 cached → keep W + ⌊0.5·(11−4)⌋ = 7 most recent: the prompt is gone.
    assert_eq!(sim.positions(), range(4, 10));
    assert_eq!(sim.evictor.stats().evictions, 1);
}

#[test]
fn streamingllm_keeps_sinks_and_recent() {
    let mut sim = Sim::new("streamingllm", "sink_size = 2", B10);
    until_first_eviction(&mut sim, &[6, 7, 8, 9, 10, 11]);
    let mut expect = vec![0, 1];
    expect.extend(range(4, 10));
    assert_eq!(sim.positions(), expect);
    sim.decode(12);
    sim.decode(13);
    assert_eq!(sim.positions(), [vec![0, 1], range(6, 12)].concat());
}

#[test]
fn sepllm_keeps_most_recent_separators_capped_then_window() {
    // Positions 0..10 hold: 99 99 2 99 4 | 99 6 99 8 9 10 (prefill | decode).
    let mut sim = Sim::new("sepllm", "", B10);
    sim.feed(&[SEP, SEP, 2, SEP, 4], &keys_for(&[1, 1, 2, 1, 4]), true, &[], 0.0);
    for t in [SEP, 6, SEP, 8, 9, 10] {
        sim.decode(t);
    }
    // Older = positions 0..6 (7 slots), separators at 0, 1, 3, 5; cap ⌊0.5·7⌋ = 3 → 1, 3, 5.
    assert_eq!(sim.positions(), vec![1, 3, 5, 7, 8, 9, 10]);
}

#[test]
fn sepllm_keeps_fewer_tokens_when_separators_are_scarce() {
    let mut sim = Sim::new("sepllm", "", B10);
    sim.feed(&[1, 2, 3, SEP, 4], &keys_for(&[1, 2, 3, 1, 4]), true, &[], 0.0);
    for t in [5, 6, 7, 8, 9, 10] {
        sim.decode(t);
    }
    assert_eq!(sim.positions(), vec![3, 7, 8, 9, 10], "one separator + the window, no padding at batch 1");
}

#[test]
fn h2o_uses_the_last_query_only_and_breaks_ties_toward_earlier_slots() {
    let mut sim = Sim::new("h2o", "", B10);
    until_first_eviction(&mut sim, &[6, 7, 8, 9, 10]);
    assert_eq!(sim.attention_calls, 0, "h2o observes only the eviction step");
    // Older slots 0..6: four tie at 0.3 for k = 3 → the three earliest win.
    let attn = [0.1, 0.3, 0.2, 0.3, 0.05, 0.3, 0.3, 0.9, 0.9, 0.9, 0.9];
    sim.feed(&[11], &[key(3)], false, &attn, 0.0);
    assert_eq!(sim.attention_calls, 1);
    assert_eq!(sim.positions(), vec![1, 3, 5, 7, 8, 9, 10]);
}

#[test]
fn h2o_cumulative_sums_every_query() {
    let mut sim = Sim::new("h2o-cumulative", "", B10);
    // Prefill attention (one query row: the last prompt token's) favours slot 0.
    sim.feed(&[1, 2, 3, 4, 5], &keys_for(&[1, 2, 3, 4, 5]), true, &[0.9, 0.0, 0.0, 0.0, 0.1], 0.0);
    for t in [6, 7, 8, 9, 10] {
        sim.feed(&[t], &[key(t as usize)], false, &[0.0, 0.1, 0.1, 0.0, 0.0, 0.0, 0.2], 0.0);
    }
    // The last query alone would favour 3, 4, 5; summed: slot0 .9, slot6 .8, slots 1 and 2 .5 (tie → 1).
    sim.feed(&[11], &[key(3)], false, &[0.0, 0.0, 0.0, 0.3, 0.3, 0.3, 0.0], 0.0);
    assert_eq!(sim.attention_calls, 7);
    assert_eq!(sim.positions(), vec![0, 1, 6, 7, 8, 9, 10]);
}

#[test]
fn snapkv_sums_the_observation_window() {
    let mut sim = Sim::new("snapkv", "ob_window = 2", B10);
    sim.feed(&[1, 2, 3, 4, 5], &keys_for(&[1, 2, 3, 4, 5]), true, &[], 0.0);
    for t in [6, 7, 8] {
        sim.decode(t); // len_before 5..7: outside the window (opens at len_before ≥ B − 2 = 8)
    }
    assert_eq!(sim.attention_calls, 0);
    sim.feed(&[9], &[key(1)], false, &[0.5, 0.0, 0.4, 0.0, 0.0, 0.0, 0.0], 0.0);
    sim.feed(&[10], &[key(2)], false, &[0.0, 0.0, 0.4, 0.0, 0.0, 0.3, 0.0], 0.0);
    sim.feed(&[11], &[key(3)], false, &[0.0, 0.0, 0.0, 0.45, 0.0, 0.3, 0.0], 0.0);
    assert_eq!(sim.attention_calls, 3);
    // Sums: slot0 .5, slot2 .8, slot3 .45, slot5 .6 → top 3 = 0, 2, 5.
    assert_eq!(sim.positions(), vec![0, 2, 5, 7, 8, 9, 10]);
}

#[test]
fn snapkv_paper_pools_the_scores() {
    let mut sim = Sim::new("snapkv-paper", "ob_window = 0\npooling = \"max\"\nkernel_size = 3", B10);
    until_first_eviction(&mut sim, &[6, 7, 8, 9, 10]);
    // One observed step; max-pool 3 spreads slot 4's mass to 3 and 5: [0,.1,.1,.5,.5,.5,.05].
    sim.feed(&[11], &[key(3)], false, &[0.0, 0.0, 0.1, 0.05, 0.5, 0.0, 0.05], 0.0);
    assert_eq!(sim.positions(), vec![3, 4, 5, 7, 8, 9, 10]);
}

#[test]
fn rkv_exempts_the_most_recent_near_duplicate() {
    // Keys (one-hot axes): slots 0, 1, 2 share axis 0; slot 3 and slot 10 share axis 1; the rest
    // are distinct. Equal attention makes importance flat, so redundancy decides: slot 0 (two
    // duplicates counted against it) and slot 1 (one) go; slot 2, the most recent copy, stays.
    let mut sim = Sim::new("rkv", "", B10);
    let axes = [0u32, 0, 0, 1, 2];
    sim.feed(&[1, 2, 3, 4, 5], &axes.iter().map(|&a| key(a as usize)).collect::<Vec<_>>(), true, &[], 0.0);
    let flat = [0.05f32; 11];
    for (t, axis) in [(6u32, 3usize), (7, 4), (8, 5), (9, 6), (10, 7), (11, 1)] {
        sim.feed(&[t], &[key(axis)], false, &flat, 0.0);
    }
    assert_eq!(sim.positions(), vec![2, 3, 4, 7, 8, 9, 10]);
}

#[test]
fn dynts_protects_question_and_answer_and_keeps_top_predictions() {
    let budget = Budget { budget: 12, window: 3, ratio: 0.7 };
    let run = |policy: &str| {
        let mut sim = Sim::new(policy, "", budget);
        sim.feed(&[10, 11, 12], &keys_for(&[1, 2, 3]), true, &[], 0.0);
        // Positions 3..=7 are thinking tokens with predicted importance increasing in h;
        // position 8 is `</think>`; 9.. are answer tokens.
        for (tok, h) in [
            (20u32, 0.5f32),
            (21, 3.0),
            (22, -1.0),
            (23, 2.0),
            (24, 1.0),
            (THINK_END, 0.0),
            (30, 0.0),
            (31, 0.0),
            (32, 0.0),
            (33, 0.0),
        ] {
            sim.feed(&[tok], &[key(tok as usize)], false, &[], h);
        }
        sim
    };
    let sim = run("dynts");
    // Eviction at 13 cached: older = slots 0..9, k = ⌊0.7·10⌋ = 7: five +∞ (prompt 0–2,
    // `</think>` 8, answer 9) and the two best thinking tokens (4, 6); window 10–12.
    assert_eq!(sim.positions(), vec![0, 1, 2, 4, 6, 8, 9, 10, 11, 12]);
    assert_eq!(sim.hidden_calls, 6, "the predictor runs only while thinking");
    // Bottom: the five thinking tokens, then the earliest +∞ slots.
    assert_eq!(run("dynts-bottom").positions(), vec![0, 1, 3, 4, 5, 6, 7, 10, 11, 12]);
    // No question protection: every thinking score > 0 = the prompt's.
    assert_eq!(run("dynts-noque").positions(), vec![3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    let random = run("dynts-random").positions();
    assert_eq!(random.len(), 10);
    assert_eq!(&random[7..], &[10, 11, 12]);
}

#[test]
fn rkv_paper_compresses_each_head_every_buffer_tokens() {
    let budget = Budget { budget: 8, window: 2, ratio: 0.5 };
    let mut sim = Sim::new("rkv-paper", "buffer = 4\nob_window = 2", budget);
    sim.feed(&[1, 2, 3, 4, 5], &keys_for(&[1, 2, 3, 4, 5]), true, &[], 0.0);
    let mut lens = Vec::new();
    for t in 6..20u32 {
        sim.decode(t);
        lens.push(sim.cache.len());
    }
    // Decode steps 1..14: compress to B at steps 4, 8, 12 (once ≥ B), growing in between.
    assert_eq!(lens, vec![6, 7, 8, 8, 9, 10, 11, 8, 9, 10, 11, 8, 9, 10]);
    match sim.cache.slots() {
        kvbench::cache::SlotMap::PerHead { positions } => {
            for layer in positions {
                for head in layer {
                    assert_eq!(head.len(), 10);
                    assert_eq!(&head[6..], &[15, 16, 17, 18], "the last ob_window tokens are always kept");
                }
            }
        }
        other => panic!("expected per-head slots, got {other:?}"),
    }
}

/// Invariants over random inputs for every policy: the cache never exceeds B after a step, an
/// eviction leaves W + ⌊r·(L−W)⌋ (or the policy's own size), positions increase, and protected
/// tokens survive.
#[test]
fn invariants_hold_on_random_inputs() {
    let mut rng = Rng::new(2026);
    let mut below = |n: u64| (rng.next_u64() % n) as usize;
    let policies = [
        "window",
        "streamingllm",
        "sepllm",
        "h2o",
        "h2o-cumulative",
        "snapkv",
        "snapkv-paper",
        "rkv",
        "dynts",
        "dynts-random",
        "dynts-bottom",
        "dynts-noque",
    ];
    let mut cases = 0;
    for policy in policies {
        for case in 0..250 {
            let budget_n = 12 + below(40);
            let window = 1 + below(budget_n as u64 / 2);
            // r = 1 keeps everything (nothing is ever evicted), so it is not part of this property.
            let ratio = [0.1, 0.3, 0.5, 0.9][below(4)];
            let budget = Budget { budget: budget_n, window, ratio };
            let overrides = if policy == "streamingllm" { "sink_size = 3" } else { "" };
            let spec = PolicySpec::resolve(policy, Some(&toml::from_str(overrides).unwrap())).unwrap();
            if spec.validate(&budget).is_err() {
                continue; // e.g. sinks + kept window above B: rejected before any run
            }
            let prompt_len = 1 + below((budget_n / 3) as u64);
            let mut sim = Sim::new(policy, overrides, budget);
            let prompt: Vec<u32> = (0..prompt_len).map(|_| [SEP, 1, 2, 3][below(4)]).collect();
            sim.feed(&prompt, &keys_for(&prompt), true, &[], 0.0);
            let think_close_at = 2 * budget_n + below(budget_n as u64);
            for step in 0..4 * budget_n {
                let token = if step == think_close_at { THINK_END } else { [SEP, 5, 6, 7, 8][below(5)] };
                let len_before = sim.cache.len();
                let attn: Vec<f32> = (0..=len_before).map(|_| below(1000) as f32 / 1000.0).collect();
                let evictions = sim.evictor.stats().evictions;
                sim.feed(&[token], &[key(below(DIM as u64))], false, &attn, below(100) as f32 / 10.0 - 5.0);
                let len = sim.cache.len();
                let ctx = format!("{policy} case {case} step {step} {budget:?}");
                assert!(len <= budget_n, "{ctx}: {len} cached");
                let pos = sim.positions();
                assert!(pos.windows(2).all(|w| w[0] < w[1]), "{ctx}: positions not increasing");
                assert_eq!(*pos.last().unwrap() as usize, prompt_len + step, "{ctx}: the newest token is always kept");
                if sim.evictor.stats().evictions > evictions {
                    let l = len_before + 1;
                    let expected = match policy {
                        "window" => budget.post_eviction_len(),
                        "streamingllm" => 3 + budget.post_eviction_len(),
                        "sepllm" => len, // at most W + the cap; checked below
                        _ => window + ((ratio * (l - window) as f64).floor() as usize),
                    };
                    if policy == "sepllm" {
                        assert!(len <= window + ((ratio * (l - window) as f64).floor() as usize), "{ctx}");
                    } else {
                        assert_eq!(len, expected, "{ctx}: post-eviction size");
                    }
                    if policy == "dynts" {
                        let k = (ratio * (l - window) as f64).floor() as usize;
                        let answer = if step >= think_close_at { step - think_close_at + 1 } else { 0 };
                        if prompt_len + answer <= k {
                            assert!((0..prompt_len as u32).all(|p| pos.contains(&p)), "{ctx}: prompt evicted");
                            let first_answer = (prompt_len + think_close_at) as u32;
                            assert!(
                                pos.iter().filter(|&&p| p >= first_answer).count() == answer,
                                "{ctx}: answer evicted"
                            );
                        }
                    }
                }
                cases += 1;
            }
        }
    }
    assert!(cases > 10_000);
}
