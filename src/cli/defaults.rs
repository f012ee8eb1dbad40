//! Every default of the command line, decided once: clap shows these, and `kvbench run` applies
//! them where neither a flag nor the experiment file sets a field.

/// The test model that `just fetch-test-model` puts in place.
pub const TEST_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
/// B, W and r: the DynTS paper's budget.
pub const BUDGET: &str = "5k";
pub const WINDOW: &str = "2000";
pub const RATIO: f64 = 0.3;
/// A reasoning model's thinking fits in 16k tokens on the paper's datasets.
pub const MAX_NEW_TOKENS: usize = 16384;
/// Prompt tokens per prefill forward (bounds the `[chunk, context]` score tensors).
pub const PREFILL_CHUNK: usize = 512;
pub const SEED: u64 = 42;
pub const DEVICE: &str = "cpu";
/// `kvbench run` workers: one per core of a two-core machine.
pub const THREADS: usize = 2;
/// Samples decoded together by `kvbench run`; GPUs want 32 or more.
pub const BATCH: usize = 4;
pub const SAMPLES: usize = 1;
pub const DATASET: &str = "gsm8k";
/// `all`: the eight policies of the DynTS figure.
pub const POLICIES: &str = "all";
/// `kvbench bench`'s CSV, which is also where a plan's time estimate looks for its calibration.
pub const BENCH_CSV: &str = "results/bench.csv";
