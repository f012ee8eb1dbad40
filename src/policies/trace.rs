//! The eviction trace: one JSON line per eviction event, appended and flushed as it happens, so a
//! user can see what a policy kept (and a test can check it).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::Serialize;

/// One eviction. `layer` is `"all"` for a shared selection, else the layer index (per-head
/// selections write one line per layer, `kept_positions` then holding one list per KV head).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct TraceEvent {
    pub sample: String,
    pub layer: serde_json::Value,
    /// Decode step after whose forward the eviction ran (0 = the first fed-back token).
    pub step: usize,
    pub len_before: usize,
    pub len_after: usize,
    pub kept_positions: serde_json::Value,
    /// Scores of the older part, for score-based policies; JSON has no infinities, so ±∞ and
    /// NaN are written as the strings `"inf"`, `"-inf"` and `"nan"` (DynTS protects with +∞).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<Vec<serde_json::Value>>,
}

fn score_value(x: f32) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else if x.is_nan() {
        "nan".into()
    } else if x > 0.0 {
        "inf".into()
    } else {
        "-inf".into()
    }
}

impl TraceEvent {
    pub fn shared(
        sample: &str,
        step: usize,
        len_before: usize,
        len_after: usize,
        kept: Vec<u32>,
        scores: Option<Vec<f32>>,
    ) -> Self {
        Self {
            sample: sample.to_string(),
            layer: "all".into(),
            step,
            len_before,
            len_after,
            kept_positions: serde_json::to_value(kept).expect("ints serialize"),
            scores: scores.map(|v| v.into_iter().map(score_value).collect()),
        }
    }

    pub fn per_head(
        sample: &str,
        layer: usize,
        step: usize,
        len_before: usize,
        len_after: usize,
        kept: Vec<Vec<u32>>,
    ) -> Self {
        Self {
            sample: sample.to_string(),
            layer: layer.into(),
            step,
            len_before,
            len_after,
            kept_positions: serde_json::to_value(kept).expect("ints serialize"),
            scores: None,
        }
    }
}

/// A shared, line-buffered JSONL writer (several sequences may trace into one file).
#[derive(Clone)]
pub struct TraceSink(Arc<Mutex<BufWriter<File>>>);

impl TraceSink {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .with_context(|| format!("creating trace file {}", path.display()))?;
        Ok(Self(Arc::new(Mutex::new(BufWriter::new(f)))))
    }

    pub fn write(&self, event: &TraceEvent) -> Result<()> {
        let mut w = self.0.lock().map_err(|_| anyhow::anyhow!("trace writer poisoned"))?;
        serde_json::to_writer(&mut *w, event)?;
        w.write_all(b"\n")?;
        w.flush()?;
        Ok(())
    }
}
