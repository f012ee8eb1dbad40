//! Native quantized weights (`--weights native`): a projection whose weight stays GGML-quantized
//! computes what the dequantized path computes on the same weights, up to the 8-bit quantization
//! of its inputs — for prefill and for decode steps, alone and from a slot pool; the SmolLM2 GGUF
//! (Llama, whose q/k rows llama.cpp permutes) gives the same logits natively as dequantized, to
//! the same tolerance; a GGUF tensor of a type the quantized matmul cannot multiply is refused
//! with exit 2, naming the tensor and the type (a type candle cannot read, naming the type).

use std::sync::Arc;

use crate::common::*;
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use kvbench::cache::KvCache;
use kvbench::model::source::{load, LoadOptions, ModelSource, WeightFormat};
use kvbench::model::{Arch, ModelConfig, QuantizedWeights, SeqStep, Transformer};

/// Logits may differ from the dequantized path's by this share of the largest logit (the inputs
/// of every product are quantized to 8 bits: ≈ 0.4 % per product, compounded over the layers).
const REL_TOL: f32 = 0.03;
const DECODE_STEPS: usize = 10;
/// SmolLM2's logits, native against a path without (or with differently ordered) 8-bit inputs.
const SMOLLM2_REL_TOL: f32 = 0.06;

/// A Qwen2 shape whose widths are multiples of the k-quants' 256-value blocks.
fn quantizable_config() -> ModelConfig {
    ModelConfig { hidden_size: 256, intermediate_size: 512, num_heads: 4, head_dim: 64, ..small_config(Arch::Qwen2) }
}

/// The model twice from the same quantized projection weights: kept quantized, and dequantized.
fn both_paths(cfg: &ModelConfig, dtype: GgmlDType) -> (Transformer, Transformer) {
    let mut weights = random_weights(cfg, 7);
    let mut quantized = QuantizedWeights::new();
    for (name, w) in weights.iter_mut() {
        if name.ends_with("_proj.weight") || name == "lm_head.weight" {
            let q = QTensor::quantize(w, dtype).unwrap();
            *w = q.dequantize(&Device::Cpu).unwrap();
            quantized.insert(name.clone(), Arc::new(q));
        }
    }
    let native =
        Transformer::load_with(cfg, VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu), &quantized)
            .unwrap();
    assert!(native.is_quantized());
    let dense = build(cfg, &weights);
    assert!(!dense.is_quantized());
    (native, dense)
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], what: &str) {
    assert_within(got, want, REL_TOL, what)
}

fn assert_within(got: &[Vec<f32>], want: &[Vec<f32>], rel_tol: f32, what: &str) {
    for (g, w) in got.iter().zip(want) {
        let scale = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        let diff = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= rel_tol * scale, "{what}: max difference {diff} against max |logit| {scale}");
        // Not trivially equal: the quantized inputs do change the numbers.
        assert!(g != w, "{what}: identical to the dequantized path");
    }
}

/// Prefill logits of every position and greedy decode steps, each compared with the dequantized
/// path fed the same tokens; `pooled` decodes from a slot pool (the batched step).
fn compare(native: &Transformer, dense: &Transformer, pooled: bool, what: &str) {
    let prompts = [tokens(13, 97, 1), tokens(40, 97, 2)];
    let cache = |m: &Transformer, pool: &Option<kvbench::cache::pool::SlotPool>| -> KvCache {
        match pool {
            Some(p) => p.checkout().unwrap().unwrap(),
            None => m.new_cache(64).unwrap(),
        }
    };
    let (pool_n, pool_d) = if pooled {
        (Some(native.new_pool(2, 64).unwrap()), Some(dense.new_pool(2, 64).unwrap()))
    } else {
        (None, None)
    };
    let mut caches_n: Vec<KvCache> = prompts.iter().map(|_| cache(native, &pool_n)).collect();
    let mut caches_d: Vec<KvCache> = prompts.iter().map(|_| cache(dense, &pool_d)).collect();
    let mut next = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let step = |m: &Transformer, c: &mut KvCache| {
            rows(
                &m.forward_all_logits(&mut [SeqStep { cache: c, tokens: p, positions: None, visible: None }], None)
                    .unwrap(),
            )
        };
        let (n, d) = (step(native, &mut caches_n[i]), step(dense, &mut caches_d[i]));
        assert_close(&n, &d, &format!("{what}: prefill of {} tokens", p.len()));
        next.push(argmax(d.last().unwrap()));
    }
    for s in 0..DECODE_STEPS {
        let fed: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let step = |m: &Transformer, caches: &mut [KvCache]| {
            let mut seqs: Vec<SeqStep> = caches
                .iter_mut()
                .zip(&fed)
                .map(|(cache, f)| SeqStep { cache, tokens: f, positions: None, visible: None })
                .collect();
            rows(&m.forward(&mut seqs, None).unwrap())
        };
        let (n, d) = (step(native, &mut caches_n), step(dense, &mut caches_d));
        assert_close(&n, &d, &format!("{what}: decode step {s}"));
        next = d.iter().map(|r| argmax(r)).collect();
    }
}

fn argmax(xs: &[f32]) -> u32 {
    xs.iter().enumerate().fold(0, |best, (i, &x)| if x > xs[best] { i } else { best }) as u32
}

#[test]
fn quantized_weights_compute_what_their_dequantized_values_compute() {
    let cfg = quantizable_config();
    for dtype in [GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K] {
        let (native, dense) = both_paths(&cfg, dtype);
        assert!(native.weight_bytes_per_step() * 3 < dense.weight_bytes_per_step(), "{dtype:?}: not smaller");
        for pooled in [false, true] {
            compare(&native, &dense, pooled, &format!("{dtype:?}, pooled {pooled}"));
        }
    }
}

#[test]
fn a_dense_models_weight_bytes_are_the_configs() {
    let cfg = small_config(Arch::Qwen3);
    let model = build(&cfg, &random_weights(&cfg, 3));
    assert_eq!(model.weight_bytes_per_step(), kvbench::bench::weight_bytes_per_step(&cfg, DType::F32));
}

/// candle-transformers' own quantized Llama on the same file (the same quantized products, RoPE
/// on the permuted rows) and the dequantized path both stay within a few per cent of the native
/// path's logits: a rounding of an 8-bit input that flips between two float orders moves a logit
/// as much as the rounding itself, and 30 layers compound it (a wrong row permutation would
/// scramble them).
#[test]
fn the_smollm2_gguf_runs_natively_as_candles_quantized_llama_does() {
    let Some(path) = test_model() else { return };
    let source = ModelSource::Gguf { path: path.clone() };
    let native = load(&source, &LoadOptions { weights: WeightFormat::Native, ..LoadOptions::default() }).unwrap();
    let dense = load(&source, &LoadOptions::default()).unwrap();
    assert!(native.model.is_quantized() && !dense.model.is_quantized());
    let text = "The capital of France is Paris. Step by step: 12 apples, 7 eaten, so 5 remain.";
    let ids = kvbench::model::source::encode(&native.tokenizer, text).unwrap();
    let logits = |m: &Transformer| {
        let mut cache = m.new_cache(64).unwrap();
        let step = &mut [SeqStep { cache: &mut cache, tokens: &ids, positions: None, visible: None }];
        rows(&m.forward_all_logits(step, None).unwrap())
    };
    let (n, d) = (logits(&native.model), logits(&dense.model));

    let mut file = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut oracle =
        candle_transformers::models::quantized_llama::ModelWeights::from_gguf(content, &mut file, &Device::Cpu)
            .unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let want = rows(&oracle.forward(&input, 0).unwrap());
    assert_within(&n[n.len() - 1..], &want, SMOLLM2_REL_TOL, "SmolLM2 native against candle's quantized Llama");
    assert_eq!(argmax(n.last().unwrap()), argmax(&want[0]), "the next token differs from candle's");
    assert_within(&n, &d, SMOLLM2_REL_TOL, "SmolLM2 native against dequantized");
    let agree = n.iter().zip(&d).filter(|(a, b)| argmax(a) == argmax(b)).count();
    assert!(agree * 5 >= ids.len() * 4, "the next token agrees at only {agree} of {} positions", ids.len());
}

#[test]
fn a_tensor_type_the_quantized_matmul_cannot_multiply_is_refused() {
    let Some(path) = test_model() else { return };
    // The test model's metadata with one q projection in Q8_1 (an input format of the matmul).
    let mut file = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let q = content.tensor(&mut file, "blk.0.attn_q.weight", &Device::Cpu).unwrap();
    let q8_1 = QTensor::quantize(&q.dequantize(&Device::Cpu).unwrap(), GgmlDType::Q8_1).unwrap();
    let dir = crate::cli::tempdir("quantized-type");
    let bad = dir.join("q8_1.gguf");
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::fs::File::create(&bad).unwrap();
    gguf_file::write(&mut out, &metadata, &[("blk.0.attn_q.weight", &q8_1)]).unwrap();
    drop(out);
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["generate", "--weights", "native", "--prompt", "hi", "--model"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("blk.0.attn_q.weight") && err.contains("Q8_1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // A type candle cannot read at all (IQ3_S, GGML type 21): a GGUF header with one such tensor.
    let mut header = b"GGUF".to_vec();
    header.extend(3u32.to_le_bytes()); // version
    header.extend(1u64.to_le_bytes()); // tensors
    header.extend(0u64.to_le_bytes()); // metadata entries
    let name = b"blk.0.attn_q.weight";
    header.extend((name.len() as u64).to_le_bytes());
    header.extend(name);
    header.extend(2u32.to_le_bytes());
    header.extend(256u64.to_le_bytes());
    header.extend(4u64.to_le_bytes());
    header.extend(21u32.to_le_bytes());
    header.extend(0u64.to_le_bytes());
    let iq = dir.join("iq3_s.gguf");
    std::fs::write(&iq, &header).unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["generate", "--prompt", "hi", "--model"])
        .arg(&iq)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("GGML type 21 (IQ3_S)"), "{err}");
    // A safetensors model has nothing to keep quantized.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["run", "--weights", "native", "--dry-run", "--out"])
        .arg(dir.join("run"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("--weights native needs a GGUF model"), "{err}");
}
