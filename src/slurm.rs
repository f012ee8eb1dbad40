//! `kvbench slurm`: a plan as a Slurm job array of static shards and a merge that depends on it,
//! the way evaluation harnesses spread a sweep over a cluster's GPUs. Task i runs
//! `kvbench run --shard i/N` into `<out>/shard-i-of-N/`; the merge job joins the shards with
//! `kvbench merge` (which refuses a missing or duplicated sample) and draws the figures. A task
//! that is pre-empted or requeued starts again on the same shard and resumes it: samples already
//! written are skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::io::write_atomic;

/// Where the scripts go and what they run, decided before anything is written.
#[derive(Debug, Clone)]
pub struct SlurmPlan {
    /// The run's folder (`--out`): shards below it, merged results in it (one subfolder per model
    /// with several).
    pub out: PathBuf,
    /// Each model's results folder (absolute): its shards below it, its merged result in it.
    pub model_outs: Vec<PathBuf>,
    pub shards: usize,
    /// The experiment file every task runs (written into `<out>/slurm/`).
    pub experiment_toml: String,
    pub data_dir: PathBuf,
    /// The working directory of every job (relative paths of the plan are relative to it).
    pub workdir: PathBuf,
    /// The `kvbench` binary the jobs run.
    pub kvbench: PathBuf,
    /// Where the merge job draws the figures (one folder per model), `None`: `kvbench plot`'s
    /// default.
    pub plots: Option<PathBuf>,
    pub job_name: String,
    pub options: SbatchOptions,
}

/// The usual `#SBATCH` knobs of an array task.
#[derive(Debug, Clone, Default)]
pub struct SbatchOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub time: Option<String>,
    pub gres: Option<String>,
    pub cpus_per_task: usize,
    pub mem: Option<String>,
    /// Extra lines, each an sbatch option (`--qos=high`, `--constraint=h100`).
    pub extra: Vec<String>,
}

/// The files written into `<out>/slurm/`.
pub struct Scripts {
    pub dir: PathBuf,
    pub array: PathBuf,
    pub merge: PathBuf,
    pub experiment: PathBuf,
}

/// Job ids of a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub array: String,
    pub merge: String,
}

/// Single-quotes a word for bash.
fn quote(p: impl AsRef<std::ffi::OsStr>) -> String {
    let s = p.as_ref().to_string_lossy();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@%".contains(c)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `p`, relative to `workdir` unless it is absolute.
pub fn absolute(p: &Path, workdir: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        workdir.join(p)
    }
}

impl SlurmPlan {
    pub fn validate(&self) -> Result<()> {
        if self.shards == 0 {
            bail!("--shards must be at least 1");
        }
        if self.options.cpus_per_task == 0 {
            bail!("--cpus-per-task must be at least 1");
        }
        for line in &self.options.extra {
            if !line.starts_with('-') || line.contains('\n') {
                bail!("--sbatch '{line}': expected one sbatch option such as --qos=high");
            }
        }
        Ok(())
    }

    fn dir(&self) -> PathBuf {
        absolute(&self.out, &self.workdir).join("slurm")
    }

    fn header(&self, lines: &mut Vec<String>, name: &str, output: &str) {
        let o = &self.options;
        lines.push(format!("#SBATCH --job-name={}", quote(name)));
        lines.push(format!("#SBATCH --chdir={}", quote(&self.workdir)));
        lines.push(format!("#SBATCH --output={}", quote(self.dir().join("logs").join(output))));
        for (flag, value) in [("partition", &o.partition), ("account", &o.account)] {
            if let Some(v) = value {
                lines.push(format!("#SBATCH --{flag}={}", quote(v)));
            }
        }
    }

    /// The array script: task i runs shard i of N; requeue-safe.
    pub fn array_script(&self) -> String {
        let o = &self.options;
        let dir = self.dir();
        let n = self.shards;
        let mut l = vec![
            "#!/bin/bash".to_string(),
            format!(
                "# kvbench: shard $SLURM_ARRAY_TASK_ID of {n} of the plan in {}.",
                dir.join("experiment.toml").display()
            ),
            "# Written by `kvbench slurm`; submit it with `sbatch`, then merge.sbatch with".to_string(),
            "# --dependency=afterok:<this array's job id> (`kvbench slurm --submit` does both).".to_string(),
            "# Task i writes <out>/shard-i-of-N/. A pre-empted or requeued task resumes its shard:".to_string(),
            "# samples already written are skipped, and a sample is written whole or not at all.".to_string(),
        ];
        self.header(&mut l, &self.job_name, "%A_%a.log");
        l.push(format!("#SBATCH --array=0-{}", n - 1));
        l.push(format!("#SBATCH --cpus-per-task={}", o.cpus_per_task));
        for (flag, value) in [("time", &o.time), ("gres", &o.gres), ("mem", &o.mem)] {
            if let Some(v) = value {
                l.push(format!("#SBATCH --{flag}={}", quote(v)));
            }
        }
        l.push("#SBATCH --requeue".into());
        l.push("#SBATCH --open-mode=append".into());
        for extra in &o.extra {
            l.push(format!("#SBATCH {extra}"));
        }
        l.push(String::new());
        l.push("set -euo pipefail".into());
        l.push(format!(
            "echo \"kvbench shard $SLURM_ARRAY_TASK_ID/{n} on $(hostname), job $SLURM_JOB_ID, restart ${{SLURM_RESTART_COUNT:-0}}\""
        ));
        l.push(format!(
            "exec {} run --experiment {} --data-dir {} --shard \"$SLURM_ARRAY_TASK_ID/{n}\"",
            quote(&self.kvbench),
            quote(dir.join("experiment.toml")),
            quote(&self.data_dir)
        ));
        l.join("\n") + "\n"
    }

    /// The merge script: every model's shards joined, its figures drawn.
    pub fn merge_script(&self) -> String {
        let n = self.shards;
        let mut l = vec![
            "#!/bin/bash".to_string(),
            format!("# kvbench: the {n} shards of the array joined into one result, then its figures."),
            "# Written by `kvbench slurm`; runs after every array task succeeded".to_string(),
            "# (--dependency=afterok:<array job id>). `kvbench merge` refuses a missing or duplicated sample."
                .to_string(),
        ];
        self.header(&mut l, &format!("{}-merge", self.job_name), "merge-%j.log");
        l.push("#SBATCH --cpus-per-task=1".into());
        l.push(String::new());
        l.push("set -euo pipefail".into());
        l.push(format!("kvbench={}", quote(&self.kvbench)));
        for out in &self.model_outs {
            let shards: Vec<String> = (0..n).map(|i| quote(out.join(format!("shard-{i}-of-{n}")))).collect::<Vec<_>>();
            l.push(format!(
                "\"$kvbench\" merge {} --out {} --data-dir {}",
                shards.join(" "),
                quote(out),
                quote(&self.data_dir)
            ));
            let plot_out = match &self.plots {
                Some(p) if self.model_outs.len() > 1 => {
                    format!(" --out {}", quote(p.join(out.file_name().unwrap_or_default())))
                }
                Some(p) => format!(" --out {}", quote(p)),
                None => String::new(),
            };
            l.push(format!("\"$kvbench\" plot {}{plot_out}", quote(out.join("summary.csv"))));
        }
        if self.model_outs.len() > 1 {
            // Every sample is in place, so `kvbench run` decodes nothing and loads no weights: it
            // writes the models' combined summary.csv, as an unsharded run does.
            l.push(format!(
                "\"$kvbench\" run --experiment {} --data-dir {}",
                quote(self.dir().join("experiment.toml")),
                quote(&self.data_dir)
            ));
            let combined = absolute(&self.out, &self.workdir).join("summary.csv");
            let plot_out = self.plots.as_ref().map(|p| format!(" --out {}", quote(p))).unwrap_or_default();
            l.push(format!("\"$kvbench\" plot {}{plot_out}", quote(combined)));
        }
        l.join("\n") + "\n"
    }

    /// Writes the experiment file and both scripts (atomically) into `<out>/slurm/`.
    pub fn write(&self) -> Result<Scripts> {
        let dir = self.dir();
        std::fs::create_dir_all(dir.join("logs")).with_context(|| format!("creating {}", dir.display()))?;
        let s = Scripts {
            array: dir.join("array.sbatch"),
            merge: dir.join("merge.sbatch"),
            experiment: dir.join("experiment.toml"),
            dir,
        };
        write_atomic(&s.experiment, self.experiment_toml.as_bytes())?;
        write_atomic(&s.array, self.array_script().as_bytes())?;
        write_atomic(&s.merge, self.merge_script().as_bytes())?;
        Ok(s)
    }
}

/// `sbatch --parsable ARGS`: the job id it prints (`id` or `id;cluster`).
fn sbatch(args: &[&str]) -> Result<String> {
    let out = Command::new("sbatch").arg("--parsable").args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("sbatch not found: --submit needs Slurm's commands on PATH (a login node)")
        } else {
            anyhow::anyhow!("running sbatch: {e}")
        }
    })?;
    if !out.status.success() {
        bail!("sbatch {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch printed no job id: {text:?}");
    }
    Ok(id)
}

/// Submits the array, then the merge after it.
pub fn submit(scripts: &Scripts) -> Result<Submitted> {
    let array = sbatch(&[&scripts.array.to_string_lossy()])?;
    let merge = sbatch(&[&format!("--dependency=afterok:{array}"), &scripts.merge.to_string_lossy()])
        .with_context(|| format!("the array was submitted as job {array}; cancel it with `scancel {array}`"))?;
    Ok(Submitted { array, merge })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> SlurmPlan {
        SlurmPlan {
            out: "results/run one".into(),
            model_outs: vec!["/work/results/run one".into()],
            shards: 4,
            experiment_toml: String::new(),
            data_dir: "/data".into(),
            workdir: "/work".into(),
            kvbench: "/opt/kvbench".into(),
            plots: None,
            job_name: "kvbench-run".into(),
            options: SbatchOptions {
                gres: Some("gpu:1".into()),
                cpus_per_task: 8,
                extra: vec!["--qos=high".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn the_array_script_runs_shard_i_of_n_and_is_requeue_safe() {
        let s = plan().array_script();
        for line in [
            "#SBATCH --array=0-3",
            "#SBATCH --gres=gpu:1",
            "#SBATCH --cpus-per-task=8",
            "#SBATCH --requeue",
            "#SBATCH --open-mode=append",
            "#SBATCH --qos=high",
            "#SBATCH --chdir=/work",
            "#SBATCH --output='/work/results/run one/slurm/logs/%A_%a.log'",
            "exec /opt/kvbench run --experiment '/work/results/run one/slurm/experiment.toml' --data-dir /data --shard \"$SLURM_ARRAY_TASK_ID/4\"",
        ] {
            assert!(s.lines().any(|l| l == line), "missing {line:?} in\n{s}");
        }
        assert!(!s.contains("--partition"), "{s}");
        let m = plan().merge_script();
        assert!(m.contains("\"$kvbench\" merge '/work/results/run one/shard-0-of-4' "), "{m}");
        assert!(
            m.contains(" '/work/results/run one/shard-3-of-4' --out '/work/results/run one' --data-dir /data"),
            "{m}"
        );
        assert!(m.contains("\"$kvbench\" plot '/work/results/run one/summary.csv'"), "{m}");
        assert!(!m.contains(" run "), "one model needs no combined summary: {m}");
    }

    /// With several models each is merged and drawn, then their combined summary is written (by a
    /// `kvbench run` that finds every sample in place) and drawn.
    #[test]
    fn the_merge_of_several_models_writes_their_combined_summary() {
        let mut p = plan();
        p.model_outs = vec!["/work/results/run one/a".into(), "/work/results/run one/b".into()];
        p.plots = Some("/work/plots/run".into());
        let m = p.merge_script();
        let lines: Vec<&str> = m.lines().filter(|l| l.starts_with("\"$kvbench\"")).collect();
        assert_eq!(lines.len(), 6, "{m}");
        assert!(lines[0].contains(" merge ") && lines[0].contains("--out '/work/results/run one/a'"), "{m}");
        assert_eq!(lines[1], "\"$kvbench\" plot '/work/results/run one/a/summary.csv' --out /work/plots/run/a");
        assert!(lines[2].contains(" merge ") && lines[2].contains("--out '/work/results/run one/b'"), "{m}");
        assert_eq!(
            lines[4],
            "\"$kvbench\" run --experiment '/work/results/run one/slurm/experiment.toml' --data-dir /data"
        );
        assert_eq!(lines[5], "\"$kvbench\" plot '/work/results/run one/summary.csv' --out /work/plots/run");
    }

    #[test]
    fn bad_options_are_named() {
        let mut p = plan();
        p.options.extra = vec!["qos=high".into()];
        assert!(format!("{:#}", p.validate().unwrap_err()).contains("qos=high"));
        p.options.extra.clear();
        p.shards = 0;
        assert!(format!("{:#}", p.validate().unwrap_err()).contains("--shards"));
        assert_eq!(quote("a'b"), "'a'\\''b'");
    }
}
