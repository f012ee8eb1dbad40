//! `kvbench dynts collect`: the importance labels DynTS's predictor learns from. Guo et al.,
//! <https://arxiv.org/abs/2601.18383>; Robin930/DynTS `compute_is_sp.py`.
//!
//! The correct full-cache traces of a finished `kvbench run` (the reference generates on
//! MATH-train with vLLM and re-tokenizes the text, as here) that hold exactly one `<think>` and
//! one `</think>` are teacher-forced, one per question. In every layer the attention diagonal is
//! zeroed; the importance of key j is the mean over layers, query heads and answer queries
//! i > idx(`</think>`) of a(i → j). Kept per thinking token (strictly between `<think>` and
//! `</think>`): the importance and the final hidden state (after the final norm, the IP's input at
//! inference). A model that solves too little to have correct traces (SmolLM2) is labelled on a
//! dataset's worked solutions instead (`--solutions`: synthetic-chain-train's, or MATH's / GSM8K's
//! reference solutions, evaluation sets' questions left out): the solution is the thinking and a
//! closing `\boxed{}` sentence the answer; without thinking tokens in the vocabulary, the split is
//! where the parts were tokenized apart.

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::cache::observe::{AttentionView, ObserveRequest, Observer};
use crate::data::{self, synthetic, AnswerFormat, DatasetDef};
use crate::eval::prompt::{prompt_text, render_prompt};
use crate::io::{save_safetensors, write_atomic};
use crate::model::source::{encode, LoadOptions, LoadedModel, ModelSource};
use crate::model::SeqStep;
use crate::results::record::{read_manifest, read_samples};

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

/// A completion of a model without thinking tokens as (thinking, answer): the answer is the line
/// holding the last `\boxed{`, to the end; the reasoning before it the thinking. `None` when the
/// box is on the first line (no reasoning before it) or absent.
fn split_at_answer_line(completion: &str) -> Option<(&str, &str)> {
    let at = completion.rfind("\\boxed{")?;
    let line = completion[..at].rfind('\n')? + 1;
    let (thinking, answer) = completion.split_at(line);
    (!thinking.trim().is_empty()).then_some((thinking, answer))
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

/// Traces to label, and the model that labels them.
struct Candidates {
    /// The model as the traces' manifest names it.
    model: String,
    lm: LoadedModel,
    /// One per trace offered; `None` where it has no thinking part with an answer after it.
    traces: Vec<Option<Trace>>,
    /// Questions of the pool left out because an evaluation set holds them (`disjoint_from`).
    held_out: usize,
}

/// The traces of `source` and the model that labels them.
fn candidate_traces(source: &TraceSource, data_dir: &Path, load: &LoadOptions) -> Result<Candidates> {
    match source {
        TraceSource::Run(run) => run_traces(run, data_dir, load),
        TraceSource::Solutions { model, dataset, limit, instruction } => {
            let def = data::definition(dataset)?;
            let source = ModelSource::parse(model)?;
            let user = |question: &str| match instruction {
                Some(i) => format!("{question}\n{i}"),
                None => question.to_string(),
            };
            match def.generator.clone() {
                Some(params) => generated_solutions(&params, &source, *limit, &user, load),
                None => reference_solutions(&def, &source, *limit, &user, data_dir, load),
            }
        }
    }
}

/// A finished run's correct full-cache samples, one per question, re-tokenized after their prompt.
fn run_traces(run: &Path, data_dir: &Path, load: &LoadOptions) -> Result<Candidates> {
    let manifest = read_manifest(run)?
        .with_context(|| format!("{} is not a kvbench run folder (no manifest.json)", run.display()))?;
    let plan = &manifest.plan;
    let samples = read_samples(&run.join("samples.jsonl"))?;
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
    // Replayed in the run's arithmetic.
    let load = LoadOptions { weights: plan.weights, ..load.clone() };
    let lm = crate::model::load(&ModelSource::parse(&plan.model)?, &load)?;
    let think = think_tokens(&lm);
    let mut questions = HashMap::new();
    let mut traces = Vec::new();
    for s in chosen {
        if !questions.contains_key(&s.dataset) {
            questions.insert(s.dataset.clone(), data::definition(&s.dataset)?.load(data_dir)?);
        }
        let q = questions[&s.dataset]
            .iter()
            .find(|q| q.index == s.question_index)
            .with_context(|| format!("{} has no question {}", s.dataset, s.question_index))?;
        let mut ids = render_prompt(&lm, plan, q)?;
        traces.push(match think {
            Some((open, close)) => {
                ids.extend(encode(&lm.tokenizer, &s.completion)?);
                Trace::at_think_tokens(ids, open, close)
            }
            None => match split_at_answer_line(&s.completion) {
                Some((thinking, answer)) => {
                    let start = ids.len();
                    ids.extend(encode(&lm.tokenizer, thinking)?);
                    let end = ids.len();
                    ids.extend(encode(&lm.tokenizer, answer)?);
                    Some(Trace { ids, thinking: start..end, answer: end })
                }
                None => None,
            },
        });
    }
    Ok(Candidates { model: plan.model.clone(), lm, traces, held_out: 0 })
}

/// A generated set's worked solutions (synthetic-chain-train) after their prompt.
fn generated_solutions(
    params: &synthetic::ChainParams,
    source: &ModelSource,
    limit: Option<usize>,
    user: &dyn Fn(&str) -> String,
    load: &LoadOptions,
) -> Result<Candidates> {
    let lm = crate::model::load(source, load)?;
    let (open, close) = think_tokens(&lm).context("the model's tokenizer has no <think>/</think> tokens")?;
    let mut traces = Vec::new();
    for i in 0..limit.unwrap_or(params.rows).min(params.rows) {
        let p = synthetic::problem(params, i);
        let prompt = prompt_text(&lm, None, user(&p.question))?;
        // A template that opens the thinking (as R1's does) already holds `<think>`.
        let solution = p.solution();
        let solution = match solution.strip_prefix("<think>") {
            Some(rest) if prompt.ends_with("<think>") => rest.to_string(),
            _ => solution,
        };
        let ids = encode(&lm.tokenizer, &(prompt + &solution))?;
        traces.push(Trace::at_think_tokens(ids, open, close));
    }
    Ok(Candidates { model: source.display(), lm, traces, held_out: 0 })
}

/// A real set's reference solutions (MATH, GSM8K) after their prompt, the questions an evaluation
/// set shares left out.
fn reference_solutions(
    def: &DatasetDef,
    source: &ModelSource,
    limit: Option<usize>,
    user: &dyn Fn(&str) -> String,
    data_dir: &Path,
    load: &LoadOptions,
) -> Result<Candidates> {
    ensure!(
        matches!(def.answer_format, AnswerFormat::Gsm8k | AnswerFormat::LastBoxed),
        "--solutions needs worked solutions (synthetic-chain-train, math, gsm8k); {} has none",
        def.name
    );
    // Drop questions an evaluation set shares (MATH's test set holds MATH-500's).
    let mut shared = BTreeSet::new();
    for other in &def.disjoint_from {
        shared.extend(data::definition(other)?.load(data_dir)?.into_iter().map(|q| q.question));
    }
    let all = def.load(data_dir)?;
    let total = all.len();
    let questions: Vec<_> = all.into_iter().filter(|q| !shared.contains(&q.question)).collect();
    let dropped = total - questions.len();
    let lm = crate::model::load(source, load)?;
    let encode = |text: &str| encode(&lm.tokenizer, text);
    let mut traces = Vec::new();
    for q in questions.iter().take(limit.unwrap_or(usize::MAX)) {
        let Some((thinking, answer)) = worked_solution(def, &q.reference) else {
            traces.push(None);
            continue;
        };
        let prompt = prompt_text(&lm, None, user(&q.question))?;
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
    Ok(Candidates { model: source.display(), lm, traces, held_out: dropped })
}

/// `kvbench dynts collect`: labels the traces of `source` and writes `traces.safetensors`
/// (`hidden [N, d]`, `importance [N]`, `trace [N]`, `position [N]`) and `collect.json` into `out`.
pub fn collect(source: &TraceSource, out: &Path, data_dir: &Path, load: &LoadOptions) -> Result<CollectSummary> {
    let Candidates { model, lm, traces: candidates, held_out } = candidate_traces(source, data_dir, load)?;
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
    save_safetensors(&tensors, &out.join("traces.safetensors"))?;
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
    write_atomic(&out.join("collect.json"), (serde_json::to_string_pretty(&summary)? + "\n").as_bytes())?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_without_thinking_tokens_splits_at_its_answer_line() {
        let text = "Step 1: 16 - 3 - 4 = 9.\nStep 2: 9 * 2 = 18.\nSo she makes \\boxed{18} dollars.\n";
        let (thinking, answer) = split_at_answer_line(text).unwrap();
        assert_eq!(thinking, "Step 1: 16 - 3 - 4 = 9.\nStep 2: 9 * 2 = 18.\n");
        assert_eq!(answer, "So she makes \\boxed{18} dollars.\n");
        // The last box decides; one on the first line leaves no reasoning; none, no answer.
        let (_, answer) = split_at_answer_line("a \\boxed{1}\nb\nc \\boxed{2}").unwrap();
        assert_eq!(answer, "c \\boxed{2}");
        assert_eq!(split_at_answer_line("\\boxed{3} because 1 + 2"), None);
        assert_eq!(split_at_answer_line("no box\nat all"), None);
    }
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
        save_safetensors(&w, &path).unwrap();
        let lm = crate::model::source::load(
            &crate::model::source::ModelSource::HfDir { path: dir.clone() },
            &LoadOptions::default(),
        )
        .unwrap();
        let tok = crate::toy::tokenizer().unwrap();
        let ids = encode(&tok, "<s>a=1;?<think>b=a+1,a=1,b=2;</think>\\boxed{2}").unwrap();
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
        let gsm8k = data::definition("gsm8k").unwrap();
        let raw = "She sold 48/2 = <<48/2=24>>24 clips in May.\nIn all 48+24 = <<48+24=72>>72.\n#### 1,072";
        assert_eq!(
            worked_solution(&gsm8k, raw).unwrap(),
            (
                "She sold 48/2 = 24 clips in May.\nIn all 48+24 = 72.".to_string(),
                "The final answer is $\\boxed{1072}$.".to_string()
            )
        );
        assert_eq!(worked_solution(&gsm8k, "no marker"), None);
        let math = data::definition("math").unwrap();
        let raw = " Two roots, so $\\boxed{2}$ asymptotes.  Check: $\\boxed{\\frac{1}{2}}$. ";
        assert_eq!(
            worked_solution(&math, raw).unwrap(),
            (raw.trim().to_string(), "The final answer is $\\boxed{\\frac{1}{2}}$.".to_string())
        );
        assert_eq!(worked_solution(&math, "no box"), None);
        assert_eq!(worked_solution(&data::definition("aime24").unwrap(), "42"), None);
        assert_eq!(math.disjoint_from, ["math500"]);
    }
}
