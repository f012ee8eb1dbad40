//! HF-format models: the files of a model directory or a hub repository (downloaded through
//! hf-hub, or read from the local HF cache when offline), and loading them.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use candle_nn::VarBuilder;
use tokenizers::Tokenizer;

use super::chat_template::ChatTemplate;
use super::config::ModelConfig;
use super::source::{LoadOptions, LoadedModel, ModelSource, ModelText};
use super::transformer::Transformer;
use crate::io::hf_cache_dir;

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

pub(super) fn load_hf(source: &ModelSource, files: &HfFiles, opts: &LoadOptions) -> Result<LoadedModel> {
    let text = std::fs::read_to_string(&files.config).with_context(|| format!("reading {}", files.config.display()))?;
    let cfg = ModelConfig::from_hf_json(&text).with_context(|| format!("in {}", files.config.display()))?;
    let (text, eos_text_id) =
        read_text(&files.tokenizer, files.tokenizer_config.as_deref(), files.chat_template.as_deref())?;
    let ModelText { tokenizer, chat_template } = text;
    let mut eos = cfg.eos_token_ids.clone();
    eos.extend(eos_text_id);
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

/// The tokenizer and chat template of an HF model, and the id of tokenizer_config.json's
/// `eos_token`.
fn read_text(
    tokenizer: &Path,
    tokenizer_config: Option<&Path>,
    chat_template_file: Option<&Path>,
) -> Result<(ModelText, Option<u32>)> {
    let tokenizer =
        Tokenizer::from_file(tokenizer).map_err(|e| anyhow!("cannot read tokenizer {}: {e}", tokenizer.display()))?;
    let (mut bos, mut eos_text, mut template) = (None, None, None);
    if let Some(path) = tokenizer_config {
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
        template = match &tc["chat_template"] {
            serde_json::Value::String(s) => Some((s.clone(), path.to_path_buf())),
            // A list of named templates: use "default".
            serde_json::Value::Array(list) => list
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(|t| (t.to_string(), path.to_path_buf())),
            _ => None,
        };
    }
    if let (None, Some(path)) = (&template, chat_template_file) {
        template = Some((
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
            path.to_path_buf(),
        ));
    }
    let eos_id = eos_text.as_deref().and_then(|t| tokenizer.token_to_id(t));
    let chat_template = match template {
        Some((t, path)) => {
            Some(ChatTemplate::new(&t, bos, eos_text).with_context(|| format!("chat template of {}", path.display()))?)
        }
        None => None,
    };
    Ok((ModelText { tokenizer, chat_template }, eos_id))
}

/// The tokenizer and chat template of a model directory; its weights need not be there.
pub(super) fn read_dir_text(dir: &Path) -> Result<ModelText> {
    let tokenizer = dir.join("tokenizer.json");
    if !tokenizer.is_file() {
        bail!("tokenizer.json is missing from the model directory {}", dir.display());
    }
    let opt = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    Ok(read_text(&tokenizer, opt("tokenizer_config.json").as_deref(), opt(CHAT_TEMPLATE).as_deref())?.0)
}

/// The tokenizer and chat template of a hub model, from the local HF cache only (nothing is
/// downloaded for a plan's estimate).
pub(super) fn read_cached_hub_text(repo: &str, revision: &str) -> Result<ModelText> {
    let cached = CachedRepo { root: hf_cache_dir(), repo: repo.to_string(), revision: revision.to_string() };
    let tokenizer = cached
        .get("tokenizer.json")
        .with_context(|| format!("{repo}@{revision}'s tokenizer.json is not in the local HF cache"))?;
    let config = cached.get("tokenizer_config.json");
    Ok(read_text(&tokenizer, config.as_deref(), cached.get(CHAT_TEMPLATE).as_deref())?.0)
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
