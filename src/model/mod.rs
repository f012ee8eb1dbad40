//! The model: configuration, the decoder, and loading from HF directories, the hub and GGUF.

pub mod chat_template;
pub mod config;
pub mod fused;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod hf;
pub mod ledger;
pub mod linear;
pub mod slot_attention;
pub mod source;
pub mod transformer;

pub use config::{Arch, ModelConfig};
pub use source::{load, LoadOptions, LoadedModel, ModelSource};
pub use transformer::{QuantizedWeights, SeqStep, Transformer};
