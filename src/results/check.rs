//! `kvbench check RESULT --against REFERENCE`: accuracy regression against a committed result.
//!
//! Configurations (model × dataset × policy × B/W/r) are matched by their summary rows. The
//! tolerance per configuration:
//! - **exact** when both runs decoded greedily on the same machine kind (device, dtype and CPU
//!   model, from the manifests): the numbers are then deterministic, so any change is a change;
//! - otherwise **statistical**: two binomial proportions over n = questions × samples each, pooled
//!   (Laplace-smoothed, so that 0 % and 100 % still get a width), allowed z standard errors apart
//!   (z = 3 by default: a false alarm about once in 370 configurations);
//! - or a fixed `--tolerance` in points.
//!
//! Under the exact rule, when both folders hold their `samples.jsonl`, a configuration must also
//! answer the same questions correctly: a changed policy can flip as many answers one way as the
//! other and leave the accuracy where it was (h2o keeping its lowest scores instead of its highest
//! did so on the built-in benchmark).
//!
//! Exit status (the caller's): 0 all within tolerance, 1 a configuration moved beyond it, 2 the
//! two cannot be compared (a configuration of the reference is missing, unreadable files).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::results::summary::SummaryRow;

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Fixed tolerance in accuracy points (overrides both rules).
    pub tolerance: Option<f64>,
    /// Standard errors allowed by the statistical rule.
    pub z: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Within,
    Beyond,
}

#[derive(Debug, Clone)]
pub struct Comparison {
    pub config: String,
    pub reference: f64,
    pub result: f64,
    pub tolerance: f64,
    /// Samples (question, sample) graded differently in the two runs, under the exact rule.
    pub flipped: Option<usize>,
    pub verdict: Verdict,
}

#[derive(Debug)]
pub struct CheckReport {
    pub rule: String,
    pub rows: Vec<Comparison>,
    /// Configurations of the result that the reference does not hold (not compared).
    pub extra: Vec<String>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.verdict == Verdict::Within)
    }

    /// The readable table.
    pub fn table(&self) -> String {
        let width = self.rows.iter().map(|r| r.config.len()).max().unwrap_or(6).max(13);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<width$}  {:>9}  {:>9}  {:>7}  {:>9}  {:>7}  verdict",
            "configuration", "reference", "result", "Δ", "tolerance", "flipped"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<width$}  {:>8.1}%  {:>8.1}%  {:>+7.1}  {:>9}  {:>7}  {}",
                r.config,
                r.reference,
                r.result,
                r.result - r.reference,
                if r.tolerance == 0.0 { "exact".to_string() } else { format!("±{:.1}", r.tolerance) },
                r.flipped.map_or("-".to_string(), |n| n.to_string()),
                match r.verdict {
                    Verdict::Within => "ok",
                    Verdict::Beyond if r.result < r.reference => "REGRESSION (lower)",
                    Verdict::Beyond if r.result > r.reference => "CHANGED (higher)",
                    Verdict::Beyond => "CHANGED (answers flipped)",
                }
            );
        }
        let beyond = self.rows.iter().filter(|r| r.verdict == Verdict::Beyond).count();
        let _ = writeln!(s, "{} configurations, {} beyond tolerance ({})", self.rows.len(), beyond, self.rule);
        if !self.extra.is_empty() {
            let _ = writeln!(s, "not in the reference (not compared): {}", self.extra.join(", "));
        }
        s
    }
}

/// A run folder or its summary CSV → (summary path, manifest path if any).
fn locate(path: &Path) -> (PathBuf, Option<PathBuf>) {
    if path.is_dir() {
        (path.join("summary.csv"), Some(path.join("manifest.json")).filter(|m| m.is_file()))
    } else {
        let manifest = path.with_file_name("manifest.json");
        (path.to_path_buf(), Some(manifest).filter(|m| m.is_file()))
    }
}

fn read_rows(path: &Path) -> Result<Vec<SummaryRow>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    reader
        .deserialize()
        .enumerate()
        .map(|(i, r)| r.with_context(|| format!("{}: row {} is malformed", path.display(), i + 2)))
        .collect()
}

fn config_key(r: &SummaryRow) -> String {
    format!("{}/{}", r.model, run_key(&r.dataset, &r.policy, r.budget, r.window, r.ratio))
}

/// A configuration within one run folder (which holds one model).
fn run_key(dataset: &str, policy: &str, budget: usize, window: usize, ratio: f64) -> String {
    let budget = if budget == 0 { "full".to_string() } else { format!("B{budget}-W{window}-r{ratio}") };
    format!("{dataset}/{policy} {budget}")
}

/// The fields of a `samples.jsonl` line that grading left.
#[derive(serde::Deserialize)]
struct Graded {
    dataset: String,
    policy: String,
    budget: usize,
    window: usize,
    ratio: f64,
    question_index: usize,
    sample: usize,
    correct: bool,
}

/// Per configuration (`run_key`), each (question, sample)'s grade.
type Grades = BTreeMap<String, BTreeMap<(usize, usize), bool>>;

fn read_grades(path: &Path) -> Result<Grades> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut grades = Grades::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let g: Graded =
            serde_json::from_str(line).with_context(|| format!("{}: line {} is malformed", path.display(), i + 1))?;
        let key = run_key(&g.dataset, &g.policy, g.budget, g.window, g.ratio);
        grades.entry(key).or_default().insert((g.question_index, g.sample), g.correct);
    }
    Ok(grades)
}

/// Samples of a configuration that both runs graded, graded differently.
fn flips(a: &Grades, b: &Grades, key: &str) -> usize {
    match (a.get(key), b.get(key)) {
        (Some(a), Some(b)) => a.iter().filter(|(k, ok)| b.get(*k).is_some_and(|other| other != *ok)).count(),
        _ => 0,
    }
}

/// What makes greedy numbers reproducible: greedy decoding and the machine kind.
fn exact_identity(manifest: &Path) -> Result<Option<String>> {
    let text = std::fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let m: crate::results::record::Manifest =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    if !m.plan.sampling.is_greedy() {
        return Ok(None);
    }
    let field = |k: &str| m.provenance.get(k).and_then(|v| v.as_str()).map(String::from);
    // Manifests from before the machine was recorded cannot vouch for exactness.
    Ok(match (field("machine"), field("device"), field("dtype")) {
        (Some(machine), Some(device), Some(dtype)) => {
            Some(format!("{machine}, {device}, {dtype}, batch {}", m.plan.batch))
        }
        _ => None,
    })
}

pub fn check(result: &Path, reference: &Path, o: &CheckOptions) -> Result<CheckReport> {
    let (res_csv, res_manifest) = locate(result);
    let (ref_csv, ref_manifest) = locate(reference);
    let res_rows = read_rows(&res_csv)?;
    let ref_rows = read_rows(&ref_csv)?;
    if ref_rows.is_empty() {
        bail!("{} holds no configurations", ref_csv.display());
    }
    let exact = match (&res_manifest, &ref_manifest) {
        (Some(a), Some(b)) => match (exact_identity(a)?, exact_identity(b)?) {
            (Some(x), Some(y)) if x == y => Some(x),
            _ => None,
        },
        _ => None,
    };
    let rule = match (o.tolerance, &exact) {
        (Some(t), _) => format!("fixed tolerance ±{t} points"),
        (None, Some(id)) => format!("exact: greedy on the same machine kind, {id}"),
        (None, None) => format!("statistical: {} standard errors of the difference of two proportions", o.z),
    };
    // Both runs' per-sample grades, when the exact rule applies and both folders hold them.
    let samples = |csv: &Path| csv.with_file_name("samples.jsonl");
    let grades = match (o.tolerance, &exact) {
        (None, Some(_)) if samples(&res_csv).is_file() && samples(&ref_csv).is_file() => {
            Some((read_grades(&samples(&res_csv))?, read_grades(&samples(&ref_csv))?))
        }
        _ => None,
    };
    let results: BTreeMap<String, &SummaryRow> = res_rows.iter().map(|r| (config_key(r), r)).collect();
    let mut missing = Vec::new();
    let mut rows = Vec::new();
    for r in &ref_rows {
        let key = config_key(r);
        let Some(got) = results.get(&key) else {
            missing.push(key);
            continue;
        };
        let tolerance = match (o.tolerance, &exact) {
            (Some(t), _) => t,
            (None, Some(_)) => 0.0,
            (None, None) => {
                let (n1, n2) = ((r.questions * r.samples) as f64, (got.questions * got.samples) as f64);
                let k = r.accuracy / 100.0 * n1 + got.accuracy / 100.0 * n2;
                let p = (k + 1.0) / (n1 + n2 + 2.0);
                100.0 * o.z * (p * (1.0 - p) * (1.0 / n1.max(1.0) + 1.0 / n2.max(1.0))).sqrt()
            }
        };
        let flipped = grades
            .as_ref()
            .map(|(res, refs)| flips(res, refs, &run_key(&r.dataset, &r.policy, r.budget, r.window, r.ratio)));
        let within = (got.accuracy - r.accuracy).abs() <= tolerance + 1e-9 && flipped.unwrap_or(0) == 0;
        rows.push(Comparison {
            config: key,
            reference: r.accuracy,
            result: got.accuracy,
            tolerance,
            flipped,
            verdict: if within { Verdict::Within } else { Verdict::Beyond },
        });
    }
    if !missing.is_empty() {
        bail!(
            "{} lacks {} configuration(s) of the reference {}:\n  {}",
            res_csv.display(),
            missing.len(),
            ref_csv.display(),
            missing.join("\n  ")
        );
    }
    let known: std::collections::BTreeSet<String> = ref_rows.iter().map(config_key).collect();
    let extra = results.keys().filter(|k| !known.contains(*k)).cloned().collect();
    Ok(CheckReport { rule, rows, extra })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(policy: &str, accuracy: f64, questions: usize) -> SummaryRow {
        SummaryRow {
            model: "m".into(),
            dataset: "d".into(),
            policy: policy.into(),
            budget: 128,
            window: 32,
            ratio: 0.5,
            questions,
            samples: 1,
            accuracy,
            accuracy_ci95: 0.0,
            pass_at_k: accuracy,
            maj_at_k: accuracy,
            peak_kv: 0.0,
            mean_kv: 0.0,
            kv_footprint: 0.0,
            evictions: 0.0,
            generated_tokens: 0.0,
            think_closed_rate: 0.0,
            truncated_rate: 0.0,
            lost_vs_full: None,
            gained_vs_full: None,
            mcnemar_p_vs_full: None,
            tokens_per_s: 0.0,
            policy_time_share: 0.0,
        }
    }

    fn write(dir: &Path, rows: &[SummaryRow]) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join("summary.csv");
        std::fs::write(&p, crate::results::summary::summary_csv(rows).unwrap()).unwrap();
        p
    }

    #[test]
    fn statistical_tolerance_follows_the_sample_count() {
        let dir = std::env::temp_dir().join(format!("kvbench-check-{}", std::process::id()));
        let reference = write(&dir.join("ref"), &[row("h2o", 50.0, 200), row("window", 10.0, 200)]);
        let o = CheckOptions { tolerance: None, z: 3.0 };
        // 200 questions at 50 %: σ of the difference ≈ 5 points, so ±15 passes and 20 does not.
        let near = write(&dir.join("near"), &[row("h2o", 40.0, 200), row("window", 12.0, 200)]);
        let r = check(&near, &reference, &o).unwrap();
        assert!(r.passed(), "{}", r.table());
        assert!((r.rows[0].tolerance - 15.0).abs() < 0.3, "{}", r.rows[0].tolerance);
        let far = write(&dir.join("far"), &[row("h2o", 30.0, 200), row("window", 10.0, 200)]);
        let r = check(&far, &reference, &o).unwrap();
        assert!(!r.passed());
        assert!(r.table().contains("REGRESSION (lower)"), "{}", r.table());
        // Fewer questions, wider tolerance: the same 20-point drop passes at n = 20.
        let small_ref = write(&dir.join("small-ref"), &[row("h2o", 50.0, 20)]);
        let small = write(&dir.join("small"), &[row("h2o", 30.0, 20)]);
        assert!(check(&small, &small_ref, &o).unwrap().passed());
        // A fixed tolerance overrides.
        assert!(!check(&small, &small_ref, &CheckOptions { tolerance: Some(5.0), z: 3.0 }).unwrap().passed());
        // A missing configuration is an error, not a pass.
        let partial = write(&dir.join("partial"), &[row("h2o", 50.0, 200)]);
        let e = check(&partial, &reference, &o).unwrap_err().to_string();
        assert!(e.contains("lacks 1 configuration") && e.contains("window"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Greedy runs on the same machine kind must agree exactly; another CPU model falls back to
    /// the statistical rule; a sampled run never compares exactly.
    #[test]
    fn greedy_runs_on_the_same_machine_kind_compare_exactly() {
        let dir = std::env::temp_dir().join(format!("kvbench-check-exact-{}", std::process::id()));
        let manifest = |folder: &str, machine: &str, temperature: f64| {
            let mut m: serde_json::Value =
                serde_json::from_str(include_str!("../../results/smollm2-cpu/manifest.json")).unwrap();
            m["machine"] = machine.into();
            m["plan"]["sampling"]["temperature"] = temperature.into();
            std::fs::write(dir.join(folder).join("manifest.json"), m.to_string()).unwrap();
        };
        write(&dir.join("ref"), &[row("h2o", 50.0, 200)]);
        write(&dir.join("same"), &[row("h2o", 49.5, 200)]);
        manifest("ref", "cpu: A", 0.0);
        manifest("same", "cpu: A", 0.0);
        let o = CheckOptions { tolerance: None, z: 3.0 };
        let r = check(&dir.join("same"), &dir.join("ref"), &o).unwrap();
        assert!(!r.passed() && r.rule.starts_with("exact"), "{}", r.table());
        // The same accuracy with answers flipped both ways is a change under the exact rule.
        let graded = |folder: &str, correct: [bool; 2]| {
            let line = |q: usize, ok: bool| {
                format!(
                    "{{\"dataset\":\"d\",\"policy\":\"h2o\",\"budget\":128,\"window\":32,\"ratio\":0.5,\
                     \"question_index\":{q},\"sample\":0,\"correct\":{ok},\"completion\":\"…\"}}\n"
                )
            };
            std::fs::write(dir.join(folder).join("samples.jsonl"), line(0, correct[0]) + &line(1, correct[1])).unwrap();
        };
        write(&dir.join("same"), &[row("h2o", 50.0, 200)]);
        graded("ref", [true, false]);
        graded("same", [true, false]);
        let r = check(&dir.join("same"), &dir.join("ref"), &o).unwrap();
        assert!(r.passed() && r.rows[0].flipped == Some(0), "{}", r.table());
        graded("same", [false, true]);
        let r = check(&dir.join("same"), &dir.join("ref"), &o).unwrap();
        assert!(!r.passed() && r.rows[0].flipped == Some(2), "{}", r.table());
        assert!(r.table().contains("CHANGED (answers flipped)"), "{}", r.table());
        // Another CPU model: statistical, and flips are sampling noise there, not counted.
        manifest("same", "cpu: B", 0.0);
        write(&dir.join("same"), &[row("h2o", 49.5, 200)]);
        let r = check(&dir.join("same"), &dir.join("ref"), &o).unwrap();
        assert!(r.passed() && r.rule.starts_with("statistical") && r.rows[0].flipped.is_none(), "{}", r.table());
        manifest("same", "cpu: A", 0.6);
        manifest("ref", "cpu: A", 0.6);
        assert!(check(&dir.join("same"), &dir.join("ref"), &o).unwrap().rule.starts_with("statistical"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
