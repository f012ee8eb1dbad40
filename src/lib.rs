//! kvbench: how much accuracy does each KV-cache eviction policy keep at a given budget, at what
//! speed and memory?
//!
//! ```text
//! cli ─▶ plan ─▶ eval ──────────────────────────────────────▶ grading ─▶ results ─▶ plot
//! flags   the     a pool of workers, one sample at a time:       answers    samples,   figures
//! and     grid,   decode ─▶ model ─▶ cache ◀─ policies                      summary,
//! files   checked (steps)   (decoder) (KV + hook) (eviction)                check
//! ```
//!
//! Beside the pipeline: `data` (datasets and the generated task), `dynts` (the predictor's labels
//! and fit), `toy` (the built-in model and its training), `bench` (cost per policy), and the
//! leaves `io` and `rng`. Each module uses only modules of lower layers (`tests/it/layers.rs`
//! checks it): io, rng, grading < cache < model < decode, policies, data < plan < results <
//! eval, toy < dynts, bench, plot, slurm < cli.

// flags and experiment files into a validated setup; each command's body
pub mod cli;

// the grid of a run, expanded into jobs and checked before any weight loads
pub mod plan;

// `kvbench run`: workers decode, grade and record one sample at a time
pub mod eval;

// prefill and decode steps with a policy's hook on each; sampling
pub mod decode;

// configuration, the decoder, loading (HF folders, the hub, GGUF)
pub mod model;

// the eviction seam: the KV cache and the hooks a policy acts through
pub mod cache;

// the eviction policies and their shared harness
pub mod policies;

// answer extraction, normalisation and equivalence
pub mod grading;

// samples, manifests, summary.csv, `kvbench check`
pub mod results;

// figures from a summary CSV
pub mod plot;

// dataset definitions and loading; the generated task
pub mod data;

// DynTS's importance predictor: labels and fit
pub mod dynts;

// the built-in toy model and its training
pub mod toy;

// `kvbench bench`: cost per policy
pub mod bench;

// `kvbench slurm`: a plan as a Slurm job array and a dependent merge
pub mod slurm;

// atomic writes, fingerprints, the HF cache folder
pub mod io;

// seeded random streams
pub mod rng;
