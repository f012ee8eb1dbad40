//! `kvbench slurm`'s arguments and body: the plan of `kvbench run`, checked, handed to
//! [`crate::slurm`] as scripts and, with `--submit`, submitted.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::args::RunArgs;

/// `kvbench slurm`: `kvbench run`'s plan plus the array's shape and the usual sbatch options.
#[derive(Args, Debug)]
pub struct SlurmArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Array tasks: the plan split into N shards, task i running `kvbench run --shard i/N`
    /// (one per GPU on a GPU cluster).
    #[arg(long)]
    pub shards: usize,
    /// Partition of every job (sbatch --partition).
    #[arg(long)]
    pub partition: Option<String>,
    /// Account charged (sbatch --account).
    #[arg(long)]
    pub account: Option<String>,
    /// Wall-time limit of each array task (sbatch --time, e.g. 12:00:00); a task cut short by it
    /// resumes its shard when resubmitted.
    #[arg(long)]
    pub time: Option<String>,
    /// Generic resources of each array task (sbatch --gres), e.g. gpu:1.
    #[arg(long)]
    pub gres: Option<String>,
    /// CPUs of each array task (sbatch --cpus-per-task) [default: the plan's --threads].
    #[arg(long)]
    pub cpus_per_task: Option<usize>,
    /// Memory of each array task (sbatch --mem, e.g. 64G) [default: the partition's].
    #[arg(long)]
    pub mem: Option<String>,
    /// Another sbatch option for the array tasks, e.g. --sbatch=--qos=high; repeatable.
    #[arg(long = "sbatch", value_name = "OPTION", allow_hyphen_values = true)]
    pub sbatch: Vec<String>,
    /// Name of the jobs [default: kvbench-<run folder name>; the merge job's adds -merge].
    #[arg(long)]
    pub job_name: Option<String>,
    /// Folder of the figures the merge job draws [default: plots/<run>, as `kvbench plot`].
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// The kvbench binary the jobs run [default: this one].
    #[arg(long)]
    pub kvbench: Option<PathBuf>,
    /// Submit the array, then the merge with --dependency=afterok on it; without --submit the
    /// scripts are only written.
    #[arg(long)]
    pub submit: bool,
}

pub fn cmd_slurm(args: SlurmArgs) -> Result<u8> {
    use crate::plan::experiment::{Experiment, Placement};
    use crate::plan::{expand, Shard};
    use crate::results::record::check_manifest;
    if args.run.shard.is_some() {
        bail!("kvbench slurm makes the shards itself (--shards N): drop --shard");
    }
    if args.run.dry_run {
        bail!("kvbench slurm only writes its scripts unless --submit is given: drop --dry-run");
    }
    let setup = super::setup::resolve(&args.run)?;
    let estimate_inputs = super::estimate::EstimateInputs::from_args(&args.run)?;
    let n = args.shards;
    if n == 0 {
        bail!("--shards must be at least 1");
    }
    // Every model's plan is checked, and every folder its jobs would write, before anything is
    // written or submitted.
    for r in &setup.runs {
        let jobs = expand(&r.plan, &setup.data_dir)?;
        for index in 0..n {
            check_manifest(&r.out.join(format!("shard-{index}-of-{n}")), &r.plan, Some(Shard { index, count: n }))?;
        }
        check_manifest(&r.out, &r.plan, None)?;
        eprintln!(
            "plan: {} on {} samples = policies [{}] × n {}, in {n} shards → {}",
            r.plan.model,
            jobs.len(),
            r.plan.policies.join(", "),
            r.plan.samples,
            r.out.display()
        );
        for line in super::estimate::describe(&setup, r, &jobs, &estimate_inputs, Some(n))? {
            eprintln!("  {line}");
        }
    }
    let workdir = std::env::current_dir().context("the working directory")?;
    let absolute = |p: &std::path::Path| crate::slurm::absolute(p, &workdir);
    let plans: Vec<(&str, &crate::plan::Plan)> = setup.runs.iter().map(|r| (r.name.as_str(), &r.plan)).collect();
    let placement = Placement {
        device: &setup.device,
        dtype: setup.dtype.as_deref(),
        threads: setup.threads,
        out: &setup.base_out,
    };
    let experiment = Experiment::from_plans(setup.description.clone(), &plans, &placement).to_toml(
        "Written by `kvbench slurm`: the plan every array task runs (kvbench run --experiment THIS\n\
         --shard i/N). Paths are relative to the jobs' working directory (the scripts' --chdir).",
    )?;
    let run_name = setup.base_out.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let plan = crate::slurm::SlurmPlan {
        out: setup.base_out.clone(),
        model_outs: setup.runs.iter().map(|r| absolute(&r.out)).collect(),
        shards: n,
        experiment_toml: experiment,
        data_dir: absolute(&setup.data_dir),
        kvbench: match args.kvbench {
            Some(k) => absolute(&k),
            None => std::env::current_exe().context("this binary's path")?,
        },
        plots: args.plots.as_deref().map(absolute),
        job_name: args.job_name.unwrap_or_else(|| format!("kvbench-{run_name}")),
        options: crate::slurm::SbatchOptions {
            partition: args.partition,
            account: args.account,
            time: args.time,
            gres: args.gres,
            cpus_per_task: args.cpus_per_task.unwrap_or(setup.threads),
            mem: args.mem,
            extra: args.sbatch,
        },
        workdir: workdir.clone(),
    };
    plan.validate()?;
    let scripts = plan.write()?;
    // The tasks must run exactly this plan: the written experiment file resolves to it.
    let again = super::setup::resolve(&RunArgs { experiment: Some(scripts.experiment.clone()), ..Default::default() })
        .with_context(|| format!("reading back {}", scripts.experiment.display()))?;
    for (a, b) in setup.runs.iter().zip(&again.runs) {
        let differing = crate::results::record::plan_differences(&a.plan, &b.plan)?;
        if !differing.is_empty() || a.out != b.out {
            bail!(
                "{} does not reproduce the plan (differs in: {})",
                scripts.experiment.display(),
                differing.join(", ")
            );
        }
    }
    eprintln!("wrote {}: array.sbatch ({n} tasks), merge.sbatch, experiment.toml", scripts.dir.display());
    if !args.submit {
        eprintln!(
            "submit: id=$(sbatch --parsable {}) && sbatch --dependency=afterok:$id {}   (or add --submit)",
            scripts.array.display(),
            scripts.merge.display()
        );
        return Ok(0);
    }
    let ids = crate::slurm::submit(&scripts)?;
    println!("submitted array job {} ({n} tasks) and merge job {} (after all succeed)", ids.array, ids.merge);
    eprintln!(
        "watch: squeue -j {a},{m}   sacct -j {a},{m} -X   logs: {}",
        scripts.dir.join("logs").display(),
        a = ids.array,
        m = ids.merge
    );
    Ok(0)
}
