//! The clap types: each command's arguments and the argument groups they share.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::{Args, Parser, Subcommand};

use super::defaults;
use crate::decode::sampling::SamplingParams;
use crate::model::source::{LoadOptions, ModelSource, WeightFormat, BUILTIN_DIR};

#[derive(Parser, Debug)]
#[command(
    name = "kvbench",
    version,
    about = "Benchmark and evaluation suite for KV-cache eviction policies on reasoning language models",
    long_about = "Benchmark and evaluation suite for KV-cache eviction policies on reasoning language models.\n\n\
        With no command, kvbench runs its main job: the built-in benchmark (`kvbench run`: the toy model \
        on synthetic-chain under all eight policies, into results/builtin/), then its figures \
        (`kvbench plot results/builtin/summary.csv`, into plots/builtin/)."
)]
pub struct Cli {
    /// None: the main job (the built-in benchmark, then its figures).
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate a completion for one prompt and print it with a one-line summary.
    Generate(Box<GenerateArgs>),
    /// List the eviction policies (presets in policies/*.toml) with their defaults and papers.
    Policies(PoliciesArgs),
    /// Run a sweep: datasets × policies × budgets × samples, graded, into results/<name>/
    /// (samples.jsonl, summary.csv, manifest.json). Re-running the same command resumes.
    Run(Box<RunArgs>),
    /// Run a sweep on a Slurm cluster: the plan of `kvbench run` (the same flags and experiment
    /// files) as a job array of N shards and a merge that runs after all of them; writes the
    /// scripts into <out>/slurm/ and, with --submit, submits them.
    Slurm(Box<super::slurm::SlurmArgs>),
    /// Combine the shard folders of one plan into one result.
    Merge(MergeArgs),
    /// Write a run's results in another tool's format: `lm-eval` = lm-evaluation-harness's results
    /// JSON and per-sample JSONL (its --log_samples layout), one task per dataset × policy × budget.
    Export(ExportArgs),
    /// Re-grade a JSONL of {prediction, reference, dataset} records (any tool's outputs) and write
    /// each verdict with its reason.
    Grade(GradeArgs),
    /// Draw a run's figures from its summary.csv alone, each as PNG and SVG: <stem>summary (accuracy
    /// per policy at one budget, with the peak KV cache length), <stem>budget (accuracy against the
    /// budget) and <stem>datasets (one panel per dataset).
    Plot(PlotArgs),
    /// Train the toy reasoning model on synthetic-chain (candle autograd + AdamW, CPU) into a model
    /// folder; the committed one (assets/toy-chain) is the built-in default of `kvbench run`.
    TrainToy(TrainToyArgs),
    /// Compare a run's accuracy per configuration with a reference run: exit 0 within tolerance,
    /// 1 when a configuration moved beyond it, 2 when they cannot be compared.
    Check(CheckArgs),
    /// Time decoding under each policy: prefill and decode throughput at several context lengths,
    /// time to first token, the policy's share of step time, peak memory and the share of the
    /// memory-bandwidth roofline reached; a table on screen and a CSV.
    Bench(Box<BenchArgs>),
    /// DynTS's importance predictor: `collect` labels from a run's correct full-cache traces,
    /// `train` fits the predictor that `--predictor` then loads.
    #[command(subcommand)]
    Dynts(DyntsCommand),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The run to check: a results folder or its summary.csv.
    pub result: PathBuf,
    /// The reference run (folder or summary.csv), e.g. results/builtin-reference.
    #[arg(long)]
    pub against: PathBuf,
    /// Fixed tolerance in accuracy points [default: exact for greedy runs with the same
    /// arithmetic; else paired on the two runs' samples (McNemar on the flipped answers); else
    /// --z standard errors of the difference of the two proportions].
    #[arg(long)]
    pub tolerance: Option<f64>,
    /// Standard errors of the unpaired rule; the paired rule's level is their two-sided tail
    /// (3: p < 0.0027).
    #[arg(long, default_value_t = 3.0)]
    pub z: f64,
    /// Paired rule, greedy runs: the % of a configuration's answers that may flip either way
    /// (another arithmetic flips greedy answers only at near-ties).
    #[arg(long, default_value_t = 1.0)]
    pub max_flipped: f64,
}

#[derive(Subcommand, Debug)]
pub enum DyntsCommand {
    /// Teacher-force the correct full-cache samples of a finished run and record, per thinking
    /// token, the attention the answer pays it (diagonal zeroed; mean over layers, heads and
    /// answer queries) and the final hidden state: DIR/traces.safetensors + DIR/collect.json.
    Collect(DyntsCollectArgs),
    /// Fit the importance predictor (3-layer Softplus MLP, weighted MSE, frozen model) on
    /// collected traces; writes OUT (safetensors) and OUT with .json (the report).
    Train(DyntsTrainArgs),
}

#[derive(Args, Debug)]
pub struct DyntsCollectArgs {
    /// A `kvbench run` folder with `full` samples (e.g. `kvbench run --policies full --datasets math`):
    /// its correct traces, one per question.
    #[arg(long, conflicts_with = "solutions", required_unless_present = "solutions")]
    pub run: Option<PathBuf>,
    /// Instead: a dataset's worked solutions teacher-forced through --model: synthetic-chain-train's
    /// generated ones, or the reference solutions of `math` (less MATH-500's questions) or `gsm8k`
    /// (for models that solve too little to have correct traces of their own).
    #[arg(long, requires = "model")]
    pub solutions: Option<String>,
    /// The model for --solutions (e.g. builtin:toy-chain, models/SmolLM2-135M-Instruct.Q4_1.gguf).
    #[arg(long)]
    pub model: Option<String>,
    /// With --solutions: the first N problems.
    #[arg(long)]
    pub limit: Option<usize>,
    /// With --solutions: appended to each question, as `kvbench run --instruction` does.
    #[arg(long, requires = "solutions")]
    pub instruction: Option<String>,
    /// Output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Folder of the dataset files [default: $KVBENCH_DATA_DIR, else ../shared/datasets].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = defaults::DEVICE)]
    pub device: String,
    /// Compute dtype: f32, bf16 or f16 [default: f32 on CPU, bf16 on GPU].
    #[arg(long)]
    pub dtype: Option<String>,
    /// With --solutions: a GGUF's quantized weights `dequantized` or kept `native` (with --run,
    /// the run's plan decides).
    #[arg(long, value_enum, default_value_t)]
    pub weights: WeightFormat,
}

#[derive(Args, Debug)]
pub struct DyntsTrainArgs {
    /// traces.safetensors written by `kvbench dynts collect`.
    #[arg(long)]
    pub traces: PathBuf,
    /// The predictor file to write (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Label transform [default: by the model's family: qwen for Qwen, llama otherwise].
    #[arg(long, value_enum)]
    pub transform: Option<crate::dynts::fit::LabelTransform>,
    /// Hidden sizes h1,h2 of the MLP [default: 2d,d/2 as in the paper; the reference code uses
    /// 8192,2048 for its 7–8B models].
    #[arg(long, value_delimiter = ',', num_args = 2)]
    pub hidden: Option<Vec<usize>>,
    #[arg(long, default_value_t = 15)]
    pub epochs: usize,
    /// Thinking tokens per optimiser step.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Policies to time (see `kvbench policies`; `all` = the figure's eight).
    #[arg(long, value_delimiter = ',', default_value = defaults::POLICIES)]
    pub policies: Vec<String>,
    /// B of the budgeted policies (5000, 5k, 4.5k).
    #[arg(long, default_value = "1k")]
    pub budget: String,
    /// W, the most recent tokens always kept.
    #[arg(long, default_value = "400")]
    pub window: String,
    /// r, the fraction of the older part kept at each eviction.
    #[arg(long, default_value_t = defaults::RATIO)]
    pub ratio: f64,
    /// DynTS's predictor weights; without, the dynts policies time a random predictor of the
    /// paper's shape (the CSV's `predictor` column says so).
    #[arg(long)]
    pub predictor: Option<PathBuf>,
    /// Prompt tokens (seeded random ids) before decoding starts.
    #[arg(long, default_value = "128")]
    pub prompt: String,
    /// History lengths (prompt + generated) where prefill and decode are timed, ascending.
    #[arg(long, value_delimiter = ',', default_value = "512,1k,2k")]
    pub context: Vec<String>,
    /// Timed decode steps at each context.
    #[arg(long, default_value_t = 32)]
    pub steps: usize,
    /// Sequences decoded together, one batch size after another (1,8,32).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<usize>,
    /// How a step's sequences decode: `pool` (one cache pool, one attention per layer for all) or
    /// `per-sequence` (a cache each, attention one sequence after another: the reference path).
    #[arg(long, value_enum, default_value_t = crate::bench::DecodePath::Pool)]
    pub decode: crate::bench::DecodePath,
    /// What a pooled step runs: `fused` (this project's kernels) or `reference` (candle's ops)
    /// [default: fused on the CPU, where both give the same bits; reference on CUDA].
    #[arg(long, value_enum)]
    pub kernels: Option<crate::model::fused::Kernels>,
    /// Prompt tokens per prefill forward.
    #[arg(long, default_value_t = defaults::PREFILL_CHUNK)]
    pub prefill_chunk: usize,
    /// GiB copied to measure the memory bandwidth.
    #[arg(long, default_value_t = 1.0)]
    pub bandwidth_gib: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads for the kernels [default: every core]; to calibrate a CPU plan of T
    /// `kvbench run` workers, one worker's share (cores / T).
    #[arg(long)]
    pub threads: Option<usize>,
    /// The CSV to write (atomically); `kvbench run --dry-run` reads it to estimate a plan's time.
    #[arg(long, default_value = defaults::BENCH_CSV)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct TrainToyArgs {
    /// The model folder to write (config, tokenizer, weights, training.json, train-log.csv).
    #[arg(long, default_value = BUILTIN_DIR)]
    pub out: PathBuf,
    /// Seed of the initial weights.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seed of the stream of training problems (the evaluation set, synthetic-chain, uses 2026).
    #[arg(long, default_value_t = 7)]
    pub task_seed: u64,
    /// The operations of the training problems: "+" (synthetic-chain's) or "+-" (the first two
    /// stages of the committed model's curriculum).
    #[arg(long, default_value = "+")]
    pub ops: String,
    /// Chance that a training statement's older operand is a fact (the evaluation set's is 0.9:
    /// a budget test's choice; the model learns both kinds of lookup at 0.4).
    #[arg(long, default_value_t = 0.4)]
    pub fact_ref: f64,
    /// Statements per training problem, an inclusive range LO-HI (the evaluation set's, 6-20, when
    /// not given): shorter problems make the first stage of a curriculum cheap.
    #[arg(long, value_parser = parse_range)]
    pub statements: Option<[usize; 2]>,
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Problems per step (fresh every step).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Peak learning rate, held from the end of warmup until --decay-from.
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// The learning rate at the last step (cosine decay from --decay-from).
    #[arg(long, default_value_t = 1e-4)]
    pub min_lr: f64,
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    #[arg(long, default_value_t = 1400)]
    pub decay_from: usize,
    /// Print progress, evaluate on held-out problems and save the weights every N steps.
    #[arg(long, default_value_t = 50)]
    pub log_every: usize,
    /// Continue from this model folder's weights (with a fresh optimiser) rather than from scratch.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Index of the first step (with --init: where the problem stream and schedule resume).
    #[arg(long, default_value_t = 0)]
    pub first_step: usize,
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// The summary CSV of a run (results/<run>/summary.csv).
    pub summary: PathBuf,
    /// Output folder (default: plots/<run>, after the CSV's folder; plots/ for a bare file name).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// B of the summary and per-dataset figures (5000, 5k, 4.5k); needed when the CSV holds several.
    #[arg(long)]
    pub budget: Option<String>,
    /// File-name prefix: <out>/<stem>summary.png, <stem>summary.svg, ...
    #[arg(long, default_value = "")]
    pub stem: String,
    /// A title above every figure.
    #[arg(long)]
    pub title: Option<String>,
    /// The proposed method: drawn in red, labelled in bold.
    #[arg(long, default_value = "dynts")]
    pub highlight: String,
}

/// `kvbench run`. Flags left out take the experiment file's value, else the default shown.
#[derive(Args, Debug, Default)]
pub struct RunArgs {
    /// An experiment file (experiments/*.toml); flags given here override its fields.
    #[arg(long)]
    pub experiment: Option<PathBuf>,
    /// Model: a .gguf file, an HF-format directory, a hub id `owner/name[@revision]` or
    /// `builtin:toy-chain` [default: without --experiment, the built-in benchmark
    /// (experiments/builtin.toml: the toy model on synthetic-chain)].
    #[arg(long)]
    pub model: Option<String>,
    /// Device: `cpu`, `cuda` or `cuda:N` [default: cpu].
    #[arg(long)]
    pub device: Option<String>,
    /// Compute dtype: f32, bf16 or f16 [default: f32 on CPU, bf16 on GPU].
    #[arg(long)]
    pub dtype: Option<String>,
    /// A GGUF's quantized weights: `dequantized` to the dtype at load (parity with HF
    /// transformers), or kept `native` and multiplied quantized, inputs in 8 bits (llama.cpp's
    /// arithmetic, ≈ 4× fewer bytes per token) [default: dequantized].
    #[arg(long, value_enum)]
    pub weights: Option<WeightFormat>,
    /// Datasets, comma-separated (see datasets/*.toml) [default: gsm8k].
    #[arg(long, value_delimiter = ',')]
    pub datasets: Option<Vec<String>>,
    /// Policies, comma-separated; `all` = the eight of the DynTS figure [default: all].
    #[arg(long, value_delimiter = ',')]
    pub policies: Option<Vec<String>>,
    /// B values, comma-separated (5000, 5k, 4.5k); each budgeted policy runs at every one
    /// [default: 5k]. Overrides B in every budget rule of an experiment file.
    #[arg(long, value_delimiter = ',')]
    pub budget: Option<Vec<String>>,
    /// W: the recent tokens always kept [default: 2000].
    #[arg(long)]
    pub window: Option<String>,
    /// r: fraction of the older part kept at each eviction [default: 0.3].
    #[arg(long)]
    pub ratio: Option<f64>,
    /// n: samples per question (accuracy is avg@n) [default: 1].
    #[arg(long)]
    pub samples: Option<usize>,
    /// Greedy decoding (the CI setting) instead of the paper's T 0.6, top-p 0.95, top-k 20.
    #[arg(long)]
    pub greedy: bool,
    /// Seed of the per-sample random streams [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// [default: 16384]
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Run only the first N questions of each dataset.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Run only these question indices (0-based, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub ids: Option<Vec<usize>>,
    /// Append this instruction to every question (for non-reasoning models), e.g.
    /// "Please reason step by step, and put your final answer within \boxed{}."
    #[arg(long)]
    pub instruction: Option<String>,
    /// A system message before every question, e.g. the Qwen2.5-Math prompt's "Please reason step
    /// by step, and put your final answer within \boxed{}." [default: none, the chat template's own].
    #[arg(long)]
    pub system: Option<String>,
    /// Importance-predictor weights (safetensors) for the `dynts` family.
    #[arg(long)]
    pub predictor: Option<PathBuf>,
    /// Folder of the dataset files [default: $KVBENCH_DATA_DIR, else ../shared/datasets].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Results folder [default: results/<experiment> or results/<model>-<datasets>]; with
    /// several models one subfolder each, with --shard a `shard-i-of-N` subfolder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Worker threads [default: 2].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Samples each worker decodes together: the slots of its cache pool, refilled as samples
    /// finish (part of the plan: every step computes one row per slot) [default: 4].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Prompt tokens per prefill forward pass [default: 512].
    #[arg(long)]
    pub prefill_chunk: Option<usize>,
    /// Run only part i of N of the plan (0-based, e.g. 0/4 … 3/4); `kvbench merge` joins the parts.
    #[arg(long)]
    pub shard: Option<String>,
    /// Print the expanded plan and its estimated cost, and exit without loading the model.
    #[arg(long)]
    pub dry_run: bool,
    /// The `kvbench bench` CSV whose rows for this model, device, dtype and weights time the
    /// estimate of the dry run and of `kvbench slurm` [default: results/bench.csv, bench's own].
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// A run folder (e.g. this plan with --limit 5 and another --out) whose finished samples'
    /// generated lengths stand in for this plan's in the estimate, where this plan's own folder
    /// has none yet [default: max_new_tokens per sample].
    #[arg(long)]
    pub pilot: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Shard folders written by `kvbench run --shard i/N` with the same plan.
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// The merged results folder (samples.jsonl in plan order, summary.csv, manifest.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Folder of the dataset files (to check the merged samples against the plan).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Merge even if shards or samples are missing.
    #[arg(long)]
    pub allow_partial: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The results folder (results/<run>).
    pub run: PathBuf,
    /// The format to write.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Output folder [default: <run>/lm-eval]; files go into <out>/<model>/, as lm-eval writes them.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Folder of the dataset files (the questions' texts) [default: $KVBENCH_DATA_DIR, else
    /// ../shared/datasets].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// lm-evaluation-harness: results_<time>.json and samples_<task>_<time>.jsonl.
    LmEval,
}

#[derive(Args, Debug)]
pub struct GradeArgs {
    /// Input JSONL: one object per line with `prediction` (a completion, or an answer with
    /// --extracted), `reference` (the dataset's raw answer field) and `dataset` (a dataset name).
    pub file: PathBuf,
    /// Write the verdicts here (JSONL, written atomically) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// `prediction` already holds the extracted answer, not a completion.
    #[arg(long)]
    pub extracted: bool,
}

#[derive(Args, Debug)]
pub struct PoliciesArgs {
    /// Print each preset's parameters too.
    #[arg(long)]
    pub verbose: bool,
}

/// The eviction policy and its budget (the DynTS harness: trigger at B, keep W + ⌊r·(L−W)⌋).
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Eviction policy (see `kvbench policies`); `full` keeps the whole cache.
    #[arg(long, default_value = "full")]
    pub policy: String,
    /// B: peak cached tokens per layer (prompt and window included), e.g. 5000, 5k, 4.5k.
    #[arg(long, default_value = defaults::BUDGET)]
    pub budget: String,
    /// W: the most recent tokens always kept (`kept_window`); must be below the budget.
    #[arg(long, default_value = defaults::WINDOW)]
    pub window: String,
    /// r: fraction of the older part kept at each eviction, in (0, 1].
    #[arg(long, default_value_t = defaults::RATIO)]
    pub ratio: f64,
    /// Importance-predictor weights (safetensors) for `dynts`, `dynts-bottom`, `dynts-noque`.
    #[arg(long)]
    pub predictor: Option<PathBuf>,
    /// Write one JSON line per eviction (kept positions, scores) to this file.
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

impl PolicyArgs {
    pub fn budget(&self) -> Result<crate::policies::Budget> {
        crate::policies::Budget::from_flags(&self.budget, &self.window, self.ratio)
    }
}

/// Where the model comes from and how it is placed on the device.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a .gguf file, an HF-format directory (config.json, *.safetensors, tokenizer.json),
    /// or an HF hub id `owner/name[@revision]` (downloaded; with HF_HUB_OFFLINE=1 read from the
    /// local HF cache only).
    #[arg(long, default_value = defaults::TEST_MODEL)]
    pub model: String,
    /// Device: `cpu`, or `cuda` / `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, default_value = defaults::DEVICE)]
    pub device: String,
    /// Compute dtype: f32, bf16 or f16. Default: f32 on CPU (bf16 matmuls are slow there), bf16 on GPU.
    #[arg(long)]
    pub dtype: Option<String>,
    /// A GGUF's quantized weights: `dequantized` at load (parity with HF transformers) or kept
    /// `native` (multiplied quantized, inputs in 8 bits).
    #[arg(long, value_enum, default_value_t)]
    pub weights: WeightFormat,
}

impl ModelArgs {
    pub fn source(&self) -> Result<ModelSource> {
        ModelSource::parse(&self.model)
    }

    pub fn load_options(&self) -> Result<LoadOptions> {
        load_options(&self.device, self.dtype.as_deref(), self.weights)
    }
}

/// The device and dtype from their flags; creating a CUDA device is the first GPU work, so it
/// happens after planning.
pub fn load_options(device: &str, dtype: Option<&str>, weights: WeightFormat) -> Result<LoadOptions> {
    let device = match device {
        "cpu" => Device::Cpu,
        d if d == "cuda" || d.starts_with("cuda:") => {
            let ordinal = match d.strip_prefix("cuda:") {
                Some(n) => n.parse().with_context(|| format!("--device {d}: bad GPU ordinal"))?,
                None => 0,
            };
            crate::model::source::cuda_device(ordinal).with_context(|| format!("--device {d}"))?
        }
        other => bail!("--device must be cpu, cuda or cuda:N, got '{other}'"),
    };
    let dtype = match dtype {
        None if device.is_cpu() => DType::F32,
        None => DType::BF16,
        Some("f32") => DType::F32,
        Some("bf16") => DType::BF16,
        Some("f16") => DType::F16,
        Some(other) => bail!("--dtype must be f32, bf16 or f16, got '{other}'"),
    };
    Ok(LoadOptions { device, dtype, weights })
}

/// Sampling flags shared by every decoding command.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Softmax temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus sampling mass (applied after the temperature).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f64,
    /// Keep at most this many candidates after top-p; 0 disables it.
    #[arg(long, default_value_t = 20)]
    pub top_k: usize,
    /// Seed of the sampling stream.
    #[arg(long, default_value_t = defaults::SEED)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn params(&self) -> Result<SamplingParams> {
        let p = SamplingParams { temperature: self.temperature, top_p: self.top_p, top_k: self.top_k };
        p.validate()?;
        Ok(p)
    }
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The user message (rendered with the model's chat template unless --raw).
    #[arg(long, conflicts_with = "prompt_file")]
    pub prompt: Option<String>,
    /// Read the user message from a file.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// An optional system message.
    #[arg(long)]
    pub system: Option<String>,
    /// Feed the prompt text as is, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Stop after this many generated tokens.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Keep generating past the stop token (for fixed-length runs and benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Prompt tokens per prefill forward pass.
    #[arg(long, default_value_t = defaults::PREFILL_CHUNK)]
    pub prefill_chunk: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// `LO-HI` (or a single `N`) as an inclusive range of positive integers.
fn parse_range(s: &str) -> Result<[usize; 2], String> {
    let num = |x: &str| x.trim().parse::<usize>().map_err(|_| format!("`{s}` is not a range LO-HI of whole numbers"));
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (num(lo)?, num(hi)?),
        None => (num(s)?, num(s)?),
    };
    if lo == 0 || lo > hi {
        return Err(format!("`{s}`: the range must have 1 ≤ LO ≤ HI"));
    }
    Ok([lo, hi])
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// `kvbench run`'s flags are optional (an experiment file may set them), so their help states the
    /// default in words: it must be the one `kvbench run` applies.
    #[test]
    fn run_help_states_the_defaults_it_applies() {
        let mut cli = Cli::command();
        let help = cli.find_subcommand_mut("run").unwrap().render_long_help().to_string().replace('\n', " ");
        let help: String = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for (flag, default) in [
            ("--device", defaults::DEVICE.to_string()),
            ("--datasets", defaults::DATASET.to_string()),
            ("--policies", defaults::POLICIES.to_string()),
            ("--budget", defaults::BUDGET.to_string()),
            ("--window", defaults::WINDOW.to_string()),
            ("--ratio", defaults::RATIO.to_string()),
            ("--samples", defaults::SAMPLES.to_string()),
            ("--seed", defaults::SEED.to_string()),
            ("--max-new-tokens", defaults::MAX_NEW_TOKENS.to_string()),
            ("--threads", defaults::THREADS.to_string()),
            ("--batch", defaults::BATCH.to_string()),
            ("--prefill-chunk", defaults::PREFILL_CHUNK.to_string()),
        ] {
            let start = help.find(&format!("{flag} <")).unwrap_or_else(|| panic!("{flag} missing from the help"));
            let entry = &help[start..];
            let entry = &entry[..entry[2..].find(" --").map_or(entry.len(), |i| i + 2)];
            assert!(entry.contains(&format!("[default: {default}]")), "{flag}: {entry}");
        }
    }

    #[test]
    fn ranges_parse_and_bad_ones_name_the_input() {
        assert_eq!(parse_range("4-10"), Ok([4, 10]));
        assert_eq!(parse_range("7"), Ok([7, 7]));
        for bad in ["10-4", "0-3", "4-", "a-b", "4-10-12"] {
            let err = parse_range(bad).unwrap_err();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }
}
