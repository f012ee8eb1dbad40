//! `kvbench run`: a grid of datasets × policies × budgets × samples, expanded into a validated plan
//! before any weight is loaded, then run on all cores. Every finished sample is appended to
//! `samples.jsonl` and flushed, so a killed run resumes where it stopped: finished samples are
//! skipped, a torn last line is cut off, and the summary is recomputed from all samples.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
use crate::runner::{decode_batch, start_sample, PolicyResources, SampleState};
use crate::sampling::{Rng, SamplingParams};

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
    pub prefill_chunk: usize,
    /// Importance-predictor weights for the `dynts` family (its hash goes into the manifest).
    pub predictor: Option<PathBuf>,
    /// Samples decoded together: consecutive jobs of the plan form fixed groups. Stacked rows
    /// round differently from single ones (≈ 1e-5 in the logits), so the grouping is part of the
    /// plan and never depends on threads, shards or resumption.
    #[serde(default = "one")]
    pub batch: usize,
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
    fn config(&self, plan: &Plan) -> String {
        match &self.budget {
            Some(b) => format!("{} {} {}", self.dataset, plan.policies[self.policy], budget_label(Some(b))),
            None => format!("{} {}", self.dataset, plan.policies[self.policy]),
        }
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

/// Expands and checks the grid: names, budgets, policy parameters, the predictor. Loads no
/// weights. Jobs come configuration by configuration (dataset, policy, budget), so each one's
/// results are complete early.
pub fn expand(plan: &Plan, data_dir: &Path) -> Result<Vec<Job>> {
    if plan.samples == 0 {
        bail!("--samples must be at least 1");
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
        let def = datasets::definition(name)?;
        let budgets = plan.budgets.get(name).filter(|b| !b.is_empty());
        let budgets = budgets.with_context(|| format!("no budget given for dataset {name}"))?;
        for spec in &specs {
            for b in budgets {
                spec.validate(b).with_context(|| format!("dataset {name}"))?;
            }
        }
        let questions = datasets::select(def.load(data_dir)?, plan.limit, plan.ids.as_deref())?;
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

/// A results folder's `manifest.json`: what wrote it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub plan: Plan,
    /// The part of the plan this folder holds; `None` = all of it.
    pub shard: Option<Shard>,
    /// Shard folders merged into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    #[serde(flatten)]
    pub provenance: serde_json::Map<String, serde_json::Value>,
}

pub(crate) fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join("manifest.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?))
}

/// The fields in which two plans differ, by name.
fn plan_differences(a: &Plan, b: &Plan) -> Result<Vec<String>> {
    let (a, b) = (serde_json::to_value(a)?, serde_json::to_value(b)?);
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { bail!("a plan is not a JSON object") };
    Ok(a.iter().filter(|(k, v)| b.get(k.as_str()) != Some(v)).map(|(k, _)| k.clone()).collect())
}

/// A folder with a manifest belongs to its plan and shard: anything else is refused.
fn check_manifest(out: &Path, plan: &Plan, shard: Option<Shard>) -> Result<()> {
    let Some(m) = read_manifest(out)? else { return Ok(()) };
    let differing = plan_differences(plan, &m.plan)?;
    if !differing.is_empty() {
        bail!(
            "results folder {} was written by a different plan (differs in: {}); use another --out",
            out.display(),
            differing.join(", ")
        );
    }
    if m.shard != shard {
        let show = |s: Option<Shard>| s.map_or("the whole plan".to_string(), |s| format!("shard {s}"));
        bail!("results folder {} holds {}, not {}; use another --out", out.display(), show(m.shard), show(shard));
    }
    Ok(())
}

pub(crate) fn render_prompt(lm: &LoadedModel, plan: &Plan, q: &Question) -> Result<Vec<u32>> {
    let mut content = q.question.clone();
    if let Some(instr) = &plan.instruction {
        content = format!("{content}\n{instr}");
    }
    crate::tokenizer::encode(&lm.tokenizer, &prompt_text(lm, content)?)
}

/// A user message as the model is prompted with it: through its chat template, if it has one.
pub(crate) fn prompt_text(lm: &LoadedModel, content: String) -> Result<String> {
    Ok(match &lm.chat_template {
        Some(t) => t.render(&[ChatMessage::user(content)], true)?,
        None => content,
    })
}

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
    let lm = load::load(&cfg.source, &cfg.load)?;
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

/// `summary.csv` from every sample of a folder, in a fixed order so sums do not depend on the
/// order in which samples finished.
fn write_summary(out: &Path, samples: &[SampleRecord], model: &str) -> Result<()> {
    let mut sorted: Vec<&SampleRecord> = samples.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let summary = crate::results::summarize(&sorted, model);
    write_atomic(&out.join("summary.csv"), crate::results::summary_csv(&summary)?.as_bytes())
}

/// Progress on the terminal: one bar per configuration (dataset × policy × budget), added when it
/// starts and left with its accuracy when it ends, above an overall bar with ETA and tokens/s.
/// Without a terminal, one line per finished configuration.
struct Progress {
    multi: indicatif::MultiProgress,
    overall: indicatif::ProgressBar,
    configs: Mutex<HashMap<String, ConfigProgress>>,
    tokens: AtomicUsize,
    start: std::time::Instant,
}

#[derive(Default)]
struct ConfigProgress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
    done: usize,
    correct: usize,
}

impl Progress {
    fn new(plan: &Plan, todo: &[&Job], skipped: &[&Job], finished: &[SampleRecord]) -> Self {
        let mut configs: HashMap<String, ConfigProgress> = HashMap::new();
        let correct: HashMap<&str, bool> = finished.iter().map(|r| (r.key.as_str(), r.correct)).collect();
        for job in todo {
            configs.entry(job.config(plan)).or_default().total += 1;
        }
        for job in skipped {
            let c = configs.entry(job.config(plan)).or_default();
            c.total += 1;
            c.done += 1;
            c.correct += correct.get(job.key(plan).as_str()).copied().unwrap_or(false) as usize;
        }
        let multi = indicatif::MultiProgress::new();
        let overall = multi.add(indicatif::ProgressBar::new(todo.len() as u64));
        overall.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} samples  {elapsed} < {eta}  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Progress {
            multi,
            overall,
            configs: Mutex::new(configs),
            tokens: AtomicUsize::new(0),
            start: std::time::Instant::now(),
        }
    }

    fn started(&self, plan: &Plan, job: &Job) {
        let Ok(mut configs) = self.configs.lock() else { return };
        let c = configs.entry(job.config(plan)).or_default();
        if c.bar.is_none() {
            let bar = self.multi.insert_before(&self.overall, indicatif::ProgressBar::new(c.total as u64));
            bar.set_style(
                indicatif::ProgressStyle::with_template("  {prefix:40} {bar:20} {pos}/{len}  {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_prefix(job.config(plan));
            bar.set_position(c.done as u64);
            c.bar = Some(bar);
        }
    }

    fn finished(&self, plan: &Plan, job: &Job, record: &SampleRecord) {
        let n = self.tokens.fetch_add(record.generated_tokens, Ordering::Relaxed) + record.generated_tokens;
        let rate = n as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        self.overall.set_message(format!("{rate:.1} tok/s"));
        self.overall.inc(1);
        let Ok(mut configs) = self.configs.lock() else { return };
        let name = job.config(plan);
        let c = configs.entry(name.clone()).or_default();
        c.done += 1;
        c.correct += record.correct as usize;
        let accuracy = format!("{}/{} correct ({:.1} %)", c.correct, c.done, 100.0 * c.correct as f64 / c.done as f64);
        if let Some(bar) = &c.bar {
            bar.inc(1);
            bar.set_message(accuracy.clone());
            if c.done == c.total {
                bar.finish();
            }
        }
        if c.done == c.total && self.overall.is_hidden() {
            eprintln!("done {name}: {accuracy}");
        }
    }
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

/// Prefills a job's prompt under its policy and draws the first token.
fn start_job(
    lm: &LoadedModel,
    res: &PolicyResources,
    specs: &[PolicySpec],
    plan: &Plan,
    job: &Job,
) -> Result<SampleState> {
    let spec = &specs[job.policy];
    let budget = job.budget.unwrap_or(Budget { budget: usize::MAX / 4, window: 0, ratio: 1.0 });
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
    start_sample(lm, res, spec, &budget, &prompt, &params, rng, None)
        .with_context(|| format!("sample {}", job.key(plan)))
}

/// Grades a finished job into its `samples.jsonl` record.
fn finish_job(
    lm: &LoadedModel,
    specs: &[PolicySpec],
    plan: &Plan,
    job: &Job,
    state: SampleState,
) -> Result<SampleRecord> {
    let spec = &specs[job.policy];
    let out = state.finish();
    let g = &out.generation;
    let completion = lm.completion(&g.tokens)?;
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
        budget: job.budget.map_or(0, |b| b.budget),
        window: job.budget.map_or(0, |b| b.window),
        ratio: job.budget.map_or(1.0, |b| b.ratio),
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

/// `sha256:…` of a file, or its size for multi-GB checkpoints (hashing them on every resume is slow).
fn file_fingerprint(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(if meta.len() <= 512 << 20 {
        format!("sha256:{:x}", Sha256::digest(std::fs::read(path)?))
    } else {
        format!("bytes:{}", meta.len())
    })
}

fn write_manifest(out: &Path, plan: &Plan, cfg: &RunConfig, lm: &LoadedModel) -> Result<()> {
    let mut files = serde_json::Map::new();
    for f in &lm.files {
        files.insert(f.display().to_string(), file_fingerprint(f)?.into());
    }
    let mut dataset_hashes = serde_json::Map::new();
    for d in &plan.datasets {
        let def = datasets::definition(d)?;
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

/// Combines shard folders of one plan into `out`: samples in plan order, summary, manifest.
/// Refuses folders of different plans, mixed shard counts, repeated shards and duplicate or foreign
/// samples; refuses missing samples unless `allow_partial`. Returns the number of samples merged.
pub fn merge(out: &Path, shards: &[PathBuf], data_dir: &Path, allow_partial: bool) -> Result<usize> {
    let Some(first) = shards.first() else { bail!("give at least one shard folder to merge") };
    let mut manifests = Vec::new();
    for dir in shards {
        let m = read_manifest(dir)?
            .with_context(|| format!("{} has no manifest.json: not a results folder", dir.display()))?;
        manifests.push(m);
    }
    let plan = manifests[0].plan.clone();
    let mut seen_shards = BTreeMap::new();
    for (dir, m) in shards.iter().zip(&manifests) {
        let differing = plan_differences(&plan, &m.plan)?;
        if !differing.is_empty() {
            bail!(
                "{} was written by a different plan than {} (differs in: {})",
                dir.display(),
                first.display(),
                differing.join(", ")
            );
        }
        let Some(shard) = m.shard else { bail!("{} holds a whole plan, not a shard", dir.display()) };
        if shard.count != manifests[0].shard.map_or(0, |s| s.count) {
            bail!("{} is shard {shard}, but {} is of another shard count", dir.display(), first.display());
        }
        if let Some(other) = seen_shards.insert(shard.index, dir) {
            bail!("{} and {} are both shard {shard}", other.display(), dir.display());
        }
    }
    let count = manifests[0].shard.map_or(1, |s| s.count);
    let missing_shards: Vec<String> =
        (0..count).filter(|i| !seen_shards.contains_key(i)).map(|i| format!("{i}/{count}")).collect();
    if !missing_shards.is_empty() && !allow_partial {
        bail!("shards {} are missing (or pass --allow-partial)", missing_shards.join(", "));
    }
    let jobs = expand(&plan, data_dir)?;
    let order: HashMap<String, usize> = jobs.iter().enumerate().map(|(i, j)| (j.key(&plan), i)).collect();
    let mut merged: Vec<Option<SampleRecord>> = vec![None; jobs.len()];
    for dir in shards {
        for record in read_samples(&dir.join("samples.jsonl"))? {
            let Some(&i) = order.get(&record.key) else {
                bail!("{}: sample {} is not in the plan", dir.display(), record.key)
            };
            if merged[i].is_some() {
                bail!("sample {} appears twice (again in {})", record.key, dir.display());
            }
            merged[i] = Some(record);
        }
    }
    let absent = merged.iter().filter(|r| r.is_none()).count();
    if absent > 0 && !allow_partial {
        bail!(
            "{absent} of {} samples are missing: resume the unfinished shards first (or pass --allow-partial)",
            jobs.len()
        );
    }
    let records: Vec<SampleRecord> = merged.into_iter().flatten().collect();
    if let Some(existing) = read_manifest(out)? {
        if !plan_differences(&plan, &existing.plan)?.is_empty() || existing.shard.is_some() {
            bail!("{} already holds another result; merge into a new folder", out.display());
        }
    }
    let mut body = String::new();
    for r in &records {
        body.push_str(&serde_json::to_string(r)?);
        body.push('\n');
    }
    write_atomic(&out.join("samples.jsonl"), body.as_bytes())?;
    write_summary(out, &records, &plan.model)?;
    let manifest = Manifest {
        plan,
        shard: None,
        merged_from: shards.iter().map(|d| d.display().to_string()).collect(),
        provenance: manifests[0].provenance.clone(),
    };
    write_atomic(&out.join("manifest.json"), serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    Ok(records.len())
}

/// The default results folder for a plan.
pub fn default_out(name: &str) -> PathBuf {
    PathBuf::from("results").join(name)
}
