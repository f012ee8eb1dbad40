//! Evaluation datasets: small definitions in `datasets/*.toml` (embedded in the binary) say where
//! a set's JSONL lives, which fields hold the question and the answer, and the set's quirks. Rows
//! load from a local folder (`--data-dir`, default `$KVBENCH_DATA_DIR`) or, for sets with a hub
//! source, from the HF hub; a malformed line is an error naming the file and line.

pub mod synthetic;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const DEFINITIONS: [(&str, &str); 11] = [
    ("gsm8k", include_str!("../../datasets/gsm8k.toml")),
    ("gsm8k-train", include_str!("../../datasets/gsm8k-train.toml")),
    ("math500", include_str!("../../datasets/math500.toml")),
    ("aime24", include_str!("../../datasets/aime24.toml")),
    ("aime25", include_str!("../../datasets/aime25.toml")),
    ("amc23", include_str!("../../datasets/amc23.toml")),
    ("gaokao2023en", include_str!("../../datasets/gaokao2023en.toml")),
    ("gpqa_diamond", include_str!("../../datasets/gpqa_diamond.toml")),
    ("math", include_str!("../../datasets/math.toml")),
    ("synthetic-chain", include_str!("../../datasets/synthetic-chain.toml")),
    ("synthetic-chain-train", include_str!("../../datasets/synthetic-chain-train.toml")),
];

/// How the answer field encodes the reference answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerFormat {
    /// A worked solution ending in `#### N` (GSM8K).
    Gsm8k,
    /// A solution whose last `\boxed{}` is the answer (MATH).
    LastBoxed,
    /// An integer, possibly zero-padded (AIME).
    Integer,
    /// A number, possibly a float like `27.0` (AMC).
    Number,
    /// A LaTeX expression.
    Latex,
    /// A choice letter.
    Letter,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetDef {
    pub name: String,
    pub description: String,
    /// Path of the JSONL file under the data folder (empty for generated sets).
    #[serde(default)]
    pub file: String,
    /// A set kvbench generates itself from a seed (no file).
    #[serde(default)]
    pub generator: Option<crate::data::synthetic::ChainParams>,
    /// Field names tried in order for the question text.
    pub question_fields: Vec<String>,
    pub answer_field: String,
    pub answer_format: AnswerFormat,
    /// `numeric`, `math` or `multiple_choice` (the grader's mode).
    pub answer_kind: String,
    /// A stable id field; the 0-based line number otherwise.
    #[serde(default)]
    pub id_field: Option<String>,
    /// Map U+000C back to `\f` (a mis-escaped `\frac`).
    #[serde(default)]
    pub fix_form_feeds: bool,
    #[serde(default)]
    pub rows: Option<usize>,
    #[serde(default)]
    pub sha256: Option<String>,
    pub source: String,
    #[serde(default)]
    pub hub_repo: Option<String>,
    #[serde(default)]
    pub hub_file: Option<String>,
    /// Evaluation sets whose questions this one also holds: dropped where it serves as a training
    /// pool (`kvbench dynts collect --solutions`).
    #[serde(default)]
    pub disjoint_from: Vec<String>,
}

/// One question of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Question {
    /// 0-based line index in the file: the stable key of a question.
    pub index: usize,
    pub id: String,
    pub question: String,
    /// The answer field as stored (before the grader's normalisation).
    pub reference: String,
}

pub fn definitions() -> Result<Vec<DatasetDef>> {
    DEFINITIONS.iter().map(|(n, t)| toml::from_str(t).with_context(|| format!("dataset definition {n}"))).collect()
}

pub fn definition(name: &str) -> Result<DatasetDef> {
    match DEFINITIONS.iter().find(|(n, _)| *n == name) {
        Some((n, t)) => toml::from_str(t).with_context(|| format!("dataset definition {n}")),
        None => bail!(
            "unknown dataset '{name}' (known: {})",
            DEFINITIONS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The data folder: `--data-dir`, else `$KVBENCH_DATA_DIR`, else `../shared/datasets`.
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(d) = flag {
        return d.to_path_buf();
    }
    std::env::var("KVBENCH_DATA_DIR").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("../shared/datasets"))
}

impl DatasetDef {
    /// The local file, or (for sets with a hub source) the file fetched into the HF cache.
    pub fn resolve_file(&self, data_dir: &Path) -> Result<PathBuf> {
        let local = data_dir.join(&self.file);
        if local.is_file() {
            return Ok(local);
        }
        if let (Some(repo), Some(file)) = (&self.hub_repo, &self.hub_file) {
            if std::env::var("HF_HUB_OFFLINE").is_err() {
                let api = hf_hub::api::sync::ApiBuilder::new()
                    .with_cache_dir(crate::io::hf_cache_dir())
                    .build()
                    .context("starting the HF hub client")?;
                if let Ok(p) = api.dataset(repo.clone()).get(file) {
                    return Ok(p);
                }
            }
        }
        bail!(
            "dataset {} not found at {} (set --data-dir or KVBENCH_DATA_DIR{})",
            self.name,
            local.display(),
            if self.hub_repo.is_some() { ", or allow hub downloads" } else { "" }
        )
    }

    /// Loads every row, checking fields; errors name the file and the 1-based line.
    pub fn load(&self, data_dir: &Path) -> Result<Vec<Question>> {
        if let Some(params) = &self.generator {
            params.validate().with_context(|| format!("dataset {}", self.name))?;
            return Ok(crate::data::synthetic::questions(params));
        }
        let path = self.resolve_file(data_dir)?;
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = || format!("{}:{}", path.display(), i + 1);
            let row: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("{}: malformed JSON line", at()))?;
            let question = self
                .question_fields
                .iter()
                .find_map(|f| row.get(f).and_then(|v| v.as_str()))
                .with_context(|| format!("{}: no question field ({})", at(), self.question_fields.join(" or ")))?;
            let answer = match row.get(&self.answer_field) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => bail!("{}: missing answer field '{}'", at(), self.answer_field),
            };
            let mut question = question.to_string();
            if self.fix_form_feeds {
                question = question.replace('\u{c}', "\\f");
            }
            let id = match self.id_field.as_ref().and_then(|f| row.get(f)) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => out.len().to_string(),
            };
            out.push(Question { index: out.len(), id, question, reference: answer });
        }
        if out.is_empty() {
            bail!("{} holds no rows", path.display());
        }
        Ok(out)
    }

    /// SHA-256 of the file the rows came from, or of a generated set's rows as JSONL (provenance).
    pub fn file_sha256(&self, data_dir: &Path) -> Result<String> {
        if self.generator.is_some() {
            let mut h = Sha256::new();
            for q in self.load(data_dir)? {
                h.update(serde_json::to_string(&q)?.as_bytes());
                h.update(b"\n");
            }
            return Ok(format!("{:x}", h.finalize()));
        }
        let path = self.resolve_file(data_dir)?;
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(format!("{:x}", Sha256::digest(&bytes)))
    }
}

/// Deterministic selection: `ids` (question indices) if given, else the first `limit` rows.
pub fn select(questions: Vec<Question>, limit: Option<usize>, ids: Option<&[usize]>) -> Result<Vec<Question>> {
    if let Some(ids) = ids {
        let n = questions.len();
        return ids
            .iter()
            .map(|&i| {
                questions.get(i).cloned().with_context(|| format!("--ids: question {i} is out of range (0..{n})"))
            })
            .collect();
    }
    Ok(match limit {
        Some(l) => questions.into_iter().take(l).collect(),
        None => questions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_definition_parses() {
        let defs = definitions().unwrap();
        // Every file of datasets/ is embedded, under its own name.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().to_string())
            .collect();
        files.sort();
        let mut names: Vec<String> = defs.iter().map(|d| d.name.clone()).collect();
        names.sort();
        assert_eq!(names, files);
        assert!(definition("nope").unwrap_err().to_string().contains("unknown dataset 'nope'"));
    }

    #[test]
    fn malformed_lines_are_named() {
        let dir = std::env::temp_dir().join(format!("kvbench-ds-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("gsm8k")).unwrap();
        std::fs::write(dir.join("gsm8k/test.jsonl"), "{\"question\":\"a\",\"answer\":\"#### 1\"}\n{oops\n").unwrap();
        let err = format!("{:#}", definition("gsm8k").unwrap().load(&dir).unwrap_err());
        assert!(err.contains("test.jsonl:2") && err.contains("malformed"), "{err}");
        std::fs::write(dir.join("gsm8k/test.jsonl"), "{\"q\":\"a\",\"answer\":\"#### 1\"}\n").unwrap();
        let err = format!("{:#}", definition("gsm8k").unwrap().load(&dir).unwrap_err());
        assert!(err.contains("test.jsonl:1") && err.contains("question"), "{err}");
    }
}
