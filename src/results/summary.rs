//! `summary.csv`: one row per model × dataset × policy × (B, W, r), aggregated from the samples.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::record::SampleRecord;
use crate::io::write_atomic;

/// One row of `summary.csv`: a model × dataset × policy × budget. Timing columns come last so a
/// comparison can drop them by name (`tokens_per_s`, `policy_time_share`).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SummaryRow {
    pub model: String,
    pub dataset: String,
    pub policy: String,
    /// B (0 for the full cache).
    pub budget: usize,
    pub window: usize,
    pub ratio: f64,
    pub questions: usize,
    /// n: samples per question.
    pub samples: usize,
    /// avg@n, the paper's Pass@1, in %.
    pub accuracy: f64,
    /// Half-width of its 95 % confidence interval over questions, in %.
    pub accuracy_ci95: f64,
    /// Unbiased pass@n, in %.
    pub pass_at_k: f64,
    /// Majority vote over the extracted, normalised answers, in %.
    pub maj_at_k: f64,
    pub peak_kv: f64,
    pub mean_kv: f64,
    pub kv_footprint: f64,
    pub evictions: f64,
    pub generated_tokens: f64,
    pub think_closed_rate: f64,
    pub truncated_rate: f64,
    /// Paired against the full cache on the same dataset (the same questions and samples under
    /// both; empty without a full-cache run or for the full cache itself): samples the full cache
    /// got right and this configuration wrong,
    #[serde(default)]
    pub lost_vs_full: Option<usize>,
    /// … samples it got right and the full cache wrong,
    #[serde(default)]
    pub gained_vs_full: Option<usize>,
    /// … and the exact McNemar test's two-sided p-value on those discordant pairs.
    #[serde(default)]
    pub mcnemar_p_vs_full: Option<f64>,
    pub tokens_per_s: f64,
    pub policy_time_share: f64,
}

/// A mean in percent, scaled before the division so that a whole count over the questions prints
/// as itself (116 of 200 → 58, not 57.99999999999999).
fn percent(xs: impl Iterator<Item = f64>) -> f64 {
    mean(xs.map(|x| 100.0 * x))
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        s / n as f64
    }
}

/// Unbiased pass@k = 1 − C(n−c, k)/C(n, k).
pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n).fold(1.0, |acc, i| acc * (1.0 - k as f64 / i as f64))
}

/// The exact McNemar test: the two-sided p-value of `lost` against `gained` discordant pairs, each
/// equally likely under no difference (a binomial test at ½, doubled and capped at 1).
pub fn mcnemar_exact(lost: usize, gained: usize) -> f64 {
    let n = lost + gained;
    let k = lost.min(gained);
    // Σ_{i ≤ k} C(n, i) / 2ⁿ, each term from the previous in logs-free ratios.
    let mut term = 0.5f64.powi(n as i32);
    let mut tail = term;
    for i in 1..=k {
        term *= (n - i + 1) as f64 / i as f64;
        tail += term;
    }
    (2.0 * tail).min(1.0)
}

/// Aggregates samples into summary rows, sorted by dataset, policy and (B, W, r). Means are taken
/// in the order given, so callers pass a fixed order.
pub fn summarize(records: &[&SampleRecord], model: &str) -> Vec<SummaryRow> {
    // The full cache's verdict per (dataset, question, sample), for the paired comparison.
    let full: BTreeMap<(&str, usize, usize), bool> = records
        .iter()
        .filter(|r| r.policy == "full")
        .map(|r| ((r.dataset.as_str(), r.question_index, r.sample), r.correct))
        .collect();
    // r is positive, so its bit pattern sorts like its value.
    type Config = (String, String, usize, usize, u64);
    let mut groups: BTreeMap<Config, Vec<&SampleRecord>> = BTreeMap::new();
    for r in records {
        groups.entry((r.dataset.clone(), r.policy.clone(), r.budget, r.window, r.ratio.to_bits())).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|((dataset, policy, budget, _, _), rs)| {
            let mut by_q: BTreeMap<usize, Vec<&SampleRecord>> = BTreeMap::new();
            for r in &rs {
                by_q.entry(r.question_index).or_default().push(r);
            }
            let per_q: Vec<f64> =
                by_q.values().map(|s| s.iter().filter(|r| r.correct).count() as f64 / s.len() as f64).collect();
            let acc = mean(per_q.iter().copied());
            let ci = if per_q.len() > 1 {
                let var = per_q.iter().map(|x| (x - acc).powi(2)).sum::<f64>() / (per_q.len() - 1) as f64;
                1.96 * (var / per_q.len() as f64).sqrt()
            } else {
                0.0
            };
            let n = by_q.values().map(|s| s.len()).max().unwrap_or(0);
            let pass =
                percent(by_q.values().map(|s| pass_at_k(s.len(), s.iter().filter(|r| r.correct).count(), s.len())));
            let maj = percent(by_q.values().map(|s| {
                // Majority over normalised answers; ties go to the answer seen first.
                let mut counts: Vec<(String, usize, bool)> = Vec::new();
                for r in s {
                    let a = r.extracted.as_deref().map(crate::grading::normalize).unwrap_or_default();
                    match counts.iter_mut().find(|(x, _, _)| *x == a) {
                        Some(c) => c.1 += 1,
                        None => counts.push((a, 1, r.correct)),
                    }
                }
                let best = counts.iter().fold(None::<&(String, usize, bool)>, |b, c| match b {
                    Some(b) if b.1 >= c.1 => Some(b),
                    _ => Some(c),
                });
                best.map_or(0.0, |b| if b.2 && !b.0.is_empty() { 1.0 } else { 0.0 })
            }));
            let paired: Option<Vec<(bool, bool)>> = (policy != "full")
                .then(|| {
                    rs.iter()
                        .map(|r| full.get(&(r.dataset.as_str(), r.question_index, r.sample)).map(|&f| (f, r.correct)))
                        .collect()
                })
                .flatten();
            let lost = paired.as_ref().map(|p| p.iter().filter(|&&(f, c)| f && !c).count());
            let gained = paired.as_ref().map(|p| p.iter().filter(|&&(f, c)| !f && c).count());
            let f = |g: &dyn Fn(&SampleRecord) -> f64| mean(rs.iter().map(|r| g(r)));
            let tokens: f64 = rs.iter().map(|r| r.generated_tokens as f64).sum();
            let decode: f64 = rs.iter().map(|r| r.decode_secs).sum();
            let total: f64 = rs.iter().map(|r| r.decode_secs + r.prefill_secs).sum();
            let policy_secs: f64 = rs.iter().map(|r| r.policy_secs).sum();
            SummaryRow {
                model: model.to_string(),
                dataset,
                policy,
                budget,
                window: rs[0].window,
                ratio: rs[0].ratio,
                questions: by_q.len(),
                samples: n,
                accuracy: percent(per_q.iter().copied()),
                accuracy_ci95: 100.0 * ci,
                pass_at_k: pass,
                maj_at_k: maj,
                peak_kv: f(&|r| r.peak_kv as f64),
                mean_kv: f(&|r| r.mean_kv),
                kv_footprint: f(&|r| r.kv_footprint as f64),
                evictions: f(&|r| r.evictions as f64),
                generated_tokens: f(&|r| r.generated_tokens as f64),
                think_closed_rate: f(&|r| r.think_closed as u8 as f64),
                truncated_rate: f(&|r| r.truncated as u8 as f64),
                lost_vs_full: lost,
                gained_vs_full: gained,
                mcnemar_p_vs_full: lost.zip(gained).map(|(l, g)| mcnemar_exact(l, g)),
                tokens_per_s: if decode > 0.0 { tokens / decode } else { 0.0 },
                policy_time_share: if total > 0.0 { policy_secs / total } else { 0.0 },
            }
        })
        .collect()
}

pub fn summary_csv(rows: &[SummaryRow]) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    if rows.is_empty() {
        return Ok(String::new());
    }
    Ok(String::from_utf8(w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?)
}

/// `summary.csv` from every sample of a folder, in a fixed order so sums do not depend on the
/// order in which samples finished.
pub fn write_summary(out: &Path, samples: &[SampleRecord], model: &str) -> Result<()> {
    let mut sorted: Vec<&SampleRecord> = samples.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let summary = summarize(&sorted, model);
    write_atomic(&out.join("summary.csv"), summary_csv(&summary)?.as_bytes())
}

/// Writes the rows of several CSV files with one header (the per-model summaries of a run).
pub fn concat_csv(inputs: &[std::path::PathBuf], out: &Path) -> Result<()> {
    let mut body = String::new();
    for (i, path) in inputs.iter().enumerate() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        if i == 0 {
            body.push_str(header);
            body.push('\n');
        }
        for l in lines {
            body.push_str(l);
            body.push('\n');
        }
    }
    write_atomic(out, body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the binomial tails computed by hand: 0 of 0 discordant is no evidence; 0 against
    /// 6 gives 2/64; 2 against 8 gives 2·(1 + 10 + 45)/1024; the test is symmetric.
    #[test]
    fn mcnemar_exact_is_the_doubled_binomial_tail() {
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        assert!((mcnemar_exact(0, 6) - 2.0 / 64.0).abs() < 1e-12);
        assert!((mcnemar_exact(2, 8) - 112.0 / 1024.0).abs() < 1e-12);
        assert_eq!(mcnemar_exact(8, 2), mcnemar_exact(2, 8));
        assert_eq!(mcnemar_exact(5, 5), 1.0);
    }

    #[test]
    fn pass_at_k_is_the_unbiased_estimator() {
        assert_eq!(pass_at_k(5, 0, 5), 0.0);
        assert_eq!(pass_at_k(5, 1, 5), 1.0);
        // n = 5, c = 2, k = 1: 1 − C(3,1)/C(5,1) = 0.4
        assert!((pass_at_k(5, 2, 1) - 0.4).abs() < 1e-12);
        // n = 5, c = 1, k = 2: 1 − C(4,2)/C(5,2) = 1 − 6/10
        assert!((pass_at_k(5, 1, 2) - 0.4).abs() < 1e-12);
    }

    #[test]
    fn whole_counts_print_as_themselves_in_percent() {
        let flags = || (0..200).map(|i| if i < 116 { 1.0 } else { 0.0 });
        assert_eq!(percent(flags()), 58.0);
        // Dividing first, as a mean does, leaves a tail in the CSV.
        assert_eq!(100.0 * mean(flags()), 57.99999999999999);
        assert_eq!(percent(std::iter::empty()), 0.0);
    }
}
