//! kvbench's integration tests, one binary (a module per area; each states its property on top).
//! The tests run the library and the `kvbench` binary; those that need the SmolLM2 test model fetch
//! it on first need (`common::test_model`).

mod batch;
mod bench;
mod builtin;
mod check_gate;
mod cli;
mod common;
mod compaction;
mod datasets;
mod estimate;
mod export;
mod grade_cli;
mod hf_loading;
mod layers;
mod oracle;
mod plot;
mod policies;
mod quantized;
mod resume;
mod slots;
mod slurm;
mod smollm2;
mod smollm2_policies;
mod tokenizer_gguf;
