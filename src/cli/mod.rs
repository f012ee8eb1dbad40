//! The command line: clap types and shared argument groups (`args`), every default decided once
//! (`defaults`), flags and an experiment file merged into a validated run setup (`setup`), a
//! plan's estimated cost (`estimate`), each command's body (`commands`), and `kvbench slurm`'s
//! arguments and body (`slurm`).

pub mod args;
pub mod commands;
pub mod defaults;
pub mod estimate;
pub mod setup;
pub mod slurm;

pub use args::{Cli, Command};
pub use commands::run;
