//! `kvbench run`: a plan's jobs decoded on `--threads` workers, each taking the next group of
//! `plan.batch` samples from one queue. Every finished sample is appended to `samples.jsonl` and
//! flushed, so a killed run resumes where it stopped: finished samples are skipped, and the
//! summary is recomputed from all samples.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use super::progress::Progress;
use super::prompt::render_prompt;
use super::sample::{decode_batch, finish_job, start_job, PolicyResources, SampleState};
use crate::data;
use crate::io::{file_fingerprint, write_atomic};
use crate::model::source::{load, LoadOptions, LoadedModel, ModelSource};
use crate::plan::{specs, Job, Plan, Shard};
use crate::policies::PolicySpec;
use crate::results::record::{check_manifest, read_samples, Manifest};
use crate::results::summary::write_summary;

/// Where and how a plan runs.
pub struct RunConfig {
    pub out: PathBuf,
    pub data_dir: PathBuf,
    pub source: ModelSource,
    pub load: LoadOptions,
    /// Worker threads, each decoding one group of `plan.batch` samples at a time.
    pub threads: usize,
    pub shard: Option<Shard>,
}

/// Runs the jobs of `plan` (this shard's part of them) that `cfg.out` does not hold yet; returns
/// (run now, already done).
pub fn run(plan: &Plan, jobs: Vec<Job>, cfg: &RunConfig) -> Result<(usize, usize)> {
    let out = &cfg.out;
    let groups: Vec<Vec<Job>> = jobs.chunks(plan.batch.max(1)).map(|g| g.to_vec()).collect();
    let groups = match cfg.shard {
        Some(shard) => shard.select(groups),
        None => groups,
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    check_manifest(out, plan, cfg.shard)?;
    let samples_path = out.join("samples.jsonl");
    let finished = read_samples(&samples_path)?;
    let done: HashSet<String> = finished.iter().map(|r| r.key.clone()).collect();
    let is_done = |j: &Job| done.contains(&j.key(plan));
    let (todo, skipped): (Vec<&Job>, Vec<&Job>) = groups.iter().flatten().partition(|j| !is_done(j));
    // A group with anything left runs whole, so every sample keeps its batch-mates.
    let todo_groups: Vec<&Vec<Job>> = groups.iter().filter(|g| g.iter().any(|j| !is_done(j))).collect();
    let lm = load(&cfg.source, &cfg.load)?;
    let specs = specs(plan)?;
    check_prompts_fit(&lm, plan, &specs, &todo)?;
    write_manifest(out, plan, cfg, &lm)?;
    let resources = PolicyResources::new(&lm, plan.predictor.as_deref())?;
    let file = OpenOptions::new().create(true).append(true).open(&samples_path)?;
    let writer = Mutex::new(file);
    let queue = Mutex::new(todo_groups.into_iter());
    let progress = Progress::new(plan, &todo, &skipped, &finished);
    let failed = AtomicBool::new(false);
    let work = || -> Result<()> {
        let fail = |e: anyhow::Error| {
            failed.store(true, Ordering::Relaxed);
            e
        };
        while !failed.load(Ordering::Relaxed) {
            let Some(group) = queue.lock().map_err(|_| anyhow::anyhow!("queue poisoned"))?.next() else { break };
            let mut states = Vec::with_capacity(group.len());
            for job in group {
                if !is_done(job) {
                    progress.started(plan, job);
                }
                states.push(Some(start_job(&lm, &resources, &specs, plan, job).map_err(fail)?));
            }
            loop {
                // Each sample is written the moment it finishes, so a kill loses little.
                for (job, slot) in group.iter().zip(states.iter_mut()) {
                    if slot.as_ref().is_some_and(|s| s.finished()) {
                        let state = slot.take().expect("checked above");
                        if is_done(job) {
                            continue;
                        }
                        let record = finish_job(&lm, &specs, plan, job, state).map_err(fail)?;
                        let mut line = serde_json::to_string(&record)?;
                        line.push('\n');
                        {
                            let mut f = writer.lock().map_err(|_| anyhow::anyhow!("writer poisoned"))?;
                            f.write_all(line.as_bytes())?;
                            f.flush()?;
                        }
                        progress.finished(plan, job, &record);
                    }
                }
                let mut live: Vec<&mut SampleState> = states.iter_mut().flatten().collect();
                if live.is_empty() {
                    break;
                }
                decode_batch(&lm, &mut live).map_err(fail)?;
            }
        }
        Ok(())
    };
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..cfg.threads.max(1)).map(|_| s.spawn(work)).collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        Ok(())
    })?;
    progress.overall.finish_and_clear();
    write_summary(out, &read_samples(&samples_path)?, &plan.model)?;
    Ok((todo.len(), skipped.len()))
}

/// Policies that never evict the prompt need B above every prompt: checked for the whole plan
/// once the tokenizer is loaded, before any decoding.
fn check_prompts_fit(lm: &LoadedModel, plan: &Plan, specs: &[PolicySpec], jobs: &[&Job]) -> Result<()> {
    let mut seen = HashSet::new();
    for job in jobs.iter().filter(|j| specs[j.policy].protects_prompt()) {
        let Some(budget) = job.budget else { continue };
        if seen.insert((job.dataset.clone(), job.question.index, budget.budget)) {
            let n = render_prompt(lm, plan, &job.question)?.len();
            if n >= budget.budget {
                bail!(
                    "{} question {} has {n} prompt tokens, not below --budget {}, and {} never evicts the prompt",
                    job.dataset,
                    job.question.index,
                    budget.budget,
                    specs[job.policy].name
                );
            }
        }
    }
    Ok(())
}

fn write_manifest(out: &Path, plan: &Plan, cfg: &RunConfig, lm: &LoadedModel) -> Result<()> {
    let mut files = serde_json::Map::new();
    for f in &lm.files {
        files.insert(f.display().to_string(), file_fingerprint(f)?.into());
    }
    let mut dataset_hashes = serde_json::Map::new();
    for d in &plan.datasets {
        let def = data::definition(d)?;
        dataset_hashes.insert(d.clone(), def.file_sha256(&cfg.data_dir).unwrap_or_default().into());
    }
    let predictor = plan.predictor.as_deref().map(file_fingerprint).transpose()?;
    let provenance = serde_json::json!({
        "model_source": lm.source,
        "model_files": files,
        "predictor": predictor,
        "datasets": dataset_hashes,
        "kvbench_version": env!("CARGO_PKG_VERSION"),
        "git_commit": option_env!("KVBENCH_GIT_COMMIT").unwrap_or("unknown"),
        "device": format!("{:?}", lm.model.device()),
        "machine": machine_kind(lm.model.device()),
        "dtype": format!("{:?}", lm.model.dtype()),
        "threads": cfg.threads,
    });
    let manifest = Manifest {
        plan: plan.clone(),
        shard: cfg.shard,
        merged_from: Vec::new(),
        provenance: provenance.as_object().cloned().unwrap_or_default(),
    };
    write_atomic(&out.join("manifest.json"), serde_json::to_string_pretty(&manifest)?.as_bytes())
}

/// The kind of machine a run's numbers come from: greedy results are reproducible on the same
/// kind (`kvbench check` compares them exactly), not across CPU models or GPUs.
fn machine_kind(device: &candle_core::Device) -> String {
    if !device.is_cpu() {
        return format!("{device:?}");
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("cpu: {cpu}")
}
