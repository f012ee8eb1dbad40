//! Where a model comes from and what loading it gives: a `--model` value parsed into a source (an
//! HF-format directory, an HF hub id, a GGUF file, or the committed toy model), and the loaded
//! model with its tokenizer, chat template and stop tokens.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use tokenizers::Tokenizer;

use super::chat_template::ChatTemplate;
use super::gguf::load_gguf;
use super::hf::{load_hf, HfFiles};
use super::transformer::Transformer;

/// The name `--model` and manifests use for the committed toy model.
pub const BUILTIN_NAME: &str = "builtin:toy-chain";
/// Where the committed toy model lives, relative to the repository root.
pub const BUILTIN_DIR: &str = "assets/toy-chain";

/// The committed toy model's folder in this checkout.
pub fn builtin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(BUILTIN_DIR)
}

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
            if spec != BUILTIN_NAME {
                bail!("unknown built-in model '{name}' (there is one: {})", BUILTIN_NAME);
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

/// What turns a question into prompt tokens: the tokenizer and the chat template.
pub struct ModelText {
    pub tokenizer: Tokenizer,
    pub chat_template: Option<ChatTemplate>,
}

/// The text side of a loaded model or of a [`ModelText`] alone.
pub trait Prompting {
    fn tokenizer(&self) -> &Tokenizer;
    fn chat_template(&self) -> Option<&ChatTemplate>;
}

impl Prompting for ModelText {
    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }
}

impl Prompting for LoadedModel {
    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }
}

/// A model's [`ModelText`] without its weights (a plan's estimate counts prompt tokens with it): a
/// GGUF's metadata, a directory's tokenizer files, a hub model's from the local HF cache.
pub fn load_text(source: &ModelSource) -> Result<ModelText> {
    match source {
        ModelSource::Gguf { path } => super::gguf::read_gguf_text(path),
        ModelSource::HfDir { path } => super::hf::read_dir_text(path),
        ModelSource::Hub { repo, revision } => super::hf::read_cached_hub_text(repo, revision),
        ModelSource::BuiltIn { .. } => super::hf::read_dir_text(&builtin_dir()),
    }
    .with_context(|| format!("reading the tokenizer of {}", source.display()))
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

/// Encodes text whose special tokens are already spelled out (a rendered chat template): no BOS or
/// other post-processing is added again.
pub fn encode(tokenizer: &Tokenizer, text: &str) -> anyhow::Result<Vec<u32>> {
    let enc = tokenizer.encode(text, false).map_err(|e| anyhow::anyhow!("tokenizing the prompt: {e}"))?;
    Ok(enc.get_ids().to_vec())
}

/// The CUDA device `ordinal`, with per-tensor event tracking off: kvbench issues all GPU work on the
/// device's one stream, so the events that guard tensors shared across streams only cost host time.
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    let device = Device::new_cuda(ordinal)?;
    #[cfg(feature = "cuda")]
    // SAFETY: one stream: no tensor is used on a stream other than the one that allocated it.
    unsafe {
        device.as_cuda_device()?.disable_event_tracking()
    };
    Ok(device)
}

/// How a GGUF's quantized projection weights are held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum WeightFormat {
    /// Dequantized to the compute dtype at load: the arithmetic of HF transformers on the same
    /// weights (for parity).
    #[default]
    Dequantized,
    /// Kept quantized and multiplied with candle's quantized matmul (inputs quantized to 8 bits),
    /// as llama.cpp runs them: a quarter of the bytes read per token.
    Native,
}

impl WeightFormat {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Dequantized => "dequantized",
            Self::Native => "native",
        }
    }

    /// Native weights need a GGUF (checked when planning and again when loading).
    pub fn check(&self, source: &ModelSource) -> Result<()> {
        if *self == Self::Native && !matches!(source, ModelSource::Gguf { .. }) {
            bail!("--weights native needs a GGUF model; {} has no quantized weights", source.display());
        }
        Ok(())
    }
}

/// Numeric settings for loading: the device, the dtype weights are converted to, and whether a
/// GGUF's quantized weights stay quantized.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    pub dtype: DType,
    pub weights: WeightFormat,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { device: Device::Cpu, dtype: DType::F32, weights: WeightFormat::default() }
    }
}

pub fn load(source: &ModelSource, opts: &LoadOptions) -> Result<LoadedModel> {
    opts.weights.check(source)?;
    match source {
        ModelSource::Gguf { path } => load_gguf(source, path, opts),
        ModelSource::HfDir { path } => load_hf(source, &HfFiles::from_dir(path)?, opts),
        ModelSource::Hub { repo, revision } => load_hf(source, &HfFiles::from_hub(repo, revision)?, opts),
        ModelSource::BuiltIn { .. } => {
            let dir = builtin_dir();
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

#[cfg(test)]
mod tests {
    use super::*;

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
