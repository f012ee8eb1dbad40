//! Finding and loading a model: an HF-format directory, an HF hub id (downloaded through hf-hub, or
//! resolved from the local HF cache when offline), or a GGUF file (weights dequantized to float,
//! tokenizer and chat template rebuilt from the GGUF metadata).

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use super::config::{Arch, ModelConfig};
use super::transformer::Transformer;
use crate::chat::ChatTemplate;

/// Where a model comes from, as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ModelSource {
    Gguf {
        path: PathBuf,
    },
    HfDir {
        path: PathBuf,
    },
    Hub {
        repo: String,
        revision: String,
    },
    /// The committed toy model (`builtin:toy-chain`, an HF folder in this checkout).
    BuiltIn {
        name: String,
    },
}

impl ModelSource {
    /// `*.gguf` → a GGUF file; an existing directory → an HF directory; `owner/name[@revision]` →
    /// the hub. Existence of local files is checked here, before any weight is read.
    pub fn parse(spec: &str) -> Result<Self> {
        if let Some(name) = spec.strip_prefix("builtin:") {
            if spec != crate::toy::BUILTIN_NAME {
                bail!("unknown built-in model '{name}' (there is one: {})", crate::toy::BUILTIN_NAME);
            }
            return Ok(ModelSource::BuiltIn { name: name.to_string() });
        }
        let path = Path::new(spec);
        if spec.ends_with(".gguf") {
            if !path.is_file() {
                bail!("model file not found: {spec}");
            }
            return Ok(ModelSource::Gguf { path: path.to_path_buf() });
        }
        if path.is_dir() {
            return Ok(ModelSource::HfDir { path: path.to_path_buf() });
        }
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) => (r, rev),
            None => (spec, "main"),
        };
        let looks_like_hub = repo.split('/').count() == 2
            && !repo.starts_with(['.', '/', '~'])
            && repo.split('/').all(|p| !p.is_empty())
            && !revision.is_empty();
        if looks_like_hub && !path.exists() {
            return Ok(ModelSource::Hub { repo: repo.to_string(), revision: revision.to_string() });
        }
        bail!("model '{spec}' is neither a .gguf file, an HF model directory, nor a hub id (owner/name[@revision])")
    }

    pub fn display(&self) -> String {
        match self {
            ModelSource::Gguf { path } | ModelSource::HfDir { path } => path.display().to_string(),
            ModelSource::Hub { repo, revision } => format!("{repo}@{revision}"),
            ModelSource::BuiltIn { name } => format!("builtin:{name}"),
        }
    }
}

/// Everything needed to prompt and decode: weights, tokenizer, template, stop tokens.
pub struct LoadedModel {
    pub source: ModelSource,
    pub model: Transformer,
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
    /// Token ids that end generation.
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    /// Files the model was read from (for provenance).
    pub files: Vec<PathBuf>,
}

impl LoadedModel {
    /// The text of generated tokens: special tokens stay (`</think>` matters), a final stop token
    /// does not.
    pub fn completion(&self, tokens: &[u32]) -> Result<String> {
        let shown = match tokens.last() {
            Some(t) if self.eos_token_ids.contains(t) => &tokens[..tokens.len() - 1],
            _ => tokens,
        };
        self.tokenizer.decode(shown, false).map_err(|e| anyhow::anyhow!("decoding the completion: {e}"))
    }
}

/// Numeric settings for loading: the device and the dtype weights are converted to.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    pub dtype: DType,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { device: Device::Cpu, dtype: DType::F32 }
    }
}

pub fn load(source: &ModelSource, opts: &LoadOptions) -> Result<LoadedModel> {
    match source {
        ModelSource::Gguf { path } => load_gguf(source, path, opts),
        ModelSource::HfDir { path } => load_hf(source, &HfFiles::from_dir(path)?, opts),
        ModelSource::Hub { repo, revision } => load_hf(source, &HfFiles::from_hub(repo, revision)?, opts),
        ModelSource::BuiltIn { .. } => {
            let dir = crate::toy::builtin_dir();
            let files = HfFiles::from_dir(&dir).with_context(|| {
                format!(
                    "the built-in model is missing from this checkout (make it with `kvbench train-toy --out {}`)",
                    dir.display()
                )
            })?;
            load_hf(source, &files, opts)
        }
    }
    .with_context(|| format!("loading model {}", source.display()))
}

/// The files of an HF-format model.
#[derive(Debug)]
pub struct HfFiles {
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub tokenizer_config: Option<PathBuf>,
    pub generation_config: Option<PathBuf>,
    /// `chat_template.jinja`: where newer checkpoints keep the template (tokenizer_config.json's
    /// `chat_template`, when present, wins, as in `transformers`).
    pub chat_template: Option<PathBuf>,
    pub weights: Vec<PathBuf>,
}

const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
const CHAT_TEMPLATE: &str = "chat_template.jinja";

impl HfFiles {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let need = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                bail!("{} is missing from the model directory {}", name, dir.display())
            }
        };
        let opt = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
        let weights = if dir.join(WEIGHTS_INDEX).is_file() {
            shard_names(&dir.join(WEIGHTS_INDEX))?.iter().map(|n| need(n)).collect::<Result<Vec<_>>>()?
        } else {
            vec![need("model.safetensors")?]
        };
        Ok(Self {
            config: need("config.json")?,
            tokenizer: need("tokenizer.json")?,
            tokenizer_config: opt("tokenizer_config.json"),
            generation_config: opt("generation_config.json"),
            chat_template: opt(CHAT_TEMPLATE),
            weights,
        })
    }

    /// Resolves a hub model: downloads with network, or reads the local HF cache when
    /// `HF_HUB_OFFLINE=1` or the hub cannot be reached, naming every file that is missing.
    pub fn from_hub(repo: &str, revision: &str) -> Result<Self> {
        let cache_dir = hf_cache_dir();
        let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        type Fetch = Box<dyn FnMut(&str) -> Result<PathBuf>>;
        let mut fetch: Fetch = if offline {
            let cached = CachedRepo { root: cache_dir.clone(), repo: repo.to_string(), revision: revision.to_string() };
            Box::new(move |name| cached.get(name).ok_or_else(|| anyhow!("not in the local cache")))
        } else {
            let api = hf_hub::api::sync::ApiBuilder::new()
                .with_cache_dir(cache_dir.clone())
                .with_progress(true)
                .build()
                .context("starting the HF hub client")?;
            let api_repo =
                api.repo(hf_hub::Repo::with_revision(repo.to_string(), hf_hub::RepoType::Model, revision.to_string()));
            let cached = CachedRepo { root: cache_dir.clone(), repo: repo.to_string(), revision: revision.to_string() };
            Box::new(move |name| match api_repo.get(name) {
                Ok(p) => Ok(p),
                Err(e) => cached.get(name).ok_or_else(|| anyhow!("download failed ({e}) and not in the local cache")),
            })
        };
        let mut missing = Vec::new();
        let mut get = |name: &str, required: bool| -> Option<PathBuf> {
            match fetch(name) {
                Ok(p) => Some(p),
                Err(e) => {
                    if required {
                        missing.push(format!("{name}: {e}"));
                    }
                    None
                }
            }
        };
        let config = get("config.json", true);
        let tokenizer = get("tokenizer.json", true);
        let tokenizer_config = get("tokenizer_config.json", false);
        let generation_config = get("generation_config.json", false);
        let chat_template = get(CHAT_TEMPLATE, false);
        let weights = match get(WEIGHTS_INDEX, false) {
            Some(index) => shard_names(&index)?.iter().filter_map(|n| get(n, true)).collect(),
            None => get("model.safetensors", true).into_iter().collect(),
        };
        if !missing.is_empty() {
            bail!(
                "model {repo}@{revision} is incomplete in the HF cache {}{}:\n  {}",
                cache_dir.display(),
                if offline { " (HF_HUB_OFFLINE=1)" } else { "" },
                missing.join("\n  ")
            );
        }
        Ok(Self {
            config: config.expect("checked"),
            tokenizer: tokenizer.expect("checked"),
            tokenizer_config,
            generation_config,
            chat_template,
            weights,
        })
    }
}

/// The HF hub cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_cache_dir() -> PathBuf {
    if let Ok(p) = std::env::var("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    hf_hub::Cache::from_env().path().clone()
}

/// A repository in the HF cache layout: `models--owner--name/{refs/REV, snapshots/COMMIT/FILE}`.
struct CachedRepo {
    root: PathBuf,
    repo: String,
    revision: String,
}

impl CachedRepo {
    fn get(&self, name: &str) -> Option<PathBuf> {
        let base = self.root.join(format!("models--{}", self.repo.replace('/', "--")));
        let commit = std::fs::read_to_string(base.join("refs").join(&self.revision))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| self.revision.clone());
        Some(base.join("snapshots").join(commit).join(name)).filter(|p| p.is_file())
    }
}

fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).with_context(|| format!("reading {}", index.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
    let map = v["weight_map"].as_object().with_context(|| format!("{} has no weight_map", index.display()))?;
    let mut names: Vec<String> = map.values().filter_map(|s| s.as_str().map(String::from)).collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn load_hf(source: &ModelSource, files: &HfFiles, opts: &LoadOptions) -> Result<LoadedModel> {
    let text = std::fs::read_to_string(&files.config).with_context(|| format!("reading {}", files.config.display()))?;
    let cfg = ModelConfig::from_hf_json(&text).with_context(|| format!("in {}", files.config.display()))?;
    let tokenizer = Tokenizer::from_file(&files.tokenizer)
        .map_err(|e| anyhow!("cannot read tokenizer {}: {e}", files.tokenizer.display()))?;
    let mut eos = cfg.eos_token_ids.clone();
    let mut chat_template = None;
    let (mut bos, mut eos_text, mut template) = (None, None, None);
    if let Some(path) = &files.tokenizer_config {
        let tc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        let token_text = |key: &str| -> Option<String> {
            match &tc[key] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
                _ => None,
            }
        };
        (bos, eos_text) = (token_text("bos_token"), token_text("eos_token"));
        if let Some(id) = eos_text.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
            eos.push(id);
        }
        template = match &tc["chat_template"] {
            serde_json::Value::String(s) => Some((s.clone(), path.clone())),
            // A list of named templates: use "default".
            serde_json::Value::Array(list) => list
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(|t| (t.to_string(), path.clone())),
            _ => None,
        };
    }
    if let (None, Some(path)) = (&template, &files.chat_template) {
        template =
            Some((std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?, path.clone()));
    }
    if let Some((t, path)) = template {
        chat_template =
            Some(ChatTemplate::new(&t, bos, eos_text).with_context(|| format!("chat template of {}", path.display()))?);
    }
    if let Some(path) = &files.generation_config {
        let gc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        if let Ok(ids) = serde_json::from_value::<super::config::OneOrMany>(gc["eos_token_id"].clone()) {
            eos.extend(ids.into_vec());
        }
    }
    eos.sort_unstable();
    eos.dedup();
    for w in &files.weights {
        check_safetensors(w)?;
    }
    // SAFETY: the files are memory-mapped read-only; kvbench never writes model files.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files.weights, opts.dtype, &opts.device)? };
    let model = Transformer::load(&cfg, vb)?;
    let mut all_files = vec![files.config.clone(), files.tokenizer.clone()];
    all_files.extend(files.tokenizer_config.clone());
    all_files.extend(files.weights.iter().cloned());
    let bos_token_id = cfg.bos_token_id;
    Ok(LoadedModel {
        source: source.clone(),
        model,
        tokenizer,
        chat_template,
        eos_token_ids: eos,
        bos_token_id,
        files: all_files,
    })
}

/// Validates a safetensors header against the file length before the file is memory-mapped, so a
/// truncated file is an error naming it rather than a fault. Reads only the header.
fn check_safetensors(path: &Path) -> Result<()> {
    use std::io::Read;
    let bad = |why: String| anyhow!("{} is not a valid safetensors file: {why}", path.display());
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let file_len = f.metadata()?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| bad("shorter than its 8-byte header length".into()))?;
    let n = u64::from_le_bytes(n);
    if n > file_len.saturating_sub(8) || n > 100_000_000 {
        return Err(bad(format!("header length {n} exceeds the file ({file_len} bytes)")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|_| bad("truncated header".into()))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON ({e})")))?;
    let data_end = header
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| *k != "__metadata__")
                .filter_map(|(_, v)| v["data_offsets"][1].as_u64())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    if 8 + n + data_end > file_len {
        return Err(bad(format!("truncated: tensor data needs {} bytes, the file has {file_len}", 8 + n + data_end)));
    }
    Ok(())
}

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

fn load_gguf(source: &ModelSource, path: &Path, opts: &LoadOptions) -> Result<LoadedModel> {
    let mut file = File::open(path).with_context(|| format!("cannot open model file {}", path.display()))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| anyhow!("{} is not a readable GGUF file (truncated or corrupt?): {e}", path.display()))?;
    let file_len = file.metadata()?.len();
    for (name, info) in &content.tensor_infos {
        let bytes = info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        let end = content.tensor_data_offset + info.offset + bytes as u64;
        if end > file_len {
            bail!("{} is truncated: tensor '{name}' ends at byte {end}, the file has {file_len}", path.display());
        }
    }
    let cfg = config_from_gguf(&content)?;
    let tokenizer = crate::tokenizer::tokenizer_from_gguf(&content)?;
    let special = crate::tokenizer::special_tokens_from_gguf(&content);
    let chat_template = match crate::tokenizer::chat_template_from_gguf(&content) {
        Some(t) => Some(
            ChatTemplate::new(&t, special.bos_text.clone(), special.eos_text.clone())
                .context("chat template in the GGUF")?,
        ),
        None => None,
    };
    let mut tensors = HashMap::new();
    for name in content.tensor_infos.keys() {
        let Some(hf) = hf_name(name) else { continue };
        let q = content.tensor(&mut file, name, &Device::Cpu).with_context(|| format!("reading tensor {name}"))?;
        let mut t = q.dequantize(&Device::Cpu)?;
        if cfg.arch == Arch::Llama && hf.ends_with("q_proj.weight") {
            t = unpermute_qk(&t, cfg.num_heads)?;
        } else if cfg.arch == Arch::Llama && hf.ends_with("k_proj.weight") {
            t = unpermute_qk(&t, cfg.num_kv_heads)?;
        }
        tensors.insert(hf, t.to_dtype(opts.dtype)?.to_device(&opts.device)?);
    }
    let vb = VarBuilder::from_tensors(tensors, opts.dtype, &opts.device);
    let model = Transformer::load(&cfg, vb)?;
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

    #[test]
    fn sources_parse() {
        assert!(
            matches!(ModelSource::parse("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B").unwrap(), ModelSource::Hub { revision, .. } if revision == "main")
        );
        assert!(
            matches!(ModelSource::parse("org/model@abc123").unwrap(), ModelSource::Hub { revision, .. } if revision == "abc123")
        );
        let err = ModelSource::parse("/nonexistent/model.gguf").unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
        assert!(ModelSource::parse("./nowhere").is_err());
    }
}
