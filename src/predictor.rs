//! Training DynTS's importance predictor (IP): `kvbench dynts collect` and `kvbench dynts train`.
//! Guo et al., <https://arxiv.org/abs/2601.18383>; Robin930/DynTS `compute_is_sp.py` (labels) and
//! `verl_sft_fsdp.py` (training), as spec/policies.md §4.2 records them.
//!
//! **Labels** (`collect`): the correct full-cache traces of a finished `kvbench run` (the
//! reference generates on MATH-train with vLLM and re-tokenizes the text, as here) that hold
//! exactly one `<think>` and one `</think>` are teacher-forced, one per question. In every layer
//! the attention diagonal is zeroed; the importance of key j is the mean over layers, query heads
//! and answer queries i > idx(`</think>`) of a(i → j). Kept per thinking token (strictly between
//! `<think>` and `</think>`): the importance and the final hidden state (after the final norm,
//! the IP's input at inference). A model that solves too little to have correct traces (SmolLM2)
//! is labelled on a dataset's worked solutions instead (`--solutions`: synthetic-chain-train's, or
//! MATH's / GSM8K's reference solutions, evaluation sets' questions left out): the solution is the
//! thinking and a closing `\boxed{}` sentence the answer; without thinking tokens in the
//! vocabulary, the split is where the parts were tokenized apart.
//!
//! **Training** (`train`): the frozen model's hidden states are inputs, so only the IP trains:
//! `Linear(d→h1, no bias) → Softplus → Linear(h1→h2) → Softplus → Linear(h2→1) → Softplus`, labels
//! transformed per family (Llama y = 10000·I; Qwen y = 10·I^0.3/0.3), MSE weighted 5 for labels
//! in [4, 5) and 1 elsewhere, AdamW (lr 5e-4, β 0.9/0.95, wd 0.01), cosine schedule with 10 %
//! warmup, clip 1.0. The reference hard-codes h1 = 8192, h2 = 2048 for d = 3584/4096; the paper
//! states d → 2d → d/2 → 1, the default here, so small models get a proportionate head.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::datasets::{AnswerFormat, DatasetDef};
use crate::model::load::{LoadOptions, LoadedModel};
use crate::model::SeqStep;
use crate::observe::{AttentionView, ObserveRequest, Observer};
use crate::sampling::Rng;

/// Tokens per teacher-forcing forward: bounds the `[heads, chunk, context]` attention tensors.
const CHUNK: usize = 512;

/// Where `collect` takes its traces from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TraceSource {
    /// The correct full-cache samples of a finished `kvbench run` (the reference's way: the
    /// model's own correct traces, one per question).
    Run(PathBuf),
    /// The worked solutions of a dataset (`synthetic-chain-train`'s generated ones, or a real
    /// set's reference solutions: `math` minus MATH-500, `gsm8k`) teacher-forced through `model`,
    /// its prompt carrying `instruction`: the traces of a model that solves the task, whatever the
    /// model's own accuracy (SmolLM2 solves almost nothing, so it has no correct traces of its own).
    Solutions { model: String, dataset: String, limit: Option<usize>, instruction: Option<String> },
}

/// What `collect` found, written next to the traces as `collect.json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CollectSummary {
    pub source: TraceSource,
    pub model: String,
    pub model_arch: String,
    pub hidden_size: usize,
    /// Traces offered (correct full-cache samples, one per question; or solutions).
    pub candidates: usize,
    /// Traces kept (one `<think>` and one `</think>` with an answer after it).
    pub traces: usize,
    pub skipped_format: usize,
    /// Questions of the pool left out because an evaluation set holds them (`disjoint_from`).
    #[serde(default)]
    pub held_out: usize,
    pub thinking_tokens: usize,
    pub kvbench_version: String,
}

/// Accumulates answer→key attention and the hidden states of one teacher-forced trace.
struct LabelObserver {
    /// Absolute position of this chunk's first token.
    offset: usize,
    /// The first answer query (absolute position).
    first_query: usize,
    importance: Vec<f64>,
    hidden: Vec<Tensor>,
}

impl Observer for LabelObserver {
    fn request(&self) -> ObserveRequest {
        ObserveRequest { attention: true, hidden: true }
    }

    fn attention(&mut self, _seq: usize, view: &AttentionView<'_>) -> Result<()> {
        let (kv, g, t, len) = view.probs.dims4()?;
        // Answer queries in this chunk.
        let first = self.first_query.max(self.offset);
        if first >= self.offset + t {
            return Ok(());
        }
        let (r0, rows) = (first - self.offset, self.offset + t - first);
        let probs: Vec<f32> =
            view.probs.narrow(2, r0, rows)?.to_dtype(DType::F32)?.contiguous()?.flatten_all()?.to_vec1()?;
        for head in 0..kv * g {
            for r in 0..rows {
                let query = first + r;
                let row = &probs[(head * rows + r) * len..(head * rows + r + 1) * len];
                for (j, &p) in row.iter().enumerate() {
                    if j != query {
                        self.importance[j] += p as f64;
                    }
                }
            }
        }
        Ok(())
    }

    fn hidden(&mut self, _seq: usize, hidden: &Tensor) -> Result<()> {
        self.hidden.push(hidden.to_dtype(DType::F32)?);
        Ok(())
    }
}

/// One trace's labels: importance and hidden state of each thinking token.
struct Labelled {
    importance: Vec<f32>,
    hidden: Tensor,
}

/// One trace to label: its token ids (prompt + completion), the positions of its thinking tokens
/// and the first answer query (the answer runs to the end).
#[derive(Debug, Clone, PartialEq)]
struct Trace {
    ids: Vec<u32>,
    thinking: Range<usize>,
    answer: usize,
}

impl Trace {
    /// Split at the model's own `<think>`/`</think>` tokens (both excluded from the thinking and
    /// from the queries, as the reference does); `None` unless there is exactly one of each with
    /// thinking between them and an answer after.
    fn at_think_tokens(ids: Vec<u32>, open: u32, close: u32) -> Option<Self> {
        let at = |id: u32| ids.iter().enumerate().filter(|(_, &t)| t == id).map(|(i, _)| i).collect::<Vec<_>>();
        let (starts, ends) = (at(open), at(close));
        if starts.len() != 1 || ends.len() != 1 || ends[0] <= starts[0] + 1 || ends[0] + 1 >= ids.len() {
            return None;
        }
        Some(Trace { thinking: starts[0] + 1..ends[0], answer: ends[0] + 1, ids })
    }
}

/// Teacher-forces `trace` and labels its thinking tokens.
fn label_trace(lm: &LoadedModel, trace: &Trace, chunk: usize) -> Result<Labelled> {
    let cfg = lm.model.config();
    let ids = &trace.ids;
    let mut cache = lm.model.new_cache(ids.len())?;
    let mut obs =
        LabelObserver { offset: 0, first_query: trace.answer, importance: vec![0.0; ids.len()], hidden: Vec::new() };
    for (c, tokens) in ids.chunks(chunk).enumerate() {
        obs.offset = c * chunk;
        let mut step = [SeqStep { cache: &mut cache, tokens, positions: None, visible: None }];
        lm.model.forward(&mut step, Some(&mut obs))?;
    }
    let queries = ids.len() - trace.answer;
    let norm = (cfg.num_layers * cfg.num_heads * queries) as f64;
    let hidden = Tensor::cat(&obs.hidden, 0)?.narrow(0, trace.thinking.start, trace.thinking.len())?;
    let importance = obs.importance[trace.thinking.clone()].iter().map(|&a| (a / norm) as f32).collect();
    Ok(Labelled { importance, hidden })
}

/// The model's `<think>` and `</think>` ids, if its tokenizer has them.
fn think_tokens(lm: &LoadedModel) -> Option<(u32, u32)> {
    Some((lm.tokenizer.token_to_id("<think>")?, lm.tokenizer.token_to_id("</think>")?))
}

/// A real dataset's worked solution as (thinking, answer) text: the solution is the thinking
/// (GSM8K's: before `####`, its `<<…>>` calculator notes dropped; MATH's: whole), the answer a
/// sentence ending in the reference's `\boxed{}`, as the run's instruction asks for.
fn worked_solution(def: &DatasetDef, raw: &str) -> Option<(String, String)> {
    let thinking = match def.answer_format {
        AnswerFormat::Gsm8k => {
            let body = &raw[..raw.rfind("####")?];
            let mut out = String::with_capacity(body.len());
            let mut rest = body;
            while let Some(at) = rest.find("<<") {
                out.push_str(&rest[..at]);
                rest = rest[at..].find(">>").map_or("", |end| &rest[at + end + 2..]);
            }
            out.push_str(rest);
            out
        }
        AnswerFormat::LastBoxed if raw.contains("\\boxed") => raw.to_string(),
        _ => return None,
    };
    let answer = crate::grading::reference_answer(raw, &def.name);
    Some((thinking.trim().to_string(), format!("The final answer is $\\boxed{{{answer}}}$.")))
}

/// The traces of `source` and the model that labels them.
fn candidate_traces(
    source: &TraceSource,
    data_dir: &Path,
    load: &LoadOptions,
) -> Result<(String, LoadedModel, Vec<Option<Trace>>, usize)> {
    match source {
        TraceSource::Run(run) => {
            let manifest = crate::sweep::read_manifest(run)?
                .with_context(|| format!("{} is not a kvbench run folder (no manifest.json)", run.display()))?;
            let plan = &manifest.plan;
            let samples = crate::sweep::read_samples(&run.join("samples.jsonl"))?;
            let mut seen = BTreeSet::new();
            let chosen: Vec<_> = samples
                .iter()
                .filter(|s| s.policy == "full" && s.correct)
                .filter(|s| seen.insert((&s.dataset, s.question_index)))
                .collect();
            ensure!(
                !chosen.is_empty(),
                "{} has no correct full-cache sample to learn from (run it with --policies full)",
                run.display()
            );
            let lm = crate::model::load::load(&crate::model::load::ModelSource::parse(&plan.model)?, load)?;
            let (open, close) = think_tokens(&lm)
                .context("the model's tokenizer has no <think>/</think> tokens to split a run's traces at")?;
            let mut questions = HashMap::new();
            let mut traces = Vec::new();
            for s in chosen {
                if !questions.contains_key(&s.dataset) {
                    questions.insert(s.dataset.clone(), crate::datasets::definition(&s.dataset)?.load(data_dir)?);
                }
                let q = questions[&s.dataset]
                    .iter()
                    .find(|q| q.index == s.question_index)
                    .with_context(|| format!("{} has no question {}", s.dataset, s.question_index))?;
                let mut ids = crate::sweep::render_prompt(&lm, plan, q)?;
                ids.extend(crate::tokenizer::encode(&lm.tokenizer, &s.completion)?);
                traces.push(Trace::at_think_tokens(ids, open, close));
            }
            Ok((plan.model.clone(), lm, traces, 0))
        }
        TraceSource::Solutions { model, dataset, limit, instruction } => {
            let def = crate::datasets::definition(dataset)?;
            let source = crate::model::load::ModelSource::parse(model)?;
            let user = |question: &str| match instruction {
                Some(i) => format!("{question}\n{i}"),
                None => question.to_string(),
            };
            if let Some(params) = def.generator.clone() {
                let lm = crate::model::load::load(&source, load)?;
                let (open, close) =
                    think_tokens(&lm).context("the model's tokenizer has no <think>/</think> tokens")?;
                let mut traces = Vec::new();
                for i in 0..limit.unwrap_or(params.rows).min(params.rows) {
                    let p = crate::synthetic::problem(&params, i);
                    let prompt = crate::sweep::prompt_text(&lm, user(&p.question))?;
                    // A template that opens the thinking (as R1's does) already holds `<think>`.
                    let solution = p.solution();
                    let solution = match solution.strip_prefix("<think>") {
                        Some(rest) if prompt.ends_with("<think>") => rest.to_string(),
                        _ => solution,
                    };
                    let ids = crate::tokenizer::encode(&lm.tokenizer, &(prompt + &solution))?;
                    traces.push(Trace::at_think_tokens(ids, open, close));
                }
                return Ok((source.display(), lm, traces, 0));
            }
            ensure!(
                matches!(def.answer_format, AnswerFormat::Gsm8k | AnswerFormat::LastBoxed),
                "--solutions needs worked solutions (synthetic-chain-train, math, gsm8k); {dataset} has none"
            );
            // Drop questions an evaluation set shares (MATH's test set holds MATH-500's).
            let mut shared = BTreeSet::new();
            for other in &def.disjoint_from {
                shared.extend(crate::datasets::definition(other)?.load(data_dir)?.into_iter().map(|q| q.question));
            }
            let all = def.load(data_dir)?;
            let total = all.len();
            let questions: Vec<_> = all.into_iter().filter(|q| !shared.contains(&q.question)).collect();
            let dropped = total - questions.len();
            let lm = crate::model::load::load(&source, load)?;
            let encode = |text: &str| crate::tokenizer::encode(&lm.tokenizer, text);
            let mut traces = Vec::new();
            for q in questions.iter().take(limit.unwrap_or(usize::MAX)) {
                let Some((thinking, answer)) = worked_solution(&def, &q.reference) else {
                    traces.push(None);
                    continue;
                };
                let prompt = crate::sweep::prompt_text(&lm, user(&q.question))?;
                traces.push(match think_tokens(&lm) {
                    Some((open, close)) => {
                        let opened = if prompt.ends_with("<think>") { "" } else { "<think>" };
                        let text = format!("{prompt}{opened}\n{thinking}\n</think>\n\n{answer}");
                        Trace::at_think_tokens(encode(&text)?, open, close)
                    }
                    // A model without thinking tokens: the solution is the thinking, the sentence
                    // after it the answer (parts tokenized apart so that the split is exact).
                    None => {
                        let mut ids = encode(&prompt)?;
                        let start = ids.len();
                        ids.extend(encode(&thinking)?);
                        let end = ids.len();
                        ids.extend(encode(&format!("\n\n{answer}"))?);
                        Some(Trace { ids, thinking: start..end, answer: end })
                    }
                });
            }
            Ok((source.display(), lm, traces, dropped))
        }
    }
}

/// `kvbench dynts collect`: labels the traces of `source` and writes `traces.safetensors`
/// (`hidden [N, d]`, `importance [N]`, `trace [N]`, `position [N]`) and `collect.json` into `out`.
pub fn collect(source: &TraceSource, out: &Path, data_dir: &Path, load: &LoadOptions) -> Result<CollectSummary> {
    let (model, lm, candidates, held_out) = candidate_traces(source, data_dir, load)?;
    let (mut hidden, mut importance, mut trace, mut position) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut skipped = 0;
    let progress = indicatif::ProgressBar::new(candidates.len() as u64);
    for t in &candidates {
        progress.inc(1);
        let Some(t) = t else {
            skipped += 1;
            continue;
        };
        let l = label_trace(&lm, t, CHUNK)?;
        let n = l.importance.len();
        hidden.push(l.hidden);
        importance.extend(l.importance);
        trace.extend(std::iter::repeat_n((hidden.len() - 1) as u32, n));
        position.extend(t.thinking.clone().map(|p| p as u32));
    }
    progress.finish_and_clear();
    ensure!(!hidden.is_empty(), "no trace had a thinking part with an answer after it");
    let n = importance.len();
    let dev = Device::Cpu;
    let tensors: HashMap<String, Tensor> = [
        ("hidden", Tensor::cat(&hidden, 0)?.to_device(&dev)?),
        ("importance", Tensor::from_vec(importance, n, &dev)?),
        ("trace", Tensor::from_vec(trace, n, &dev)?),
        ("position", Tensor::from_vec(position, n, &dev)?),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    crate::results::save_safetensors(&tensors, &out.join("traces.safetensors"))?;
    let cfg = lm.model.config();
    let summary = CollectSummary {
        source: source.clone(),
        model,
        model_arch: format!("{:?}", cfg.arch).to_lowercase(),
        hidden_size: cfg.hidden_size,
        candidates: candidates.len(),
        traces: hidden.len(),
        skipped_format: skipped,
        held_out,
        thinking_tokens: n,
        kvbench_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    crate::results::write_atomic(
        &out.join("collect.json"),
        (serde_json::to_string_pretty(&summary)? + "\n").as_bytes(),
    )?;
    Ok(summary)
}

/// How importance becomes the regression target (`verl_sft_fsdp.py` L1396–1405).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LabelTransform {
    /// y = 10000 · I (the Llama recipe).
    Llama,
    /// y = 10 · I^0.3 / 0.3 (the Qwen recipe).
    Qwen,
}

impl LabelTransform {
    pub fn for_arch(arch: &str) -> Self {
        if arch.starts_with("qwen") {
            LabelTransform::Qwen
        } else {
            LabelTransform::Llama
        }
    }

    fn apply(self, i: f32) -> f32 {
        match self {
            LabelTransform::Llama => 10_000.0 * i,
            LabelTransform::Qwen => 10.0 * i.max(0.0).powf(0.3) / 0.3,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FitOptions {
    pub traces: PathBuf,
    pub out: PathBuf,
    /// `None`: by the collecting model's family.
    pub transform: Option<LabelTransform>,
    /// (h1, h2); `None`: (2d, d/2).
    pub hidden: Option<(usize, usize)>,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

/// What `train` reports and records next to the weights.
#[derive(Debug, Serialize)]
pub struct FitReport {
    pub options: FitOptions,
    pub transform: LabelTransform,
    /// d: the model's hidden size.
    pub input_size: usize,
    pub hidden: (usize, usize),
    pub train_tokens: usize,
    pub validation_tokens: usize,
    /// Weighted MSE on the held-out traces (every 10th), before and after training.
    pub validation_loss_initial: f64,
    pub validation_loss: f64,
    /// Spearman correlation of predicted and true importance within held-out traces (mean).
    pub validation_spearman: f64,
    pub seconds: f64,
    pub kvbench_version: &'static str,
}

struct Head {
    fc1: Var,
    fc2: Var,
    b2: Var,
    fc3: Var,
    b3: Var,
}

impl Head {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        use crate::policies::dynts::softplus;
        let x = softplus(&x.matmul(&self.fc1.t()?)?)?;
        let x = softplus(&x.matmul(&self.fc2.t()?)?.broadcast_add(&self.b2)?)?;
        Ok(softplus(&x.matmul(&self.fc3.t()?)?.broadcast_add(&self.b3)?)?.squeeze(1)?)
    }
}

fn weighted_mse(pred: &Tensor, y: &Tensor) -> Result<Tensor> {
    // Weight 5 for labels in [4, 5), 1 elsewhere.
    let w = (((y.ge(4f32)?.to_dtype(DType::F32)? * y.lt(5f32)?.to_dtype(DType::F32)?)? * 4.0)? + 1.0)?;
    Ok(((pred - y)?.sqr()? * w)?.mean_all()?)
}

/// `kvbench dynts train`: fits the IP on collected traces; writes `out` (safetensors) and
/// `out` with `.json` (the report).
pub fn fit(o: &FitOptions) -> Result<FitReport> {
    let start = std::time::Instant::now();
    let dev = Device::Cpu;
    let t =
        candle_core::safetensors::load(&o.traces, &dev).with_context(|| format!("reading {}", o.traces.display()))?;
    let get = |k: &str| {
        t.get(k).cloned().with_context(|| format!("{} lacks '{k}' (not written by dynts collect?)", o.traces.display()))
    };
    let (hidden, importance, trace) = (get("hidden")?, get("importance")?, get("trace")?);
    let summary_path = o.traces.with_file_name("collect.json");
    let arch = std::fs::read_to_string(&summary_path)
        .ok()
        .and_then(|s| serde_json::from_str::<CollectSummary>(&s).ok())
        .map(|s| s.model_arch)
        .unwrap_or_default();
    let transform = o.transform.unwrap_or_else(|| LabelTransform::for_arch(&arch));
    let d = hidden.dim(1)?;
    let (h1, h2) = o.hidden.unwrap_or((2 * d, (d / 2).max(1)));
    let y: Vec<f32> = importance.to_vec1::<f32>()?.into_iter().map(|i| transform.apply(i)).collect();
    let trace: Vec<u32> = trace.to_vec1()?;
    let (train_idx, val_idx): (Vec<u32>, Vec<u32>) =
        (0..y.len() as u32).partition(|&i| !trace[i as usize].is_multiple_of(10));
    ensure!(!train_idx.is_empty() && !val_idx.is_empty(), "too few traces to hold out every 10th (need ≥ 2)");
    ensure!(o.epochs > 0 && o.batch > 0, "--epochs and --batch must be positive");
    let y = Tensor::from_vec(y, trace.len(), &dev)?;
    let pick = |idx: &[u32]| -> Result<(Tensor, Tensor)> {
        let i = Tensor::from_slice(idx, idx.len(), &dev)?;
        Ok((hidden.index_select(&i, 0)?, y.index_select(&i, 0)?))
    };
    let (val_x, val_y) = pick(&val_idx)?;

    let mut rng = Rng::derive(o.seed, &[0x1f]);
    let mut uniform = |rows: usize, cols: usize, fan_in: usize| -> Result<Var> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let v: Vec<f32> = (0..rows * cols).map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32).collect();
        Ok(Var::from_tensor(&Tensor::from_vec(v, (rows, cols), &dev)?)?)
    };
    let head = Head {
        fc1: uniform(h1, d, d)?,
        fc2: uniform(h2, h1, h1)?,
        b2: uniform(1, h2, h1)?,
        fc3: uniform(1, h2, h2)?,
        b3: uniform(1, 1, h2)?,
    };
    let vars = vec![head.fc1.clone(), head.fc2.clone(), head.b2.clone(), head.fc3.clone(), head.b3.clone()];
    let mut opt =
        AdamW::new(vars.clone(), ParamsAdamW { lr: o.lr, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.01 })?;
    let validation_loss_initial = weighted_mse(&head.forward(&val_x)?, &val_y)?.to_scalar::<f32>()? as f64;
    let per_epoch = train_idx.len().div_ceil(o.batch);
    let total = per_epoch * o.epochs;
    let warmup = (total / 10).max(1);
    let mut order = train_idx.clone();
    let mut step = 0;
    for _ in 0..o.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        for chunk in order.chunks(o.batch) {
            let lr = if step < warmup {
                o.lr * (step + 1) as f64 / warmup as f64
            } else {
                let x = (step - warmup) as f64 / (total - warmup).max(1) as f64;
                0.5 * o.lr * (1.0 + (std::f64::consts::PI * x).cos())
            };
            opt.set_learning_rate(lr);
            let (x, y) = pick(chunk)?;
            let loss = weighted_mse(&head.forward(&x)?, &y)?;
            let mut grads = loss.backward()?;
            crate::toy::train::clip_gradients(&vars, &mut grads, 1.0)?;
            opt.step(&grads)?;
            step += 1;
        }
    }
    let val_pred = head.forward(&val_x)?;
    let validation_loss = weighted_mse(&val_pred, &val_y)?.to_scalar::<f32>()? as f64;
    let validation_spearman = mean_spearman(
        &val_pred.to_vec1()?,
        &val_y.to_vec1()?,
        &val_idx.iter().map(|&i| trace[i as usize]).collect::<Vec<_>>(),
    );
    let tensors: HashMap<String, Tensor> = [
        ("fc1.weight", head.fc1.as_tensor()),
        ("fc2.weight", head.fc2.as_tensor()),
        ("fc2.bias", &head.b2.as_tensor().squeeze(0)?),
        ("fc3.weight", head.fc3.as_tensor()),
        ("fc3.bias", &head.b3.as_tensor().squeeze(0)?),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.detach()))
    .collect();
    if let Some(parent) = o.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    crate::results::save_safetensors(&tensors, &o.out)?;
    let report = FitReport {
        options: o.clone(),
        transform,
        input_size: d,
        hidden: (h1, h2),
        train_tokens: train_idx.len(),
        validation_tokens: val_idx.len(),
        validation_loss_initial,
        validation_loss,
        validation_spearman,
        seconds: start.elapsed().as_secs_f64(),
        kvbench_version: env!("CARGO_PKG_VERSION"),
    };
    crate::results::write_atomic(
        &o.out.with_extension("json"),
        (serde_json::to_string_pretty(&report)? + "\n").as_bytes(),
    )?;
    Ok(report)
}

/// Mean over groups (traces) of the Spearman rank correlation of `a` and `b`.
fn mean_spearman(a: &[f32], b: &[f32], group: &[u32]) -> f64 {
    let mut groups: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, g) in group.iter().enumerate() {
        groups.entry(*g).or_default().push(i);
    }
    let ranks = |idx: &[usize], v: &[f32]| -> Vec<f64> {
        let mut order: Vec<usize> = (0..idx.len()).collect();
        order.sort_by(|&x, &y| v[idx[x]].total_cmp(&v[idx[y]]));
        let mut r = vec![0.0; idx.len()];
        for (rank, &o) in order.iter().enumerate() {
            r[o] = rank as f64;
        }
        r
    };
    let mut sum = 0.0;
    let mut n = 0;
    for idx in groups.values().filter(|g| g.len() > 2) {
        let (ra, rb) = (ranks(idx, a), ranks(idx, b));
        let m = (idx.len() - 1) as f64 / 2.0;
        let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - m) * (y - m)).sum();
        let var: f64 = ra.iter().map(|x| (x - m).powi(2)).sum();
        sum += cov / var;
        n += 1;
    }
    if n == 0 {
        return f64::NAN;
    }
    sum / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toy::ToyShape;

    /// With the query projections zeroed every score is 0, so attention is uniform over the causal
    /// prefix, a(i→j) = 1/(i+1): the labels have a closed form.
    #[test]
    fn labels_are_the_mean_answer_attention_with_the_diagonal_zeroed() {
        let dir = std::env::temp_dir().join(format!("kvbench-labels-{}", std::process::id()));
        crate::toy::train::write_initial_model(&dir, &ToyShape::tiny(), 4).unwrap();
        let path = dir.join("model.safetensors");
        let mut w = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        for (name, t) in w.iter_mut() {
            if name.contains("q_proj") {
                *t = t.zeros_like().unwrap();
            }
        }
        crate::results::save_safetensors(&w, &path).unwrap();
        let lm = crate::model::load::load(
            &crate::model::load::ModelSource::HfDir { path: dir.clone() },
            &LoadOptions::default(),
        )
        .unwrap();
        let tok = crate::toy::tokenizer().unwrap();
        let ids = crate::tokenizer::encode(&tok, "<s>a=1;?<think>b=a+1,a=1,b=2;</think>\\boxed{2}").unwrap();
        let (ts, te) = (6, ids.len() - 4);
        assert_eq!((ids[ts], ids[te]), (crate::toy::THINK, crate::toy::THINK + 1));
        for chunk in [5, 512] {
            let t = Trace::at_think_tokens(ids.clone(), crate::toy::THINK, crate::toy::THINK + 1).unwrap();
            assert_eq!((t.thinking.clone(), t.answer), (ts + 1..te, te + 1));
            let l = label_trace(&lm, &t, chunk).unwrap();
            assert_eq!(l.hidden.dims2().unwrap(), (te - ts - 1, 32));
            let queries: Vec<usize> = (te + 1..ids.len()).collect();
            for (k, &got) in l.importance.iter().enumerate() {
                let j = ts + 1 + k;
                let want: f64 = queries.iter().map(|&i| if j != i { 1.0 / (i + 1) as f64 } else { 0.0 }).sum::<f64>()
                    / queries.len() as f64;
                assert!((got as f64 - want).abs() < 1e-5, "chunk {chunk}, key {j}: {got} vs {want}");
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A real set's reference solution becomes (thinking, answer): GSM8K's calculator notes and
    /// `#### N` leave the thinking, MATH's solution stays whole; the answer is the boxed reference.
    #[test]
    fn worked_solutions_split_into_thinking_and_a_boxed_answer() {
        let gsm8k = crate::datasets::definition("gsm8k").unwrap();
        let raw = "She sold 48/2 = <<48/2=24>>24 clips in May.\nIn all 48+24 = <<48+24=72>>72.\n#### 1,072";
        assert_eq!(
            worked_solution(&gsm8k, raw).unwrap(),
            (
                "She sold 48/2 = 24 clips in May.\nIn all 48+24 = 72.".to_string(),
                "The final answer is $\\boxed{1072}$.".to_string()
            )
        );
        assert_eq!(worked_solution(&gsm8k, "no marker"), None);
        let math = crate::datasets::definition("math").unwrap();
        let raw = " Two roots, so $\\boxed{2}$ asymptotes.  Check: $\\boxed{\\frac{1}{2}}$. ";
        assert_eq!(
            worked_solution(&math, raw).unwrap(),
            (raw.trim().to_string(), "The final answer is $\\boxed{\\frac{1}{2}}$.".to_string())
        );
        assert_eq!(worked_solution(&math, "no box"), None);
        assert_eq!(worked_solution(&crate::datasets::definition("aime24").unwrap(), "42"), None);
        assert_eq!(math.disjoint_from, ["math500"]);
    }

    /// On labels that are a function of the hidden state, the fit ranks held-out tokens well.
    #[test]
    fn the_predictor_learns_a_learnable_importance() {
        let dir = std::env::temp_dir().join(format!("kvbench-fit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (n, d) = (4000, 8);
        let mut rng = Rng::new(3);
        let hidden: Vec<f32> = (0..n * d).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
        // I ∈ [0, 8e-4]: y = 10000·I spans [0, 8], across the up-weighted [4, 5).
        let importance: Vec<f32> = (0..n).map(|i| 4e-4 * (1.0 + hidden[i * d] * hidden[i * d + 1].abs())).collect();
        let dev = Device::Cpu;
        let tensors: HashMap<String, Tensor> = [
            ("hidden", Tensor::from_vec(hidden, (n, d), &dev).unwrap()),
            ("importance", Tensor::from_vec(importance, n, &dev).unwrap()),
            ("trace", Tensor::from_vec((0..n as u32).map(|i| i / 100).collect::<Vec<_>>(), n, &dev).unwrap()),
            ("position", Tensor::from_vec((0..n as u32).collect::<Vec<_>>(), n, &dev).unwrap()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        crate::results::save_safetensors(&tensors, &dir.join("traces.safetensors")).unwrap();
        let o = FitOptions {
            traces: dir.join("traces.safetensors"),
            out: dir.join("ip.safetensors"),
            transform: None,
            hidden: None,
            epochs: 30,
            batch: 128,
            lr: 3e-3,
            seed: 1,
        };
        let r = fit(&o).unwrap();
        assert_eq!(r.transform, LabelTransform::Llama);
        assert!(r.validation_loss < r.validation_loss_initial * 0.2, "{r:?}");
        assert!(r.validation_spearman > 0.8, "{r:?}");
        // The policy loads what was written and predicts the same.
        let ip = crate::policies::dynts::ImportancePredictor::load(&o.out, d, DType::F32, &dev).unwrap();
        let x = Tensor::from_vec(vec![0.5f32, -0.5, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5], (1, d), &dev).unwrap();
        let y = ip.forward(&x).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((y - 10_000.0 * 4e-4 * 1.25).abs() < 1.0, "{y}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
