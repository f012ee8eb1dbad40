//! What a plan will cost, before any weight is loaded: samples to run, prompt tokens (counted
//! with the model's tokenizer), generated tokens (the means of finished samples of this plan or of
//! a pilot run, else `max_new_tokens`) and wall time, from a `kvbench bench` CSV that timed the
//! same model on the same device, dtype and weights (the calibration).
//!
//! The time model: a sample costs its prefill (prompt tokens at the calibrated prefill rate for
//! that length) plus one decode step per generated token at the calibrated step time per row for
//! its cache length — growing with the prompt and the tokens so far, held at B once a budgeted
//! policy evicts. Steps are timed at the plan's batch (or the nearest one timed), with all of the
//! machine's cores, which is how `kvbench run`'s workers share them; the last, partly filled steps
//! of a run are not modelled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use super::{budget_label, Job, Plan};

/// Which machine a calibration must come from: `kvbench bench`'s columns of the same names.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub model: String,
    /// `cpu` or `cuda`.
    pub device: String,
    pub dtype: String,
    pub weights: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {} ({}, {} weights)", self.model, self.device, self.dtype, self.weights)
    }
}

/// The columns of a `kvbench bench` row that the estimate reads.
#[derive(Debug, Deserialize)]
struct BenchRow {
    model: String,
    device: String,
    dtype: String,
    weights: String,
    threads: usize,
    policy: String,
    batch: usize,
    decode: String,
    context: usize,
    prefill_tok_s: Option<f64>,
    cache_len: f64,
    ms_per_step: f64,
}

/// Measured step and prefill times of one model on one machine.
#[derive(Debug)]
pub struct Calibration {
    pub path: PathBuf,
    pub threads: usize,
    /// (policy, batch) → (mean cache length, ms per step), by cache length.
    decode: HashMap<(String, usize), Vec<(f64, f64)>>,
    /// batch → (prompt length, seconds per prompt token), by length.
    prefill: HashMap<usize, Vec<(f64, f64)>>,
}

impl Calibration {
    /// The rows of `path` for `target` (the pooled decode path, the one `kvbench run` takes);
    /// `Ok(None)` when the file has none, with the models it does have.
    pub fn read(path: &Path, target: &Target) -> Result<std::result::Result<Self, String>> {
        let mut reader = csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
        let mut others = Vec::new();
        let mut cal =
            Calibration { path: path.to_path_buf(), threads: 0, decode: HashMap::new(), prefill: HashMap::new() };
        for (i, row) in reader.deserialize::<BenchRow>().enumerate() {
            let row = row.with_context(|| format!("{} row {}: not a `kvbench bench` row", path.display(), i + 1))?;
            let t = Target { model: row.model, device: row.device, dtype: row.dtype, weights: row.weights };
            if t != *target {
                others.push(t.to_string());
                continue;
            }
            if row.decode != "pool" {
                continue;
            }
            cal.threads = row.threads;
            cal.decode.entry((row.policy, row.batch)).or_default().push((row.cache_len, row.ms_per_step));
            if let Some(rate) = row.prefill_tok_s.filter(|r| *r > 0.0) {
                cal.prefill.entry(row.batch).or_default().push((row.context as f64, 1.0 / rate));
            }
        }
        if cal.decode.is_empty() {
            others.sort();
            others.dedup();
            let had = if others.is_empty() { "no pooled-decode rows".to_string() } else { others.join("; ") };
            return Ok(Err(format!("{} has no rows for {target} (it has: {had})", path.display())));
        }
        for points in cal.decode.values_mut().chain(cal.prefill.values_mut()) {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Ok(Ok(cal))
    }

    /// The timed batch nearest `batch` (by ratio) among `policy`'s rows, else `full`'s, else any
    /// policy's; with the policy whose rows are used.
    fn curve(&self, policy: &str, batch: usize) -> (&str, usize, &[(f64, f64)]) {
        let pick = |p: &str| {
            self.decode.iter().filter(|((q, _), _)| q == p).min_by(|((_, a), _), ((_, b), _)| {
                let d = |x: usize| ((x as f64) / (batch as f64)).ln().abs();
                d(*a).total_cmp(&d(*b)).then(a.cmp(b))
            })
        };
        let mut names: Vec<&String> = self.decode.keys().map(|(p, _)| p).collect();
        names.sort();
        let ((p, b), points) =
            pick(policy).or_else(|| pick("full")).or_else(|| pick(names[0])).expect("a calibration has decode rows");
        (p.as_str(), *b, points.as_slice())
    }
}

/// Piecewise-linear in x through sorted points: flat below the first, extended along the last
/// segment (never downwards) above the last.
fn interpolate(points: &[(f64, f64)], x: f64) -> f64 {
    let (first, last) = (points[0], points[points.len() - 1]);
    if points.len() == 1 || x <= first.0 {
        return first.1;
    }
    let i = points.iter().position(|p| p.0 >= x).unwrap_or(points.len() - 1).max(1);
    let (a, b) = (points[i - 1], points[i]);
    let slope = if b.0 > a.0 { (b.1 - a.1) / (b.0 - a.0) } else { 0.0 };
    if x > last.0 {
        return last.1 + slope.max(0.0) * (x - last.0);
    }
    a.1 + slope * (x - a.0)
}

/// Mean generated tokens of finished samples, by configuration, by policy and by dataset.
#[derive(Debug, Default)]
pub struct Lengths {
    sums: HashMap<(String, String, String), (f64, usize)>,
}

impl Lengths {
    /// A finished sample of this configuration (dataset, policy, budget label) and its length.
    pub fn add(&mut self, config: (String, String, String), generated_tokens: usize) {
        let e = self.sums.entry(config).or_default();
        e.0 += generated_tokens as f64;
        e.1 += 1;
    }

    /// The mean for this dataset, policy and budget; else over the policy's budgets; else over the
    /// dataset's samples.
    fn mean(&self, dataset: &str, policy: &str, label: &str) -> Option<f64> {
        let over = |f: &dyn Fn(&(String, String, String)) -> bool| {
            let (s, n) = self.sums.iter().filter(|(k, _)| f(k)).fold((0.0, 0), |(s, n), (_, v)| (s + v.0, n + v.1));
            (n > 0).then(|| s / n as f64)
        };
        over(&|k| k.0 == dataset && k.1 == policy && k.2 == label)
            .or_else(|| over(&|k| k.0 == dataset && k.1 == policy))
            .or_else(|| over(&|k| k.0 == dataset))
    }
}

/// A plan's estimated cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub samples: usize,
    pub prompt_tokens: u64,
    pub generated_tokens: f64,
    /// Samples whose length came from finished samples (the rest count `max_new_tokens`).
    pub measured_lengths: usize,
    /// Wall seconds, with a calibration.
    pub secs: Option<f64>,
    /// How the calibration was applied (batch timed, policies timed as another).
    pub notes: Vec<String>,
}

/// The cost of `jobs` (the samples still to run). `prompt_len` gives a job's prompt tokens;
/// `parallel`: how many workers run side by side at the calibrated speed each.
pub fn estimate(
    plan: &Plan,
    jobs: &[&Job],
    prompt_len: &mut dyn FnMut(&Job) -> Result<usize>,
    lengths: &Lengths,
    calibration: Option<&Calibration>,
    parallel: usize,
) -> Result<Estimate> {
    let mut e = Estimate {
        samples: jobs.len(),
        prompt_tokens: 0,
        generated_tokens: 0.0,
        measured_lengths: 0,
        secs: calibration.map(|_| 0.0),
        notes: Vec::new(),
    };
    let mut stand_ins = Vec::new();
    for job in jobs {
        let policy = plan.policies[job.policy].as_str();
        let p = prompt_len(job)?;
        let label = budget_label(job.budget.as_ref());
        let g = match lengths.mean(&job.dataset, policy, &label) {
            Some(m) => {
                e.measured_lengths += 1;
                m.min(plan.max_new_tokens as f64)
            }
            None => plan.max_new_tokens as f64,
        };
        e.prompt_tokens += p as u64;
        e.generated_tokens += g;
        let (Some(cal), Some(secs)) = (calibration, e.secs.as_mut()) else { continue };
        let (timed_as, batch, points) = cal.curve(policy, plan.batch);
        if timed_as != policy {
            stand_ins.push(format!("{policy} as {timed_as}"));
        }
        if batch != plan.batch {
            e.notes.push(format!("steps timed at batch {batch}, the plan's is {}", plan.batch));
        }
        let per_token = |cache: f64| interpolate(points, cache) / 1e3 / batch as f64;
        // The cache grows from the prompt until it reaches B, then stays there.
        let (p, cap) = (p as f64, job.budget.map_or(f64::INFINITY, |b| b.budget as f64));
        let growing = if p < cap { g.min(cap - p) } else { 0.0 };
        *secs += growing * per_token(p + growing / 2.0) + (g - growing) * per_token(cap.min(p + g));
        if let Some(prefill) = cal.prefill.get(&batch) {
            *secs += p * interpolate(prefill, p);
        }
    }
    if let Some(secs) = e.secs.as_mut() {
        *secs /= parallel.max(1) as f64;
    }
    if let Some(cal) = calibration {
        if cal.prefill.values().all(|v| v.is_empty()) {
            e.notes.push("no prefill rows: prefill not counted".into());
        }
    }
    stand_ins.sort();
    stand_ins.dedup();
    if !stand_ins.is_empty() {
        e.notes.push(format!("not timed, counted as another: {}", stand_ins.join(", ")));
    }
    e.notes.dedup();
    Ok(e)
}

/// `42 s`, `12 min`, `3.4 h`.
pub fn human_secs(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::Budget;

    #[test]
    fn interpolation_is_linear_between_points_flat_below_and_extended_above() {
        let pts = [(100.0, 10.0), (200.0, 20.0), (400.0, 30.0)];
        assert_eq!(interpolate(&pts, 50.0), 10.0);
        assert_eq!(interpolate(&pts, 150.0), 15.0);
        assert_eq!(interpolate(&pts, 300.0), 25.0);
        assert_eq!(interpolate(&pts, 800.0), 50.0);
        assert_eq!(interpolate(&[(100.0, 7.0)], 900.0), 7.0);
        // A last segment that falls does not extrapolate downwards.
        assert_eq!(interpolate(&[(100.0, 9.0), (200.0, 8.0)], 400.0), 8.0);
    }

    fn plan(batch: usize) -> Plan {
        serde_json::from_value(serde_json::json!({
            "model": "m.gguf", "datasets": ["d"], "policies": ["full", "window", "h2o"],
            "policy_params": [{}, {}, {}], "budgets": {"d": [{"budget": 300, "window": 10, "ratio": 0.5}]},
            "samples": 1, "seed": 0, "sampling": {"temperature": 0.0, "top_p": 1.0, "top_k": 0},
            "max_new_tokens": 1000, "limit": null, "ids": null, "instruction": null, "prefill_chunk": 512,
            "predictor": null, "batch": batch
        }))
        .unwrap()
    }

    fn job(policy: usize, budget: Option<usize>) -> Job {
        Job {
            dataset: "d".into(),
            question: crate::data::Question { index: 0, id: "0".into(), question: "q".into(), reference: "1".into() },
            policy,
            budget: budget.map(|b| Budget { budget: b, window: 10, ratio: 0.5 }),
            sample: 0,
        }
    }

    const HEADER: &str =
        "model,device,dtype,weights,threads,policy,batch,decode,context,prefill_tok_s,cache_len,ms_per_step\n";

    fn bench_csv(name: &str, rows: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("kvbench-estimate-{}-{name}.csv", std::process::id()));
        std::fs::write(&path, format!("{HEADER}{rows}")).unwrap();
        path
    }

    fn target() -> Target {
        Target { model: "m.gguf".into(), device: "cpu".into(), dtype: "f32".into(), weights: "native".into() }
    }

    /// Hand-computed: step time 0.1 ms per cached token per step at batch 2 (a line through the
    /// origin), prefill 1 ms per prompt token.
    #[test]
    fn estimate_sums_prefill_and_steps_along_the_cache_length() {
        let path = bench_csv(
            "sums",
            "m.gguf,cpu,f32,native,2,full,2,pool,100,1000,100,10\n\
             m.gguf,cpu,f32,native,2,full,2,pool,200,1000,200,20\n\
             other.gguf,cpu,f32,native,2,full,2,pool,100,1000,100,99\n\
             m.gguf,cpu,f32,native,2,full,2,per-sequence,100,1000,100,99\n\
             m.gguf,cpu,f32,native,2,window,8,pool,100,,100,40\n",
        );
        let cal = Calibration::read(&path, &target()).unwrap().unwrap();
        std::fs::remove_file(&path).unwrap();
        let plan = plan(2);
        let jobs = [job(0, None), job(1, Some(300)), job(2, Some(300))];
        let refs: Vec<&Job> = jobs.iter().collect();
        let mut lengths = Lengths::default();
        let config = |policy: &str, label: &str| ("d".to_string(), policy.to_string(), label.to_string());
        lengths.add(config("full", "full"), 400);
        lengths.add(config("full", "full"), 600);
        lengths.add(config("window", "B300-W10-r0.5"), 200);
        let e = estimate(&plan, &refs, &mut |_| Ok(100), &lengths, Some(&cal), 1).unwrap();
        // full: 500 tokens from 100 to 600 cached, mean 350 → 0.035 ms... per row: 35 ms / 2 rows.
        let full = 100.0 * 1e-3 + 500.0 * (350.0 * 0.1 / 2.0) / 1e3;
        // window: 200 tokens (its own mean), timed at batch 8: 40 ms / 8 rows, flat; no prefill rows
        // at batch 8.
        let window = 200.0 * (40.0 / 8.0) / 1e3;
        // h2o: no samples of its own, so the dataset's mean (400); untimed, so timed as full, and
        // its cache stops at B = 300: 200 tokens growing from 100 (mean 200), 200 at 300.
        let h2o = 100.0 * 1e-3 + (200.0 * (200.0 * 0.1 / 2.0) + 200.0 * (300.0 * 0.1 / 2.0)) / 1e3;
        assert_eq!(e.samples, 3);
        assert_eq!(e.prompt_tokens, 300);
        assert_eq!(e.generated_tokens, 500.0 + 200.0 + 400.0);
        assert_eq!(e.measured_lengths, 3);
        assert!((e.secs.unwrap() - (full + window + h2o)).abs() < 1e-9, "{:?} vs {}", e.secs, full + window + h2o);
        assert!(e.notes.iter().any(|n| n == "not timed, counted as another: h2o as full"), "{:?}", e.notes);
        assert!(e.notes.iter().any(|n| n == "steps timed at batch 8, the plan's is 2"), "{:?}", e.notes);
        // Two workers side by side halve the time.
        let two = estimate(&plan, &refs, &mut |_| Ok(100), &lengths, Some(&cal), 2).unwrap();
        assert!((two.secs.unwrap() - e.secs.unwrap() / 2.0).abs() < 1e-12);
        // Without samples, every sample counts max_new_tokens; without a calibration, no time.
        let e = estimate(&plan, &refs, &mut |_| Ok(100), &Lengths::default(), None, 1).unwrap();
        assert_eq!((e.generated_tokens, e.measured_lengths, e.secs), (3000.0, 0, None));
    }

    #[test]
    fn a_calibration_without_the_target_names_what_it_has() {
        let path = bench_csv("other", "other.gguf,cuda,bf16,dequantized,1,full,8,pool,100,1,100,1\n");
        let why = Calibration::read(&path, &target()).unwrap().unwrap_err();
        assert!(why.contains("no rows for m.gguf on cpu (f32, native weights)"), "{why}");
        assert!(why.contains("it has: other.gguf on cuda (bf16, dequantized weights)"), "{why}");
        std::fs::write(&path, "model,device\nx,y\n").unwrap();
        let err = Calibration::read(&path, &target()).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(format!("{err:#}").contains("row 1: not a `kvbench bench` row"), "{err:#}");
    }
}
