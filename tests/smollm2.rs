//! SmolLM2-135M-Instruct from its GGUF: the chat template renders, tokenizes and greedy-decodes
//! exactly as HF transformers does on the same (dequantized, float32) weights. The reference ids
//! were produced by `scripts/reference/make_reference.py` (see `just reference`).

mod common;

use kvbench::chat::ChatMessage;
use kvbench::generate::{generate, GenerateParams};
use kvbench::model::load::{load, LoadOptions, ModelSource};
use kvbench::sampling::{Rng, SamplingParams};

#[derive(serde::Deserialize)]
struct Reference {
    max_new_tokens: usize,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    messages: Vec<ChatMessage>,
    prompt_text: String,
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
}

#[test]
fn greedy_generation_matches_hf_transformers() {
    let Some(path) = common::test_model() else { return };
    let reference: Reference = serde_json::from_str(include_str!("data/smollm2_greedy_reference.json")).unwrap();
    let lm = load(&ModelSource::Gguf { path }, &LoadOptions::default()).unwrap();
    let template = lm.chat_template.as_ref().expect("the GGUF carries a chat template");
    for (i, case) in reference.cases.iter().enumerate() {
        let text = template.render(&case.messages, true).unwrap();
        assert_eq!(text, case.prompt_text, "case {i}: rendered prompt differs");
        let ids = kvbench::tokenizer::encode(&lm.tokenizer, &text).unwrap();
        assert_eq!(ids, case.prompt_ids, "case {i}: prompt ids differ");
        assert!(case.generated_ids.len() >= 64, "case {i}: reference too short");
        let mut cache = lm.model.new_cache(ids.len() + reference.max_new_tokens).unwrap();
        let params = GenerateParams {
            max_new_tokens: reference.max_new_tokens,
            sampling: SamplingParams::GREEDY,
            stop_tokens: lm.eos_token_ids.clone(),
            prefill_chunk: 16, // several chunks: chunked prefill must not change the result
        };
        let out = generate(&lm.model, &mut cache, &ids, &params, &mut Rng::new(0), None).unwrap();
        let n = out.tokens.iter().zip(&case.generated_ids).take_while(|(a, b)| a == b).count();
        assert_eq!(out.tokens, case.generated_ids, "case {i}: generation diverges from HF transformers at token {n}");
    }
}
