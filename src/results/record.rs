//! What a results folder holds besides its summary: `samples.jsonl`, one finished sample a line,
//! appended and flushed as each finishes (a torn last line is cut off on reading), and
//! `manifest.json`, the plan and provenance that wrote the folder.

use std::fs::OpenOptions;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::decode::generate::StopReason;
use crate::plan::{Plan, Shard};

/// One finished sample, as a line of `samples.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub key: String,
    pub dataset: String,
    pub question_index: usize,
    pub question_id: String,
    pub policy: String,
    /// B, or 0 for the full cache.
    pub budget: usize,
    pub window: usize,
    pub ratio: f64,
    pub sample: usize,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub stop: StopReason,
    pub think_closed: bool,
    pub truncated: bool,
    pub completion: String,
    pub extracted: Option<String>,
    pub extraction: String,
    pub reference: String,
    pub correct: bool,
    pub reason: String,
    pub peak_kv: usize,
    pub mean_kv: f64,
    pub kv_footprint: u64,
    pub evictions: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
    pub policy_secs: f64,
}

/// Reads finished samples, cutting off a torn last line (a crash mid-write).
pub fn read_samples(path: &Path) -> Result<Vec<SampleRecord>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let good = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None => 0,
    };
    if good < bytes.len() {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(good as u64)?;
        eprintln!("repaired {}: dropped a torn last line ({} bytes)", path.display(), bytes.len() - good);
    }
    let text = std::str::from_utf8(&bytes[..good]).with_context(|| format!("{} is not UTF-8", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}: malformed sample line", path.display(), i + 1))
        })
        .collect()
}

/// A results folder's `manifest.json`: what wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub plan: Plan,
    /// The part of the plan this folder holds; `None` = all of it.
    pub shard: Option<Shard>,
    /// Shard folders merged into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    #[serde(flatten)]
    pub provenance: serde_json::Map<String, serde_json::Value>,
}

pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join("manifest.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?))
}

/// The fields in which two plans differ, by name.
pub fn plan_differences(a: &Plan, b: &Plan) -> Result<Vec<String>> {
    let (a, b) = (serde_json::to_value(a)?, serde_json::to_value(b)?);
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { bail!("a plan is not a JSON object") };
    Ok(a.iter().filter(|(k, v)| b.get(k.as_str()) != Some(v)).map(|(k, _)| k.clone()).collect())
}

/// A folder with a manifest belongs to its plan and shard: anything else is refused.
pub fn check_manifest(out: &Path, plan: &Plan, shard: Option<Shard>) -> Result<()> {
    let Some(m) = read_manifest(out)? else { return Ok(()) };
    let differing = plan_differences(plan, &m.plan)?;
    if !differing.is_empty() {
        bail!(
            "results folder {} was written by a different plan (differs in: {}); use another --out",
            out.display(),
            differing.join(", ")
        );
    }
    if m.shard != shard {
        let show = |s: Option<Shard>| s.map_or("the whole plan".to_string(), |s| format!("shard {s}"));
        bail!("results folder {} holds {}, not {}; use another --out", out.display(), show(m.shard), show(shard));
    }
    Ok(())
}
