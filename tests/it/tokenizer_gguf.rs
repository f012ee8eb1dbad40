//! The tokenizer built from the SmolLM2 GGUF's metadata, checked on the real file.
//!
//! The GGUF lives at `models/SmolLM2-135M-Instruct.Q4_1.gguf`, fetched on first need
//! ([`common::test_model`]).
//!
//! `reference_ids_match_transformers` compares against
//! `tests/data/smollm2_tokenizer_reference.jsonl`: ids produced by HF transformers from the
//! same GGUF (`add_special_tokens=False`) for the GSM8K `question`s and MATH-500 `problem`s
//! found under `$KVBENCH_DATA_DIR` (default `../shared/datasets` beside the crate).

use crate::common;
use candle_core::quantized::gguf_file;
use kvbench::model::chat_template::{ChatMessage, ChatTemplate};
use kvbench::model::gguf_tokenizer::{chat_template_from_gguf, special_tokens_from_gguf, tokenizer_from_gguf};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tokenizers::Tokenizer;

const REFERENCE_FILE: &str = "tests/data/smollm2_tokenizer_reference.jsonl";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The GGUF path, or `None` when the tests that need it are skipped.
fn model_path(test: &str) -> Option<PathBuf> {
    let path = common::test_model();
    if path.is_none() {
        eprintln!("SKIP {test}");
    }
    path
}

struct Loaded {
    content: gguf_file::Content,
    tokenizer: Tokenizer,
}

fn load(test: &str) -> Option<&'static Loaded> {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    let path = model_path(test)?;
    Some(LOADED.get_or_init(|| {
        let mut f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        let content =
            gguf_file::Content::read(&mut f).unwrap_or_else(|e| panic!("reading GGUF {}: {e}", path.display()));
        let tokenizer =
            tokenizer_from_gguf(&content).unwrap_or_else(|e| panic!("tokenizer from {}: {e:#}", path.display()));
        Loaded { content, tokenizer }
    }))
}

fn encode(tok: &Tokenizer, text: &str) -> Vec<u32> {
    tok.encode(text, false).unwrap_or_else(|e| panic!("encoding {text:?}: {e}")).get_ids().to_vec()
}

#[test]
fn gguf_metadata_is_smollm() {
    let Some(l) = load("gguf_metadata_is_smollm") else {
        return;
    };
    let pre = l.content.metadata["tokenizer.ggml.pre"].to_string().unwrap();
    assert_eq!(pre, "smollm");
    assert_eq!(l.tokenizer.get_vocab_size(true), 49152);
    let s = special_tokens_from_gguf(&l.content);
    assert_eq!(s.bos, Some(1));
    assert_eq!(s.eos, Some(2));
    assert_eq!(s.pad, Some(2));
    assert_eq!(s.bos_text.as_deref(), Some("<|im_start|>"));
    assert_eq!(s.eos_text.as_deref(), Some("<|im_end|>"));
}

#[test]
fn im_start_is_one_token() {
    let Some(l) = load("im_start_is_one_token") else {
        return;
    };
    let tok = &l.tokenizer;
    let id = tok.token_to_id("<|im_start|>").expect("<|im_start|> in vocab");
    assert_eq!(id, 1);
    assert_eq!(encode(tok, "<|im_start|>"), vec![id]);
    let ids = encode(tok, "<|im_start|>user\nHi<|im_end|>\n");
    assert_eq!(ids.first(), Some(&id));
    assert!(ids.contains(&2), "{ids:?}");
    // Special tokens are dropped on request.
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nHi\n");
}

#[test]
fn decode_roundtrips() {
    let Some(l) = load("decode_roundtrips") else {
        return;
    };
    for text in [
        "Hello, world!",
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
        "line one\nline two\n\n\tindented\r\n",
        "  leading and trailing spaces  ",
        "naïve café — 日本語のテキスト ✓ 🤖 ∑_{k=1}^{n} k = \\frac{n(n+1)}{2}",
        "3.14159 + 2,718 = 5,859.14159; x^2 - 10x + 25 = 0",
        "<|im_start|>assistant\nThe answer is 42.<|im_end|>",
    ] {
        let ids = encode(&l.tokenizer, text);
        assert_eq!(l.tokenizer.decode(&ids, false).unwrap(), text, "{ids:?}");
    }
}

#[test]
fn digits_split_individually() {
    let Some(l) = load("digits_split_individually") else {
        return;
    };
    let tok = &l.tokenizer;
    let ids = encode(tok, "12345");
    assert_eq!(ids.len(), 5, "{ids:?}");
    let expected: Vec<u32> = "12345".chars().map(|c| tok.token_to_id(&c.to_string()).unwrap()).collect();
    assert_eq!(ids, expected);
    // Also inside text, after a space.
    let ids = encode(tok, "costs 2024 dollars");
    let digits =
        ids.iter().filter(|&&i| tok.id_to_token(i).is_some_and(|t| t.chars().all(|c| c.is_ascii_digit()))).count();
    assert_eq!(digits, 4, "{ids:?}");
}

#[test]
fn gguf_chat_template_renders_and_encodes() {
    let Some(l) = load("gguf_chat_template_renders_and_encodes") else {
        return;
    };
    let src = chat_template_from_gguf(&l.content).expect("tokenizer.chat_template");
    let s = special_tokens_from_gguf(&l.content);
    let t = ChatTemplate::new(&src, s.bos_text, s.eos_text).unwrap();
    let prompt = t.render(&[ChatMessage { role: "user".into(), content: "What is 2+2?".into() }], true).unwrap();
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = encode(&l.tokenizer, &prompt);
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 3, "{ids:?}");
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 2, "{ids:?}");
    assert_eq!(l.tokenizer.decode(&ids, false).unwrap(), prompt);
}

fn data_dir() -> PathBuf {
    match std::env::var_os("KVBENCH_DATA_DIR") {
        Some(d) => PathBuf::from(d),
        None => manifest_dir().join("../shared/datasets"),
    }
}

/// The field holding the text that the reference encoded, per dataset.
fn text_field(dataset: &str) -> &'static str {
    match dataset {
        "gsm8k" => "question",
        "math500" => "problem",
        other => panic!("reference names an unknown dataset {other:?}"),
    }
}

fn read_texts(path: &Path, field: &str) -> Vec<String> {
    let body = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1));
            v[field]
                .as_str()
                .unwrap_or_else(|| panic!("{}:{}: no string field {field:?}", path.display(), i + 1))
                .to_owned()
        })
        .collect()
}

fn ids_sha256(ids: &[u32]) -> String {
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn reference_ids_match_transformers() {
    let reference = manifest_dir().join(REFERENCE_FILE);
    if !reference.is_file() {
        eprintln!("SKIP reference_ids_match_transformers: {} not found", reference.display());
        return;
    }
    let Some(l) = load("reference_ids_match_transformers") else {
        return;
    };
    let data = data_dir();
    let mut texts: HashMap<String, Vec<String>> = HashMap::new();
    let body = std::fs::read_to_string(&reference).unwrap();
    let mut checked = 0usize;
    let mut mismatches = Vec::new();
    for (lineno, line) in body.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{}:{}: {e}", reference.display(), lineno + 1));
        let dataset = r["dataset"].as_str().expect("dataset").to_owned();
        let index = r["index"].as_u64().expect("index") as usize;
        let n_ids = r["n_ids"].as_u64().expect("n_ids") as usize;
        let sha = r["ids_sha256"].as_str().expect("ids_sha256");
        if !texts.contains_key(&dataset) {
            let path = data.join(&dataset).join("test.jsonl");
            assert!(path.is_file(), "dataset file {} is missing (set KVBENCH_DATA_DIR)", path.display());
            texts.insert(dataset.clone(), read_texts(&path, text_field(&dataset)));
        }
        let text = texts[&dataset].get(index).unwrap_or_else(|| panic!("{dataset} has no record {index}"));
        let ids = encode(&l.tokenizer, text);
        checked += 1;
        if ids.len() != n_ids || ids_sha256(&ids) != sha {
            // The reference may also carry the ids themselves: show where they diverge.
            let divergence = match r["ids"].as_array() {
                Some(theirs) => {
                    let theirs: Vec<u64> = theirs.iter().filter_map(|v| v.as_u64()).collect();
                    let at = ids
                        .iter()
                        .zip(&theirs)
                        .position(|(a, b)| u64::from(*a) != *b)
                        .unwrap_or(ids.len().min(theirs.len()));
                    let ours_ctx = &ids[at..ids.len().min(at + 5)];
                    let theirs_ctx = &theirs[at..theirs.len().min(at + 5)];
                    format!("; first difference at {at}: ours {ours_ctx:?}, transformers {theirs_ctx:?}")
                }
                None => String::new(),
            };
            mismatches.push(format!(
                "{dataset}[{index}]: ours {} ids, transformers {n_ids} ids{divergence}; text {text:?}",
                ids.len()
            ));
        }
    }
    assert!(checked > 0, "reference file {} is empty", reference.display());
    eprintln!("reference_ids_match_transformers: {checked} texts, {} mismatches", mismatches.len());
    assert!(
        mismatches.is_empty(),
        "{} of {checked} texts tokenize differently from transformers; first ones:\n{}",
        mismatches.len(),
        mismatches.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}
