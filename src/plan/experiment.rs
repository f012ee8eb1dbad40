//! Experiment files (`experiments/*.toml`): a whole setup, field by field as `kvbench run`'s flags
//! name it. Unknown keys are errors, so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::Plan;
use crate::decode::sampling::SamplingParams;
use crate::model::source::WeightFormat;
use crate::policies::parse_tokens;

/// An experiment file. Paths are relative to the working directory (the repository root).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub description: Option<String>,
    /// Models: GGUF files, HF folders or hub ids; each runs the whole grid.
    #[serde(default)]
    pub models: Vec<String>,
    pub datasets: Option<Vec<String>>,
    pub policies: Option<Vec<String>>,
    /// (B, W, r) rules; a rule without `model` / `datasets` applies to every model / dataset.
    #[serde(default)]
    pub budgets: Vec<BudgetRule>,
    pub samples: Option<usize>,
    pub seed: Option<u64>,
    /// `"paper"` (T 0.6, top-p 0.95, top-k 20), `"greedy"`, or `{ temperature, top_p, top_k }`.
    pub sampling: Option<SamplingSetting>,
    pub max_new_tokens: Option<usize>,
    pub limit: Option<usize>,
    pub ids: Option<Vec<usize>>,
    pub instruction: Option<String>,
    pub system: Option<String>,
    pub prefill_chunk: Option<usize>,
    pub device: Option<String>,
    pub dtype: Option<String>,
    /// `"dequantized"` or `"native"` (see `kvbench run --weights`).
    pub weights: Option<WeightFormat>,
    pub threads: Option<usize>,
    pub batch: Option<usize>,
    pub out: Option<PathBuf>,
    /// Importance-predictor weights per model, for the `dynts` family.
    #[serde(default)]
    pub predictors: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetRule {
    pub model: Option<String>,
    pub datasets: Option<Vec<String>>,
    /// B: one value or a list (`"5k"`, `5000`, `["2.5k", "3k"]`).
    pub budget: OneOrMany,
    /// W.
    pub window: Tokens,
    /// r.
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Tokens {
    Count(u64),
    Text(String),
}

impl Tokens {
    pub fn get(&self) -> Result<usize> {
        match self {
            Tokens::Count(n) => Ok(*n as usize),
            Tokens::Text(t) => parse_tokens(t),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(Tokens),
    Many(Vec<Tokens>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SamplingSetting {
    Named(String),
    Custom(SamplingParams),
}

impl SamplingSetting {
    pub fn params(&self) -> Result<SamplingParams> {
        let p = match self {
            SamplingSetting::Named(n) if n == "paper" => SamplingParams::PAPER,
            SamplingSetting::Named(n) if n == "greedy" => SamplingParams::GREEDY,
            SamplingSetting::Named(n) => bail!("sampling = '{n}': expected \"paper\", \"greedy\" or a table"),
            SamplingSetting::Custom(p) => *p,
        };
        p.validate()?;
        Ok(p)
    }
}

/// The built-in benchmark: what `kvbench run` does with no `--model` and no `--experiment`.
pub const BUILTIN_EXPERIMENT: &str = "experiments/builtin.toml";

/// How a run is placed, beside its plans: what an experiment file holds that a plan does not.
pub struct Placement<'a> {
    pub device: &'a str,
    pub dtype: Option<&'a str>,
    pub threads: usize,
    pub out: &'a Path,
}

impl Experiment {
    /// The experiment file that resolves to exactly these plans (one per model, each with the model
    /// as it was named) and placement: what `kvbench slurm` hands every array task.
    pub fn from_plans(description: Option<String>, plans: &[(&str, &Plan)], placement: &Placement) -> Self {
        let (_, first) = plans[0];
        let several = plans.len() > 1;
        let sampling = if first.sampling == SamplingParams::GREEDY {
            SamplingSetting::Named("greedy".into())
        } else if first.sampling == SamplingParams::PAPER {
            SamplingSetting::Named("paper".into())
        } else {
            SamplingSetting::Custom(first.sampling)
        };
        let mut budgets = Vec::new();
        for (model, plan) in plans {
            for (dataset, list) in &plan.budgets {
                // One rule per run of budgets sharing W and r, in the plan's order.
                for b in list {
                    let extend = budgets.last_mut().filter(|r: &&mut BudgetRule| {
                        r.model.as_deref() == several.then_some(*model)
                            && r.datasets.as_deref() == Some(std::slice::from_ref(dataset))
                            && matches!(r.window, Tokens::Count(w) if w == b.window as u64)
                            && r.ratio == b.ratio
                    });
                    match extend {
                        Some(BudgetRule { budget: OneOrMany::Many(bs), .. }) => bs.push(Tokens::Count(b.budget as u64)),
                        _ => budgets.push(BudgetRule {
                            model: several.then(|| model.to_string()),
                            datasets: Some(vec![dataset.clone()]),
                            budget: OneOrMany::Many(vec![Tokens::Count(b.budget as u64)]),
                            window: Tokens::Count(b.window as u64),
                            ratio: b.ratio,
                        }),
                    }
                }
            }
        }
        Experiment {
            description,
            models: plans.iter().map(|(m, _)| m.to_string()).collect(),
            datasets: Some(first.datasets.clone()),
            policies: Some(first.policies.clone()),
            budgets,
            samples: Some(first.samples),
            seed: Some(first.seed),
            sampling: Some(sampling),
            max_new_tokens: Some(first.max_new_tokens),
            limit: first.limit,
            ids: first.ids.clone(),
            instruction: first.instruction.clone(),
            system: first.system.clone(),
            prefill_chunk: Some(first.prefill_chunk),
            device: Some(placement.device.to_string()),
            dtype: placement.dtype.map(str::to_string),
            weights: Some(first.weights),
            threads: Some(placement.threads),
            batch: Some(first.batch),
            out: Some(placement.out.to_path_buf()),
            predictors: plans.iter().filter_map(|(m, p)| Some((m.to_string(), p.predictor.clone()?))).collect(),
        }
    }

    /// The file's text: TOML, with a header saying where it came from.
    pub fn to_toml(&self, header: &str) -> Result<String> {
        let body = toml::to_string(self).context("writing an experiment file")?;
        let header: String = header.lines().map(|l| format!("# {l}\n")).collect();
        Ok(header + &body)
    }

    pub fn builtin() -> Result<Self> {
        toml::from_str(include_str!("../../experiments/builtin.toml")).context("experiment experiments/builtin.toml")
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading experiment {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("experiment {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed experiment file parses (unknown fields are refused, so a misspelt one fails).
    #[test]
    fn every_committed_experiment_file_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                Experiment::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 7, "only {n} experiment files");
    }
}
