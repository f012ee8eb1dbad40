//! `kvbench run`: a grid of datasets × policies × budgets × samples, expanded into a validated plan
//! before any weight is loaded, then run on all cores. Every finished sample is appended to
//! `samples.jsonl` and flushed, so a killed run resumes where it stopped: finished samples are
//! skipped, a torn last line is cut off, and the summary is recomputed from all samples.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::chat::ChatMessage;
use crate::datasets::{self, Question};
use crate::generate::{GenerateParams, StopReason};
use crate::grading;
use crate::model::load::{self, LoadOptions, LoadedModel, ModelSource};
use crate::policies::registry::{expand_names, PolicySpec};
use crate::policies::Budget;
use crate::results::write_atomic;
use crate::runner::{run_sample, PolicyResources};
use crate::sampling::{Rng, SamplingParams};

/// Everything that determines a run's numbers; a results folder belongs to exactly one plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub model: String,
    pub datasets: Vec<String>,
    pub policies: Vec<String>,
    pub policy_params: Vec<serde_json::Value>,
    pub budgets: Vec<Budget>,
    pub samples: usize,
    pub seed: u64,
    pub sampling: SamplingParams,
    pub max_new_tokens: usize,
    pub limit: Option<usize>,
    pub ids: Option<Vec<usize>>,
    /// Appended to each question (for non-reasoning models); `None` = the raw question.
    pub instruction: Option<String>,
    pub prefill_chunk: usize,
}

/// One sample to run: the key `dataset/question/policy/budget/sample` names it.
#[derive(Debug, Clone)]
pub struct Job {
    pub dataset: String,
    pub question: Question,
    pub policy: usize,
    /// Index into the plan's budgets; `None` for `full`, which runs once.
    pub budget: Option<usize>,
    pub sample: usize,
}

impl Job {
    pub fn key(&self, plan: &Plan) -> String {
        let budget = self.budget.map_or("full".to_string(), |b| plan.budgets[b].budget.to_string());
        format!("{}/{}/{}/{}/{}", self.dataset, self.question.index, plan.policies[self.policy], budget, self.sample)
    }
}

/// One finished sample, as a line of `samples.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRecord {
    pub key: String,
    pub dataset: String,
    pub question_index: usize,
    pub question_id: String,
    pub policy: String,
    /// B, or 0 for the full cache.
    pub budget: usize,
    pub window: usize,
    pub ratio: f64,
    pub sample: usize,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub stop: StopReason,
    pub think_closed: bool,
    pub truncated: bool,
    pub completion: String,
    pub extracted: Option<String>,
    pub extraction: String,
    pub reference: String,
    pub correct: bool,
    pub reason: String,
    pub peak_kv: usize,
    pub mean_kv: f64,
    pub kv_footprint: u64,
    pub evictions: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
    pub policy_secs: f64,
}

/// Expands and checks the grid: names, budgets, policy parameters. Loads no weights.
pub fn expand(plan: &Plan, data_dir: &Path) -> Result<Vec<Job>> {
    if plan.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let specs = specs(plan)?;
    for spec in &specs {
        for b in &plan.budgets {
            spec.validate(b)?;
        }
    }
    let mut jobs = Vec::new();
    for name in &plan.datasets {
        let def = datasets::definition(name)?;
        let questions = datasets::select(def.load(data_dir)?, plan.limit, plan.ids.as_deref())?;
        for q in &questions {
            for (pi, spec) in specs.iter().enumerate() {
                let budgets: Vec<Option<usize>> =
                    if spec.evicts() { (0..plan.budgets.len()).map(Some).collect() } else { vec![None] };
                for b in budgets {
                    for sample in 0..plan.samples {
                        jobs.push(Job { dataset: name.clone(), question: q.clone(), policy: pi, budget: b, sample });
                    }
                }
            }
        }
    }
    Ok(jobs)
}

fn specs(plan: &Plan) -> Result<Vec<PolicySpec>> {
    plan.policies.iter().map(|p| PolicySpec::resolve(p, None)).collect()
}

/// Builds the plan's policy list from names (`all` = the figure's eight).
pub fn policy_names(names: &[String]) -> Result<(Vec<String>, Vec<serde_json::Value>)> {
    let names = expand_names(names)?;
    let params = names
        .iter()
        .map(|n| Ok(serde_json::to_value(&PolicySpec::resolve(n, None)?.params)?))
        .collect::<Result<Vec<_>>>()?;
    Ok((names, params))
}

/// Reads finished samples, cutting off a torn last line (a crash mid-write).
pub fn read_samples(path: &Path) -> Result<Vec<SampleRecord>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let good = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => i + 1,
        None => 0,
    };
    if good < bytes.len() {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(good as u64)?;
        eprintln!("repaired {}: dropped a torn last line ({} bytes)", path.display(), bytes.len() - good);
    }
    let text = std::str::from_utf8(&bytes[..good]).with_context(|| format!("{} is not UTF-8", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}: malformed sample line", path.display(), i + 1))
        })
        .collect()
}

/// The manifest's plan must equal this plan, or the folder belongs to another run.
fn check_manifest(out: &Path, plan: &Plan) -> Result<()> {
    let path = out.join("manifest.json");
    if !path.exists() {
        return Ok(());
    }
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("parsing {}", path.display()))?;
    let theirs = &m["plan"];
    let ours = serde_json::to_value(plan)?;
    if *theirs != ours {
        let differing: Vec<String> = ours
            .as_object()
            .map(|o| o.iter().filter(|(k, v)| theirs.get(k.as_str()) != Some(v)).map(|(k, _)| k.clone()).collect())
            .unwrap_or_default();
        bail!(
            "results folder {} was written by a different plan (differs in: {}); use another --out",
            out.display(),
            differing.join(", ")
        );
    }
    Ok(())
}

fn render_prompt(lm: &LoadedModel, plan: &Plan, q: &Question) -> Result<Vec<u32>> {
    let mut content = q.question.clone();
    if let Some(instr) = &plan.instruction {
        content = format!("{content}\n{instr}");
    }
    let text = match &lm.chat_template {
        Some(t) => t.render(&[ChatMessage::user(content)], true)?,
        None => content,
    };
    crate::tokenizer::encode(&lm.tokenizer, &text)
}

/// Runs the remaining jobs of `plan` into `out` on `threads` workers; returns (done now, skipped).
pub fn run(
    plan: &Plan,
    jobs: Vec<Job>,
    out: &Path,
    source: &ModelSource,
    opts: &LoadOptions,
    threads: usize,
) -> Result<(usize, usize)> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    check_manifest(out, plan)?;
    let samples_path = out.join("samples.jsonl");
    let done: HashSet<String> = read_samples(&samples_path)?.into_iter().map(|r| r.key).collect();
    let todo: Vec<Job> = jobs.into_iter().filter(|j| !done.contains(&j.key(plan))).collect();
    let skipped = done.len();
    let lm = load::load(source, opts)?;
    let specs = specs(plan)?;
    check_prompts_fit(&lm, plan, &specs, &todo)?;
    write_manifest(out, plan, &lm)?;
    let resources = PolicyResources::new(&lm, None)?;
    let file = OpenOptions::new().create(true).append(true).open(&samples_path)?;
    let writer = Mutex::new(file);
    let queue = Mutex::new(todo.iter());
    let bar = indicatif::ProgressBar::new(todo.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} samples  {elapsed} < {eta}  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let tokens = std::sync::atomic::AtomicUsize::new(0);
    let start = std::time::Instant::now();
    let work = || -> Result<()> {
        loop {
            let Some(job) = queue.lock().map_err(|_| anyhow::anyhow!("queue poisoned"))?.next() else { return Ok(()) };
            let record = run_job(&lm, &resources, &specs, plan, job)?;
            let n = tokens.fetch_add(record.generated_tokens, std::sync::atomic::Ordering::Relaxed)
                + record.generated_tokens;
            let mut line = serde_json::to_string(&record)?;
            line.push('\n');
            {
                let mut f = writer.lock().map_err(|_| anyhow::anyhow!("writer poisoned"))?;
                f.write_all(line.as_bytes())?;
                f.flush()?;
            }
            bar.set_message(format!("{:.1} tok/s", n as f64 / start.elapsed().as_secs_f64()));
            bar.inc(1);
        }
    };
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads.max(1)).map(|_| s.spawn(work)).collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("a worker panicked"))??;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let all = read_samples(&samples_path)?;
    let summary = crate::results::summarize(&all, &lm.source.display());
    write_atomic(&out.join("summary.csv"), crate::results::summary_csv(&summary)?.as_bytes())?;
    Ok((todo.len(), skipped))
}

/// Policies that never evict the prompt need B above every prompt: checked for the whole plan
/// once the tokenizer is loaded, before any decoding.
fn check_prompts_fit(lm: &LoadedModel, plan: &Plan, specs: &[PolicySpec], jobs: &[Job]) -> Result<()> {
    let Some(min_budget) = plan.budgets.iter().map(|b| b.budget).min() else { return Ok(()) };
    if !specs.iter().any(|s| s.protects_prompt()) {
        return Ok(());
    }
    let mut seen = HashSet::new();
    for job in jobs.iter().filter(|j| specs[j.policy].protects_prompt()) {
        if seen.insert((job.dataset.clone(), job.question.index)) {
            let n = render_prompt(lm, plan, &job.question)?.len();
            if n >= min_budget {
                bail!(
                    "{} question {} has {n} prompt tokens, not below --budget {min_budget}, and {} never evicts the prompt",
                    job.dataset,
                    job.question.index,
                    specs[job.policy].name
                );
            }
        }
    }
    Ok(())
}

fn run_job(
    lm: &LoadedModel,
    res: &PolicyResources,
    specs: &[PolicySpec],
    plan: &Plan,
    job: &Job,
) -> Result<SampleRecord> {
    let spec = &specs[job.policy];
    let budget = match job.budget {
        Some(b) => plan.budgets[b],
        None => Budget { budget: usize::MAX / 4, window: 0, ratio: 1.0 },
    };
    let prompt = render_prompt(lm, plan, &job.question)?;
    let params = GenerateParams {
        max_new_tokens: plan.max_new_tokens,
        sampling: plan.sampling,
        stop_tokens: lm.eos_token_ids.clone(),
        prefill_chunk: plan.prefill_chunk,
    };
    // The sample's stream depends on what it is, never on order, threads, shards or resumption.
    let dataset_hash =
        job.dataset.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let rng = Rng::derive(plan.seed, &[dataset_hash, job.question.index as u64, job.sample as u64]);
    let out = run_sample(lm, res, spec, &budget, &prompt, &params, rng, None)
        .with_context(|| format!("sample {}", job.key(plan)))?;
    let g = &out.generation;
    let shown = match g.tokens.last() {
        Some(t) if lm.eos_token_ids.contains(t) => &g.tokens[..g.tokens.len() - 1],
        _ => &g.tokens[..],
    };
    let completion = lm.tokenizer.decode(shown, false).map_err(|e| anyhow::anyhow!("decoding: {e}"))?;
    let kind = grading::kind_for_dataset(&job.dataset).with_context(|| format!("no grader for {}", job.dataset))?;
    let extracted = grading::extract_answer(&completion, kind);
    let reference = grading::reference_answer(&job.question.reference, &job.dataset);
    let verdict = grading::grade(extracted.answer.as_deref(), &reference, kind);
    let steps = g.tokens.len().saturating_sub(1).max(1);
    Ok(SampleRecord {
        key: job.key(plan),
        dataset: job.dataset.clone(),
        question_index: job.question.index,
        question_id: job.question.id.clone(),
        policy: spec.name.clone(),
        budget: job.budget.map_or(0, |b| plan.budgets[b].budget),
        window: job.budget.map_or(0, |b| plan.budgets[b].window),
        ratio: job.budget.map_or(1.0, |b| plan.budgets[b].ratio),
        sample: job.sample,
        prompt_tokens: g.prompt_tokens,
        generated_tokens: g.tokens.len(),
        stop: g.stop,
        think_closed: extracted.think_closed,
        truncated: g.stop == StopReason::MaxNewTokens,
        completion,
        extracted: extracted.answer,
        extraction: extracted.method.to_string(),
        reference,
        correct: verdict.correct,
        reason: verdict.reason,
        peak_kv: g.peak_kv,
        mean_kv: g.kv_footprint as f64 / steps as f64,
        kv_footprint: g.kv_footprint,
        evictions: out.stats.evictions,
        prefill_secs: g.prefill_secs,
        decode_secs: g.decode_secs,
        policy_secs: out.stats.policy_secs,
    })
}

fn write_manifest(out: &Path, plan: &Plan, lm: &LoadedModel) -> Result<()> {
    use sha2::{Digest, Sha256};
    let mut files = serde_json::Map::new();
    for f in &lm.files {
        // Hashing multi-GB checkpoints on every resume is slow; size + name identify them there.
        let meta = std::fs::metadata(f)?;
        let value = if meta.len() <= 512 << 20 {
            format!("sha256:{:x}", Sha256::digest(std::fs::read(f)?))
        } else {
            format!("bytes:{}", meta.len())
        };
        files.insert(f.display().to_string(), value.into());
    }
    let data_dir = datasets::data_dir(None);
    let mut dataset_hashes = serde_json::Map::new();
    for d in &plan.datasets {
        let def = datasets::definition(d)?;
        dataset_hashes.insert(d.clone(), def.file_sha256(&data_dir).unwrap_or_default().into());
    }
    let manifest = serde_json::json!({
        "plan": plan,
        "model_source": lm.source,
        "model_files": files,
        "datasets": dataset_hashes,
        "kvbench_version": env!("CARGO_PKG_VERSION"),
        "git_commit": option_env!("KVBENCH_GIT_COMMIT").unwrap_or("unknown"),
        "device": format!("{:?}", lm.model.device()),
        "dtype": format!("{:?}", lm.model.dtype()),
    });
    write_atomic(&out.join("manifest.json"), serde_json::to_string_pretty(&manifest)?.as_bytes())
}

/// The default results folder for a plan.
pub fn default_out(name: &str) -> PathBuf {
    PathBuf::from("results").join(name)
}
