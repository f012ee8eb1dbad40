//! kvbench's decoder against candle-transformers' Llama, Qwen2 and Qwen3 on random small
//! configurations: the logits of the prefill and of 10 decode steps agree to 1e-4.

use crate::common::*;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, qwen2, qwen3};
use kvbench::model::config::Llama3RopeScaling;
use kvbench::model::{Arch, ModelConfig, SeqStep};

const TOL: f32 = 1e-4;
const DECODE_STEPS: usize = 10;

/// Runs kvbench's model over `prompt` then `decode` one token at a time; returns each step's logits.
fn ours(
    cfg: &ModelConfig,
    weights: &std::collections::HashMap<String, Tensor>,
    prompt: &[u32],
    decode: &[u32],
) -> Vec<Tensor> {
    let model = build(cfg, weights);
    let mut cache = model.new_cache(4).unwrap(); // small: exercises growth
    let mut out = Vec::new();
    let mut step = [SeqStep { cache: &mut cache, tokens: prompt, positions: None, visible: None }];
    out.push(model.forward(&mut step, None).unwrap().flatten_all().unwrap());
    for t in decode {
        let fed = [*t];
        let mut step = [SeqStep { cache: &mut cache, tokens: &fed, positions: None, visible: None }];
        out.push(model.forward(&mut step, None).unwrap().flatten_all().unwrap());
    }
    out
}

fn compare(name: &str, ours: &[Tensor], theirs: &[Tensor]) {
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let d = max_abs_diff(a, b);
        assert!(d <= TOL, "{name}: step {i} logits differ by {d}");
    }
}

fn ids(t: &[u32]) -> Tensor {
    Tensor::new(t, &Device::Cpu).unwrap().unsqueeze(0).unwrap()
}

/// The reference's logits for the prompt, then for each decode token; `forward(ids, offset)`.
fn reference_logits(prompt: &[u32], decode: &[u32], mut forward: impl FnMut(&Tensor, usize) -> Tensor) -> Vec<Tensor> {
    let mut out = vec![forward(&ids(prompt), 0).flatten_all().unwrap()];
    for (i, t) in decode.iter().enumerate() {
        out.push(forward(&ids(&[*t]), prompt.len() + i).flatten_all().unwrap());
    }
    out
}

fn check_llama(cfg: ModelConfig, seed: u64) {
    let weights = random_weights(&cfg, seed);
    let prompt = tokens(13, cfg.vocab_size, seed + 1);
    let decode = tokens(DECODE_STEPS, cfg.vocab_size, seed + 2);
    let ref_cfg = llama::Config {
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        vocab_size: cfg.vocab_size,
        num_hidden_layers: cfg.num_layers,
        num_attention_heads: cfg.num_heads,
        num_key_value_heads: cfg.num_kv_heads,
        use_flash_attn: false,
        rms_norm_eps: cfg.rms_norm_eps,
        rope_theta: cfg.rope_theta as f32,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: cfg.rope_scaling.as_ref().map(|s| llama::Llama3RopeConfig {
            factor: s.factor,
            low_freq_factor: s.low_freq_factor,
            high_freq_factor: s.high_freq_factor,
            original_max_position_embeddings: s.original_max_position_embeddings,
            rope_type: llama::Llama3RopeType::Llama3,
        }),
        max_position_embeddings: cfg.max_position_embeddings,
        tie_word_embeddings: cfg.tie_word_embeddings,
    };
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    let reference = llama::Llama::load(vb, &ref_cfg).unwrap();
    let mut rcache = llama::Cache::new(true, DType::F32, &ref_cfg, &Device::Cpu).unwrap();
    let theirs = reference_logits(&prompt, &decode, |x, pos| reference.forward(x, pos, &mut rcache).unwrap());
    compare("llama", &ours(&cfg, &weights, &prompt, &decode), &theirs);
}

#[test]
fn llama_matches_candle_transformers() {
    check_llama(small_config(Arch::Llama), 11);
}

#[test]
fn llama3_rope_scaling_matches_candle_transformers() {
    let mut cfg = small_config(Arch::Llama);
    cfg.tie_word_embeddings = false;
    cfg.rope_theta = 500_000.0;
    // A small original context so that all three frequency bands occur at head_dim 16.
    cfg.rope_scaling = Some(Llama3RopeScaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64,
    });
    check_llama(cfg, 12);
}

#[test]
fn qwen2_matches_candle_transformers() {
    let cfg = small_config(Arch::Qwen2);
    let weights = random_weights(&cfg, 21);
    let prompt = tokens(11, cfg.vocab_size, 22);
    let decode = tokens(DECODE_STEPS, cfg.vocab_size, 23);
    let ref_cfg = qwen2::Config {
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        num_hidden_layers: cfg.num_layers,
        num_attention_heads: cfg.num_heads,
        num_key_value_heads: cfg.num_kv_heads,
        max_position_embeddings: cfg.max_position_embeddings,
        sliding_window: 4096,
        max_window_layers: cfg.num_layers,
        tie_word_embeddings: cfg.tie_word_embeddings,
        rope_theta: cfg.rope_theta,
        rms_norm_eps: cfg.rms_norm_eps,
        use_sliding_window: false,
        hidden_act: candle_nn::Activation::Silu,
    };
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    let mut reference = qwen2::ModelForCausalLM::new(&ref_cfg, vb).unwrap();
    let theirs = reference_logits(&prompt, &decode, |x, pos| reference.forward(x, pos).unwrap());
    compare("qwen2", &ours(&cfg, &weights, &prompt, &decode), &theirs);
}

#[test]
fn qwen3_matches_candle_transformers() {
    let cfg = small_config(Arch::Qwen3);
    let weights = random_weights(&cfg, 31);
    let prompt = tokens(9, cfg.vocab_size, 32);
    let decode = tokens(DECODE_STEPS, cfg.vocab_size, 33);
    let ref_cfg = qwen3::Config {
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        num_hidden_layers: cfg.num_layers,
        num_attention_heads: cfg.num_heads,
        head_dim: cfg.head_dim,
        attention_bias: false,
        num_key_value_heads: cfg.num_kv_heads,
        max_position_embeddings: cfg.max_position_embeddings,
        sliding_window: None,
        max_window_layers: cfg.num_layers,
        tie_word_embeddings: cfg.tie_word_embeddings,
        rope_theta: cfg.rope_theta,
        rms_norm_eps: cfg.rms_norm_eps,
        use_sliding_window: false,
        hidden_act: candle_nn::Activation::Silu,
    };
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    let mut reference = qwen3::ModelForCausalLM::new(&ref_cfg, vb).unwrap();
    let theirs = reference_logits(&prompt, &decode, |x, pos| reference.forward(x, pos).unwrap());
    compare("qwen3", &ours(&cfg, &weights, &prompt, &decode), &theirs);
}

/// Two sequences stacked in one forward give each sequence's own logits.
#[test]
fn batched_forward_equals_separate_forwards() {
    let cfg = small_config(Arch::Qwen2);
    let weights = random_weights(&cfg, 41);
    let model = build(&cfg, &weights);
    let (pa, pb) = (tokens(7, cfg.vocab_size, 42), tokens(12, cfg.vocab_size, 43));
    let (da, db) = (tokens(5, cfg.vocab_size, 44), tokens(5, cfg.vocab_size, 45));
    let alone_a = ours(&cfg, &weights, &pa, &da);
    let alone_b = ours(&cfg, &weights, &pb, &db);
    let (mut ca, mut cb) = (model.new_cache(8).unwrap(), model.new_cache(8).unwrap());
    for step in 0..=da.len() {
        let (ta, tb): (Vec<u32>, Vec<u32>) =
            if step == 0 { (pa.clone(), pb.clone()) } else { (vec![da[step - 1]], vec![db[step - 1]]) };
        let mut seqs = [
            SeqStep { cache: &mut ca, tokens: &ta, positions: None, visible: None },
            SeqStep { cache: &mut cb, tokens: &tb, positions: None, visible: None },
        ];
        let logits = model.forward(&mut seqs, None).unwrap();
        assert!(max_abs_diff(&logits.get(0).unwrap(), &alone_a[step]) <= TOL, "seq a step {step}");
        assert!(max_abs_diff(&logits.get(1).unwrap(), &alone_b[step]) <= TOL, "seq b step {step}");
    }
}
