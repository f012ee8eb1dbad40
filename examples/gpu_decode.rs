//! Decode throughput of kvbench's decoder on random weights, against the memory roofline.
//!
//! Builds a model of a given shape (default: DeepSeek-R1-Distill-Qwen-1.5B, Qwen2; or its 7B
//! sibling) with random weights on the device, prefills `--prompt` tokens per sequence, then times
//! `--steps` greedy decode steps of all sequences in one forward each: from one slot pool, one
//! attention per layer for all (as `kvbench run` decodes), or per sequence (`--decode
//! per-sequence`, the reference path). Each row also counts the kernels of a step. Decoding
//! is memory-bound: each step must read every weight once plus each sequence's K/V cache, so
//!   roofline % = (weight bytes + KV bytes read) / step time / copy bandwidth,
//! where the copy bandwidth (bytes read + written per second) is measured here with a large
//! device-to-device copy (`kvbench::bench::copy_bandwidth`, as `kvbench bench` does). Budgeted policies (`--policy`) run at batch 1 through the same harness
//! as `kvbench run`.
//!
//! GPU: `scripts/build-cuda.sh --example gpu_decode`, then
//!   `target-cuda/release/examples/gpu_decode --csv out.csv` (the whole check: `bench/gpu-run.sh`)
//! CPU smoke: `cargo run --release --example gpu_decode -- --shape tiny --device cpu --check`

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clap::Parser;
use kvbench::cache::observe::CacheHook;
use kvbench::cache::observe::Observer;
use kvbench::cache::KvCache;
use kvbench::decode::sampling::argmax_rows;
use kvbench::model::fused::Kernels;
use kvbench::model::{Arch, ModelConfig, SeqStep, Transformer};
use kvbench::policies::{parse_tokens, Budget, Evictor, PolicyContext, PolicySpec};
use kvbench::rng::Rng;

#[derive(Parser, Debug)]
#[command(about = "Decode throughput on random weights against the memory roofline")]
struct Args {
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cuda")]
    device: String,
    /// f32, bf16 or f16 (default: bf16 on GPU, f32 on CPU).
    #[arg(long)]
    dtype: Option<String>,
    /// The model's shape: `1.5b` (R1-Distill-Qwen-1.5B), `7b` (R1-Distill-Qwen-7B) or `tiny`
    /// (Qwen2 with 2 layers and a 10,000-token vocabulary).
    #[arg(long, default_value = "1.5b")]
    shape: String,
    /// `pool` (one slot pool, one attention per layer for every sequence) or `per-sequence`.
    #[arg(long, value_enum, default_value_t = kvbench::bench::DecodePath::Pool)]
    decode: kvbench::bench::DecodePath,
    /// What a pooled step runs: `fused` or `reference` (candle's ops) [default: the device's].
    #[arg(long, value_enum)]
    kernels: Option<Kernels>,
    /// Batch sizes of the full-cache runs.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    batch: Vec<usize>,
    /// Prompt tokens prefilled per sequence.
    #[arg(long, default_value_t = 1024)]
    prompt: usize,
    /// Timed decode steps.
    #[arg(long, default_value_t = 128)]
    steps: usize,
    /// Untimed decode steps first (kernel loading, allocator warm-up).
    #[arg(long, default_value_t = 8)]
    warmup: usize,
    /// Budgeted policies to time at batch 1 (e.g. streamingllm,snapkv).
    #[arg(long, value_delimiter = ',')]
    policy: Vec<String>,
    #[arg(long, default_value = "1k")]
    budget: String,
    #[arg(long, default_value = "256")]
    window: String,
    #[arg(long, default_value_t = 0.3)]
    ratio: f64,
    /// Timed steps of the policy runs (long enough to refill the budget and evict again).
    #[arg(long)]
    policy_steps: Option<usize>,
    /// Size of the bandwidth probe's copy, GiB (default 4 on GPU, 0.25 on CPU).
    #[arg(long)]
    bw_gib: Option<f64>,
    /// First compare logits of a tiny model on the device against CPU f32 (fails on mismatch).
    #[arg(long)]
    check: bool,
    /// Write the result table as CSV here.
    #[arg(long)]
    csv: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn r1_distill_qwen_1_5b() -> ModelConfig {
    ModelConfig {
        arch: Arch::Qwen2,
        hidden_size: 1536,
        intermediate_size: 8960,
        vocab_size: 151_936,
        num_layers: 28,
        num_heads: 12,
        num_kv_heads: 2,
        head_dim: 128,
        rms_norm_eps: 1e-6,
        rope_theta: 10_000.0,
        rope_scaling: None,
        max_position_embeddings: 131_072,
        tie_word_embeddings: false,
        qkv_bias: true,
        qk_norm: false,
        bos_token_id: None,
        eos_token_ids: vec![],
    }
}

/// DeepSeek-R1-Distill-Qwen-7B's shape.
fn r1_distill_qwen_7b() -> ModelConfig {
    ModelConfig {
        hidden_size: 3584,
        intermediate_size: 18_944,
        vocab_size: 152_064,
        num_layers: 28,
        num_heads: 28,
        num_kv_heads: 4,
        ..r1_distill_qwen_1_5b()
    }
}

/// Qwen2 in miniature; the vocabulary exceeds 8192 so device argmax runs past candle's sort limit.
fn tiny() -> ModelConfig {
    ModelConfig {
        hidden_size: 128,
        intermediate_size: 256,
        vocab_size: 10_000,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 32,
        max_position_embeddings: 4096,
        ..r1_distill_qwen_1_5b()
    }
}

/// Random weights in HF naming, drawn on `device` (curand on GPU: 1.5B parameters in seconds).
/// Scales as in tests/common: activations stay O(1) through the layers.
fn random_weights(cfg: &ModelConfig, dtype: DType, device: &Device) -> Result<HashMap<String, Tensor>> {
    let rand = |shape: &[usize], scale: f64, offset: f64| -> Result<Tensor> {
        Ok(Tensor::rand(-1f32, 1f32, shape, device)?.affine(scale, offset)?.to_dtype(dtype)?)
    };
    let (d, hd, ff) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let s = 1.0 / (d as f64).sqrt();
    let mut w = HashMap::new();
    w.insert("model.embed_tokens.weight".to_string(), rand(&[cfg.vocab_size, d], 1.0, 0.0)?);
    w.insert("model.norm.weight".to_string(), rand(&[d], 0.2, 1.0)?);
    if !cfg.tie_word_embeddings {
        w.insert("lm_head.weight".to_string(), rand(&[cfg.vocab_size, d], 0.3, 0.0)?);
    }
    for i in 0..cfg.num_layers {
        let p = format!("model.layers.{i}");
        w.insert(format!("{p}.input_layernorm.weight"), rand(&[d], 0.2, 1.0)?);
        w.insert(format!("{p}.post_attention_layernorm.weight"), rand(&[d], 0.2, 1.0)?);
        w.insert(format!("{p}.self_attn.q_proj.weight"), rand(&[cfg.num_heads * hd, d], 3.0 * s, 0.0)?);
        w.insert(format!("{p}.self_attn.k_proj.weight"), rand(&[cfg.num_kv_heads * hd, d], 3.0 * s, 0.0)?);
        w.insert(format!("{p}.self_attn.v_proj.weight"), rand(&[cfg.num_kv_heads * hd, d], s, 0.0)?);
        w.insert(format!("{p}.self_attn.o_proj.weight"), rand(&[d, cfg.num_heads * hd], s, 0.0)?);
        if cfg.qkv_bias {
            w.insert(format!("{p}.self_attn.q_proj.bias"), rand(&[cfg.num_heads * hd], 0.5, 0.0)?);
            w.insert(format!("{p}.self_attn.k_proj.bias"), rand(&[cfg.num_kv_heads * hd], 0.5, 0.0)?);
            w.insert(format!("{p}.self_attn.v_proj.bias"), rand(&[cfg.num_kv_heads * hd], 0.5, 0.0)?);
        }
        w.insert(format!("{p}.mlp.gate_proj.weight"), rand(&[ff, d], s, 0.0)?);
        w.insert(format!("{p}.mlp.up_proj.weight"), rand(&[ff, d], s, 0.0)?);
        w.insert(format!("{p}.mlp.down_proj.weight"), rand(&[d, ff], 1.0 / (ff as f64).sqrt(), 0.0)?);
    }
    Ok(w)
}

/// Bytes a decode step reads from the weights: all of them except the embedding table, of which
/// it gathers only one row per sequence (unless the table doubles as `lm_head`).
fn tokens(n: usize, vocab: usize, rng: &mut Rng) -> Vec<u32> {
    (0..n).map(|_| (rng.next_u64() % vocab as u64) as u32).collect()
}

fn parse_device(name: &str) -> Result<Device> {
    Ok(match name {
        "cpu" => Device::Cpu,
        d if d == "cuda" || d.starts_with("cuda:") => {
            let ordinal = d.strip_prefix("cuda:").map_or(Ok(0), str::parse).context("bad GPU ordinal")?;
            kvbench::model::source::cuda_device(ordinal)
                .with_context(|| format!("--device {d} (built with --features cuda?)"))?
        }
        other => bail!("--device must be cpu, cuda or cuda:N, got '{other}'"),
    })
}

fn parse_dtype(name: Option<&str>, device: &Device) -> Result<DType> {
    Ok(match name {
        None if device.is_cpu() => DType::F32,
        None | Some("bf16") => DType::BF16,
        Some("f32") => DType::F32,
        Some("f16") => DType::F16,
        Some(other) => bail!("--dtype must be f32, bf16 or f16, got '{other}'"),
    })
}

#[derive(Debug, serde::Serialize)]
struct Row {
    run: String,
    device: String,
    dtype: String,
    batch: usize,
    decode: kvbench::bench::DecodePath,
    kernels: Kernels,
    prompt: usize,
    steps: usize,
    /// Kernels one decode step issues (the model's op ledger).
    ops_per_step: usize,
    /// Mean cached tokens per sequence read by a timed step.
    ctx_mean: f64,
    prefill_tok_s: f64,
    ms_per_step: f64,
    ms_per_step_median: f64,
    tok_s_per_seq: f64,
    tok_s_total: f64,
    weight_gb: f64,
    kv_gb_per_step: f64,
    achieved_gb_s: f64,
    copy_bw_gb_s: f64,
    roofline_pct: f64,
    evictions: usize,
}

struct Run<'a> {
    name: String,
    batch: usize,
    prompt: usize,
    steps: usize,
    warmup: usize,
    /// A budgeted policy (batch 1 only).
    policy: Option<(&'a PolicySpec, Budget)>,
}

/// Prefill every sequence, then time decode steps of all of them in one forward each.
fn bench(
    model: &Transformer,
    run: &Run<'_>,
    decode: kvbench::bench::DecodePath,
    weight_bytes: usize,
    bw: f64,
    rng: &mut Rng,
) -> Result<Row> {
    let cfg = model.config();
    let device = model.device();
    let mut evictor = match run.policy {
        Some((spec, budget)) => {
            ensure!(run.batch == 1, "policies are timed at batch 1");
            spec.validate(&budget)?;
            let ctx = PolicyContext {
                num_layers: cfg.num_layers,
                separator_ids: vec![],
                think_end: None,
                predictor: None,
                rng: Rng::new(rng.next_u64()),
            };
            Some(Evictor::new(spec.instantiate(&budget, ctx)?, budget))
        }
        None => None,
    };
    // Sized as the runner sizes caches, so no step reallocates.
    let capacity = match run.policy {
        Some((_, b)) => b.budget.max(run.prompt) + 2,
        None => run.prompt + run.warmup + run.steps + 1,
    };
    let pool = match decode {
        kvbench::bench::DecodePath::Pool => Some(model.new_pool(run.batch, capacity)?),
        kvbench::bench::DecodePath::PerSequence => None,
    };
    let mut caches = (0..run.batch)
        .map(|_| match &pool {
            Some(pool) => pool.checkout()?.context("a free slot"),
            None => model.new_cache(capacity),
        })
        .collect::<Result<Vec<KvCache>>>()?;
    let prompts: Vec<Vec<u32>> = (0..run.batch).map(|_| tokens(run.prompt, cfg.vocab_size, rng)).collect();

    device.synchronize()?;
    let t = Instant::now();
    let mut next = Vec::with_capacity(run.batch);
    for (cache, prompt) in caches.iter_mut().zip(&prompts) {
        if let Some(e) = evictor.as_mut() {
            e.before_forward(cache, prompt, true)?;
        }
        let obs = evictor.as_mut().map(|e| e as &mut dyn Observer);
        let logits = model
            .forward(&mut [SeqStep { cache: &mut *cache, tokens: prompt, positions: None, visible: None }], obs)?;
        if let Some(e) = evictor.as_mut() {
            e.after_forward(cache, prompt, true)?;
        }
        next.push(argmax_rows(&logits)?[0]);
    }
    device.synchronize()?;
    let prefill_secs = t.elapsed().as_secs_f64();

    let mut start = Instant::now();
    let mut last = start;
    let mut step_secs_each = Vec::with_capacity(run.steps);
    let mut kv_tokens = 0usize;
    let mut ops_per_step = 0;
    for step in 0..run.warmup + run.steps {
        if step == run.warmup {
            device.synchronize()?;
            start = Instant::now();
            last = start;
        }
        let fed = next.clone();
        if let Some(e) = evictor.as_mut() {
            e.before_forward(&caches[0], &fed, false)?;
        }
        let obs = evictor.as_mut().map(|e| e as &mut dyn Observer);
        let mut seqs: Vec<SeqStep<'_>> = caches
            .iter_mut()
            .zip(&fed)
            .map(|(cache, tok)| SeqStep { cache, tokens: std::slice::from_ref(tok), positions: None, visible: None })
            .collect();
        let logits = if step == 0 {
            let (logits, ops) = kvbench::model::ledger::record(|| model.forward(&mut seqs, obs));
            ops_per_step = ops.len();
            logits?
        } else {
            model.forward(&mut seqs, obs)?
        };
        drop(seqs);
        if step >= run.warmup {
            // This step read every cached entry, its own new one included (before any eviction).
            kv_tokens += caches.iter().map(KvCache::len).sum::<usize>();
        }
        if let Some(e) = evictor.as_mut() {
            e.after_forward(&mut caches[0], &fed, false)?;
        }
        // Greedy tokens back to the host: one synchronisation per step, as in generation.
        next = argmax_rows(&logits)?;
        if step >= run.warmup {
            step_secs_each.push(last.elapsed().as_secs_f64());
        }
        last = Instant::now();
    }
    device.synchronize()?;
    let secs = start.elapsed().as_secs_f64();

    step_secs_each.sort_by(f64::total_cmp);
    let median_ms = step_secs_each.get(run.steps / 2).map_or(0.0, |s| s * 1e3);
    let steps = run.steps as f64;
    let kv_bytes_per_token = cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * model.dtype().size_in_bytes();
    let kv_bytes_per_step = (kv_tokens * kv_bytes_per_token) as f64 / steps;
    let step_secs = secs / steps;
    let achieved = (weight_bytes as f64 + kv_bytes_per_step) / step_secs;
    Ok(Row {
        run: run.name.clone(),
        device: if device.is_cpu() { "cpu" } else { "cuda" }.to_string(),
        dtype: format!("{:?}", model.dtype()).to_lowercase(),
        batch: run.batch,
        decode,
        kernels: model.kernels(),
        prompt: run.prompt,
        steps: run.steps,
        ops_per_step,
        ctx_mean: kv_tokens as f64 / (steps * run.batch as f64),
        prefill_tok_s: (run.batch * run.prompt) as f64 / prefill_secs,
        ms_per_step: step_secs * 1e3,
        ms_per_step_median: median_ms,
        tok_s_per_seq: 1.0 / step_secs,
        tok_s_total: run.batch as f64 / step_secs,
        weight_gb: weight_bytes as f64 / 1e9,
        kv_gb_per_step: kv_bytes_per_step / 1e9,
        achieved_gb_s: achieved / 1e9,
        copy_bw_gb_s: bw / 1e9,
        roofline_pct: 100.0 * achieved / bw,
        evictions: evictor.map_or(0, |e| e.stats().evictions),
    })
}

/// ‖a − b‖ / ‖b‖ over all elements, in f32.
fn rel_err(a: &Tensor, b: &Tensor) -> Result<f32> {
    let a: Vec<f32> = a.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
    let b: Vec<f32> = b.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
    ensure!(a.len() == b.len(), "shapes differ");
    let num: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f32 = b.iter().map(|y| y * y).sum();
    Ok(if num.is_nan() { f32::NAN } else { (num / den).sqrt() })
}

/// A fixed script on the tiny model: three prompts prefilled alone, four decode steps together,
/// a compaction of every cache, one more step; in a slot pool (4 slots, one free) or in caches of
/// their own. Returns every step's logits.
fn check_script(model: &Transformer, prompts: &[Vec<u32>], decode: &[Vec<u32>], pooled: bool) -> Result<Vec<Tensor>> {
    let pool = model.new_pool(4, 64)?;
    let mut caches = prompts
        .iter()
        .map(|_| if pooled { pool.checkout()?.context("a free slot") } else { model.new_cache(8) })
        .collect::<Result<Vec<KvCache>>>()?;
    let mut out = Vec::new();
    for (cache, p) in caches.iter_mut().zip(prompts) {
        out.push(model.forward(&mut [SeqStep { cache, tokens: p, positions: None, visible: None }], None)?);
    }
    for (i, toks) in decode.iter().enumerate() {
        if i + 1 == decode.len() {
            for c in caches.iter_mut() {
                let len = c.len();
                let keep: Vec<usize> = (0..4).chain(len - 9..len).collect();
                c.keep(&keep)?;
            }
        }
        let mut seqs: Vec<SeqStep<'_>> = caches
            .iter_mut()
            .zip(toks)
            .map(|(cache, tok)| SeqStep { cache, tokens: std::slice::from_ref(tok), positions: None, visible: None })
            .collect();
        out.push(model.forward(&mut seqs, None)?);
    }
    Ok(out)
}

/// Logits of the tiny model on `device` (f32 and bf16) against CPU f32, same weights and tokens.
fn check(device: &Device) -> Result<()> {
    let cfg = tiny();
    let cpu_w = random_weights(&cfg, DType::F32, &Device::Cpu)?;
    let mut rng = Rng::new(7);
    let prompts: Vec<Vec<u32>> = [37, 20, 51].iter().map(|&n| tokens(n, cfg.vocab_size, &mut rng)).collect();
    let decode: Vec<Vec<u32>> = (0..5).map(|_| tokens(3, cfg.vocab_size, &mut rng)).collect();
    let build = |dtype: DType, dev: &Device| -> Result<Transformer> {
        let w = cpu_w.iter().map(|(k, v)| Ok((k.clone(), v.to_device(dev)?))).collect::<Result<HashMap<_, _>>>()?;
        Transformer::load(&cfg, VarBuilder::from_tensors(w, dtype, dev))
    };
    let reference = check_script(&build(DType::F32, &Device::Cpu)?, &prompts, &decode, false)?;
    let mut failed = false;
    let (per_sequence, pooled) = (None, Some(Kernels::Reference));
    let fused = Some(Kernels::Fused);
    let runs = [
        (DType::F32, per_sequence, 1e-5f32),
        (DType::F32, pooled, 1e-5),
        (DType::F32, fused, 1e-5),
        (DType::BF16, per_sequence, 5e-2),
        (DType::BF16, pooled, 5e-2),
        (DType::BF16, fused, 5e-2),
    ];
    for (dtype, kernels, limit) in runs {
        let mut model = build(dtype, device)?;
        if let Some(k) = kernels {
            model.set_kernels(k);
        }
        let got = check_script(&model, &prompts, &decode, kernels.is_some())?;
        let mut worst = 0f32;
        let mut agree = (0, 0);
        for (g, r) in got.iter().zip(&reference) {
            let e = rel_err(g, r)?;
            worst = if e.is_nan() || worst.is_nan() { f32::NAN } else { worst.max(e) };
            let (ga, ra) = (argmax_rows(g)?, argmax_rows(r)?);
            agree.0 += ga.iter().zip(&ra).filter(|(a, b)| a == b).count();
            agree.1 += ra.len();
        }
        let ok = worst <= limit; // NaN fails
        failed |= !ok;
        println!(
            "check {} {dtype:?} {} vs cpu f32 per sequence: max rel err {worst:.2e} (limit {limit:.0e}), greedy agree {}/{} {}",
            if device.is_cpu() { "cpu" } else { "cuda" },
            match kernels {
                None => "per-sequence",
                Some(Kernels::Reference) => "pool",
                Some(Kernels::Fused) => "pool fused",
            },
            agree.0,
            agree.1,
            if ok { "PASS" } else { "FAIL" }
        );
    }
    ensure!(!failed, "device logits differ from the CPU reference");
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let device = parse_device(&args.device)?;
    let dtype = parse_dtype(args.dtype.as_deref(), &device)?;
    if args.check {
        check(&device)?;
    }
    let cfg = match args.shape.as_str() {
        "1.5b" => r1_distill_qwen_1_5b(),
        "7b" => r1_distill_qwen_7b(),
        "tiny" => tiny(),
        other => bail!("--shape {other}: expected 1.5b, 7b or tiny"),
    };
    let bw_gib = args.bw_gib.unwrap_or(if device.is_cpu() { 0.25 } else { 4.0 });
    let bw = kvbench::bench::copy_bandwidth(&device, bw_gib)?;
    println!("copy bandwidth ({bw_gib} GiB, read + write): {:.1} GB/s", bw / 1e9);

    let t = Instant::now();
    if !device.is_cpu() {
        device.set_seed(args.seed)?;
    }
    let weights = random_weights(&cfg, dtype, &device)?;
    let weight_bytes = kvbench::bench::weight_bytes_per_step(&cfg, dtype);
    let mut model = Transformer::load(&cfg, VarBuilder::from_tensors(weights, dtype, &device))?;
    if let Some(k) = args.kernels {
        model.set_kernels(k);
    }
    device.synchronize()?;
    println!(
        "model: {} layers, hidden {}, vocab {}, {dtype:?}, {:?} kernels; {:.3} GB of weights read per step; built in {:.1} s",
        cfg.num_layers,
        cfg.hidden_size,
        cfg.vocab_size,
        model.kernels(),
        weight_bytes as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );

    let budget = Budget { budget: parse_tokens(&args.budget)?, window: parse_tokens(&args.window)?, ratio: args.ratio };
    let specs = args.policy.iter().map(|p| PolicySpec::resolve(p, None)).collect::<Result<Vec<_>>>()?;
    let mut runs: Vec<Run<'_>> = args
        .batch
        .iter()
        .map(|&batch| Run {
            name: "full".into(),
            batch,
            prompt: args.prompt,
            steps: args.steps,
            warmup: args.warmup,
            policy: None,
        })
        .collect();
    for spec in &specs {
        runs.push(Run {
            name: format!("{} B={} W={} r={}", spec.name, budget.budget, budget.window, budget.ratio),
            batch: 1,
            prompt: args.prompt,
            steps: args.policy_steps.unwrap_or(args.steps),
            warmup: args.warmup,
            policy: Some((spec, budget)),
        });
    }

    let mut rng = Rng::new(args.seed);
    let mut rows = Vec::new();
    for run in &runs {
        let row =
            bench(&model, run, args.decode, weight_bytes, bw, &mut rng).with_context(|| format!("run {}", run.name))?;
        println!(
            "{} batch {}: {:.2} ms/step ({} ops), {:.1} tok/s per sequence, {:.1} tok/s total, {:.1} GB/s = {:.1} % of roofline",
            row.run,
            row.batch,
            row.ms_per_step,
            row.ops_per_step,
            row.tok_s_per_seq,
            row.tok_s_total,
            row.achieved_gb_s,
            row.roofline_pct
        );
        rows.push(row);
    }

    println!();
    println!(
        "| run | batch | ops/step | ctx | prefill tok/s | ms/step (median) | tok/s/seq | tok/s total | GB/step (w+kv) | GB/s | % roofline | evictions |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.2} ({:.2}) | {:.1} | {:.1} | {:.3}+{:.3} | {:.0} | {:.1} | {} |",
            r.run,
            r.batch,
            r.ops_per_step,
            r.ctx_mean,
            r.prefill_tok_s,
            r.ms_per_step,
            r.ms_per_step_median,
            r.tok_s_per_seq,
            r.tok_s_total,
            r.weight_gb,
            r.kv_gb_per_step,
            r.achieved_gb_s,
            r.roofline_pct,
            r.evictions
        );
    }
    println!("roofline: (weight + KV bytes read per step) / step time, over the copy bandwidth {:.0} GB/s", bw / 1e9);
    if let Some(path) = &args.csv {
        let mut w = csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?;
        for r in &rows {
            w.serialize(r)?;
        }
        w.flush()?;
    }
    Ok(())
}
