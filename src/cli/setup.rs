//! `kvbench run`'s flags and an experiment file merged into a validated setup, before any weight is
//! loaded. A flag given on the command line overrides the file's field; `--budget`, `--window` and
//! `--ratio` override those fields in every budget rule, so per-dataset settings survive a
//! `--budget` sweep. Defaults come from [`super::defaults`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::args::RunArgs;
use super::defaults;
use crate::decode::sampling::SamplingParams;
use crate::model::source::{ModelSource, WeightFormat, BUILTIN_NAME};
use crate::plan::experiment::{BudgetRule, Experiment, OneOrMany, Tokens};
use crate::plan::{policy_names, Plan, Shard};
use crate::policies::{parse_tokens, Budget};

/// One model's plan and where its results go.
#[derive(Debug)]
pub struct PlannedRun {
    /// The model as named (flag or experiment file): the key of its budget rules and predictor.
    pub name: String,
    pub plan: Plan,
    pub source: ModelSource,
    pub out: PathBuf,
}

/// Everything `kvbench run` will do, decided before any weight is loaded.
#[derive(Debug)]
pub struct RunSetup {
    pub runs: Vec<PlannedRun>,
    /// With several models: the folder that gets their combined `summary.csv`.
    pub combined_out: Option<PathBuf>,
    /// `--out`, or the experiment's, or the default: the folder of the whole run (with several
    /// models, the parent of theirs; shards go below).
    pub base_out: PathBuf,
    /// The experiment file's description.
    pub description: Option<String>,
    pub data_dir: PathBuf,
    pub device: String,
    pub dtype: Option<String>,
    pub weights: WeightFormat,
    pub threads: usize,
    pub shard: Option<Shard>,
}

/// A folder name for a model: a file's stem, or a hub id with `/` and `@` replaced.
pub fn model_slug(model: &str) -> String {
    let p = Path::new(model);
    let name = if p.extension().is_some_and(|e| e == "gguf") || p.is_dir() {
        p.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default()
    } else {
        model.to_string()
    };
    name.replace(['/', '@', '\\'], "_")
}

/// Merges the experiment file (if any) and the flags into plans.
pub fn resolve(args: &RunArgs) -> Result<RunSetup> {
    let (exp, exp_name) = match &args.experiment {
        Some(path) => {
            (Experiment::load(path)?, path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default())
        }
        None if args.model.is_none() => (Experiment::builtin()?, "builtin".to_string()),
        None => (Experiment::default(), String::new()),
    };
    let models: Vec<String> = match &args.model {
        Some(m) => vec![m.clone()],
        None if !exp.models.is_empty() => exp.models.clone(),
        None => vec![BUILTIN_NAME.to_string()],
    };
    let datasets = args.datasets.clone().or(exp.datasets.clone()).unwrap_or_else(|| vec![defaults::DATASET.into()]);
    if datasets.is_empty() {
        bail!("no datasets given");
    }
    let (policies, policy_params) = policy_names(
        &args.policies.clone().or(exp.policies.clone()).unwrap_or_else(|| vec![defaults::POLICIES.into()]),
    )?;
    if policies.is_empty() {
        bail!("no policies given");
    }
    let sampling = if args.greedy {
        SamplingParams::GREEDY
    } else {
        exp.sampling.as_ref().map(|s| s.params()).transpose()?.unwrap_or(SamplingParams::PAPER)
    };
    let rules = budget_rules(args, &exp)?;
    for rule in &rules {
        if let Some(m) = &rule.model {
            if !models.contains(m) && args.model.is_none() {
                bail!("a budget rule names model '{m}', which is not in `models`");
            }
        }
        for d in rule.datasets.iter().flatten() {
            if !datasets.contains(d) {
                bail!("a budget rule names dataset '{d}', which is not in `datasets`");
            }
        }
    }
    let shard = args.shard.as_deref().map(Shard::parse).transpose()?;
    let (threads, batch) = (
        args.threads.or(exp.threads).unwrap_or(defaults::THREADS),
        args.batch.or(exp.batch).unwrap_or(defaults::BATCH),
    );
    if threads == 0 || batch == 0 {
        bail!("--threads and --batch must be at least 1");
    }
    let base = args.out.clone().or(exp.out.clone()).unwrap_or_else(|| {
        let name =
            if exp_name.is_empty() { format!("{}-{}", model_slug(&models[0]), datasets.join("+")) } else { exp_name };
        PathBuf::from("results").join(name)
    });
    let weights = args.weights.or(exp.weights).unwrap_or_default();
    let mut runs = Vec::new();
    for model in &models {
        let source = ModelSource::parse(model)?;
        weights.check(&source)?;
        let mut budgets = BTreeMap::new();
        for d in &datasets {
            let mut list = Vec::new();
            for rule in rules.iter().filter(|r| r.model.as_ref().is_none_or(|m| m == model)) {
                if rule.datasets.as_ref().is_none_or(|ds| ds.contains(d)) {
                    for &b in &rule.budgets {
                        if !list.contains(&b) {
                            list.push(b);
                        }
                    }
                }
            }
            if list.is_empty() {
                bail!("no budget rule covers model {model} on dataset {d}");
            }
            budgets.insert(d.clone(), list);
        }
        let predictor = args.predictor.clone().or_else(|| exp.predictors.get(model).cloned());
        let plan = Plan {
            model: source.display(),
            datasets: datasets.clone(),
            policies: policies.clone(),
            policy_params: policy_params.clone(),
            budgets,
            samples: args.samples.or(exp.samples).unwrap_or(defaults::SAMPLES),
            seed: args.seed.or(exp.seed).unwrap_or(defaults::SEED),
            sampling,
            max_new_tokens: args.max_new_tokens.or(exp.max_new_tokens).unwrap_or(defaults::MAX_NEW_TOKENS),
            limit: args.limit.or(exp.limit),
            ids: args.ids.clone().or(exp.ids.clone()),
            instruction: args.instruction.clone().or(exp.instruction.clone()),
            system: args.system.clone().or(exp.system.clone()),
            prefill_chunk: args.prefill_chunk.or(exp.prefill_chunk).unwrap_or(defaults::PREFILL_CHUNK),
            predictor,
            batch,
            weights,
        };
        let mut out = if models.len() > 1 { base.join(model_slug(model)) } else { base.clone() };
        if let Some(s) = shard {
            out = out.join(format!("shard-{}-of-{}", s.index, s.count));
        }
        runs.push(PlannedRun { name: model.clone(), plan, source, out });
    }
    Ok(RunSetup {
        runs,
        combined_out: (models.len() > 1 && shard.is_none()).then(|| base.clone()),
        base_out: base,
        description: exp.description.clone(),
        data_dir: crate::data::data_dir(args.data_dir.as_deref()),
        device: args.device.clone().or(exp.device.clone()).unwrap_or_else(|| defaults::DEVICE.into()),
        dtype: args.dtype.clone().or(exp.dtype.clone()),
        weights,
        threads,
        shard,
    })
}

/// A budget rule with its values parsed and checked.
struct Rule {
    model: Option<String>,
    datasets: Option<Vec<String>>,
    budgets: Vec<Budget>,
}

/// The file's rules with the flags applied field by field; without rules, one rule from the flags
/// (the defaults B, W and r).
fn budget_rules(args: &RunArgs, exp: &Experiment) -> Result<Vec<Rule>> {
    let flag_budgets = args
        .budget
        .as_ref()
        .map(|bs| bs.iter().map(|b| parse_tokens(b).context("--budget")).collect::<Result<Vec<_>>>())
        .transpose()?;
    let flag_window = args.window.as_deref().map(|w| parse_tokens(w).context("--window")).transpose()?;
    let file_rules = if exp.budgets.is_empty() {
        vec![BudgetRule {
            model: None,
            datasets: None,
            budget: OneOrMany::One(Tokens::Text(defaults::BUDGET.into())),
            window: Tokens::Text(defaults::WINDOW.into()),
            ratio: defaults::RATIO,
        }]
    } else {
        exp.budgets.clone()
    };
    file_rules
        .into_iter()
        .map(|r| {
            let where_ = || {
                let mut s = String::from("budget rule");
                if let Some(m) = &r.model {
                    s.push_str(&format!(" for model {m}"));
                }
                if let Some(d) = &r.datasets {
                    s.push_str(&format!(" for datasets {}", d.join(", ")));
                }
                s
            };
            let bs = match &flag_budgets {
                Some(bs) => bs.clone(),
                None => match &r.budget {
                    OneOrMany::One(t) => vec![t.get().with_context(|| format!("{}: budget", where_()))?],
                    OneOrMany::Many(ts) => ts
                        .iter()
                        .map(|t| t.get().with_context(|| format!("{}: budget", where_())))
                        .collect::<Result<_>>()?,
                },
            };
            let window = match flag_window {
                Some(w) => w,
                None => r.window.get().with_context(|| format!("{}: window", where_()))?,
            };
            let ratio = args.ratio.unwrap_or(r.ratio);
            let budgets = bs
                .into_iter()
                .map(|budget| {
                    let b = Budget { budget, window, ratio };
                    b.validate().with_context(where_)?;
                    Ok(b)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Rule { model: r.model.clone(), datasets: r.datasets.clone(), budgets })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn run_args(extra: &[&str]) -> RunArgs {
        let argv = ["kvbench", "run"].iter().chain(extra).copied();
        match Cli::try_parse_from(argv).unwrap().command {
            Some(Command::Run(a)) => *a,
            _ => unreachable!(),
        }
    }

    fn b(budget: usize, window: usize, ratio: f64) -> Budget {
        Budget { budget, window, ratio }
    }

    fn write(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("kvbench-exp-{}-{name}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_figure_experiment_has_the_recipes_budgets() {
        let setup = resolve(&run_args(&["--experiment", "experiments/dynts-summary.toml"])).unwrap();
        assert_eq!(setup.runs.len(), 2);
        assert_eq!(setup.device, "cuda");
        let llama = &setup.runs[0].plan;
        assert_eq!(llama.samples, 5);
        assert_eq!(llama.sampling, SamplingParams::PAPER);
        assert_eq!(llama.policies.len(), 8);
        assert_eq!(llama.budgets["aime24"], vec![b(5000, 2000, 0.3)]);
        assert_eq!(llama.budgets["gpqa_diamond"], vec![b(5000, 2500, 0.3)]);
        assert_eq!(llama.budgets["math500"], vec![b(3000, 1000, 0.3)]);
        let qwen = &setup.runs[1].plan;
        assert_eq!(qwen.budgets["gpqa_diamond"], vec![b(5000, 2000, 0.4)]);
        assert_eq!(qwen.budgets["gaokao2023en"], vec![b(3000, 1500, 0.4)]);
        assert_eq!(qwen.predictor.as_deref(), Some(Path::new("predictors/r1-distill-qwen-7b.safetensors")));
        assert_eq!(setup.runs[1].out, Path::new("results/dynts-summary/deepseek-ai_DeepSeek-R1-Distill-Qwen-7B"));
        assert_eq!(setup.combined_out.as_deref(), Some(Path::new("results/dynts-summary")));
    }

    #[test]
    fn flags_override_the_file_field_by_field() {
        let setup = resolve(&run_args(&[
            "--experiment",
            "experiments/dynts-summary.toml",
            "--budget",
            "4k,6k",
            "--samples",
            "2",
            "--greedy",
            "--shard",
            "1/4",
        ]))
        .unwrap();
        let llama = &setup.runs[0].plan;
        // B is replaced everywhere; each dataset keeps its W and r.
        assert_eq!(llama.budgets["gpqa_diamond"], vec![b(4000, 2500, 0.3), b(6000, 2500, 0.3)]);
        assert_eq!(llama.budgets["math500"], vec![b(4000, 1000, 0.3), b(6000, 1000, 0.3)]);
        assert_eq!((llama.samples, llama.sampling), (2, SamplingParams::GREEDY));
        assert_eq!(setup.shard, Some(Shard { index: 1, count: 4 }));
        assert!(setup.runs[0].out.ends_with("deepseek-ai_DeepSeek-R1-Distill-Llama-8B/shard-1-of-4"));
        assert_eq!(setup.combined_out, None);
        // A single model from the command line takes only the rules that fit it.
        let err = resolve(&run_args(&["--experiment", "experiments/dynts-summary.toml", "--model", "someone/other"]))
            .unwrap_err();
        assert!(format!("{err:#}").contains("no budget rule covers model someone/other"), "{err:#}");
    }

    /// The experiment file `kvbench slurm` hands its tasks resolves to the very plans it came from:
    /// per-dataset and per-model budget rules, predictors, sampling, placement.
    #[test]
    fn a_written_experiment_reproduces_its_plans() {
        use crate::plan::experiment::Placement;
        for argv in [
            vec!["--experiment", "experiments/dynts-summary.toml", "--budget", "4k,6k", "--limit", "3"],
            vec!["--experiment", "experiments/builtin.toml", "--batch", "3", "--threads", "1"],
            vec![
                "--policies",
                "full,snapkv",
                "--samples",
                "2",
                "--seed",
                "7",
                "--ids",
                "1,4",
                "--system",
                "be 'brief'",
            ],
        ] {
            let setup = resolve(&run_args(&argv)).unwrap();
            let plans: Vec<(&str, &Plan)> = setup.runs.iter().map(|r| (r.name.as_str(), &r.plan)).collect();
            let placement = Placement {
                device: &setup.device,
                dtype: setup.dtype.as_deref(),
                threads: setup.threads,
                out: &setup.base_out,
            };
            let text =
                Experiment::from_plans(setup.description.clone(), &plans, &placement).to_toml("a header").unwrap();
            assert!(text.starts_with("# a header\n"), "{text}");
            let path = write(&format!("roundtrip-{}", argv.len()), &text);
            let again = resolve(&run_args(&["--experiment", path.to_str().unwrap()])).unwrap();
            assert_eq!(setup.runs.len(), again.runs.len());
            for (a, b) in setup.runs.iter().zip(&again.runs) {
                assert_eq!(a.plan, b.plan, "{argv:?}\n{text}");
                assert_eq!((&a.out, &a.name), (&b.out, &b.name));
            }
            assert_eq!((setup.device, setup.dtype, setup.threads), (again.device, again.dtype, again.threads));
        }
    }

    #[test]
    fn unknown_keys_and_bad_rules_are_named() {
        let path = write("typo", "datasets = [\"gsm8k\"]\nsampels = 5\n");
        let err = format!("{:#}", resolve(&run_args(&["--experiment", path.to_str().unwrap()])).unwrap_err());
        assert!(err.contains("sampels") && err.contains(path.to_str().unwrap()), "{err}");
        let path = write(
            "rule",
            "datasets = [\"gsm8k\"]\n[[budgets]]\ndatasets = [\"math500\"]\nbudget = 300\nwindow = 64\nratio = 0.3\n",
        );
        let err = format!("{:#}", resolve(&run_args(&["--experiment", path.to_str().unwrap()])).unwrap_err());
        assert!(err.contains("dataset 'math500'"), "{err}");
        let path =
            write("window", "datasets = [\"gsm8k\"]\n[[budgets]]\nbudget = \"1k\"\nwindow = \"2k\"\nratio = 0.3\n");
        let err = format!("{:#}", resolve(&run_args(&["--experiment", path.to_str().unwrap()])).unwrap_err());
        assert!(err.contains("--window (2000) must be smaller than --budget (1000)"), "{err}");
        let err = format!("{:#}", resolve(&run_args(&["--budget", "5kk"])).unwrap_err());
        assert!(err.contains("5kk"), "{err}");
    }
}
