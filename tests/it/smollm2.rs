//! SmolLM2-135M-Instruct from its GGUF: the chat template renders, tokenizes and greedy-decodes
//! exactly as HF transformers does on the same (dequantized, float32) weights. The reference ids
//! were produced by `scripts/reference/make_reference.py` (see `just reference`).

use crate::common;

use kvbench::decode::generate::{generate, GenerateParams};
use kvbench::decode::sampling::SamplingParams;
use kvbench::model::chat_template::ChatMessage;
use kvbench::model::source::{load, LoadOptions, ModelSource};
use kvbench::rng::Rng;

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
    let reference: Reference = serde_json::from_str(include_str!("../data/smollm2_greedy_reference.json")).unwrap();
    let lm = load(&ModelSource::Gguf { path }, &LoadOptions::default()).unwrap();
    let template = lm.chat_template.as_ref().expect("the GGUF carries a chat template");
    for (i, case) in reference.cases.iter().enumerate() {
        let text = template.render(&case.messages, true).unwrap();
        assert_eq!(text, case.prompt_text, "case {i}: rendered prompt differs");
        let ids = kvbench::model::source::encode(&lm.tokenizer, &text).unwrap();
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

/// `dynts collect --solutions math` on a model without thinking tokens: MATH's reference
/// solutions, teacher-forced, become the thinking; every thinking token gets a label and a hidden
/// state, its position after the prompt; MATH-500's 500 questions are left out of the pool (the
/// first five kept are MATH's 0–3 and 5).
#[test]
fn reference_solutions_label_a_model_without_thinking_tokens() {
    let Some(path) = common::test_model() else { return };
    let out = std::env::temp_dir().join(format!("kvbench-solutions-{}", std::process::id()));
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["dynts", "collect", "--solutions", "math", "--limit", "5", "--instruction", "Think."])
        .arg("--model")
        .arg(&path)
        .arg("--data-dir")
        .arg(common::data_dir())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("collect.json")).unwrap()).unwrap();
    assert_eq!((summary["traces"].as_u64(), summary["skipped_format"].as_u64()), (Some(5), Some(0)));
    assert_eq!(summary["held_out"].as_u64(), Some(500));
    let n = summary["thinking_tokens"].as_u64().unwrap() as usize;
    let t = candle_core::safetensors::load(out.join("traces.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(t["hidden"].dims(), [n, 576]);
    let importance: Vec<f32> = t["importance"].to_vec1().unwrap();
    assert!(n > 100 && importance.iter().all(|&i| i.is_finite() && i >= 0.0), "{n}");
    let (trace, position): (Vec<u32>, Vec<u32>) = (t["trace"].to_vec1().unwrap(), t["position"].to_vec1().unwrap());
    for i in 1..n {
        // Within a trace, consecutive positions; a new trace starts again after its prompt.
        if trace[i] == trace[i - 1] {
            assert_eq!(position[i], position[i - 1] + 1);
        } else {
            assert_eq!(trace[i], trace[i - 1] + 1);
        }
    }
    // The chat prompt (system turn, question, "Think.") comes first.
    assert!(position[0] > 30, "{}", position[0]);
    std::fs::remove_dir_all(&out).ok();
}
