//! `kvbench bench`: what decoding costs under each policy. For every policy at one
//! budget, on the same random prompts:
//!
//! - **prefill** of a prompt of each context length (the policy evicting during chunked prefill
//!   as in `kvbench run`): prompt tokens per second and the time to the first token;
//! - **decode** from a `--prompt`-token prompt until the history (prompt + generated) reaches each
//!   context length, then `--steps` timed steps there: ms per step (mean and median), tokens per
//!   second, the mean cache length a step reads; and, over every decode step since the previous
//!   context (so that evictions weigh in at their trigger's frequency), the share of the time the
//!   policy spends observing, scoring and compacting (its own clock,
//!   [`crate::policies::EvictionStats`]) and the evictions;
//! - **memory**: the process's resident set now and its peak since the policy began (Linux
//!   `VmHWM`, reset per policy through `/proc/self/clear_refs`), and the KV cache's allocation;
//! - **roofline**: decoding is memory-bound, each step reads every weight once plus each
//!   sequence's cached K/V, so `roofline % = (weight bytes + KV bytes read) / step time / copy
//!   bandwidth`, where the bandwidth (bytes read + written per second) is measured here by a large
//!   copy on the device (on CPU, split over the worker threads).
//!
//! Decoding goes through the same calls as `kvbench run` ([`crate::eval::sample`]): stop tokens off, so
//! every sequence generates to the last context. Prompts are seeded random token ids; costs do not
//! depend on what the tokens say, except through which tokens a policy keeps.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::Linear;
use serde::Serialize;

use crate::decode::generate::GenerateParams;
use crate::decode::sampling::SamplingParams;
use crate::eval::sample::{
    cache_capacity, decode_batch, start_sample, start_sample_in, PolicyResources, Sample, SampleState,
};
use crate::model::fused::Kernels;
use crate::model::source::{LoadOptions, LoadedModel, ModelSource, WeightFormat};
use crate::model::ModelConfig;
use crate::policies::dynts::ImportancePredictor;
use crate::policies::{Budget, PolicySpec};
use crate::rng::Rng;

/// How a benchmark's sequences decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DecodePath {
    /// One slot pool: one attention per layer for every sequence (what `kvbench run` does).
    Pool,
    /// A cache per sequence, attention one sequence after another (the reference path).
    PerSequence,
}

/// A validated `kvbench bench` invocation: everything checked before any weight is loaded.
#[derive(Debug)]
pub struct BenchPlan {
    pub source: ModelSource,
    pub load: LoadOptions,
    pub policies: Vec<PolicySpec>,
    pub budget: Budget,
    /// DynTS's predictor; without one the dynts policies run a random predictor of the paper's
    /// shape, which costs the same (column `predictor`).
    pub predictor: Option<PathBuf>,
    /// Prompt tokens before decoding starts.
    pub prompt: usize,
    /// History lengths (prompt + generated) where prefill and decode are timed, ascending.
    pub contexts: Vec<usize>,
    pub steps: usize,
    /// Batch sizes, each benchmarked in turn.
    pub batches: Vec<usize>,
    pub decode: DecodePath,
    /// The pooled step's kernels; `None`: the device's default.
    pub kernels: Option<Kernels>,
    pub prefill_chunk: usize,
    pub seed: u64,
    /// GiB copied to measure the bandwidth.
    pub bandwidth_gib: f64,
    pub out: PathBuf,
}

impl BenchPlan {
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.policies.is_empty(), "--policies: none given");
        ensure!(self.prompt > 0, "--prompt must be at least 1 token");
        ensure!(self.steps > 0, "--steps must be at least 1");
        ensure!(!self.batches.is_empty() && !self.batches.contains(&0), "--batch sizes must be at least 1");
        ensure!(self.prefill_chunk > 0, "--prefill-chunk must be at least 1");
        ensure!(!self.contexts.is_empty(), "--context: none given");
        ensure!(
            self.contexts.windows(2).all(|w| w[0] < w[1]),
            "--context must be ascending without repeats: {:?}",
            self.contexts
        );
        ensure!(
            self.contexts[0] > self.prompt,
            "--context {} is not above --prompt {}: decoding is timed after the prompt",
            self.contexts[0],
            self.prompt
        );
        for spec in &self.policies {
            spec.validate(&self.budget)?;
            ensure!(
                !(spec.protects_prompt() && spec.evicts() && self.budget.budget <= self.prompt),
                "--budget {} is not above --prompt {} and {} never evicts the prompt",
                self.budget.budget,
                self.prompt,
                spec.name
            );
        }
        ensure!(self.bandwidth_gib > 0.0, "--bandwidth-gib must be positive");
        Ok(())
    }

    /// Tokens each sequence generates: the first (from the prefill), one per step to the last
    /// context, then at each context one counted step and the timed ones.
    fn new_tokens(&self) -> usize {
        1 + self.contexts.last().copied().unwrap_or(0) - self.prompt + self.contexts.len() * (1 + self.steps)
    }
}

/// One CSV row: one policy at one context length.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub model: String,
    pub device: String,
    pub dtype: String,
    /// `dequantized` or `native` (GGML-quantized weights kept as such).
    pub weights: String,
    pub threads: usize,
    pub policy: String,
    pub budget: usize,
    pub window: usize,
    pub ratio: f64,
    pub predictor: String,
    pub batch: usize,
    pub decode: DecodePath,
    /// What a pooled step ran: `fused` or `reference` (candle's ops).
    pub kernels: Kernels,
    /// History length (prompt + generated) where this row was timed.
    pub context: usize,
    /// Prefill of a `context`-token prompt: prompt tokens per second, all sequences together
    /// (empty where the prompt does not fit a policy that never evicts the prompt).
    pub prefill_tok_s: Option<f64>,
    /// Time to the first token of a `context`-token prompt (prefill + first draw), per sequence.
    pub ttft_ms: Option<f64>,
    /// Mean cached tokens per sequence that a timed step read.
    pub cache_len: f64,
    pub ms_per_step: f64,
    pub ms_per_step_median: f64,
    /// Kernels one decode step issues (the model's op ledger).
    pub ops_per_step: usize,
    /// Generated tokens per second, all sequences of the batch together.
    pub tok_s: f64,
    /// Share of the decode time since the previous context spent in the policy.
    pub policy_share: f64,
    /// Evictions since the previous context.
    pub evictions: usize,
    pub rss_mib: Option<f64>,
    /// Peak resident set since this policy began (its prefill runs included); empty where the
    /// system cannot reset the peak.
    pub peak_rss_mib: Option<f64>,
    /// Bytes allocated for the KV caches of the batch.
    pub kv_alloc_mib: f64,
    /// Weights + cached K/V read per step.
    pub bytes_per_step_mb: f64,
    pub achieved_gb_s: f64,
    pub bandwidth_gb_s: f64,
    pub roofline_pct: f64,
}

/// Bytes one decode step reads from the weights: every matrix once (the embedding table only
/// as the tied output head).
pub fn weight_bytes_per_step(cfg: &ModelConfig, dtype: DType) -> usize {
    let (d, hd, inter) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let attn = d * cfg.num_heads * hd * 2 + d * cfg.num_kv_heads * hd * 2;
    let bias = if cfg.qkv_bias { (cfg.num_heads + 2 * cfg.num_kv_heads) * hd } else { 0 };
    let qk_norm = if cfg.qk_norm { 2 * hd } else { 0 };
    let per_layer = attn + bias + qk_norm + 3 * d * inter + 2 * d;
    (cfg.num_layers * per_layer + d + cfg.vocab_size * d) * dtype.size_in_bytes()
}

/// Bytes of K and V one cached token holds over all layers.
pub fn kv_bytes_per_token(cfg: &ModelConfig, dtype: DType) -> usize {
    cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * dtype.size_in_bytes()
}

/// Bytes read + written per second by a copy of `gib` GiB between preallocated buffers (median
/// of 10 after 2 warm-ups). CPU: split over rayon's threads, as the decoder's kernels are. CUDA:
/// the larger of candle's copy kernel and the driver's memcpy (the kernel reached under half of
/// the memcpy on an H200).
pub fn copy_bandwidth(device: &Device, gib: f64) -> Result<f64> {
    let n = (gib * (1u64 << 30) as f64 / 4.0) as usize;
    ensure!(n > 0, "bandwidth buffer is empty");
    if device.is_cpu() {
        use rayon::prelude::*;
        let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut dst = vec![0f32; n];
        let chunk = n.div_ceil(rayon::current_num_threads() * 4).max(1);
        let secs = median_secs(device, || {
            dst.par_chunks_mut(chunk).zip(src.par_chunks(chunk)).for_each(|(d, s)| d.copy_from_slice(s));
            Ok(())
        })?;
        std::hint::black_box(&dst);
        return Ok(2.0 * (n * 4) as f64 / secs);
    }
    let src = Tensor::rand(-1f32, 1f32, n, device)?;
    let dst = Tensor::zeros(n, DType::F32, device)?;
    let kernel = median_secs(device, || Ok(dst.slice_set(&src, 0, 0)?))?;
    drop((src, dst));
    let kernel_bw = 2.0 * (n * 4) as f64 / kernel;
    Ok(driver_copy_bandwidth(device, n * 4)?.map_or(kernel_bw, |d| d.max(kernel_bw)))
}

/// Median wall time of `f` over 10 runs after 2 warm-ups, the device synchronised around each.
pub fn median_secs(device: &Device, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut times = Vec::new();
    for i in 0..12 {
        device.synchronize()?;
        let t = Instant::now();
        f()?;
        device.synchronize()?;
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

#[cfg(feature = "cuda")]
fn driver_copy_bandwidth(device: &Device, bytes: usize) -> Result<Option<f64>> {
    let Device::Cuda(dev) = device else { return Ok(None) };
    let stream = dev.cuda_stream();
    // Zeros are fine: a plain memcpy does no arithmetic and the buffers are not compressed.
    let src = stream.alloc_zeros::<u8>(bytes)?;
    let mut dst = stream.alloc_zeros::<u8>(bytes)?;
    let secs = median_secs(device, || Ok(stream.memcpy_dtod(&src, &mut dst)?))?;
    Ok(Some(2.0 * bytes as f64 / secs))
}

#[cfg(not(feature = "cuda"))]
fn driver_copy_bandwidth(_device: &Device, _bytes: usize) -> Result<Option<f64>> {
    Ok(None)
}

/// Resident set now and its peak (MiB), from `/proc/self/status`; `None` where there is none.
pub fn rss_mib() -> Option<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: f64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Starts a new peak-RSS interval (Linux ≥ 4.0: "5" resets `VmHWM` to the current RSS).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A predictor of the paper's shape, h = (2d, d/2), with seeded random weights: what DynTS's
/// scoring costs, without claiming anything about what it keeps.
fn random_predictor(hidden: usize, dtype: DType, device: &Device, seed: u64) -> Result<ImportancePredictor> {
    let mut rng = Rng::new(seed);
    let mut lin = |rows: usize, cols: usize, bias: bool| -> Result<Linear> {
        let scale = (1.0 / cols as f64).sqrt();
        let w: Vec<f32> = (0..rows * cols).map(|_| ((rng.next_f64() * 2.0 - 1.0) * scale) as f32).collect();
        let w = Tensor::from_vec(w, (rows, cols), device)?.to_dtype(dtype)?;
        let b = if bias { Some(Tensor::zeros(rows, dtype, device)?) } else { None };
        Ok(Linear::new(w, b))
    };
    Ok(ImportancePredictor::new(
        lin(2 * hidden, hidden, false)?,
        lin(hidden / 2, 2 * hidden, true)?,
        lin(1, hidden / 2, true)?,
    ))
}

fn random_prompts(n: usize, len: usize, vocab: usize, seed: u64) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            let mut rng = Rng::derive(seed, &[0x7072_6f6d_7074, i as u64]); // "prompt"
            (0..len).map(|_| (rng.next_u64() % vocab as u64) as u32).collect()
        })
        .collect()
}

struct Machine {
    model: String,
    device: String,
    dtype: String,
    weights: String,
    threads: usize,
    kernels: Kernels,
    bandwidth: f64,
    weight_bytes: usize,
    kv_bytes: usize,
}

/// Runs the plan on a loaded model, printing a line per row as it goes; returns the rows.
pub fn run(plan: &BenchPlan, lm: &LoadedModel) -> Result<Vec<BenchRow>> {
    let cfg = lm.model.config();
    let dtype = lm.model.dtype();
    let device = lm.model.device();
    eprintln!("measuring the copy bandwidth ({} GiB)…", plan.bandwidth_gib);
    let bandwidth = copy_bandwidth(device, plan.bandwidth_gib).context("measuring the copy bandwidth")?;
    let machine = Machine {
        model: lm.source.display(),
        device: if device.is_cpu() { "cpu".into() } else { "cuda".into() },
        dtype: format!("{dtype:?}").to_lowercase(),
        weights: if lm.model.is_quantized() { WeightFormat::Native } else { WeightFormat::Dequantized }.name().into(),
        threads: rayon::current_num_threads(),
        kernels: lm.model.kernels(),
        bandwidth,
        weight_bytes: lm.model.weight_bytes_per_step(),
        kv_bytes: kv_bytes_per_token(cfg, dtype),
    };
    eprintln!(
        "copy bandwidth {:.1} GB/s; weights read per step {:.1} MB; K/V {} bytes per cached token",
        bandwidth / 1e9,
        machine.weight_bytes as f64 / 1e6,
        machine.kv_bytes
    );
    let predictor = match &plan.predictor {
        Some(p) => {
            Some((Arc::new(ImportancePredictor::load(p, cfg.hidden_size, dtype, device)?), p.display().to_string()))
        }
        None if plan.policies.iter().any(|s| s.needs_predictor()) => Some((
            Arc::new(random_predictor(cfg.hidden_size, dtype, device, plan.seed)?),
            "random (timing only)".to_string(),
        )),
        None => None,
    };
    let mut res = PolicyResources::new(lm, None)?;
    res.predictor = predictor.as_ref().map(|(p, _)| p.clone());
    eprintln!("{TABLE_HEADER}");
    let mut rows = Vec::new();
    for &batch in &plan.batches {
        let decode_prompts = random_prompts(batch, plan.prompt, cfg.vocab_size, plan.seed);
        for spec in &plan.policies {
            let label = if spec.needs_predictor() { predictor.as_ref().map_or("", |(_, l)| l.as_str()) } else { "" };
            rows.extend(bench_policy(plan, batch, lm, &res, spec, label, &machine, &decode_prompts)?);
        }
    }
    Ok(rows)
}

fn params(max_new_tokens: usize, prefill_chunk: usize) -> GenerateParams {
    GenerateParams { max_new_tokens, sampling: SamplingParams::GREEDY, stop_tokens: Vec::new(), prefill_chunk }
}

#[allow(clippy::too_many_arguments)]
fn bench_policy(
    plan: &BenchPlan,
    batch: usize,
    lm: &LoadedModel,
    res: &PolicyResources,
    spec: &PolicySpec,
    predictor: &str,
    m: &Machine,
    decode_prompts: &[Vec<u32>],
) -> Result<Vec<BenchRow>> {
    let device = lm.model.device();
    let peak_tracked = reset_peak_rss();
    let budget = spec.evicts().then_some(plan.budget);

    // Prefill at each context: a fresh prompt of that length, time to the first token.
    let mut prefill = Vec::new();
    for &ctx in &plan.contexts {
        if spec.protects_prompt() && budget.is_some_and(|b| b.budget <= ctx) {
            // A prompt this long does not fit a policy that never evicts the prompt.
            prefill.push(None);
            continue;
        }
        let prompts = random_prompts(batch, ctx, lm.model.config().vocab_size, plan.seed ^ ctx as u64);
        device.synchronize()?;
        let t = Instant::now();
        for (i, p) in prompts.iter().enumerate() {
            let params = params(1, plan.prefill_chunk);
            let sample =
                Sample { policy: spec, budget, prompt: p, params: &params, rng: Rng::new(i as u64), trace: None };
            let s = start_sample(lm, res, sample)?;
            std::hint::black_box(s.seq.cache.len());
        }
        device.synchronize()?;
        let secs = t.elapsed().as_secs_f64();
        prefill.push(Some(((batch * ctx) as f64 / secs, secs / batch as f64 * 1e3)));
    }

    // Decode from the short prompt through every context.
    let gen = params(plan.new_tokens(), plan.prefill_chunk);
    let pool = match plan.decode {
        DecodePath::Pool => Some(lm.model.new_pool(batch, cache_capacity(spec, budget, plan.prompt, &gen))?),
        DecodePath::PerSequence => None,
    };
    let mut states = decode_prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let sample = Sample { policy: spec, budget, prompt: p, params: &gen, rng: Rng::new(i as u64), trace: None };
            start_sample_in(lm, res, sample, pool.as_ref())
        })
        .collect::<Result<Vec<SampleState>>>()?;
    let kv_alloc = match &pool {
        Some(pool) => pool.slots() * pool.capacity(),
        None => states.iter().map(|s| s.seq.cache.capacity()).sum::<usize>(),
    } * m.kv_bytes;
    // The token about to be fed sits at history = prompt + generated − 1.
    let mut history = plan.prompt;
    let (b, w, r) = Budget::columns(budget.as_ref());
    let mut rows = Vec::new();
    for (c, &ctx) in plan.contexts.iter().enumerate() {
        // The policy's share counts every step since the previous context, so that evictions
        // weigh in at their trigger's frequency (a few timed steps may hold none).
        let policy0: f64 = states.iter().map(|s| s.evictor.stats().policy_secs).sum();
        let evictions0: usize = states.iter().map(|s| s.evictor.stats().evictions).sum();
        device.synchronize()?;
        let span = Instant::now();
        while history < ctx {
            step(lm, &mut states)?;
            history += 1;
        }
        let mut times = Vec::with_capacity(plan.steps);
        let mut read = 0usize;
        device.synchronize()?;
        let start = Instant::now();
        for _ in 0..plan.steps {
            // Each step reads every cached entry and its own new one.
            read += states.iter().map(|s| s.seq.cache.len() + 1).sum::<usize>();
            let t = Instant::now();
            step(lm, &mut states)?;
            times.push(t.elapsed().as_secs_f64());
            history += 1;
        }
        device.synchronize()?;
        let secs = start.elapsed().as_secs_f64();
        let span_secs = span.elapsed().as_secs_f64();
        // One more step, untimed, its kernels counted by the model's ledger.
        let (stepped, ops) = crate::model::ledger::record(|| step(lm, &mut states));
        stepped?;
        let ops = ops.len();
        history += 1;
        let policy = states.iter().map(|s| s.evictor.stats().policy_secs).sum::<f64>() - policy0;
        let evictions = states.iter().map(|s| s.evictor.stats().evictions).sum::<usize>() - evictions0;
        times.sort_by(f64::total_cmp);
        let step_secs = secs / plan.steps as f64;
        let bytes = m.weight_bytes as f64 + (read * m.kv_bytes) as f64 / plan.steps as f64;
        let memory = rss_mib();
        let row = BenchRow {
            model: m.model.clone(),
            device: m.device.clone(),
            dtype: m.dtype.clone(),
            weights: m.weights.clone(),
            threads: m.threads,
            policy: spec.name.clone(),
            budget: b,
            window: w,
            ratio: r,
            predictor: predictor.to_string(),
            batch,
            decode: plan.decode,
            kernels: m.kernels,
            context: ctx,
            prefill_tok_s: prefill[c].map(|p| p.0),
            ttft_ms: prefill[c].map(|p| p.1),
            cache_len: read as f64 / (plan.steps * batch) as f64,
            ms_per_step: step_secs * 1e3,
            ms_per_step_median: times[times.len() / 2] * 1e3,
            ops_per_step: ops,
            tok_s: batch as f64 / step_secs,
            // Several sequences' policies run one after another inside one step.
            policy_share: policy / span_secs,
            evictions,
            rss_mib: memory.map(|m| m.0),
            peak_rss_mib: memory.filter(|_| peak_tracked).map(|m| m.1),
            kv_alloc_mib: kv_alloc as f64 / (1u64 << 20) as f64,
            bytes_per_step_mb: bytes / 1e6,
            achieved_gb_s: bytes / step_secs / 1e9,
            bandwidth_gb_s: m.bandwidth / 1e9,
            roofline_pct: 100.0 * bytes / step_secs / m.bandwidth,
        };
        eprintln!("{}", row_line(&row));
        rows.push(row);
    }
    Ok(rows)
}

fn step(lm: &LoadedModel, states: &mut [SampleState]) -> Result<()> {
    let mut batch: Vec<&mut SampleState> = states.iter_mut().collect();
    decode_batch(lm, &mut batch)
}

const TABLE_HEADER: &str =
    "batch policy        context  cache  prefill tok/s  ttft ms  ms/step  ops/step  tok/s  policy %  peak MiB  roofline %";

pub fn row_line(r: &BenchRow) -> String {
    let opt = |v: Option<f64>, width: usize, digits: usize| match v {
        Some(v) => format!("{v:>width$.digits$}"),
        None => format!("{:>width$}", "-"),
    };
    format!(
        "{:>5} {:<12} {:>8} {:>6.0} {} {} {:>8.2} {:>9} {:>6.1} {:>9.1} {} {:>11.1}",
        r.batch,
        r.policy,
        r.context,
        r.cache_len,
        opt(r.prefill_tok_s, 14, 0),
        opt(r.ttft_ms, 8, 1),
        r.ms_per_step,
        r.ops_per_step,
        r.tok_s,
        100.0 * r.policy_share,
        opt(r.peak_rss_mib, 9, 0),
        r.roofline_pct
    )
}

/// The rows as CSV (the header from [`BenchRow`]'s fields).
pub fn csv(rows: &[BenchRow]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("writing CSV: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2_shape() -> ModelConfig {
        // SmolLM2-135M: 30 layers, d 576, 9 q / 3 KV heads of 64, MLP 1536, vocab 49152, tied.
        let toy = crate::toy::ToyShape::default().config_json().to_string();
        let mut cfg = ModelConfig::from_hf_json(&toy).unwrap();
        cfg.hidden_size = 576;
        cfg.num_layers = 30;
        cfg.num_heads = 9;
        cfg.num_kv_heads = 3;
        cfg.head_dim = 64;
        cfg.intermediate_size = 1536;
        cfg.vocab_size = 49152;
        cfg.tie_word_embeddings = true;
        cfg
    }

    #[test]
    fn weight_and_cache_bytes_match_the_parameter_count() {
        // SmolLM2-135M has 134,515,008 parameters; one decode step reads all of them in f32.
        let cfg = smollm2_shape();
        assert_eq!(weight_bytes_per_step(&cfg, DType::F32), 134_515_008 * 4);
        // 30 layers × K and V × 3 heads × 64 × 4 bytes.
        assert_eq!(kv_bytes_per_token(&cfg, DType::F32), 46_080);
        assert_eq!(kv_bytes_per_token(&cfg, DType::BF16), 23_040);
    }

    #[test]
    fn the_copy_bandwidth_is_positive_and_rss_is_read() {
        assert!(copy_bandwidth(&Device::Cpu, 1.0 / 64.0).unwrap() > 1e8);
        let (rss, peak) = rss_mib().unwrap();
        assert!(rss > 0.0 && peak >= rss);
    }
}
