//! `kvbench run`: a plan's jobs decoded on `--threads` workers. Each worker keeps the `--batch`
//! slots of its cache pool full (continuous batching): when a sample finishes, the next job of the
//! worker's queue is prefilled into the freed slot. Worker w takes jobs w, w + T, w + 2T, … of
//! the plan's order, so the schedule depends only on the plan and the tokens, never on timing;
//! and since a row's numbers do not depend on its batch-mates (on the CPU in f32), neither do the
//! results. Every finished sample is appended to `samples.jsonl` and flushed, so a killed run
//! resumes where it stopped: finished samples are skipped, and the summary is recomputed from all
//! samples.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use super::progress::Progress;
use super::prompt::render_prompt;
use super::sample::{cache_capacity, decode_batch, finish_job, job_params, start_job, PolicyResources, SampleState};
use crate::data;
use crate::io::{file_fingerprint, write_atomic};
use crate::model::source::{load, LoadOptions, LoadedModel, ModelSource};
use crate::plan::{shard_jobs, specs, Job, Plan, Shard};
use crate::policies::PolicySpec;
use crate::results::record::{check_manifest, read_samples, Manifest};
use crate::results::summary::write_summary;

/// Where and how a plan runs.
pub struct RunConfig {
    pub out: PathBuf,
    pub data_dir: PathBuf,
    pub source: ModelSource,
    pub load: LoadOptions,
    /// Worker threads, each decoding up to `plan.batch` samples at a time.
    pub threads: usize,
    pub shard: Option<Shard>,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunReport {
    pub ran: usize,
    pub skipped: usize,
    /// Busy slots over all slots, averaged over the decode steps (`None`: no step ran).
    pub slot_occupancy: Option<f64>,
}

/// Runs the jobs of `plan` (this shard's part of them) that `cfg.out` does not hold yet.
pub fn run(plan: &Plan, jobs: Vec<Job>, cfg: &RunConfig) -> Result<RunReport> {
    let out = &cfg.out;
    let jobs = shard_jobs(plan, jobs, cfg.shard);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    check_manifest(out, plan, cfg.shard)?;
    let samples_path = out.join("samples.jsonl");
    let finished = read_samples(&samples_path)?;
    let done: HashSet<String> = finished.iter().map(|r| r.key.clone()).collect();
    let (todo, skipped): (Vec<&Job>, Vec<&Job>) = jobs.iter().partition(|j| !done.contains(&j.key(plan)));
    if todo.is_empty() && out.join("manifest.json").is_file() {
        // Nothing to decode: the summary is recomputed without loading the weights, and the
        // manifest of the run that made the samples stays as it was.
        write_summary(out, &finished, &plan.model)?;
        return Ok(RunReport { ran: 0, skipped: skipped.len(), slot_occupancy: None });
    }
    let lm = load(&cfg.source, &cfg.load)?;
    let specs = specs(plan)?;
    let capacity = check_prompts_fit(&lm, plan, &specs, &todo)?;
    write_manifest(out, plan, cfg, &lm, None)?;
    let resources = PolicyResources::new(&lm, plan.predictor.as_deref())?;
    let file = OpenOptions::new().create(true).append(true).open(&samples_path)?;
    let writer = Mutex::new(file);
    let progress = Progress::new(plan, &todo, &skipped, &finished);
    let failed = AtomicBool::new(false);
    let threads = cfg.threads.max(1);
    let work = |w: usize| -> Result<(u64, u64)> {
        let fail = |e: anyhow::Error| {
            failed.store(true, Ordering::Relaxed);
            e
        };
        let mut queue = todo.iter().skip(w).step_by(threads).copied();
        let pool = lm.model.new_pool(plan.batch.max(1), capacity).map_err(fail)?;
        let mut live: Vec<(&Job, SampleState)> = Vec::with_capacity(plan.batch);
        let (mut busy, mut offered) = (0u64, 0u64);
        while !failed.load(Ordering::Relaxed) {
            // Each sample is written the moment it finishes (its slot freed), so a kill loses little.
            let mut i = 0;
            while i < live.len() {
                if !live[i].1.finished() {
                    i += 1;
                    continue;
                }
                let (job, state) = live.remove(i);
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
            while live.len() < plan.batch.max(1) {
                let Some(job) = queue.next() else { break };
                progress.started(plan, job);
                live.push((job, start_job(&lm, &resources, &specs, plan, job, Some(&pool)).map_err(fail)?));
            }
            if live.is_empty() {
                break;
            }
            let mut batch: Vec<&mut SampleState> = live.iter_mut().map(|(_, s)| s).filter(|s| !s.finished()).collect();
            if batch.is_empty() {
                continue;
            }
            busy += batch.len() as u64;
            offered += pool.slots() as u64;
            decode_batch(&lm, &mut batch).map_err(fail)?;
            progress.slots(batch.len(), pool.slots());
        }
        Ok((busy, offered))
    };
    let counts = std::thread::scope(|s| -> Result<Vec<(u64, u64)>> {
        let handles: Vec<_> = (0..threads).map(|w| s.spawn(move || work(w))).collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("a worker panicked"))?).collect()
    })?;
    progress.overall.finish_and_clear();
    let (busy, offered) = counts.iter().fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
    let slot_occupancy = (offered > 0).then(|| busy as f64 / offered as f64);
    write_manifest(out, plan, cfg, &lm, slot_occupancy)?;
    write_summary(out, &read_samples(&samples_path)?, &plan.model)?;
    Ok(RunReport { ran: todo.len(), skipped: skipped.len(), slot_occupancy })
}

/// Policies that never evict the prompt need B above every prompt: checked for the whole plan
/// once the tokenizer is loaded, before any decoding. Returns the cache entries the largest job
/// needs (what a worker's slots hold).
fn check_prompts_fit(lm: &LoadedModel, plan: &Plan, specs: &[PolicySpec], jobs: &[&Job]) -> Result<usize> {
    let params = job_params(lm, plan);
    let mut prompt_lens: HashMap<(&str, usize), usize> = HashMap::new();
    let mut capacity = 1;
    for job in jobs {
        let key = (job.dataset.as_str(), job.question.index);
        let n = match prompt_lens.entry(key) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => *e.insert(render_prompt(lm, plan, &job.question)?.len()),
        };
        capacity = capacity.max(cache_capacity(&specs[job.policy], job.budget, n, &params));
        if !specs[job.policy].protects_prompt() {
            continue;
        }
        if let Some(budget) = job.budget {
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
    Ok(capacity)
}

/// The manifest: the plan and where its numbers come from; after a run, also how full the slots
/// were kept.
fn write_manifest(
    out: &Path,
    plan: &Plan,
    cfg: &RunConfig,
    lm: &LoadedModel,
    slot_occupancy: Option<f64>,
) -> Result<()> {
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
        "arithmetic": arithmetic_kind(lm.model.device(), lm.model.dtype(), lm.model.is_quantized()),
        "dtype": format!("{:?}", lm.model.dtype()),
        "threads": cfg.threads,
        "slot_occupancy": slot_occupancy,
    });
    let manifest = Manifest {
        plan: plan.clone(),
        shard: cfg.shard,
        merged_from: Vec::new(),
        provenance: provenance.as_object().cloned().unwrap_or_default(),
    };
    write_atomic(&out.join("manifest.json"), serde_json::to_string_pretty(&manifest)?.as_bytes())
}

/// What decides a run's arithmetic, the key of `kvbench check`'s exact rule: the device, and on a
/// CPU the architecture, the instruction sets its kernels choose among at run time — gemm's f32
/// products (AVX-512F, else FMA), candle's quantized dot products for native weights (AVX-512
/// VNNI and BW, AVX2), its half-precision conversions for 16-bit dtypes (F16C, AVX-512 BF16) —
/// and those the binary was compiled to assume. Not the CPU's name: two CPU models with the same
/// instruction sets compute the same bits.
fn arithmetic_kind(device: &candle_core::Device, dtype: candle_core::DType, quantized: bool) -> String {
    if !device.is_cpu() {
        return format!("{device:?}");
    }
    let mut used: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let mut check = |name: &'static str, present: bool| {
            if present {
                used.push(name);
            }
        };
        check("avx512f", std::is_x86_feature_detected!("avx512f"));
        check("fma", std::is_x86_feature_detected!("fma"));
        if quantized {
            check("avx512vnni", std::is_x86_feature_detected!("avx512vnni"));
            check("avx512bw", std::is_x86_feature_detected!("avx512bw"));
            check("avx2", std::is_x86_feature_detected!("avx2"));
        }
        if dtype != candle_core::DType::F32 {
            check("f16c", std::is_x86_feature_detected!("f16c"));
            check("avx512bf16", std::is_x86_feature_detected!("avx512bf16"));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        used.push("neon");
        if quantized && std::arch::is_aarch64_feature_detected!("dotprod") {
            used.push("dotprod");
        }
        if quantized && std::arch::is_aarch64_feature_detected!("i8mm") {
            used.push("i8mm");
        }
    }
    let compiled: Vec<&str> = [
        ("avx", cfg!(target_feature = "avx")),
        ("avx2", cfg!(target_feature = "avx2")),
        ("fma", cfg!(target_feature = "fma")),
        ("f16c", cfg!(target_feature = "f16c")),
        ("avx512f", cfg!(target_feature = "avx512f")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    format!(
        "cpu {}; kernels: {}; compiled for: {}",
        std::env::consts::ARCH,
        if used.is_empty() { "baseline".to_string() } else { used.join(" ") },
        if compiled.is_empty() { "baseline".to_string() } else { compiled.join(" ") }
    )
}

/// The machine a run's numbers come from, by name (for the reader; the exact rule of `kvbench
/// check` keys on the arithmetic).
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
