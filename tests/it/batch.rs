//! Batched decoding (several sequences in one forward per step) gives every sequence the tokens it
//! gets alone, with eviction policies and with sampling, and every preset keeps the same positions
//! at every eviction in a slot pool as alone.

use crate::common;

use kvbench::decode::generate::GenerateParams;
use kvbench::decode::sampling::SamplingParams;
use kvbench::eval::sample::{decode_batch, run_sample, start_sample, start_sample_in, PolicyResources, Sample};
use kvbench::model::chat_template::ChatMessage;
use kvbench::model::source::{load, LoadOptions, LoadedModel, ModelSource};
use kvbench::model::SeqStep;
use kvbench::policies::registry::{presets, PolicySpec};
use kvbench::policies::trace::{TraceEvent, TraceSink};
use kvbench::policies::Budget;
use kvbench::rng::Rng;

fn prompt(lm: &LoadedModel, question: &str) -> Vec<u32> {
    let text = lm.chat_template.as_ref().unwrap().render(&[ChatMessage::user(question)], true).unwrap();
    kvbench::model::source::encode(&lm.tokenizer, &text).unwrap()
}

/// The rows of a stacked forward equal separate forwards up to rounding, but not bit for bit
/// (the matmul kernels differ by row count): why a pool's step computes every slot's row, busy or
/// not, and `--batch` (the slot count) is part of a plan.
#[test]
fn stacked_rows_equal_separate_rows_up_to_rounding() {
    let Some(path) = common::test_model() else { return };
    let lm = load(&ModelSource::Gguf { path }, &LoadOptions::default()).unwrap();
    let prompts: Vec<Vec<u32>> =
        ["What is 2 + 3?", "Name a colour.", "Write a haiku about rain."].iter().map(|q| prompt(&lm, q)).collect();
    let prefilled = |p: &[u32]| {
        let mut cache = lm.model.new_cache(64).unwrap();
        lm.model
            .forward(&mut [SeqStep { cache: &mut cache, tokens: p, positions: None, visible: None }], None)
            .unwrap();
        cache
    };
    let fed: Vec<[u32; 1]> = prompts.iter().map(|p| [p[p.len() / 2]]).collect();
    let alone: Vec<Vec<f32>> = prompts
        .iter()
        .zip(&fed)
        .map(|(p, f)| {
            let mut cache = prefilled(p);
            let step = SeqStep { cache: &mut cache, tokens: f, positions: None, visible: None };
            lm.model.forward(&mut [step], None).unwrap().squeeze(0).unwrap().to_vec1().unwrap()
        })
        .collect();
    let mut caches: Vec<_> = prompts.iter().map(|p| prefilled(p)).collect();
    let mut steps: Vec<SeqStep> = caches
        .iter_mut()
        .zip(&fed)
        .map(|(c, f)| SeqStep { cache: c, tokens: f, positions: None, visible: None })
        .collect();
    let stacked: Vec<Vec<f32>> = lm.model.forward(&mut steps, None).unwrap().to_vec2().unwrap();
    for (i, (a, b)) in alone.iter().zip(&stacked).enumerate() {
        let max = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(max < 1e-3, "row {i}: logits differ by up to {max:e}");
        let (ia, ib) = (argmax(a), argmax(b));
        assert_eq!(ia, ib, "row {i}: the greedy token changed");
    }
}

fn argmax(xs: &[f32]) -> usize {
    xs.iter().enumerate().fold(0, |best, (i, &x)| if x > xs[best] { i } else { best })
}

/// A batch decodes each of its sequences as it would alone (a mixed-up cache or policy would
/// diverge at once). Exact token equality holds here because no greedy or sampled choice in these
/// 4 × 96 tokens is within rounding of a tie; the sweep's guarantee rests on the slot pool instead,
/// where a row's numbers do not depend on its neighbours (`slots.rs`).
#[test]
fn a_batch_decodes_each_sequence_as_alone() {
    let Some(path) = common::test_model() else { return };
    let lm = load(&ModelSource::Gguf { path }, &LoadOptions::default()).unwrap();
    let res = PolicyResources::new(&lm, None).unwrap();
    let budget = Budget { budget: 96, window: 32, ratio: 0.5 };
    let questions = ["What is 17 * 3?", "Why is the sea salty?", "List three prime numbers.", "Say hello."];
    let policies = ["full", "h2o", "snapkv", "rkv"];
    for sampling in [SamplingParams::GREEDY, SamplingParams::PAPER] {
        let params =
            GenerateParams { max_new_tokens: 96, sampling, stop_tokens: lm.eos_token_ids.clone(), prefill_chunk: 512 };
        let jobs: Vec<(PolicySpec, Vec<u32>, Rng)> = questions
            .iter()
            .zip(policies)
            .enumerate()
            .map(|(i, (q, p))| (PolicySpec::resolve(p, None).unwrap(), prompt(&lm, q), Rng::derive(7, &[i as u64])))
            .collect();
        let sample = |i: usize| {
            let (spec, prompt, rng) = &jobs[i];
            Sample { policy: spec, budget: Some(budget), prompt, params: &params, rng: rng.clone(), trace: None }
        };
        let alone: Vec<_> = (0..jobs.len()).map(|i| run_sample(&lm, &res, sample(i)).unwrap()).collect();
        let mut states: Vec<_> = (0..jobs.len()).map(|i| start_sample(&lm, &res, sample(i)).unwrap()).collect();
        while states.iter().any(|s| !s.finished()) {
            let mut refs: Vec<_> = states.iter_mut().collect();
            decode_batch(&lm, &mut refs).unwrap();
        }
        for (i, (state, one)) in states.into_iter().zip(&alone).enumerate() {
            let batched = state.finish();
            assert_eq!(batched.generation.tokens, one.generation.tokens, "sequence {i} ({})", policies[i]);
            assert_eq!(batched.generation.peak_kv, one.generation.peak_kv);
            assert_eq!(batched.generation.kv_footprint, one.generation.kv_footprint);
            assert_eq!(batched.stats.evictions, one.stats.evictions);
        }
        assert!(alone.iter().any(|o| o.stats.evictions > 0), "the budget makes some policy evict");
    }
}

/// Every preset, decoded in a slot pool next to the 13 others, keeps at every eviction the
/// positions it keeps decoding alone in a cache of its own (the per-sequence path), under a budget
/// that makes each evict several times; and generates the same tokens.
#[test]
fn every_preset_keeps_the_same_positions_in_a_pool_as_alone() {
    let lm = load(&ModelSource::parse("builtin:toy-chain").unwrap(), &LoadOptions::default()).unwrap();
    let predictor = kvbench::model::source::builtin_dir().join("dynts-predictor.safetensors");
    let res = PolicyResources::new(&lm, Some(&predictor)).unwrap();
    let budget = Budget { budget: 96, window: 16, ratio: 0.5 };
    let params = GenerateParams {
        max_new_tokens: 300,
        sampling: SamplingParams::GREEDY,
        stop_tokens: Vec::new(),
        prefill_chunk: 64,
    };
    let specs: Vec<PolicySpec> =
        presets().unwrap().iter().map(|p| PolicySpec::resolve(&p.name, None).unwrap()).collect();
    assert_eq!(specs.len(), 14);
    let prompts: Vec<Vec<u32>> = (0..specs.len()).map(|i| common::tokens(30, 50, 100 + i as u64)).collect();
    let dir = std::env::temp_dir().join(format!("kvbench-pool-traces-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    fn sample<'a>(
        specs: &'a [PolicySpec],
        prompts: &'a [Vec<u32>],
        params: &'a GenerateParams,
        budget: Budget,
        i: usize,
        sink: &'a TraceSink,
    ) -> Sample<'a> {
        let (spec, budget) = (&specs[i], specs[i].evicts().then_some(budget));
        let trace = Some((sink, specs[i].name.clone()));
        Sample { policy: spec, budget, prompt: &prompts[i], params, rng: Rng::new(i as u64), trace }
    }
    let sample = |i, sink| sample(&specs, &prompts, &params, budget, i, sink);
    let alone_sink = TraceSink::create(&dir.join("alone.jsonl")).unwrap();
    let alone: Vec<_> = (0..specs.len()).map(|i| run_sample(&lm, &res, sample(i, &alone_sink)).unwrap()).collect();
    let pooled_sink = TraceSink::create(&dir.join("pooled.jsonl")).unwrap();
    let pool = lm.model.new_pool(specs.len(), 30 + 300).unwrap();
    let mut states: Vec<_> =
        (0..specs.len()).map(|i| start_sample_in(&lm, &res, sample(i, &pooled_sink), Some(&pool)).unwrap()).collect();
    while states.iter().any(|s| !s.finished()) {
        let mut refs: Vec<_> = states.iter_mut().collect();
        decode_batch(&lm, &mut refs).unwrap();
    }
    drop((alone_sink, pooled_sink));
    // Kept positions per sample and eviction, in order (scores may differ in the last bits).
    let kept = |file: &str| {
        let mut by_sample: std::collections::BTreeMap<String, Vec<(serde_json::Value, usize, serde_json::Value)>> =
            Default::default();
        for line in std::fs::read_to_string(dir.join(file)).unwrap().lines() {
            let e: TraceEvent = serde_json::from_str(line).unwrap();
            by_sample.entry(e.sample).or_default().push((e.layer, e.step, e.kept_positions));
        }
        by_sample
    };
    let (want, got) = (kept("alone.jsonl"), kept("pooled.jsonl"));
    for (i, (state, one)) in states.into_iter().zip(&alone).enumerate() {
        let name = &specs[i].name;
        assert_eq!(state.finish().generation.tokens, one.generation.tokens, "{name}: tokens differ");
        assert_eq!(got.get(name), want.get(name), "{name}: kept positions differ");
        if specs[i].evicts() {
            let evictions = want.get(name).map_or(0, |e| e.iter().filter(|(l, _, _)| l == "all" || l == 0).count());
            assert!(evictions >= 2, "{name} evicted {evictions} times");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
