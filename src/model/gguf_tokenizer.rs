//! Build a Hugging Face `tokenizers::Tokenizer` from the tokenizer metadata embedded in a
//! GGUF file, so a model file is the only artifact a run needs.
//!
//! Only byte-level BPE vocabularies (`tokenizer.ggml.model = "gpt2"`) are supported. The
//! pre-tokenizer is chosen by `tokenizer.ggml.pre`, mirroring the `tokenizer.json` of the
//! original model (and llama.cpp's handling of the same value):
//!
//! | `tokenizer.ggml.pre`            | normalizer | pre-tokenizer                                         |
//! |---------------------------------|------------|-------------------------------------------------------|
//! | `smollm`                        | none       | Digits(individual) then ByteLevel(GPT-2 regex)        |
//! | `qwen2`, `deepseek-r1-qwen`     | NFC        | Split(Qwen2 regex, Isolated) then ByteLevel(no regex) |
//! | `llama-bpe`                     | none       | Split(Llama-3 regex, Isolated) then ByteLevel(no regex) |
//! | `default`, `gpt2`               | none       | ByteLevel(GPT-2 regex)                                |
//!
//! Any other value is an error rather than a silent fallback: a wrong pre-tokenizer gives
//! valid-looking but different token ids.
//!
//! `llama-bpe` uses `ignore_merges = true` (a pre-token that is itself a vocabulary entry is
//! emitted whole), as Llama 3's `tokenizer.json` and llama.cpp do; all others use
//! `ignore_merges = false`.
//!
//! Added tokens: every token whose `tokenizer.ggml.token_type` is 3 (control) or 4
//! (user-defined) becomes an added token (`normalized: false`), so that its text in the
//! input, e.g. `<|im_start|>`, encodes as its single id. Control tokens are `special`.
//! User-defined tokens are `special` too when their text looks like a tag, `<...>` (e.g.
//! `<think>`, `</think>`), and plain added tokens otherwise. The consequence of `special` is
//! that `decode(ids, skip_special_tokens = true)` drops them: decode with
//! `skip_special_tokens = false` to keep `<think>`/`</think>` in generated text.
//!
//! No post-processor is attached: `encode(text, true)` adds no BOS/EOS, callers (the chat
//! template) put them in the text. Decoder: ByteLevel.

use anyhow::{anyhow, bail, Context};
use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::json;
use std::str::FromStr;
use tokenizers::Tokenizer;

pub const KEY_MODEL: &str = "tokenizer.ggml.model";
pub const KEY_PRE: &str = "tokenizer.ggml.pre";
pub const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
pub const KEY_MERGES: &str = "tokenizer.ggml.merges";
pub const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const KEY_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
pub const KEY_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
pub const KEY_PAD_ID: &str = "tokenizer.ggml.padding_token_id";
pub const KEY_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
pub const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

/// llama.cpp token types (`tokenizer.ggml.token_type`).
pub const TOKEN_TYPE_CONTROL: i64 = 3;
pub const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Qwen2 split regex (also DeepSeek-R1-Distill-Qwen): single digits.
pub const QWEN2_SPLIT_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3 split regex (also DeepSeek-R1-Distill-Llama): digit groups of up to 3.
pub const LLAMA3_SPLIT_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Ids (and texts) of the special tokens a GGUF names. Each is `None` when the key is absent
/// (or the id is out of the vocabulary, for the texts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub pad: Option<u32>,
    pub eos_text: Option<String>,
    pub bos_text: Option<String>,
}

/// Build the tokenizer described by `content`'s `tokenizer.*` metadata.
pub fn tokenizer_from_gguf(content: &Content) -> anyhow::Result<Tokenizer> {
    let json = tokenizer_json_from_gguf(content)?;
    let text = serde_json::to_string(&json).context("serializing the tokenizer.json")?;
    Tokenizer::from_str(&text).map_err(|e| anyhow!("building the tokenizer from GGUF metadata: {e}"))
}

/// The `tokenizer.json` document [`tokenizer_from_gguf`] parses (useful to save or hash).
pub fn tokenizer_json_from_gguf(content: &Content) -> anyhow::Result<serde_json::Value> {
    let model = get_string(content, KEY_MODEL)?;
    if model != "gpt2" {
        bail!("unsupported GGUF tokenizer model {KEY_MODEL} = {model:?}: only byte-level BPE (\"gpt2\") is supported");
    }
    let pre = get_string(content, KEY_PRE)?;
    let (normalizer, pre_tokenizer, ignore_merges) = pre_tokenizer_for(pre)?;

    let tokens = get_string_array(content, KEY_TOKENS)?;
    let merges = get_string_array(content, KEY_MERGES)?;
    let token_types = match content.metadata.get(KEY_TOKEN_TYPE) {
        None => None,
        Some(v) => {
            let arr = v.to_vec().map_err(|e| anyhow!("GGUF metadata `{KEY_TOKEN_TYPE}` is not an array: {e}"))?;
            if arr.len() != tokens.len() {
                bail!(
                    "GGUF metadata `{KEY_TOKEN_TYPE}` has {} entries but `{KEY_TOKENS}` has {}",
                    arr.len(),
                    tokens.len()
                );
            }
            let types = arr
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    value_as_i64(t)
                        .ok_or_else(|| anyhow!("GGUF metadata `{KEY_TOKEN_TYPE}`[{i}] is not an integer: {t:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Some(types)
        }
    };

    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    for (id, tok) in tokens.iter().enumerate() {
        // A duplicated token text keeps its last id, as transformers' GGUF converter does.
        vocab.insert((*tok).to_owned(), json!(id));
    }

    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => Ok(json!([a, b])),
            _ => Err(anyhow!("GGUF metadata `{KEY_MERGES}`[{i}] = {m:?} is not of the form \"left right\"")),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let unk_token = match content.metadata.get(KEY_UNK_ID) {
        None => None,
        Some(v) => {
            let id = value_as_u32(v).ok_or_else(|| anyhow!("GGUF metadata `{KEY_UNK_ID}` is not a u32: {v:?}"))?;
            let tok = tokens.get(id as usize).ok_or_else(|| {
                anyhow!("GGUF metadata `{KEY_UNK_ID}` = {id} is outside the vocabulary ({} tokens)", tokens.len())
            })?;
            Some((*tok).to_owned())
        }
    };

    let mut added_tokens = Vec::new();
    if let Some(types) = &token_types {
        for (id, (tok, ty)) in tokens.iter().zip(types).enumerate() {
            let special = match *ty {
                TOKEN_TYPE_CONTROL => true,
                TOKEN_TYPE_USER_DEFINED => looks_like_tag(tok),
                _ => continue,
            };
            if tok.is_empty() {
                continue;
            }
            added_tokens.push(json!({
                "id": id,
                "content": tok,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": special,
            }));
        }
    }

    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": true,
            "trim_offsets": true,
            "use_regex": true,
        },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": unk_token,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges,
        },
    }))
}

/// `(normalizer, pre_tokenizer, ignore_merges)` for a `tokenizer.ggml.pre` value.
fn pre_tokenizer_for(pre: &str) -> anyhow::Result<(serde_json::Value, serde_json::Value, bool)> {
    let byte_level = |trim_offsets: bool, use_regex: bool| {
        json!({
            "type": "ByteLevel",
            "add_prefix_space": false,
            "trim_offsets": trim_offsets,
            "use_regex": use_regex,
        })
    };
    let split = |regex: &str| {
        json!({
            "type": "Split",
            "pattern": { "Regex": regex },
            "behavior": "Isolated",
            "invert": false,
        })
    };
    Ok(match pre {
        "smollm" => (
            serde_json::Value::Null,
            json!({
                "type": "Sequence",
                "pretokenizers": [
                    { "type": "Digits", "individual_digits": true },
                    byte_level(true, true),
                ],
            }),
            false,
        ),
        "qwen2" | "deepseek-r1-qwen" => (
            json!({ "type": "NFC" }),
            json!({
                "type": "Sequence",
                "pretokenizers": [split(QWEN2_SPLIT_REGEX), byte_level(false, false)],
            }),
            false,
        ),
        "llama-bpe" => (
            serde_json::Value::Null,
            json!({
                "type": "Sequence",
                "pretokenizers": [split(LLAMA3_SPLIT_REGEX), byte_level(true, false)],
            }),
            true,
        ),
        "default" | "gpt2" => (serde_json::Value::Null, byte_level(true, true), false),
        other => bail!(
            "unsupported GGUF pre-tokenizer {KEY_PRE} = {other:?} (supported: smollm, qwen2, \
             deepseek-r1-qwen, llama-bpe, default, gpt2)"
        ),
    })
}

/// `<...>` with something inside, e.g. `<think>`, `</think>`, `<tool_call>`.
fn looks_like_tag(tok: &str) -> bool {
    tok.len() > 2 && tok.starts_with('<') && tok.ends_with('>')
}

/// Special token ids from `tokenizer.ggml.{bos,eos,padding}_token_id`, with the BOS/EOS
/// texts looked up in `tokenizer.ggml.tokens`.
pub fn special_tokens_from_gguf(content: &Content) -> SpecialTokens {
    let id = |key: &str| content.metadata.get(key).and_then(value_as_u32);
    let tokens = content.metadata.get(KEY_TOKENS).and_then(|v| v.to_vec().ok());
    let text = |id: Option<u32>| -> Option<String> {
        let v = tokens?.get(id? as usize)?;
        v.to_string().ok().cloned()
    };
    let bos = id(KEY_BOS_ID);
    let eos = id(KEY_EOS_ID);
    SpecialTokens { bos, eos, pad: id(KEY_PAD_ID), eos_text: text(eos), bos_text: text(bos) }
}

/// The Jinja chat template (`tokenizer.chat_template`), if the GGUF has one.
pub fn chat_template_from_gguf(content: &Content) -> Option<String> {
    content.metadata.get(KEY_CHAT_TEMPLATE).and_then(|v| v.to_string().ok()).cloned()
}

fn get<'a>(content: &'a Content, key: &str) -> anyhow::Result<&'a Value> {
    content.metadata.get(key).ok_or_else(|| anyhow!("GGUF metadata is missing `{key}`"))
}

fn get_string<'a>(content: &'a Content, key: &str) -> anyhow::Result<&'a str> {
    let v = get(content, key)?;
    v.to_string().map(|s| s.as_str()).map_err(|e| anyhow!("GGUF metadata `{key}` is not a string: {e}"))
}

fn get_string_array<'a>(content: &'a Content, key: &str) -> anyhow::Result<Vec<&'a str>> {
    let v = get(content, key)?;
    let arr = v.to_vec().map_err(|e| anyhow!("GGUF metadata `{key}` is not an array: {e}"))?;
    arr.iter()
        .enumerate()
        .map(|(i, s)| {
            s.to_string().map(|s| s.as_str()).map_err(|e| anyhow!("GGUF metadata `{key}`[{i}] is not a string: {e}"))
        })
        .collect()
}

fn value_as_i64(v: &Value) -> Option<i64> {
    Some(match *v {
        Value::U8(x) => x.into(),
        Value::I8(x) => x.into(),
        Value::U16(x) => x.into(),
        Value::I16(x) => x.into(),
        Value::U32(x) => x.into(),
        Value::I32(x) => x.into(),
        Value::U64(x) => i64::try_from(x).ok()?,
        Value::I64(x) => x,
        _ => return None,
    })
}

fn value_as_u32(v: &Value) -> Option<u32> {
    value_as_i64(v).and_then(|x| u32::try_from(x).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::gguf_file::VersionedMagic;
    use std::collections::HashMap;

    /// GPT-2's byte -> char map (printable bytes map to themselves).
    fn byte_chars() -> Vec<char> {
        let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
        let mut cs = bs.clone();
        let mut n = 0;
        for b in 0..256u32 {
            if !bs.contains(&b) {
                bs.push(b);
                cs.push(256 + n);
                n += 1;
            }
        }
        let mut out = vec![' '; 256];
        for (b, c) in bs.iter().zip(cs) {
            out[*b as usize] = char::from_u32(c).unwrap();
        }
        out
    }

    fn strs(v: &[&str]) -> Value {
        Value::Array(v.iter().map(|s| Value::String((*s).to_owned())).collect())
    }

    /// A toy GGUF: 3 control tokens, the 256 byte tokens, a few merges, `<think>` (type 4).
    fn toy_content(pre: &str) -> Content {
        let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
        let mut types = vec![3i32, 3, 3];
        for c in byte_chars() {
            tokens.push(c.to_string());
            types.push(1);
        }
        let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"];
        for m in merges {
            tokens.push(m.replace(' ', ""));
            types.push(1);
        }
        tokens.push("<think>".into());
        types.push(4);
        tokens.push("hey!".into());
        types.push(4);

        let mut md = HashMap::new();
        md.insert(KEY_MODEL.to_owned(), Value::String("gpt2".into()));
        md.insert(KEY_PRE.to_owned(), Value::String(pre.into()));
        md.insert(KEY_TOKENS.to_owned(), Value::Array(tokens.into_iter().map(Value::String).collect()));
        md.insert(KEY_TOKEN_TYPE.to_owned(), Value::Array(types.into_iter().map(Value::I32).collect()));
        md.insert(KEY_MERGES.to_owned(), strs(&merges));
        md.insert(KEY_BOS_ID.to_owned(), Value::U32(1));
        md.insert(KEY_EOS_ID.to_owned(), Value::U32(2));
        md.insert(KEY_CHAT_TEMPLATE.to_owned(), Value::String("{{ messages }}".into()));
        Content { magic: VersionedMagic::GgufV3, metadata: md, tensor_infos: HashMap::new(), tensor_data_offset: 0 }
    }

    fn id_of(content: &Content, tok: &str) -> u32 {
        content.metadata[KEY_TOKENS].to_vec().unwrap().iter().position(|v| v.to_string().unwrap() == tok).unwrap()
            as u32
    }

    #[test]
    fn toy_smollm_encodes_and_roundtrips() {
        let c = toy_content("smollm");
        let tok = tokenizer_from_gguf(&c).unwrap();
        let enc = tok.encode("<|im_start|>hello world 123", false).unwrap();
        let ids = enc.get_ids();
        assert_eq!(ids[0], 1);
        assert_eq!(ids[1], id_of(&c, "hello"));
        assert_eq!(ids[2], id_of(&c, "Ġwo"));
        // Digits are isolated: " 123" -> "Ġ", "1", "2", "3".
        assert_eq!(&ids[ids.len() - 4..], &[id_of(&c, "Ġ"), id_of(&c, "1"), id_of(&c, "2"), id_of(&c, "3")]);
        assert_eq!(tok.decode(ids, false).unwrap(), "<|im_start|>hello world 123");
        assert_eq!(tok.decode(ids, true).unwrap(), "hello world 123");

        let text = "naïve café ✓ 日本\n\ttabs  and  spaces\r\n";
        let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }

    #[test]
    fn added_token_specialness() {
        let c = toy_content("qwen2");
        let tok = tokenizer_from_gguf(&c).unwrap();
        let think = id_of(&c, "<think>");
        let hey = id_of(&c, "hey!");
        let ids = tok.encode("<think>hey!<|im_end|>", false).unwrap().get_ids().to_vec();
        assert_eq!(ids, vec![think, hey, 2]);
        // <think> looks like a tag -> special; "hey!" is a plain added token.
        assert_eq!(tok.decode(&ids, true).unwrap(), "hey!");
        assert_eq!(tok.decode(&ids, false).unwrap(), "<think>hey!<|im_end|>");
    }

    #[test]
    fn all_supported_pre_tokenizers_build() {
        for pre in ["smollm", "qwen2", "deepseek-r1-qwen", "llama-bpe", "default", "gpt2"] {
            let tok = tokenizer_from_gguf(&toy_content(pre)).unwrap_or_else(|e| panic!("{pre}: {e:#}"));
            let text = "It's 2024!\n\n  hello   world's end";
            let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
            assert_eq!(tok.decode(&ids, false).unwrap(), text, "{pre}");
        }
    }

    #[test]
    fn llama3_groups_digits_by_three() {
        let tok = tokenizer_from_gguf(&toy_content("llama-bpe")).unwrap();
        let enc = tok.encode("1234567", false).unwrap();
        let words: Vec<_> = enc.get_offsets().iter().map(|o| o.0).collect();
        // no merges for digits, so 7 tokens; but the split regex grouped them 3/3/1
        assert_eq!(words.len(), 7);
        let pre = tok.get_pre_tokenizer().unwrap();
        use tokenizers::PreTokenizer;
        let mut pts = tokenizers::PreTokenizedString::from("1234567");
        pre.pre_tokenize(&mut pts).unwrap();
        let splits: Vec<_> = pts
            .get_splits(tokenizers::OffsetReferential::Original, tokenizers::OffsetType::Byte)
            .into_iter()
            .map(|(s, _, _)| s.to_owned())
            .collect();
        assert_eq!(splits, vec!["123", "456", "7"]);
    }

    #[test]
    fn unknown_pre_is_an_error() {
        let err = tokenizer_from_gguf(&toy_content("falcon")).unwrap_err();
        assert!(err.to_string().contains("\"falcon\""), "{err:#}");
        assert!(err.to_string().contains(KEY_PRE), "{err:#}");
    }

    #[test]
    fn non_bpe_model_is_an_error() {
        let mut c = toy_content("smollm");
        c.metadata.insert(KEY_MODEL.to_owned(), Value::String("llama".into()));
        let err = tokenizer_from_gguf(&c).unwrap_err();
        assert!(err.to_string().contains("\"llama\""), "{err:#}");
    }

    #[test]
    fn missing_keys_are_named() {
        for key in [KEY_MODEL, KEY_PRE, KEY_TOKENS, KEY_MERGES] {
            let mut c = toy_content("smollm");
            c.metadata.remove(key);
            let err = tokenizer_from_gguf(&c).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err:#}");
        }
    }

    #[test]
    fn bad_merge_is_an_error() {
        let mut c = toy_content("smollm");
        c.metadata.insert(KEY_MERGES.to_owned(), strs(&["h e", "nospace"]));
        let err = tokenizer_from_gguf(&c).unwrap_err();
        assert!(err.to_string().contains("nospace"), "{err:#}");
    }

    #[test]
    fn special_tokens_and_template() {
        let c = toy_content("smollm");
        let s = special_tokens_from_gguf(&c);
        assert_eq!(
            s,
            SpecialTokens {
                bos: Some(1),
                eos: Some(2),
                pad: None,
                eos_text: Some("<|im_end|>".into()),
                bos_text: Some("<|im_start|>".into()),
            }
        );
        assert_eq!(chat_template_from_gguf(&c).as_deref(), Some("{{ messages }}"));
        let mut c = c;
        c.metadata.remove(KEY_CHAT_TEMPLATE);
        assert_eq!(chat_template_from_gguf(&c), None);
    }
}
