//! A results folder: `samples.jsonl` and `manifest.json` (`record`), `summary.csv` (`summary`),
//! and the comparison of two folders (`check`, `kvbench check`).

pub mod check;
pub mod record;
pub mod summary;
