//! `kvbench plot`: the figures of a run, from its `summary.csv` alone (no samples, no model).
//!
//! Three figures, each written as PNG (200 dpi) and SVG into the output folder:
//!
//! - `<stem>summary`: the DynTS summary figure. One bar per policy, the mean accuracy over the
//!   CSV's datasets and models at one budget (the full cache, budget 0, always included), with its
//!   value; the proposed method (`--highlight`, default `dynts`) in red, `full` in navy, the others
//!   light grey; the mean peak KV cache length as a dashed blue line on a right axis.
//! - `<stem>budget`: mean accuracy against the budget B, one line per evicting policy, the full
//!   cache as a dashed horizontal reference.
//! - `<stem>datasets`: one bar panel per dataset at the summary's budget.
//!
//! Policies are labelled and ordered as in the figure (`registry::FIGURE_POLICIES`), other presets
//! follow in registry order, unknown names last, alphabetically. Each file is rendered in memory
//! first and written atomically, so a failure leaves no file, or the previous one, behind.

mod canvas;
mod figures;
mod layout;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What to draw and where.
#[derive(Debug, Clone)]
pub struct PlotOptions {
    /// B of the summary and per-dataset figures. Needed only when the CSV holds several budgets.
    pub budget: Option<usize>,
    /// A title above every figure (the per-dataset figure otherwise names its budget).
    pub title: Option<String>,
    /// File-name prefix: `<out>/<stem>summary.png`, … (no path separators).
    pub stem: String,
    /// The policy drawn as the proposed method: red bar, bold labels.
    pub highlight: String,
}

impl Default for PlotOptions {
    fn default() -> Self {
        Self { budget: None, title: None, stem: String::new(), highlight: "dynts".into() }
    }
}

/// The figure names, in the order `render` writes them.
pub const FIGURES: [&str; 3] = ["summary", "budget", "datasets"];

/// The columns of `summary.csv` the figures read.
pub const COLUMNS: [&str; 6] = ["model", "dataset", "policy", "budget", "accuracy", "peak_kv"];

/// One row of a summary CSV, as far as the figures are concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub model: String,
    pub dataset: String,
    pub policy: String,
    /// B; 0 for the full cache.
    pub budget: usize,
    /// In %.
    pub accuracy: f64,
    /// Mean peak KV cache length, in tokens.
    pub peak_kv: f64,
}

/// Reads the figure columns of a summary CSV; every problem names the file, and the line and column
/// where there is one.
pub fn read_summary(path: &Path) -> Result<Vec<Row>> {
    let shown = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("reading {shown}"))?;
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes.as_slice());
    let headers = reader.headers().with_context(|| format!("{shown}: unreadable header row"))?.clone();
    if headers.iter().all(|h| h.trim().is_empty()) {
        bail!("{shown} is empty: no header row, no results");
    }
    let mut idx = [0usize; COLUMNS.len()];
    for (slot, name) in idx.iter_mut().zip(COLUMNS) {
        *slot = headers.iter().position(|h| h.trim() == name).with_context(|| {
            format!(
                "{shown}: missing column '{name}' (it has: {}; a kvbench run's summary.csv has all of {})",
                headers.iter().collect::<Vec<_>>().join(", "),
                COLUMNS.join(", ")
            )
        })?;
    }
    let [model, dataset, policy, budget, accuracy, peak_kv] = idx;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("{shown}: malformed CSV"))?;
        let line = record.position().map_or(0, |p| p.line());
        let cell = |i: usize| record.get(i).unwrap_or("").trim();
        let number = |name: &str, i: usize| -> Result<f64> {
            let c = cell(i);
            c.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .with_context(|| format!("{shown}:{line}: column '{name}': '{c}' is not a number"))
        };
        let text = |name: &str, i: usize| -> Result<String> {
            match cell(i) {
                "" => bail!("{shown}:{line}: column '{name}' is empty"),
                c => Ok(c.to_string()),
            }
        };
        let b = cell(budget);
        rows.push(Row {
            model: cell(model).to_string(),
            dataset: text("dataset", dataset)?,
            policy: text("policy", policy)?,
            budget: b.parse().with_context(|| {
                format!("{shown}:{line}: column 'budget': '{b}' is not a number of tokens (0 for the full cache)")
            })?,
            accuracy: number("accuracy", accuracy)?,
            peak_kv: number("peak_kv", peak_kv)?,
        });
    }
    if rows.is_empty() {
        bail!("{shown} is empty: a header row but no results");
    }
    Ok(rows)
}

/// `5000` → "5k", `4500` → "4.5k", `256` → "256" (what `parse_tokens` reads back).
pub fn fmt_tokens(n: usize) -> String {
    match n {
        n if n >= 1000 && n % 1000 == 0 => format!("{}k", n / 1000),
        n if n >= 1000 && n % 100 == 0 => format!("{:.1}k", n as f64 / 1000.0),
        n => n.to_string(),
    }
}

/// The budgets (B > 0) in the rows, ascending.
pub fn budgets(rows: &[Row]) -> Vec<usize> {
    rows.iter().map(|r| r.budget).filter(|&b| b > 0).collect::<BTreeSet<_>>().into_iter().collect()
}

/// Which rows the summary and per-dataset figures show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetChoice {
    /// One B everywhere.
    One(usize),
    /// Each model × dataset at its own single B (the DynTS figure: B = 5k on AIME, 3k on MATH-500).
    PerDataset,
    /// The CSV holds the full cache alone.
    FullOnly,
}

/// The asked budget, which must be in the CSV; else the only one; else each dataset's own when every
/// model × dataset has exactly one.
pub fn choose_budget(rows: &[Row], asked: Option<usize>, csv: &Path) -> Result<BudgetChoice> {
    let all = budgets(rows);
    let list = || {
        if all.is_empty() {
            "none, only the full cache".to_string()
        } else {
            all.iter().map(|&b| fmt_tokens(b)).collect::<Vec<_>>().join(", ")
        }
    };
    let mut per_dataset: BTreeMap<(&str, &str), BTreeSet<usize>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.budget > 0) {
        per_dataset.entry((&r.model, &r.dataset)).or_default().insert(r.budget);
    }
    match (asked, all.as_slice()) {
        (Some(b), _) if all.contains(&b) => Ok(BudgetChoice::One(b)),
        (Some(b), _) => bail!("budget {} is not in {} (its budgets: {})", fmt_tokens(b), csv.display(), list()),
        (None, []) => Ok(BudgetChoice::FullOnly),
        (None, [b]) => Ok(BudgetChoice::One(*b)),
        (None, _) if per_dataset.values().all(|bs| bs.len() == 1) => Ok(BudgetChoice::PerDataset),
        (None, _) => {
            bail!("{} holds several budgets ({}); choose one for the summary (--budget)", csv.display(), list())
        }
    }
}

/// A policy of the figures: its name in the CSV and its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLabel {
    pub name: String,
    pub label: String,
}

/// The policies in the rows, in the figure's order, with the presets' labels.
pub fn policy_order(rows: &[Row]) -> Result<Vec<PolicyLabel>> {
    use crate::policies::registry::{presets, FIGURE_POLICIES};
    let present: BTreeSet<&str> = rows.iter().map(|r| r.policy.as_str()).collect();
    let presets = presets()?;
    let label = |name: &str| presets.iter().find(|p| p.name == name).map_or(name.to_string(), |p| p.label.clone());
    let mut order: Vec<&str> = FIGURE_POLICIES.iter().copied().filter(|n| present.contains(n)).collect();
    for p in &presets {
        if present.contains(p.name.as_str()) && !order.contains(&p.name.as_str()) {
            order.push(&p.name);
        }
    }
    for n in &present {
        if !order.contains(n) {
            order.push(n);
        }
    }
    Ok(order.into_iter().map(|n| PolicyLabel { name: n.to_string(), label: label(n) }).collect())
}

/// Mean of `f` over the rows of `policy` that `keep` accepts; `None` when there are none.
fn mean_of(rows: &[Row], policy: &str, keep: impl Fn(&Row) -> bool, f: impl Fn(&Row) -> f64) -> Option<f64> {
    let xs: Vec<f64> = rows.iter().filter(|r| r.policy == policy && keep(r)).map(f).collect();
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Draws the figures of `summary_csv` into `out_dir`: `<stem>summary`, `<stem>budget` and
/// `<stem>datasets`, each `.png` and `.svg`; returns the paths written, in that order.
pub fn render(summary_csv: &Path, out_dir: &Path, opts: &PlotOptions) -> Result<Vec<PathBuf>> {
    if opts.stem.contains(['/', '\\']) {
        bail!("the file-name stem '{}' must not contain a path separator (use the output folder)", opts.stem);
    }
    let rows = read_summary(summary_csv)?;
    let budget = choose_budget(&rows, opts.budget, summary_csv)?;
    let policies = policy_order(&rows)?;
    let data = figures::Data { rows: &rows, policies: &policies, budget, opts };
    let scenes = [
        figures::summary(&data).context("drawing the summary figure")?,
        figures::by_budget(&data).context("drawing the budget figure")?,
        figures::by_dataset(&data).context("drawing the per-dataset figure")?,
    ];
    // Everything is rendered before anything is written.
    let mut files = Vec::new();
    for (name, scene) in FIGURES.iter().zip(&scenes) {
        let png = scene.to_png().with_context(|| format!("rendering {name}.png"))?;
        files.push((out_dir.join(format!("{}{name}.png", opts.stem)), png));
        let svg = scene.to_svg().with_context(|| format!("rendering {name}.svg"))?;
        files.push((out_dir.join(format!("{}{name}.svg", opts.stem)), svg.into_bytes()));
    }
    for (path, bytes) in &files {
        crate::io::write_atomic(path, bytes)?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(policy: &str, budget: usize) -> Row {
        Row {
            model: "m".into(),
            dataset: "d".into(),
            policy: policy.into(),
            budget,
            accuracy: 50.0,
            peak_kv: budget as f64,
        }
    }

    #[test]
    fn tokens_format_as_parse_tokens_reads_them() {
        for n in [256, 1000, 4500, 5000, 1024, 20000] {
            assert_eq!(crate::policies::parse_tokens(&fmt_tokens(n)).unwrap(), n);
        }
        assert_eq!(fmt_tokens(4500), "4.5k");
        assert_eq!(fmt_tokens(1024), "1024");
    }

    #[test]
    fn budget_choice() {
        let p = Path::new("s.csv");
        let one = [row("full", 0), row("h2o", 256)];
        assert_eq!(choose_budget(&one, None, p).unwrap(), BudgetChoice::One(256));
        let two = [row("full", 0), row("h2o", 256), row("h2o", 512)];
        assert_eq!(choose_budget(&two, Some(512), p).unwrap(), BudgetChoice::One(512));
        let e = choose_budget(&two, None, p).unwrap_err().to_string();
        assert!(e.contains("256, 512"), "{e}");
        let e = choose_budget(&two, Some(5000), p).unwrap_err().to_string();
        assert!(e.contains("5k") && e.contains("256, 512"), "{e}");
        assert_eq!(choose_budget(&[row("full", 0)], None, p).unwrap(), BudgetChoice::FullOnly);
        // The figure's setup: each dataset at its own single budget.
        let mut math = row("h2o", 3000);
        math.dataset = "math500".into();
        let per_dataset = [row("full", 0), row("h2o", 5000), math.clone()];
        assert_eq!(choose_budget(&per_dataset, None, p).unwrap(), BudgetChoice::PerDataset);
        let mut math2 = math;
        math2.budget = 4000;
        let e = choose_budget(&[row("h2o", 5000), row("h2o", 3000), math2], None, p).unwrap_err().to_string();
        assert!(e.contains("several budgets"), "{e}");
    }

    #[test]
    fn policies_follow_the_figure_then_the_registry_then_names() {
        let rows = [row("zeta", 1), row("rkv-paper", 1), row("rkv", 1), row("full", 0), row("dynts", 1)];
        let order: Vec<String> = policy_order(&rows).unwrap().into_iter().map(|p| p.label).collect();
        assert_eq!(order, ["Transformers", "DynTS", "R-KV", "R-KV (paper)", "zeta"]);
    }
}
