//! The toy reasoning model: a small Llama trained by `kvbench train-toy` on `synthetic-chain`
//! so that kvbench has a model that reasons, offline and on two CPU cores.
//!
//! It is an ordinary HF model folder (`config.json`, `tokenizer.json`, `tokenizer_config.json`
//! with the chat template, `model.safetensors`), run by the same decoder as every other model. The
//! committed one lives in `assets/toy-chain/` and is the built-in default of `kvbench run`.
//!
//! Shape: d_model 128, 4 layers, 4 query / 2 KV heads of 32, SwiGLU 352, RMSNorm, RoPE θ 1e4, untied head; one token per character.

mod batches;
mod ops;
pub mod train;

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// The dataset the built-in model was trained for (its default in `kvbench run`).
pub const BUILTIN_DATASET: &str = "synthetic-chain";

/// Special tokens, then one token per character the task uses.
pub const SPECIALS: [&str; 7] = ["<pad>", "<unk>", "<s>", "</s>", "<think>", "</think>", "\\boxed{"];
const CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789=+-,;?}";

pub const PAD: u32 = 0;
pub const BOS: u32 = 2;
pub const EOS: u32 = 3;
pub const THINK: u32 = 4;

pub fn vocab_size() -> usize {
    SPECIALS.len() + CHARS.chars().count()
}

/// `tokenizer.json`: word-level over single characters, specials as added tokens, decoded by
/// concatenation.
pub fn tokenizer_json() -> Value {
    let mut vocab = serde_json::Map::new();
    for (i, t) in SPECIALS.iter().map(|s| s.to_string()).chain(CHARS.chars().map(String::from)).enumerate() {
        vocab.insert(t, json!(i));
    }
    let added: Vec<Value> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": *s != "\\boxed{"})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "."}, "behavior": "Isolated", "invert": false},
        "post_processor": null,
        "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
}

/// The chat template: BOS, the user's text, and `<think>` as the generation prompt (as the
/// DeepSeek-R1 distills open their answer).
pub const CHAT_TEMPLATE: &str = "{{ bos_token }}{% for message in messages %}{{ message['content'] }}{% endfor %}{% if add_generation_prompt %}<think>{% endif %}";

pub fn tokenizer_config_json() -> Value {
    json!({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
           "chat_template": CHAT_TEMPLATE, "model_max_length": 1024})
}

/// The architecture, as the HF `config.json` that kvbench's loader reads.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct ToyShape {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub intermediate_size: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
}

impl Default for ToyShape {
    fn default() -> Self {
        Self {
            hidden_size: 128,
            num_layers: 4,
            num_heads: 4,
            num_kv_heads: 2,
            intermediate_size: 352,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 1024,
        }
    }
}

impl ToyShape {
    /// A two-layer shape for tests.
    #[cfg(test)]
    pub(crate) fn tiny() -> Self {
        Self { hidden_size: 32, num_layers: 2, num_heads: 4, num_kv_heads: 2, intermediate_size: 48, ..Self::default() }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    pub fn config_json(&self) -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim(),
            "vocab_size": vocab_size(),
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": false,
            "hidden_act": "silu",
            "bos_token_id": BOS,
            "eos_token_id": EOS,
            "pad_token_id": PAD,
            "torch_dtype": "float32"
        })
    }
}

/// Writes everything but the weights into `dir` (created if needed), atomically per file.
pub fn write_model_files(dir: &Path, shape: &ToyShape) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, value) in [
        ("config.json", shape.config_json()),
        ("tokenizer.json", tokenizer_json()),
        ("tokenizer_config.json", tokenizer_config_json()),
        ("generation_config.json", json!({"bos_token_id": BOS, "eos_token_id": EOS, "do_sample": false})),
    ] {
        crate::io::write_atomic(&dir.join(name), (serde_json::to_string_pretty(&value)? + "\n").as_bytes())?;
    }
    Ok(())
}

/// The training text of one problem: what the chat template renders for its question, then the
/// solution and EOS. Returns the token ids and the index of the `<think>` token (the loss covers
/// every token after it).
pub fn training_tokens(
    tokenizer: &tokenizers::Tokenizer,
    problem: &crate::data::synthetic::ChainProblem,
) -> Result<(Vec<u32>, usize)> {
    let text = format!("<s>{}{}</s>", problem.question, problem.solution());
    let ids = crate::model::source::encode(tokenizer, &text)?;
    let think = ids.iter().position(|&t| t == THINK).context("no <think> in a training text")?;
    Ok((ids, think))
}

pub fn tokenizer() -> Result<tokenizers::Tokenizer> {
    let bytes = serde_json::to_vec(&tokenizer_json())?;
    tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| anyhow::anyhow!("building the toy tokenizer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{problem, ChainParams};
    use crate::model::chat_template::{ChatMessage, ChatTemplate};

    #[test]
    fn one_token_per_character_and_the_prompt_is_a_prefix_of_the_training_text() {
        let tok = tokenizer().unwrap();
        assert_eq!(vocab_size(), 50);
        let p = problem(
            &ChainParams { seed: 3, rows: 10, facts: [4, 6], steps: [6, 20], fact_ref: 0.4, ops: "+".into() },
            0,
        );
        let (ids, think) = training_tokens(&tok, &p).unwrap();
        // Every character of the question and thinking is one token; specials are one token each.
        let chars = p.question.len() + p.thinking.len() - "<think></think>".len() + 2;
        assert_eq!(ids.len(), 1 + chars + 3 + 1, "{ids:?}");
        assert_eq!(ids[0], BOS);
        assert_eq!(*ids.last().unwrap(), EOS);
        assert!(!ids.contains(&1), "no unknown tokens");
        let template = ChatTemplate::new(CHAT_TEMPLATE, Some("<s>".into()), Some("</s>".into())).unwrap();
        let prompt = template.render(&[ChatMessage::user(p.question.clone())], true).unwrap();
        let prompt_ids = crate::model::source::encode(&tok, &prompt).unwrap();
        assert_eq!(prompt_ids, ids[..=think].to_vec());
        assert_eq!(tok.decode(&ids, false).unwrap(), format!("<s>{}{}</s>", p.question, p.solution()));
    }
}
