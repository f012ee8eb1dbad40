//! The model: configuration, the decoder, and loading from HF directories, the hub and GGUF.

pub mod config;
pub mod linear;
pub mod load;
pub mod transformer;

pub use config::{Arch, ModelConfig};
pub use transformer::{SeqStep, Transformer};
