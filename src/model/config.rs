//! Model hyper-parameters for the decoder families kvbench runs (Llama, Qwen2, Qwen3), read from an
//! HF `config.json` or from GGUF metadata. One struct for all three: they differ only in q/k/v
//! biases (Qwen2), per-head q/k RMSNorm (Qwen3), head_dim (Qwen3 states it) and RoPE scaling (Llama 3).

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
}

impl Arch {
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "llama" | "llamaforcausallm" => Ok(Arch::Llama),
            "qwen2" | "qwen2forcausallm" => Ok(Arch::Qwen2),
            "qwen3" | "qwen3forcausallm" => Ok(Arch::Qwen3),
            other => bail!("unsupported architecture '{other}' (supported: llama, qwen2, qwen3)"),
        }
    }
}

/// Llama-3 frequency-dependent RoPE scaling (used by DeepSeek-R1-Distill-Llama-8B).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub vocab_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v projections (Qwen2 always; Llama/Qwen3 when `attention_bias`).
    pub qkv_bias: bool,
    /// Per-head RMSNorm on queries and keys before RoPE (Qwen3).
    pub qk_norm: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("vocab_size", self.vocab_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
        ];
        for (name, v) in positive {
            if v == 0 {
                bail!("{name} must be positive");
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            bail!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_heads,
                self.num_kv_heads
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            bail!("head_dim ({}) must be even for RoPE", self.head_dim);
        }
        Ok(())
    }

    /// Parses an HF `config.json`.
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let raw: HfConfig = serde_json::from_str(text).context("config.json is not valid")?;
        let arch_name = raw
            .model_type
            .clone()
            .or_else(|| raw.architectures.as_ref().and_then(|a| a.first().cloned()))
            .context("config.json names no model_type or architectures")?;
        let arch = Arch::parse(&arch_name)?;
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads.max(1));
        // transformers ≥ 5 writes `rope_parameters` (theta, type and scaling in one object) where
        // older configs have `rope_theta` and `rope_scaling`.
        let rope_theta = raw.rope_theta.or(raw.rope_parameters.as_ref().and_then(|p| p.rope_theta)).unwrap_or(10_000.0);
        let rope_scaling = match raw.rope_scaling.or(raw.rope_parameters) {
            Some(s) if s.kind() == Some("llama3") => Some(Llama3RopeScaling {
                factor: s.factor.context("rope_scaling.factor missing")?,
                low_freq_factor: s.low_freq_factor.unwrap_or(1.0),
                high_freq_factor: s.high_freq_factor.unwrap_or(4.0),
                original_max_position_embeddings: s.original_max_position_embeddings.unwrap_or(8192),
            }),
            Some(s) if s.kind().is_none() || s.kind() == Some("default") => None,
            Some(s) => bail!("unsupported rope_scaling type '{}' (supported: llama3, default)", s.kind().unwrap_or("")),
            None => None,
        };
        let cfg = ModelConfig {
            arch,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            vocab_size: raw.vocab_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias: arch == Arch::Qwen2 || raw.attention_bias.unwrap_or(false),
            qk_norm: arch == Arch::Qwen3,
            bos_token_id: raw.bos_token_id,
            eos_token_ids: raw.eos_token_id.map(|e| e.into_vec()).unwrap_or_default(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[derive(Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    hidden_size: usize,
    intermediate_size: usize,
    vocab_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<HfRopeScaling>,
    rope_parameters: Option<HfRopeScaling>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    bos_token_id: Option<u32>,
    eos_token_id: Option<OneOrMany>,
}

#[derive(Deserialize)]
struct HfRopeScaling {
    /// Only in transformers ≥ 5's `rope_parameters`.
    rope_theta: Option<f64>,
    rope_type: Option<String>,
    #[serde(rename = "type")]
    type_: Option<String>,
    factor: Option<f32>,
    low_freq_factor: Option<f32>,
    high_freq_factor: Option<f32>,
    original_max_position_embeddings: Option<usize>,
}

impl HfRopeScaling {
    fn kind(&self) -> Option<&str> {
        self.rope_type.as_deref().or(self.type_.as_deref())
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

impl OneOrMany {
    pub(crate) fn into_vec(self) -> Vec<u32> {
        match self {
            OneOrMany::One(x) => vec![x],
            OneOrMany::Many(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_architecture_is_named() {
        let text = r#"{"model_type":"mistral","hidden_size":8,"intermediate_size":8,"vocab_size":8,
            "num_hidden_layers":1,"num_attention_heads":2}"#;
        let err = ModelConfig::from_hf_json(text).unwrap_err().to_string();
        assert!(err.contains("mistral") && err.contains("unsupported"), "{err}");
    }

    #[test]
    fn qwen2_gets_biases_and_llama3_scaling_parses() {
        let q = r#"{"model_type":"qwen2","hidden_size":64,"intermediate_size":8,"vocab_size":8,
            "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"eos_token_id":[1,2]}"#;
        let c = ModelConfig::from_hf_json(q).unwrap();
        assert!(c.qkv_bias && !c.qk_norm);
        assert_eq!((c.head_dim, c.eos_token_ids.clone()), (16, vec![1, 2]));
        let l = r#"{"model_type":"llama","hidden_size":64,"intermediate_size":8,"vocab_size":8,
            "num_hidden_layers":1,"num_attention_heads":4,"rope_scaling":{"rope_type":"llama3",
            "factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#;
        let c = ModelConfig::from_hf_json(l).unwrap();
        assert_eq!(c.rope_scaling.unwrap().factor, 8.0);
        assert_eq!(c.num_kv_heads, 4);
    }

    /// transformers ≥ 5 moves theta and scaling into `rope_parameters` (SmolLM2 saved by 5.2:
    /// θ = 100,000, which a reader of `rope_theta` alone would miss and take 10,000).
    #[test]
    fn rope_parameters_of_transformers_5_are_read() {
        let base = r#""model_type":"llama","hidden_size":64,"intermediate_size":8,"vocab_size":8,
            "num_hidden_layers":1,"num_attention_heads":4"#;
        let c = ModelConfig::from_hf_json(&format!(
            r#"{{{base},"rope_parameters":{{"rope_theta":100000.0,"rope_type":"default"}}}}"#
        ))
        .unwrap();
        assert_eq!((c.rope_theta, c.rope_scaling.is_none()), (100_000.0, true));
        let c = ModelConfig::from_hf_json(&format!(
            r#"{{{base},"rope_parameters":{{"rope_theta":500000.0,"rope_type":"llama3","factor":32.0,
            "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}}}"#
        ))
        .unwrap();
        assert_eq!((c.rope_theta, c.rope_scaling.unwrap().factor), (500_000.0, 32.0));
        assert_eq!(ModelConfig::from_hf_json(&format!("{{{base}}}")).unwrap().rope_theta, 10_000.0);
    }
}
