//! A results folder: `samples.jsonl` and `manifest.json` (`record`), `summary.csv` (`summary`),
//! the comparison of two folders (`check`, `kvbench check`) and other tools' formats (`export`).

pub mod check;
pub mod export;
pub mod record;
pub mod summary;
