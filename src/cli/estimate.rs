//! The cost lines of `kvbench run --dry-run` and `kvbench slurm`: the plan's samples still to
//! run, its tokens and, with a calibration (a `kvbench bench` CSV of this model on this device),
//! its wall time. Reads the tokenizer, the results folder and the calibration; no weights.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::args::RunArgs;
use super::defaults;
use super::setup::{PlannedRun, RunSetup};
use crate::plan::estimate::{estimate, human_secs, Calibration, Lengths, Target};
use crate::plan::{budget_label, Job};
use crate::policies::Budget;
use crate::results::record::{read_samples, SampleRecord};

/// Where the estimate's inputs come from.
pub struct EstimateInputs {
    calibration: PathBuf,
    /// Given on the command line (a missing file is then an error, not a note).
    calibration_named: bool,
    pilot: Option<PathBuf>,
}

impl EstimateInputs {
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        if let Some(c) = &args.calibration {
            if !c.is_file() {
                bail!(
                    "--calibration {}: no such file (write one with `kvbench bench --out {}`)",
                    c.display(),
                    c.display()
                );
            }
        }
        if let Some(p) = &args.pilot {
            if !samples_file(p).is_file() {
                bail!("--pilot {}: no samples.jsonl there (a `kvbench run` folder)", p.display());
            }
        }
        Ok(Self {
            calibration: args.calibration.clone().unwrap_or_else(|| PathBuf::from(defaults::BENCH_CSV)),
            calibration_named: args.calibration.is_some(),
            pilot: args.pilot.clone(),
        })
    }
}

fn samples_file(run: &Path) -> PathBuf {
    if run.extension().is_some_and(|e| e == "jsonl") {
        run.to_path_buf()
    } else {
        run.join("samples.jsonl")
    }
}

/// The estimate of one model's plan (`jobs`: its part under `setup.shard`), as lines to print;
/// `shards`: the array tasks `kvbench slurm` spreads it over.
pub fn describe(
    setup: &RunSetup,
    r: &PlannedRun,
    jobs: &[Job],
    inputs: &EstimateInputs,
    shards: Option<usize>,
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let finished = read_samples(&r.out.join("samples.jsonl"))?;
    let done: HashSet<&str> = finished.iter().map(|s| s.key.as_str()).collect();
    let todo: Vec<&Job> = jobs.iter().filter(|j| !done.contains(j.key(&r.plan).as_str())).collect();
    let mut lengths = Lengths::default();
    for s in &finished {
        lengths.add(config(s), s.generated_tokens);
    }
    let mut length_sources = Vec::new();
    if !finished.is_empty() {
        length_sources.push(format!("{} finished here", finished.len()));
    }
    if let Some(p) = &inputs.pilot {
        let pilot = read_samples(&samples_file(p))?;
        // The plan's own samples come first: the pilot's count only where the plan has none.
        let own: HashSet<_> = finished.iter().map(config).collect();
        let extra: Vec<_> = pilot.iter().filter(|s| !own.contains(&config(s))).collect();
        length_sources.push(format!("{} of the pilot {}", extra.len(), p.display()));
        for s in extra {
            lengths.add(config(s), s.generated_tokens);
        }
    }

    let text = crate::model::source::load_text(&r.source);
    let mut prompt_lens: HashMap<(String, usize), usize> = HashMap::new();
    let mut prompt_len = |job: &Job| -> Result<usize> {
        let Ok(text) = &text else { return Ok(0) };
        let key = (job.dataset.clone(), job.question.index);
        if let Some(n) = prompt_lens.get(&key) {
            return Ok(*n);
        }
        let n = crate::eval::prompt::render_prompt(text, &r.plan, &job.question)?.len();
        prompt_lens.insert(key, n);
        Ok(n)
    };

    let dtype = match setup.dtype.as_deref() {
        Some(d) => d.to_string(),
        None if setup.device == "cpu" => "f32".into(),
        None => "bf16".into(),
    };
    let device = setup.device.split(':').next().unwrap_or("cpu").to_string();
    let target =
        Target { model: r.source.display(), device: device.clone(), dtype, weights: setup.weights.name().into() };
    let calibration = if inputs.calibration.is_file() {
        Calibration::read(&inputs.calibration, &target)?
    } else {
        Err(format!("no calibration at {}", inputs.calibration.display()))
    };
    // On a CPU, workers run side by side as far as the cores allow each the calibration's threads;
    // on a GPU they share the device.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parallel = match &calibration {
        Ok(cal) if device == "cpu" => (cores / cal.threads.max(1)).clamp(1, setup.threads),
        _ => 1,
    };
    let e = estimate(&r.plan, &todo, &mut prompt_len, &lengths, calibration.as_ref().ok(), parallel)?;
    let longest_prompt = prompt_lens.values().copied().max().unwrap_or(0);

    let generated = if e.measured_lengths == e.samples {
        format!("≈ {:.0} generated (means of {})", e.generated_tokens, length_sources.join(" and "))
    } else if e.measured_lengths == 0 {
        format!(
            "at most {:.0} generated (max_new_tokens each; --pilot RUN gives means from a pilot run)",
            e.generated_tokens
        )
    } else {
        format!(
            "≈ {:.0} generated (means of {} for {} samples, max_new_tokens for the other {})",
            e.generated_tokens,
            length_sources.join(" and "),
            e.measured_lengths,
            e.samples - e.measured_lengths
        )
    };
    let prompts = match &text {
        Ok(_) => format!("{} prompt tokens", e.prompt_tokens),
        Err(err) => format!("prompt tokens not counted ({err:#})"),
    };
    lines.push(format!(
        "estimate: {} samples to run ({} done); {prompts}; {generated}",
        e.samples,
        jobs.len() - e.samples
    ));
    match (calibration, e.secs) {
        (Ok(cal), Some(secs)) => {
            let bound = if e.measured_lengths < e.samples { "at most " } else { "≈ " };
            let hours = if device == "cuda" { format!(" = {:.1} GPU-hours", secs / 3600.0) } else { String::new() };
            let mut line = format!(
                "  time: {bound}{} on {device}{hours} (calibration {}: {} threads per worker, {parallel} of {} workers side by side)",
                human_secs(secs),
                cal.path.display(),
                cal.threads,
                setup.threads
            );
            if let Some(n) = shards.filter(|n| *n > 1) {
                line.push_str(&format!("; {} per array task of {n}", human_secs(secs / n as f64)));
            }
            lines.push(line);
            for note in &e.notes {
                lines.push(format!("    ({note})"));
            }
        }
        (why, _) => {
            let why = why.err().unwrap_or_default();
            let budget = r.plan.budgets.values().flatten().next();
            // Decoding from the mean prompt through the longest history the plan allows.
            let prompt = (e.prompt_tokens as usize / e.samples.max(1)).max(1);
            let hi = longest_prompt.max(prompt) + r.plan.max_new_tokens;
            let mut contexts = vec![prompt + (hi - prompt) / 4, prompt + (hi - prompt) / 2, hi];
            contexts.dedup();
            let contexts: Vec<String> = contexts.iter().map(|c| c.to_string()).collect();
            let mut bench = format!(
                "kvbench bench --model {} --device {} --batch {} --policies {} --prompt {prompt} --context {}",
                r.plan.model,
                setup.device,
                r.plan.batch,
                r.plan.policies.join(","),
                contexts.join(",")
            );
            if let Some(b) = budget {
                bench.push_str(&format!(" --budget {} --window {} --ratio {}", b.budget, b.window, b.ratio));
            }
            if device == "cpu" && setup.threads > 1 {
                bench.push_str(&format!(" --threads {}", (cores / setup.threads).max(1)));
            }
            if let Some(p) = &r.plan.predictor {
                bench.push_str(&format!(" --predictor {}", p.display()));
            }
            if let Some(d) = &setup.dtype {
                bench.push_str(&format!(" --dtype {d}"));
            }
            if !setup.weights.is_default() {
                bench.push_str(&format!(" --weights {}", setup.weights.name()));
            }
            if inputs.calibration_named {
                bench.push_str(&format!(" --out {}", inputs.calibration.display()));
            }
            lines.push(format!("  time: not estimated: {why}; time this model with `{bench}`"));
        }
    }
    Ok(lines)
}

/// A finished sample's configuration: dataset, policy, budget label.
fn config(s: &SampleRecord) -> (String, String, String) {
    let budget = (s.budget > 0).then_some(Budget { budget: s.budget, window: s.window, ratio: s.ratio });
    (s.dataset.clone(), s.policy.clone(), budget_label(budget.as_ref()))
}
