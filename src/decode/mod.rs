//! Decoding: chunked prefill and batched decode steps with a policy's hook on every step
//! (`generate`), and the choice of each next token (`sampling`).

pub mod generate;
pub mod sampling;
