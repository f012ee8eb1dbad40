//! The plan of a run: a grid of models × datasets × policies × budgets × samples, expanded into
//! jobs and checked (names, budgets, policy parameters, the predictor, dataset files) before any
//! weight is loaded. A results folder belongs to exactly one plan.

pub mod estimate;
pub mod experiment;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::{self, Question};
use crate::decode::sampling::SamplingParams;
use crate::model::source::WeightFormat;
use crate::policies::registry::{expand_names, PolicySpec};
use crate::policies::Budget;

/// Everything that determines a run's numbers; a results folder belongs to exactly one plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub model: String,
    pub datasets: Vec<String>,
    pub policies: Vec<String>,
    pub policy_params: Vec<serde_json::Value>,
    /// The (B, W, r) settings of each dataset (the figure's differ by dataset); every budgeted
    /// policy runs at each of them.
    pub budgets: BTreeMap<String, Vec<Budget>>,
    pub samples: usize,
    pub seed: u64,
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    pub limit: Option<usize>,
    pub ids: Option<Vec<usize>>,
    /// Appended to each question (for non-reasoning models); `None` = the raw question.
    pub instruction: Option<String>,
    /// A system message before each question (the Qwen2.5-Math prompt's); `None` = none, the chat
    /// template's default. Omitted from the manifest when `None`, as before the option existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub prefill_chunk: usize,
    /// Importance-predictor weights for the `dynts` family (its hash goes into the manifest).
    pub predictor: Option<PathBuf>,
    /// Samples a worker decodes together: the slots of its cache pool, refilled as samples
    /// finish. Every step computes a row per slot, and a product's rows round by how many there
    /// are, so the count is part of the plan; which samples share a step is not (a row's numbers
    /// do not depend on its neighbours), so neither threads, shards nor resumption change results.
    #[serde(default = "one")]
    pub batch: usize,
    /// How a GGUF's quantized weights are held (`--weights`); it changes the arithmetic, so it is
    /// part of the plan. Omitted from the manifest when dequantized, as before the option existed.
    #[serde(default, skip_serializing_if = "WeightFormat::is_default")]
    pub weights: WeightFormat,
}

fn one() -> usize {
    1
}

/// A deterministic part of a plan: jobs whose plan index is `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Parses `i/N` (0-based: `0/3`, `1/3`, `2/3`).
    pub fn parse(text: &str) -> Result<Self> {
        let parsed = text.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Shard { index, count }),
            _ => bail!("--shard '{text}': expected i/N with 0 <= i < N, e.g. 0/4"),
        }
    }

    /// Every `count`-th job from `index`: parts of equal size that mix every configuration.
    pub fn select<T>(&self, jobs: Vec<T>) -> Vec<T> {
        jobs.into_iter().enumerate().filter(|(i, _)| i % self.count == self.index).map(|(_, j)| j).collect()
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The jobs of `shard` (all without one): shards take whole batch-sized groups of the plan's order.
pub fn shard_jobs(plan: &Plan, jobs: Vec<Job>, shard: Option<Shard>) -> Vec<Job> {
    let Some(shard) = shard else { return jobs };
    let groups: Vec<Vec<Job>> = jobs.chunks(plan.batch.max(1)).map(|g| g.to_vec()).collect();
    shard.select(groups).into_iter().flatten().collect()
}

/// One sample to run: the key `dataset/question/policy/budget/sample` names it.
#[derive(Debug, Clone)]
pub struct Job {
    pub dataset: String,
    pub question: Question,
    pub policy: usize,
    /// `None` for `full`, which runs once.
    pub budget: Option<Budget>,
    pub sample: usize,
}

/// `B5000-W2000-r0.3`, or `full`: the budget part of sample keys and progress lines.
pub fn budget_label(budget: Option<&Budget>) -> String {
    match budget {
        Some(b) => format!("B{}-W{}-r{}", b.budget, b.window, b.ratio),
        None => "full".to_string(),
    }
}

impl Job {
    pub fn key(&self, plan: &Plan) -> String {
        format!(
            "{}/{}/{}/{}/{}",
            self.dataset,
            self.question.index,
            plan.policies[self.policy],
            budget_label(self.budget.as_ref()),
            self.sample
        )
    }

    /// The configuration (dataset × policy × budget) the job belongs to.
    pub fn config(&self, plan: &Plan) -> String {
        match &self.budget {
            Some(b) => format!("{} {} {}", self.dataset, plan.policies[self.policy], budget_label(Some(b))),
            None => format!("{} {}", self.dataset, plan.policies[self.policy]),
        }
    }
}

/// Expands and checks the grid: names, budgets, policy parameters, the predictor. Loads no
/// weights. Jobs come configuration by configuration (dataset, policy, budget), so each one's
/// results are complete early.
pub fn expand(plan: &Plan, data_dir: &Path) -> Result<Vec<Job>> {
    if plan.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if plan.limit == Some(0) {
        bail!("--limit must be at least 1 (it keeps the first N questions of each dataset)");
    }
    if plan.ids.as_ref().is_some_and(|ids| ids.is_empty()) {
        bail!("--ids names no question");
    }
    if plan.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    if plan.prefill_chunk == 0 {
        bail!("--prefill-chunk must be at least 1");
    }
    let specs = specs(plan)?;
    if let Some(spec) = specs.iter().find(|s| s.needs_predictor()) {
        match &plan.predictor {
            None => bail!("policy {} needs --predictor FILE.safetensors (importance-predictor weights)", spec.name),
            Some(p) if !p.is_file() => bail!("--predictor {}: no such file", p.display()),
            Some(_) => {}
        }
    }
    let mut jobs = Vec::new();
    for name in &plan.datasets {
        let def = data::definition(name)?;
        let budgets = plan.budgets.get(name).filter(|b| !b.is_empty());
        let budgets = budgets.with_context(|| format!("no budget given for dataset {name}"))?;
        for spec in &specs {
            for b in budgets {
                spec.validate(b).with_context(|| format!("dataset {name}"))?;
            }
        }
        let questions = data::select(def.load(data_dir)?, plan.limit, plan.ids.as_deref())?;
        for (pi, spec) in specs.iter().enumerate() {
            let settings: Vec<Option<Budget>> =
                if spec.evicts() { budgets.iter().copied().map(Some).collect() } else { vec![None] };
            for budget in settings {
                for q in &questions {
                    for sample in 0..plan.samples {
                        jobs.push(Job { dataset: name.clone(), question: q.clone(), policy: pi, budget, sample });
                    }
                }
            }
        }
    }
    Ok(jobs)
}

/// The plan's policies, resolved.
pub fn specs(plan: &Plan) -> Result<Vec<PolicySpec>> {
    plan.policies.iter().map(|p| PolicySpec::resolve(p, None)).collect()
}

/// Builds the plan's policy list from names (`all` = the figure's eight).
pub fn policy_names(names: &[String]) -> Result<(Vec<String>, Vec<serde_json::Value>)> {
    let names = expand_names(names)?;
    let params = names.iter().map(|n| Ok(PolicySpec::resolve(n, None)?.params)).collect::<Result<Vec<_>>>()?;
    Ok((names, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_the_plan() {
        let jobs: Vec<usize> = (0..10).collect();
        let mut seen = Vec::new();
        for index in 0..3 {
            let part = Shard { index, count: 3 }.select(jobs.clone());
            assert!(part.len() >= 3 && part.len() <= 4);
            seen.extend(part);
        }
        seen.sort();
        assert_eq!(seen, jobs);
        assert!(Shard::parse("2/2").is_err() && Shard::parse("a/2").is_err() && Shard::parse("0/0").is_err());
        assert_eq!(Shard::parse(" 1/2").unwrap(), Shard { index: 1, count: 2 });
    }
}
