//! Batched decoding (several sequences stacked into one forward per step) gives every sequence
//! exactly the tokens it gets alone, with eviction policies and with sampling, so sweep results do
//! not depend on `--batch`, on which samples share a batch, or on resumption.

use crate::common;

use kvbench::decode::generate::GenerateParams;
use kvbench::decode::sampling::SamplingParams;
use kvbench::eval::sample::{decode_batch, run_sample, start_sample, PolicyResources, Sample};
use kvbench::model::chat_template::ChatMessage;
use kvbench::model::source::{load, LoadOptions, LoadedModel, ModelSource};
use kvbench::model::SeqStep;
use kvbench::policies::registry::PolicySpec;
use kvbench::policies::Budget;
use kvbench::rng::Rng;

fn prompt(lm: &LoadedModel, question: &str) -> Vec<u32> {
    let text = lm.chat_template.as_ref().unwrap().render(&[ChatMessage::user(question)], true).unwrap();
    kvbench::model::source::encode(&lm.tokenizer, &text).unwrap()
}

/// The rows of a stacked forward equal separate forwards up to rounding, but not bit for bit
/// (the matmul kernels differ by row count): why `--batch` is part of a plan and groups are fixed.
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

/// A group decodes each of its sequences as it would alone (a mixed-up cache or policy would
/// diverge at once). Exact token equality holds here because no greedy or sampled choice in these
/// 4 × 96 tokens is within rounding of a tie; the sweep's guarantee rests on fixed groups instead.
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
