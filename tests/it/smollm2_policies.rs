//! Every policy end to end on SmolLM2-135M-Instruct: a GSM8K question, greedy, B = 256, W = 64,
//! r = 0.3, 512 new tokens (stop tokens ignored so every run is that long). Each run writes a
//! trace with evictions that respect the budget; `full` reproduces the engine's own tokens.

use crate::common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::Linear;
use kvbench::decode::generate::{generate, GenerateParams};
use kvbench::decode::sampling::SamplingParams;
use kvbench::eval::sample::{run_sample, PolicyResources, Sample};
use kvbench::model::chat_template::ChatMessage;
use kvbench::model::source::{load, LoadOptions, ModelSource};
use kvbench::policies::dynts::ImportancePredictor;
use kvbench::policies::registry::{presets, PolicySpec};
use kvbench::policies::trace::{TraceEvent, TraceSink};
use kvbench::policies::Budget;
use kvbench::rng::Rng;

const NEW_TOKENS: usize = 512;

/// A predictor with fixed pseudo-random weights: meaningless scores, real mechanics.
fn random_predictor(d: usize) -> Arc<ImportancePredictor> {
    let w = |o: usize, i: usize, seed: u64| {
        let data =
            common::tokens(o * i, 1000, seed).into_iter().map(|x| (x as f32 / 1000.0 - 0.5) * 0.1).collect::<Vec<_>>();
        Tensor::from_vec(data, (o, i), &Device::Cpu).unwrap()
    };
    Arc::new(ImportancePredictor::new(
        Linear::new(w(32, d, 1), None),
        Linear::new(w(16, 32, 2), Some(Tensor::zeros(16, DType::F32, &Device::Cpu).unwrap())),
        Linear::new(w(1, 16, 3), Some(Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap())),
    ))
}

#[test]
fn every_policy_runs_512_tokens_and_traces_its_evictions() {
    let Some(path) = common::test_model() else { return };
    let line = std::fs::read_to_string(common::data_dir().join("gsm8k/test.jsonl"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let question: serde_json::Value = serde_json::from_str(&line).unwrap();
    let lm = load(&ModelSource::Gguf { path }, &LoadOptions::default()).unwrap();
    let text = lm
        .chat_template
        .as_ref()
        .unwrap()
        .render(&[ChatMessage::user(question["question"].as_str().unwrap())], true)
        .unwrap();
    let prompt = kvbench::model::source::encode(&lm.tokenizer, &text).unwrap();
    let budget = Budget { budget: 256, window: 64, ratio: 0.3 };
    let params = GenerateParams {
        max_new_tokens: NEW_TOKENS,
        sampling: SamplingParams::GREEDY,
        stop_tokens: vec![],
        prefill_chunk: 512,
    };
    let mut res = PolicyResources::new(&lm, None).unwrap();
    res.predictor = Some(random_predictor(lm.model.config().hidden_size));

    // The engine alone, no hook.
    let mut cache = lm.model.new_cache(prompt.len() + NEW_TOKENS).unwrap();
    let engine = generate(&lm.model, &mut cache, &prompt, &params, &mut Rng::new(0), None).unwrap();

    let dir = std::env::temp_dir().join(format!("kvbench-policies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<String> = presets().unwrap().into_iter().map(|p| p.name).collect();
    type Row = (String, Vec<u32>, usize, usize, f64, f64);
    let results: Vec<Row> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .chunks(names.len().div_ceil(2))
            .map(|chunk| {
                let (lm, res, prompt, params, dir) = (&lm, &res, &prompt, &params, &dir);
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|name| {
                            let spec = PolicySpec::resolve(name, None).unwrap();
                            spec.validate(&budget).unwrap();
                            let sink = TraceSink::create(&dir.join(format!("{name}.jsonl"))).unwrap();
                            let sample = Sample {
                                policy: &spec,
                                budget: Some(budget),
                                prompt,
                                params,
                                rng: Rng::new(0),
                                trace: Some((&sink, name.clone())),
                            };
                            let out = run_sample(lm, res, sample).unwrap();
                            let g = &out.generation;
                            let share = out.stats.policy_secs / (g.prefill_secs + g.decode_secs);
                            (
                                name.clone(),
                                g.tokens.clone(),
                                g.peak_kv,
                                out.stats.evictions,
                                g.decode_tokens_per_sec(),
                                share,
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    eprintln!("| policy | evictions | peak_kv | decode tok/s | policy time share |\n|---|---|---|---|---|");
    for (name, _, peak, evictions, tps, share) in &results {
        eprintln!("| {name} | {evictions} | {peak} | {tps:.1} | {:.2} % |", 100.0 * share);
    }
    for (name, tokens, peak, evictions, _, _) in &results {
        assert_eq!(tokens.len(), NEW_TOKENS, "{name}");
        if name == "full" {
            assert_eq!(tokens, &engine.tokens, "full must reproduce the engine exactly");
            assert_eq!(*evictions, 0);
            continue;
        }
        let bound = if name == "rkv-paper" { 256 + 128 } else { 256 };
        assert!(*peak <= bound, "{name}: peak {peak}");
        assert!(*evictions >= 2, "{name}: {evictions} evictions");
        let trace: Vec<TraceEvent> = std::fs::read_to_string(dir.join(format!("{name}.jsonl")))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let per_event = if name == "rkv-paper" { lm.model.config().num_layers } else { 1 };
        assert_eq!(trace.len(), evictions * per_event, "{name}: one trace line per eviction (per layer for per-head)");
        for e in &trace {
            assert_eq!(e.sample, *name);
            assert!(e.len_after < e.len_before, "{name}: {e:?}");
        }
    }
}
