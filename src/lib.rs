//! kvbench: how much accuracy does each KV-cache eviction policy keep at a given budget, at what
//! speed and memory? The layout reads top-down: CLI → plan → runner → (model, cache, policy) →
//! grading → results → plots.

pub mod bench;
pub mod cache;
pub mod chat;
pub mod check;
pub mod cli;
pub mod commands;
pub mod datasets;
pub mod experiment;
pub mod generate;
pub mod grading;
pub mod model;
pub mod observe;
pub mod plot;
pub mod policies;
pub mod predictor;
pub mod results;
pub mod runner;
pub mod sampling;
pub mod sweep;
pub mod synthetic;
pub mod tokenizer;
pub mod toy;
