//! GGUF files: the configuration from the metadata, weights renamed to the HF checkpoint's names
//! (llama.cpp's q/k permutation undone) and dequantized to float — or, with
//! [`WeightFormat::Native`], the quantized projection weights kept as they are — and the tokenizer
//! and chat template rebuilt from the metadata.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use std::sync::Arc;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use super::chat_template::ChatTemplate;
use super::config::{Arch, ModelConfig};
use super::gguf_tokenizer::{chat_template_from_gguf, special_tokens_from_gguf, tokenizer_from_gguf};
use super::source::{LoadOptions, LoadedModel, ModelSource, ModelText, WeightFormat};
use super::transformer::{QuantizedWeights, Transformer};

fn meta<'a>(content: &'a gguf_file::Content, key: &str) -> Result<&'a gguf_file::Value> {
    content.metadata.get(key).with_context(|| format!("GGUF metadata key '{key}' is missing"))
}

fn meta_usize(content: &gguf_file::Content, key: &str) -> Result<usize> {
    let v = meta(content, key)?;
    v.to_u32()
        .map(|x| x as usize)
        .or_else(|_| v.to_u64().map(|x| x as usize))
        .with_context(|| format!("GGUF metadata key '{key}' is not an integer"))
}

/// Reads the model configuration from GGUF metadata.
pub fn config_from_gguf(content: &gguf_file::Content) -> Result<ModelConfig> {
    let arch_name = meta(content, "general.architecture")?.to_string()?.clone();
    let arch = Arch::parse(&arch_name)?;
    let key = |k: &str| format!("{arch_name}.{k}");
    let num_heads = meta_usize(content, &key("attention.head_count"))?;
    let hidden_size = meta_usize(content, &key("embedding_length"))?;
    let vocab_size = match content.metadata.get("tokenizer.ggml.tokens") {
        Some(v) => v.to_vec()?.len(),
        None => meta_usize(content, &key("vocab_size"))?,
    };
    let head_dim = meta_usize(content, &key("attention.key_length")).unwrap_or(hidden_size / num_heads.max(1));
    let cfg = ModelConfig {
        arch,
        hidden_size,
        intermediate_size: meta_usize(content, &key("feed_forward_length"))?,
        vocab_size,
        num_layers: meta_usize(content, &key("block_count"))?,
        num_heads,
        num_kv_heads: meta_usize(content, &key("attention.head_count_kv")).unwrap_or(num_heads),
        head_dim,
        rms_norm_eps: meta(content, &key("attention.layer_norm_rms_epsilon"))?.to_f32()? as f64,
        rope_theta: content.metadata.get(&key("rope.freq_base")).and_then(|v| v.to_f32().ok()).unwrap_or(10_000.0)
            as f64,
        rope_scaling: None,
        max_position_embeddings: meta_usize(content, &key("context_length")).unwrap_or(4096),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        qkv_bias: content.tensor_infos.contains_key("blk.0.attn_q.bias"),
        qk_norm: arch == Arch::Qwen3,
        bos_token_id: content.metadata.get("tokenizer.ggml.bos_token_id").and_then(|v| v.to_u32().ok()),
        eos_token_ids: content
            .metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().ok())
            .into_iter()
            .collect(),
    };
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        bail!("GGUF files with a rope_freqs tensor (Llama 3 RoPE scaling) are not supported yet; load the HF checkpoint instead");
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Maps a GGUF tensor name to its HF checkpoint name.
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, kind) = rest.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_q_norm" => "self_attn.q_norm",
        "attn_k_norm" => "self_attn.k_norm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// llama.cpp's converter permutes Llama q/k rows for its interleaved RoPE; undo it so the weights
/// match the HF (half-split) convention: reshape (heads, 2, hd/2, in) ← (heads, hd/2, 2, in).
fn unpermute_qk(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let hd = out / heads;
    Ok(w.reshape((heads, hd / 2, 2, inp))?.transpose(1, 2)?.reshape((out, inp))?)
}

/// [`unpermute_qk`] for a quantized weight: the same row permutation, moving each row's bytes
/// (a row's blocks are contiguous, so rows move whole).
fn unpermute_qk_quantized(q: &QTensor, heads: usize) -> Result<QTensor> {
    let (out, inp) = q.shape().dims2()?;
    let hd = out / heads;
    let data = q.data()?;
    let row = data.len() / out;
    let mut bytes = Vec::with_capacity(data.len());
    for h in 0..heads {
        for a in 0..2 {
            for b in 0..hd / 2 {
                let src = h * hd + 2 * b + a;
                bytes.extend_from_slice(&data[src * row..(src + 1) * row]);
            }
        }
    }
    Ok(qtensor_from_ggml(q.dtype(), &bytes, vec![out, inp], &Device::Cpu)?)
}

/// GGML types whose weights candle's quantized matmul multiplies (Q8_1 and Q8_K are its input
/// formats, with no weight kernels).
fn multipliable(dtype: GgmlDType) -> bool {
    use GgmlDType::*;
    matches!(dtype, Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K)
}

/// Whether a tensor is a projection weight (or the output head) that the native path keeps quantized.
fn is_projection(hf: &str) -> bool {
    hf == "lm_head.weight" || hf.ends_with("_proj.weight")
}

/// The error for a GGUF candle cannot read: a tensor type it does not know is named.
fn unreadable(path: &Path, e: &candle_core::Error) -> anyhow::Error {
    // The first line: with RUST_BACKTRACE set, candle appends a backtrace to the message.
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    let code = first.strip_prefix("unknown dtype for tensor ").and_then(|c| c.trim().parse::<u32>().ok());
    match code {
        Some(code) => {
            let name = match code {
                16 => "IQ2_XXS",
                17 => "IQ2_XS",
                18 => "IQ3_XXS",
                19 => "IQ1_S",
                20 => "IQ4_NL",
                21 => "IQ3_S",
                22 => "IQ2_S",
                23 => "IQ4_XS",
                24..=27 => "an integer type",
                28 => "F64",
                29 => "IQ1_M",
                34 => "TQ1_0",
                35 => "TQ2_0",
                _ => "unknown",
            };
            anyhow!(
                "{} holds tensors of GGML type {code} ({name}), which candle cannot read; use a GGUF \
                 quantized as Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K–Q6_K, F16 or F32",
                path.display()
            )
        }
        None => anyhow!("{} is not a readable GGUF file (truncated or corrupt?): {e}", path.display()),
    }
}

/// The tokenizer and chat template of a GGUF, from its metadata alone (no tensor is read).
pub(super) fn read_gguf_text(path: &Path) -> Result<ModelText> {
    let mut file = File::open(path).with_context(|| format!("cannot open model file {}", path.display()))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| unreadable(path, &e))?;
    text_from_gguf(&content)
}

fn text_from_gguf(content: &gguf_file::Content) -> Result<ModelText> {
    let special = special_tokens_from_gguf(content);
    let chat_template = match chat_template_from_gguf(content) {
        Some(t) => {
            Some(ChatTemplate::new(&t, special.bos_text, special.eos_text).context("chat template in the GGUF")?)
        }
        None => None,
    };
    Ok(ModelText { tokenizer: tokenizer_from_gguf(content)?, chat_template })
}

pub(super) fn load_gguf(source: &ModelSource, path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let mut file = File::open(path).with_context(|| format!("cannot open model file {}", path.display()))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| unreadable(path, &e))?;
    let file_len = file.metadata()?.len();
    for (name, info) in &content.tensor_infos {
        let bytes = info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        let end = content.tensor_data_offset + info.offset + bytes as u64;
        if end > file_len {
            bail!("{} is truncated: tensor '{name}' ends at byte {end}, the file has {file_len}", path.display());
        }
    }
    let cfg = config_from_gguf(&content)?;
    let special = special_tokens_from_gguf(&content);
    let ModelText { tokenizer, chat_template } = text_from_gguf(&content)?;
    let native = opts.weights == WeightFormat::Native;
    let mut tensors = HashMap::new();
    let mut quantized = QuantizedWeights::new();
    for (name, info) in &content.tensor_infos {
        let Some(hf) = hf_name(name) else { continue };
        let dtype = info.ggml_dtype;
        let keep = native && !matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        let tied_head = cfg.tie_word_embeddings && hf == "model.embed_tokens.weight";
        if keep && (is_projection(&hf) || tied_head) && !multipliable(dtype) {
            bail!(
                "{}: tensor '{name}' is {dtype:?}, which --weights native cannot multiply (Q4_0, Q4_1, Q5_0, \
                 Q5_1, Q8_0 and Q2_K to Q6_K can); use --weights dequantized",
                path.display()
            );
        }
        let q = content.tensor(&mut file, name, &Device::Cpu).with_context(|| format!("reading tensor {name}"))?;
        let heads = match hf.as_str() {
            h if cfg.arch == Arch::Llama && h.ends_with("q_proj.weight") => Some(cfg.num_heads),
            h if cfg.arch == Arch::Llama && h.ends_with("k_proj.weight") => Some(cfg.num_kv_heads),
            _ => None,
        };
        if keep && is_projection(&hf) {
            let q = match heads {
                Some(heads) => unpermute_qk_quantized(&q, heads)?,
                None => q,
            };
            quantized.insert(hf, Arc::new(q));
            continue;
        }
        let mut t = q.dequantize(&Device::Cpu)?;
        if keep && tied_head {
            // The tied output head stays quantized; the embedding lookup reads the dequantized copy.
            quantized.insert("lm_head.weight".to_string(), Arc::new(q));
        }
        if let Some(heads) = heads {
            t = unpermute_qk(&t, heads)?;
        }
        tensors.insert(hf, t.to_dtype(opts.dtype)?.to_device(&opts.device)?);
    }
    let vb = VarBuilder::from_tensors(tensors, opts.dtype, &opts.device);
    let model = Transformer::load_with(&cfg, vb, &quantized)?;
    let mut eos = cfg.eos_token_ids.clone();
    eos.extend(special.eos);
    eos.sort_unstable();
    eos.dedup();
    Ok(LoadedModel {
        source: source.clone(),
        model,
        tokenizer,
        chat_template,
        eos_token_ids: eos,
        bos_token_id: special.bos.or(cfg.bos_token_id),
        files: vec![path.to_path_buf()],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hf_names() {
        assert_eq!(hf_name("blk.3.attn_q.bias").unwrap(), "model.layers.3.self_attn.q_proj.bias");
        assert_eq!(hf_name("blk.12.ffn_down.weight").unwrap(), "model.layers.12.mlp.down_proj.weight");
        assert_eq!(hf_name("token_embd.weight").unwrap(), "model.embed_tokens.weight");
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: reshape(heads, 2, hd/2, in).swapaxes(1, 2).
        let (heads, hd, inp) = (2, 4, 3);
        let w =
            Tensor::arange(0f32, (heads * hd * inp) as f32, &Device::Cpu).unwrap().reshape((heads * hd, inp)).unwrap();
        let permuted =
            w.reshape((heads, 2, hd / 2, inp)).unwrap().transpose(1, 2).unwrap().reshape((heads * hd, inp)).unwrap();
        let back = unpermute_qk(&permuted, heads).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    }

    /// A quantized weight's rows move as the dequantized weight's rows do, bit for bit.
    #[test]
    fn quantized_unpermute_moves_the_rows_of_the_dequantized_one() {
        let (heads, hd, inp) = (3, 8, 256);
        let w = Tensor::randn(0f32, 1.0, (heads * hd, inp), &Device::Cpu).unwrap();
        for dtype in [GgmlDType::Q4K, GgmlDType::Q8_0, GgmlDType::Q4_1] {
            let q = QTensor::quantize(&w, dtype).unwrap();
            let want = unpermute_qk(&q.dequantize(&Device::Cpu).unwrap(), heads).unwrap();
            let got = unpermute_qk_quantized(&q, heads).unwrap().dequantize(&Device::Cpu).unwrap();
            assert_eq!(got.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap(), "{dtype:?}");
        }
    }
}
