//! `kvbench run` and `kvbench merge`: a plan's jobs decoded by a pool of workers, each sample
//! graded and recorded the moment it finishes.

pub mod merge;
pub mod progress;
pub mod prompt;
pub mod sample;
pub mod worker;
