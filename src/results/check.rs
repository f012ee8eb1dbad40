//! `kvbench check RESULT --against REFERENCE`: accuracy regression against a committed result.
//!
//! Configurations (model × dataset × policy × B/W/r) are matched by their summary rows. The rule,
//! the first that applies:
//! - a fixed `--tolerance` in points;
//! - **exact** when both runs decoded greedily with the same arithmetic (the manifests'
//!   `arithmetic`: device, and on a CPU the instruction sets its kernels dispatch on; plus dtype,
//!   weights and batch): the numbers are then deterministic, so any change is a change — in
//!   accuracy, or in which answers were right (a changed policy can flip as many answers one way
//!   as the other and leave the accuracy where it was: h2o keeping its lowest scores instead of
//!   its highest flipped 17 each way on the built-in benchmark);
//! - **paired** when both folders hold their `samples.jsonl`: the same questions under both
//!   runs, so the discordant answers decide — `lost` (right in the reference, wrong now) against
//!   `gained` — by an exact McNemar test at the two-sided level of z standard errors (z = 3:
//!   p < 0.0027); and for greedy runs, whose answers another arithmetic flips only at near-ties,
//!   more than `--max-flipped` % of a configuration's answers flipped either way is a change too;
//! - **unpaired** otherwise (summaries only): two binomial proportions over n = questions ×
//!   samples each, pooled (Laplace-smoothed, so that 0 % and 100 % still get a width), allowed z
//!   standard errors apart.
//!
//! Exit status (the caller's): 0 all within tolerance, 1 a configuration moved beyond it, 2 the
//! two cannot be compared (a configuration of the reference is missing, unreadable files).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::results::summary::{mcnemar_exact, SummaryRow};

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Fixed tolerance in accuracy points (overrides every rule).
    pub tolerance: Option<f64>,
    /// Standard errors allowed by the unpaired rule; the paired rule's level is their two-sided
    /// normal tail.
    pub z: f64,
    /// Under the paired rule, for greedy runs: the share of a configuration's answers (in %) that
    /// may flip either way.
    pub max_flipped: f64,
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
    /// In points; `None` under the exact and paired rules.
    pub tolerance: Option<f64>,
    /// Under the exact and paired rules: answers right in the reference and wrong in the result,
    /// and the other way round.
    pub flips: Option<(usize, usize)>,
    /// Under the paired rule: the exact McNemar p-value of the flips.
    pub p: Option<f64>,
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
            "{:<width$}  {:>9}  {:>9}  {:>7}  {:>9}  {:>11}  {:>8}  verdict",
            "configuration", "reference", "result", "Δ", "tolerance", "lost/gained", "p"
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{:<width$}  {:>8.1}%  {:>8.1}%  {:>+7.1}  {:>9}  {:>11}  {:>8}  {}",
                r.config,
                r.reference,
                r.result,
                r.result - r.reference,
                match (r.tolerance, r.p) {
                    (Some(t), _) => format!("±{t:.1}"),
                    (None, Some(_)) => "paired".to_string(),
                    (None, None) => "exact".to_string(),
                },
                r.flips.map_or("-".to_string(), |(l, g)| format!("{l}/{g}")),
                r.p.map_or("-".to_string(), |p| format!("{p:.2e}")),
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

/// Answers of a configuration that both runs graded: (right in `reference` only, right in
/// `result` only, graded by both).
fn flips(result: &Grades, reference: &Grades, key: &str) -> (usize, usize, usize) {
    let (Some(res), Some(refs)) = (result.get(key), reference.get(key)) else { return (0, 0, 0) };
    refs.iter()
        .filter_map(|(k, was)| res.get(k).map(|now| (*was, *now)))
        .fold((0, 0, 0), |(l, g, n), (was, now)| (l + (was && !now) as usize, g + (!was && now) as usize, n + 1))
}

/// What a manifest says about reproducibility: whether it decoded greedily, and its arithmetic
/// (`None` for manifests from before it was recorded, which cannot vouch for exactness).
fn identity(manifest: &Path) -> Result<(bool, Option<String>)> {
    let text = std::fs::read_to_string(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let m: crate::results::record::Manifest =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    let field = |k: &str| m.provenance.get(k).and_then(|v| v.as_str()).map(String::from);
    let id = match (field("arithmetic"), field("dtype")) {
        (Some(arithmetic), Some(dtype)) => {
            Some(format!("{arithmetic}; {dtype}, {} weights, batch {}", m.plan.weights.name(), m.plan.batch))
        }
        _ => None,
    };
    Ok((m.plan.sampling.is_greedy(), id))
}

/// The two-sided tail of the standard normal beyond ±z, erfc(z/√2) (Abramowitz & Stegun
/// 7.1.26, absolute error below 1.5e-7).
fn normal_two_sided_tail(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly =
        t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    poly * (-x * x).exp()
}

enum Rule {
    Fixed(f64),
    Exact,
    /// The McNemar level; the flips allowed (in % of answers), for greedy runs.
    Paired {
        alpha: f64,
        max_flipped: Option<f64>,
    },
    Unpaired,
}

pub fn check(result: &Path, reference: &Path, o: &CheckOptions) -> Result<CheckReport> {
    let (res_csv, res_manifest) = locate(result);
    let (ref_csv, ref_manifest) = locate(reference);
    let res_rows = read_rows(&res_csv)?;
    let ref_rows = read_rows(&ref_csv)?;
    if ref_rows.is_empty() {
        bail!("{} holds no configurations", ref_csv.display());
    }
    let (greedy, exact) = match (&res_manifest, &ref_manifest) {
        (Some(a), Some(b)) => {
            let ((ga, ia), (gb, ib)) = (identity(a)?, identity(b)?);
            let exact = match (ia, ib) {
                (Some(x), Some(y)) if ga && gb && x == y => Some(x),
                _ => None,
            };
            (ga && gb, exact)
        }
        _ => (false, None),
    };
    let samples = |csv: &Path| csv.with_file_name("samples.jsonl");
    let paired = samples(&res_csv).is_file() && samples(&ref_csv).is_file();
    let (rule, description) = match (o.tolerance, &exact) {
        (Some(t), _) => (Rule::Fixed(t), format!("fixed tolerance ±{t} points")),
        (None, Some(id)) => (Rule::Exact, format!("exact: greedy with the same arithmetic, {id}")),
        (None, None) if paired => {
            let alpha = normal_two_sided_tail(o.z);
            let flipped = if greedy { format!(", greedy: at most {} % flipped", o.max_flipped) } else { String::new() };
            (
                Rule::Paired { alpha, max_flipped: greedy.then_some(o.max_flipped) },
                format!(
                    "paired: exact McNemar test on the flipped answers, p < {alpha:.2e} ({} standard errors){flipped}",
                    o.z
                ),
            )
        }
        (None, None) => {
            (Rule::Unpaired, format!("unpaired: {} standard errors of the difference of two proportions", o.z))
        }
    };
    let grades = match rule {
        Rule::Exact | Rule::Paired { .. } if paired => {
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
        let moved = (got.accuracy - r.accuracy).abs();
        let counts = grades
            .as_ref()
            .map(|(res, refs)| flips(res, refs, &run_key(&r.dataset, &r.policy, r.budget, r.window, r.ratio)));
        let (tolerance, p, within) = match rule {
            Rule::Fixed(t) => (Some(t), None, moved <= t + 1e-9),
            Rule::Exact => (None, None, moved <= 1e-9 && counts.is_none_or(|(l, g, _)| l + g == 0)),
            Rule::Paired { alpha, max_flipped } => {
                let (lost, gained, n) = counts.unwrap_or_default();
                let p = mcnemar_exact(lost, gained);
                let allowed = max_flipped.map(|m| (m / 100.0 * n as f64).floor() as usize);
                (None, Some(p), p >= alpha && allowed.is_none_or(|a| lost + gained <= a))
            }
            Rule::Unpaired => {
                let (n1, n2) = ((r.questions * r.samples) as f64, (got.questions * got.samples) as f64);
                let k = r.accuracy / 100.0 * n1 + got.accuracy / 100.0 * n2;
                let pooled = (k + 1.0) / (n1 + n2 + 2.0);
                let t = 100.0 * o.z * (pooled * (1.0 - pooled) * (1.0 / n1.max(1.0) + 1.0 / n2.max(1.0))).sqrt();
                (Some(t), None, moved <= t + 1e-9)
            }
        };
        rows.push(Comparison {
            config: key,
            reference: r.accuracy,
            result: got.accuracy,
            tolerance,
            flips: counts.map(|(l, g, _)| (l, g)),
            p,
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
    Ok(CheckReport { rule: description, rows, extra })
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

    fn options() -> CheckOptions {
        CheckOptions { tolerance: None, z: 3.0, max_flipped: 1.0 }
    }

    #[test]
    fn unpaired_tolerance_follows_the_sample_count() {
        let dir = std::env::temp_dir().join(format!("kvbench-check-{}", std::process::id()));
        let reference = write(&dir.join("ref"), &[row("h2o", 50.0, 200), row("window", 10.0, 200)]);
        let o = options();
        // 200 questions at 50 %: σ of the difference ≈ 5 points, so ±15 passes and 20 does not.
        let near = write(&dir.join("near"), &[row("h2o", 40.0, 200), row("window", 12.0, 200)]);
        let r = check(&near, &reference, &o).unwrap();
        assert!(r.passed() && r.rule.starts_with("unpaired"), "{}", r.table());
        assert!((r.rows[0].tolerance.unwrap() - 15.0).abs() < 0.3, "{:?}", r.rows[0].tolerance);
        let far = write(&dir.join("far"), &[row("h2o", 30.0, 200), row("window", 10.0, 200)]);
        let r = check(&far, &reference, &o).unwrap();
        assert!(!r.passed());
        assert!(r.table().contains("REGRESSION (lower)"), "{}", r.table());
        // Fewer questions, wider tolerance: the same 20-point drop passes at n = 20.
        let small_ref = write(&dir.join("small-ref"), &[row("h2o", 50.0, 20)]);
        let small = write(&dir.join("small"), &[row("h2o", 30.0, 20)]);
        assert!(check(&small, &small_ref, &o).unwrap().passed());
        // A fixed tolerance overrides.
        let fixed = CheckOptions { tolerance: Some(5.0), ..options() };
        assert!(!check(&small, &small_ref, &fixed).unwrap().passed());
        // A missing configuration is an error, not a pass.
        let partial = write(&dir.join("partial"), &[row("h2o", 50.0, 200)]);
        let e = check(&partial, &reference, &o).unwrap_err().to_string();
        assert!(e.contains("lacks 1 configuration") && e.contains("window"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A run folder of 200 h2o answers: the summary row and samples.jsonl agree; the manifest
    /// says the arithmetic and the temperature.
    fn run_folder(dir: &Path, correct: &[bool], arithmetic: &str, machine: &str, temperature: f64) {
        let right = correct.iter().filter(|c| **c).count();
        write(dir, &[row("h2o", 100.0 * right as f64 / correct.len() as f64, correct.len())]);
        let lines: String = correct
            .iter()
            .enumerate()
            .map(|(q, ok)| {
                format!(
                    "{{\"dataset\":\"d\",\"policy\":\"h2o\",\"budget\":128,\"window\":32,\"ratio\":0.5,\
                     \"question_index\":{q},\"sample\":0,\"correct\":{ok},\"completion\":\"…\"}}\n"
                )
            })
            .collect();
        std::fs::write(dir.join("samples.jsonl"), lines).unwrap();
        let mut m: serde_json::Value =
            serde_json::from_str(include_str!("../../results/smollm2-cpu/manifest.json")).unwrap();
        m["machine"] = machine.into();
        m["arithmetic"] = arithmetic.into();
        m["plan"]["sampling"]["temperature"] = temperature.into();
        std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
    }

    /// The reference's 200 answers (100 right) with `lost` of its right ones made wrong and
    /// `gained` of its wrong ones made right.
    fn flipped(reference: &[bool], lost: usize, gained: usize) -> Vec<bool> {
        let (mut l, mut g) = (0, 0);
        reference
            .iter()
            .map(|&ok| match ok {
                true if l < lost => {
                    l += 1;
                    false
                }
                false if g < gained => {
                    g += 1;
                    true
                }
                _ => ok,
            })
            .collect()
    }

    /// Greedy runs with the same arithmetic agree exactly, whatever the CPU is called; the same
    /// accuracy with answers flipped both ways is a change there.
    #[test]
    fn greedy_runs_with_the_same_arithmetic_compare_exactly() {
        let dir = std::env::temp_dir().join(format!("kvbench-check-exact-{}", std::process::id()));
        let reference: Vec<bool> = (0..200).map(|q| q % 2 == 0).collect();
        let (a, b) = (
            "cpu x86_64; kernels: avx512f fma; compiled for: baseline",
            "cpu x86_64; kernels: fma; compiled for: baseline",
        );
        run_folder(&dir.join("ref"), &reference, a, "cpu: Intel(R) Xeon(R)", 0.0);
        run_folder(&dir.join("same"), &reference, a, "cpu: AMD EPYC", 0.0);
        let r = check(&dir.join("same"), &dir.join("ref"), &options()).unwrap();
        assert!(r.passed() && r.rule.starts_with("exact"), "{}", r.table());
        assert_eq!(r.rows[0].flips, Some((0, 0)));
        run_folder(&dir.join("same"), &flipped(&reference, 1, 1), a, "cpu: AMD EPYC", 0.0);
        let r = check(&dir.join("same"), &dir.join("ref"), &options()).unwrap();
        assert!(!r.passed() && r.rows[0].flips == Some((1, 1)), "{}", r.table());
        assert!(r.table().contains("CHANGED (answers flipped)"), "{}", r.table());
        // Other kernels: paired, and one flip each way is within the greedy allowance (2 of 200).
        run_folder(&dir.join("same"), &flipped(&reference, 1, 1), b, "cpu: AMD EPYC", 0.0);
        let r = check(&dir.join("same"), &dir.join("ref"), &options()).unwrap();
        assert!(r.passed() && r.rule.starts_with("paired"), "{}", r.table());
        // A manifest from before the arithmetic was recorded cannot vouch for exactness.
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("ref/manifest.json")).unwrap()).unwrap();
        m.as_object_mut().unwrap().remove("arithmetic");
        std::fs::write(dir.join("ref/manifest.json"), m.to_string()).unwrap();
        run_folder(&dir.join("same"), &reference, a, "cpu: Intel(R) Xeon(R)", 0.0);
        assert!(check(&dir.join("same"), &dir.join("ref"), &options()).unwrap().rule.starts_with("paired"));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Where exactness does not apply, the paired rule catches a 5-point drop at n = 200 (10
    /// answers lost, none gained: p = 2⁻⁹ < 0.0027) but not 9 (p = 2⁻⁸); and for greedy runs it
    /// catches a change that flips answers both ways at the same accuracy (17 and 17, as h2o
    /// keeping its lowest scores did), which no test on accuracy can see.
    #[test]
    fn the_paired_rule_catches_a_five_point_drop_and_greedy_answers_flipped_both_ways() {
        let dir = std::env::temp_dir().join(format!("kvbench-check-paired-{}", std::process::id()));
        let reference: Vec<bool> = (0..200).map(|q| q % 2 == 0).collect();
        let (a, b) = ("cpu x86_64; kernels: avx512f fma", "cpu aarch64; kernels: neon");
        let verdict = |lost: usize, gained: usize, temperature: f64| {
            run_folder(&dir.join("ref"), &reference, a, "x", temperature);
            run_folder(&dir.join("run"), &flipped(&reference, lost, gained), b, "y", temperature);
            let r = check(&dir.join("run"), &dir.join("ref"), &options()).unwrap();
            assert!(r.rule.starts_with("paired"), "{}", r.table());
            assert_eq!(r.rows[0].flips, Some((lost, gained)));
            r
        };
        for temperature in [0.0, 0.6] {
            let r = verdict(10, 0, temperature);
            assert!(!r.passed() && r.table().contains("REGRESSION (lower)"), "{}", r.table());
            assert!((r.rows[0].p.unwrap() - 2.0f64.powi(-9)).abs() < 1e-12);
            assert!(verdict(0, 0, temperature).passed());
        }
        // Sampled runs: flips both ways are the samples' noise; 9 lost alone is not yet significant.
        assert!(verdict(9, 0, 0.6).passed());
        assert!(verdict(17, 17, 0.6).passed());
        // Greedy runs: more than 1 % of the answers flipped is a change, whichever way.
        let r = verdict(17, 17, 0.0);
        assert!(!r.passed() && r.table().contains("CHANGED (answers flipped)"), "{}", r.table());
        assert!(!verdict(3, 0, 0.0).passed());
        assert!(verdict(1, 1, 0.0).passed());
        let loose = CheckOptions { max_flipped: 20.0, ..options() };
        assert!(check(&dir.join("run"), &dir.join("ref"), &loose).unwrap().passed());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_normal_tail_matches_known_values() {
        assert!((normal_two_sided_tail(3.0) - 0.002_699_796).abs() < 2e-7);
        assert!((normal_two_sided_tail(1.959_964) - 0.05).abs() < 2e-7);
        assert!((normal_two_sided_tail(0.0) - 1.0).abs() < 2e-7);
    }
}
