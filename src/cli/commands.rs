//! Subcommand bodies: each turns its arguments into a validated plan, then does the work.

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::Parser;

use super::args::{Cli, Command, GenerateArgs, GradeArgs, MergeArgs, PlotArgs, PoliciesArgs, RunArgs};
use crate::decode::generate::GenerateParams;
use crate::eval::sample::{run_sample, PolicyResources, Sample};
use crate::grading::{grade, grade_completion, kind_for_dataset, reference_answer, Graded, EXTRACTION_METHODS};
use crate::model::chat_template::ChatMessage;
use crate::policies::registry::{self, PolicySpec};
use crate::policies::trace::TraceSink;
use crate::rng::Rng;

/// Runs a parsed command line; returns the process exit code.
pub fn run(cli: Cli) -> Result<u8> {
    let Some(command) = cli.command else { return main_job() };
    match command {
        Command::Generate(args) => cmd_generate(*args),
        Command::Policies(args) => cmd_policies(args),
        Command::Grade(args) => cmd_grade(args),
        Command::Export(args) => cmd_export(args),
        Command::Run(args) => cmd_run(*args),
        Command::Slurm(args) => super::slurm::cmd_slurm(*args),
        Command::Merge(args) => cmd_merge(args),
        Command::Plot(args) => cmd_plot(args),
        Command::TrainToy(args) => cmd_train_toy(args),
        Command::Check(args) => cmd_check(args),
        Command::Bench(args) => cmd_bench(*args),
        Command::Dynts(super::args::DyntsCommand::Collect(args)) => cmd_dynts_collect(args),
        Command::Dynts(super::args::DyntsCommand::Train(args)) => cmd_dynts_train(args),
    }
}

/// `kvbench` alone (and so `cargo run --release`): the built-in benchmark, then its figures.
fn main_job() -> Result<u8> {
    eprintln!("no command: the built-in benchmark, then its figures (`kvbench --help` lists the commands)");
    let summaries = run_plans(RunArgs::default())?;
    for summary in summaries {
        let summary = summary.to_str().context("a results path that is not UTF-8")?;
        let Some(Command::Plot(args)) = Cli::try_parse_from(["kvbench", "plot", summary])?.command else {
            unreachable!("`kvbench plot` parses as the plot command")
        };
        cmd_plot(args)?;
    }
    Ok(0)
}

fn cmd_check(args: super::args::CheckArgs) -> Result<u8> {
    let o = crate::results::check::CheckOptions { tolerance: args.tolerance, z: args.z, max_flipped: args.max_flipped };
    let report = crate::results::check::check(&args.result, &args.against, &o)?;
    print!("{}", report.table());
    Ok(if report.passed() { 0 } else { 1 })
}

fn cmd_dynts_collect(args: super::args::DyntsCollectArgs) -> Result<u8> {
    use crate::dynts::collect::TraceSource;
    let source = match (args.run, args.solutions, args.model) {
        (Some(run), None, _) => TraceSource::Run(run),
        (None, Some(dataset), Some(model)) => {
            TraceSource::Solutions { model, dataset, limit: args.limit, instruction: args.instruction }
        }
        _ => anyhow::bail!("give --run DIR, or --solutions DATASET with --model"),
    };
    let data_dir = crate::data::data_dir(args.data_dir.as_deref());
    let load = super::args::load_options(&args.device, args.dtype.as_deref(), args.weights)?;
    let s = crate::dynts::collect::collect(&source, &args.out, &data_dir, &load)?;
    println!(
        "wrote {}: {} traces of {} ({} skipped for their structure; {} questions left out as an \
         evaluation set's), {} thinking tokens",
        args.out.join("traces.safetensors").display(),
        s.traces,
        s.candidates,
        s.skipped_format,
        s.held_out,
        s.thinking_tokens
    );
    Ok(0)
}

fn cmd_dynts_train(args: super::args::DyntsTrainArgs) -> Result<u8> {
    let o = crate::dynts::fit::FitOptions {
        traces: args.traces,
        out: args.out,
        transform: args.transform,
        hidden: args.hidden.map(|h| (h[0], h[1])),
        epochs: args.epochs,
        batch: args.batch,
        lr: args.lr,
        seed: args.seed,
    };
    let r = crate::dynts::fit::fit(&o)?;
    println!(
        "wrote {}: {:?} labels, MLP {}→{}→{}→1, held-out weighted MSE {:.4} (untrained {:.4}), Spearman {:.3}, {:.0} s",
        o.out.display(),
        r.transform,
        r.input_size,
        r.hidden.0,
        r.hidden.1,
        r.validation_loss,
        r.validation_loss_initial,
        r.validation_spearman,
        r.seconds
    );
    Ok(0)
}

fn cmd_bench(args: super::args::BenchArgs) -> Result<u8> {
    use crate::policies::parse_tokens;
    if let Some(n) = args.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        // candle's kernels read the variable; rayon's pool (the decoder's own kernels) is built
        // with the same count before anything else uses it.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().ok();
    }
    let names = crate::policies::registry::expand_names(&args.policies)?;
    let policies = names.iter().map(|n| PolicySpec::resolve(n, None)).collect::<Result<Vec<_>>>()?;
    let budget = crate::policies::Budget::from_flags(&args.budget, &args.window, args.ratio)?;
    let contexts = args
        .context
        .iter()
        .map(|c| parse_tokens(c).with_context(|| format!("--context {c}")))
        .collect::<Result<Vec<_>>>()?;
    let source = args.model.source()?;
    let plan = crate::bench::BenchPlan {
        predictor: args.predictor.or_else(|| {
            matches!(source, crate::model::source::ModelSource::BuiltIn { .. })
                .then(|| crate::model::source::builtin_dir().join("dynts-predictor.safetensors"))
        }),
        source,
        load: args.model.load_options()?,
        policies,
        budget,
        prompt: parse_tokens(&args.prompt).context("--prompt")?,
        contexts,
        steps: args.steps,
        batches: args.batch,
        decode: args.decode,
        kernels: args.kernels,
        prefill_chunk: args.prefill_chunk,
        seed: args.seed,
        bandwidth_gib: args.bandwidth_gib,
        out: args.out,
    };
    plan.validate()?;
    let mut lm = crate::model::load(&plan.source, &plan.load)?;
    if let Some(kernels) = plan.kernels {
        lm.model.set_kernels(kernels);
    }
    let rows = crate::bench::run(&plan, &lm)?;
    crate::io::write_atomic(&plan.out, &crate::bench::csv(&rows)?)?;
    eprintln!("wrote {} ({} rows)", plan.out.display(), rows.len());
    Ok(0)
}

fn cmd_train_toy(args: super::args::TrainToyArgs) -> Result<u8> {
    // The shards of a step run side by side on rayon's threads, one per core; candle's kernels, on
    // matrices this small, gain less from threads of their own than the shards do, so after rayon's
    // pool is built candle is told to use one thread (it reads the variable at every call; nothing
    // else runs in this process).
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        rayon::ThreadPoolBuilder::new().build_global().ok();
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let def = crate::data::definition(crate::toy::BUILTIN_DATASET)?;
    let task = def.generator.context("synthetic-chain has no generator")?;
    let o = crate::toy::train::TrainOptions {
        out: args.out,
        shape: crate::toy::ToyShape::default(),
        // The evaluation set's lengths; the mix of lookups and operations of the training stream.
        task: crate::data::synthetic::ChainParams {
            seed: args.task_seed,
            ops: args.ops,
            fact_ref: args.fact_ref,
            steps: args.statements.unwrap_or(task.steps),
            ..task
        },
        seed: args.seed,
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        min_lr: args.min_lr,
        warmup: args.warmup,
        decay_from: args.decay_from,
        weight_decay: 0.1,
        clip: 1.0,
        log_every: args.log_every,
        init: args.init,
        first_step: args.first_step,
    };
    let s = crate::toy::train::train(&o)?;
    println!(
        "wrote {} (held-out: loss {:.4}, lookup {:.3}, solved {:.3})",
        o.out.display(),
        s.loss,
        s.lookup_acc,
        s.solved
    );
    Ok(0)
}

fn cmd_plot(args: PlotArgs) -> Result<u8> {
    let budget = args.budget.as_deref().map(crate::policies::parse_tokens).transpose().context("--budget")?;
    let out = args.out.clone().unwrap_or_else(|| {
        // results/<run>/summary.csv → plots/<run>
        match args.summary.parent().and_then(|p| p.file_name()) {
            Some(run) => std::path::Path::new("plots").join(run),
            None => "plots".into(),
        }
    });
    let opts = crate::plot::PlotOptions { budget, title: args.title, stem: args.stem, highlight: args.highlight };
    let written = crate::plot::render(&args.summary, &out, &opts)?;
    let mut stdout = std::io::stdout().lock();
    for path in written {
        writeln!(stdout, "{}", path.display())?;
    }
    Ok(0)
}

fn cmd_run(args: RunArgs) -> Result<u8> {
    run_plans(args)?;
    Ok(0)
}

/// `kvbench run`'s work; returns the summaries written (none for a dry run).
fn run_plans(args: RunArgs) -> Result<Vec<std::path::PathBuf>> {
    use crate::eval::worker::{run, RunConfig};
    use crate::plan::{budget_label, expand};
    let setup = super::setup::resolve(&args)?;
    let estimate_inputs = if args.dry_run { Some(super::estimate::EstimateInputs::from_args(&args)?) } else { None };
    if args.model.is_none() && args.experiment.is_none() {
        eprintln!(
            "no --model or --experiment: running the built-in benchmark ({}: the toy model on synthetic-chain)",
            crate::plan::experiment::BUILTIN_EXPERIMENT
        );
    }
    // Every model's plan is expanded and checked before the first weight is loaded.
    let mut expanded = Vec::new();
    for r in &setup.runs {
        let jobs = expand(&r.plan, &setup.data_dir)?;
        // A folder of another plan is refused by the real run; the dry run says so too.
        crate::results::record::check_manifest(&r.out, &r.plan, setup.shard)?;
        let label = |d: &String| r.plan.budgets[d].iter().map(|b| budget_label(Some(b))).collect::<Vec<_>>().join(" ");
        let first = label(&r.plan.datasets[0]);
        let budgets: Vec<String> = if r.plan.datasets.iter().all(|d| label(d) == first) {
            vec![first]
        } else {
            r.plan.datasets.iter().map(|d| format!("{d}: {}", label(d))).collect()
        };
        let shown = match setup.shard {
            Some(s) => format!("shard {s} of {} samples", jobs.len()),
            None => format!("{} samples", jobs.len()),
        };
        eprintln!(
            "plan: {} on {shown} = policies [{}] × budgets [{}] × n {} → {}",
            r.plan.model,
            r.plan.policies.join(", "),
            budgets.join("; "),
            r.plan.samples,
            r.out.display()
        );
        if let Some(inputs) = &estimate_inputs {
            let bound = jobs.len() as u64 * r.plan.max_new_tokens as u64;
            eprintln!(
                "  decodes at most {bound} tokens in all ({} samples × max_new_tokens {})",
                jobs.len(),
                r.plan.max_new_tokens
            );
            let part = crate::plan::shard_jobs(&r.plan, jobs.clone(), setup.shard);
            for line in super::estimate::describe(&setup, r, &part, inputs, None)? {
                eprintln!("  {line}");
            }
        }
        expanded.push(jobs);
    }
    if args.dry_run {
        return Ok(Vec::new());
    }
    let load = super::args::load_options(&setup.device, setup.dtype.as_deref(), setup.weights)?;
    let mut summaries = Vec::new();
    for (r, jobs) in setup.runs.iter().zip(expanded) {
        let cfg = RunConfig {
            out: r.out.clone(),
            data_dir: setup.data_dir.clone(),
            source: r.source.clone(),
            load: load.clone(),
            threads: setup.threads,
            shard: setup.shard,
        };
        let report = run(&r.plan, jobs, &cfg)?;
        let occupancy = match report.slot_occupancy {
            Some(o) => format!(", slots {:.0} % busy", 100.0 * o),
            None => String::new(),
        };
        eprintln!(
            "ran {} samples, {} already done{occupancy}; summary: {}",
            report.ran,
            report.skipped,
            r.out.join("summary.csv").display()
        );
        summaries.push(r.out.join("summary.csv"));
    }
    if let Some(out) = &setup.combined_out {
        let path = out.join("summary.csv");
        crate::results::summary::concat_csv(&summaries, &path)?;
        eprintln!("all models: {}", path.display());
    }
    Ok(summaries)
}

fn cmd_merge(args: MergeArgs) -> Result<u8> {
    let data_dir = crate::data::data_dir(args.data_dir.as_deref());
    let n = crate::eval::merge::merge(&args.out, &args.shards, &data_dir, args.allow_partial)?;
    eprintln!("merged {n} samples from {} shards into {}", args.shards.len(), args.out.display());
    Ok(0)
}

fn cmd_export(args: super::args::ExportArgs) -> Result<u8> {
    let super::args::ExportFormat::LmEval = args.format;
    let data_dir = crate::data::data_dir(args.data_dir.as_deref());
    let out = args.out.unwrap_or_else(|| args.run.join("lm-eval"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let e = crate::results::export::export_lm_eval(&args.run, &out, &data_dir, now)?;
    println!("{}", e.results.display());
    for s in &e.samples {
        println!("{}", s.display());
    }
    Ok(0)
}

fn cmd_grade(args: GradeArgs) -> Result<u8> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let mut lines = Vec::new();
    let mut totals: std::collections::BTreeMap<String, GradeTotals> = Default::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", args.file.display(), i + 1);
        let mut rec: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).with_context(|| format!("{}: malformed JSON line", at()))?;
        let field = |k: &str| -> Result<String> {
            match rec.get(k) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Number(n)) => Ok(n.to_string()),
                _ => bail!("{}: missing string field '{k}'", at()),
            }
        };
        let (prediction, reference, dataset) = (field("prediction")?, field("reference")?, field("dataset")?);
        let kind = kind_for_dataset(&dataset).with_context(|| format!("{}: unknown dataset '{dataset}'", at()))?;
        let (answer, method, reference, verdict) = if args.extracted {
            let reference = reference_answer(&reference, &dataset);
            let verdict = grade(Some(&prediction), &reference, kind);
            (Some(prediction.clone()), "given", reference, verdict)
        } else {
            let Graded { extracted, reference, verdict } = grade_completion(&prediction, &reference, &dataset, kind);
            (extracted.answer, extracted.method, reference, verdict)
        };
        totals.entry(dataset).or_default().add(verdict.correct, method);
        rec.insert("extracted".into(), answer.into());
        rec.insert("extraction".into(), method.into());
        rec.insert("reference_answer".into(), reference.into());
        rec.insert("correct".into(), verdict.correct.into());
        rec.insert("reason".into(), verdict.reason.into());
        lines.push(serde_json::to_string(&rec)?);
    }
    let body = lines.join("\n") + "\n";
    match &args.out {
        Some(out) => crate::io::write_atomic(out, body.as_bytes())?,
        None => std::io::stdout().lock().write_all(body.as_bytes())?,
    }
    for (dataset, t) in totals {
        eprintln!("{dataset}: {}", t.describe());
    }
    Ok(0)
}

/// One dataset's line of `kvbench grade`: accuracy, and how the answers were found, so that a
/// model whose format defeats extraction shows as many "none" or "last number".
#[derive(Default)]
struct GradeTotals {
    correct: usize,
    n: usize,
    /// Count per extraction rule, keyed by the rule's place in [`EXTRACTION_METHODS`] ("given",
    /// for `--extracted`, after them).
    methods: std::collections::BTreeMap<(usize, &'static str), usize>,
}

impl GradeTotals {
    fn add(&mut self, correct: bool, method: &'static str) {
        self.correct += correct as usize;
        self.n += 1;
        let rank = EXTRACTION_METHODS.iter().position(|m| *m == method).unwrap_or(EXTRACTION_METHODS.len());
        *self.methods.entry((rank, method)).or_default() += 1;
    }

    fn describe(&self) -> String {
        let by: Vec<String> = self.methods.iter().map(|((_, m), c)| format!("{m} {c}")).collect();
        format!(
            "{}/{} correct ({:.1} %); extracted by: {}",
            self.correct,
            self.n,
            100.0 * self.correct as f64 / self.n as f64,
            by.join(", ")
        )
    }
}

fn cmd_policies(args: PoliciesArgs) -> Result<u8> {
    let mut out = std::io::stdout().lock();
    for p in registry::presets()? {
        let figure = if registry::FIGURE_POLICIES.contains(&p.name.as_str()) { "*" } else { " " };
        writeln!(out, "{figure} {:<15} {}", p.name, p.description)?;
        if args.verbose {
            writeln!(out, "    label: {}  family: {}  source: {}", p.label, p.family, p.source)?;
            if !p.paper.is_empty() {
                writeln!(out, "    paper: {}", p.paper)?;
            }
            for (k, v) in &p.params {
                writeln!(out, "    {k} = {v}")?;
            }
        }
    }
    writeln!(out, "\n* = in the DynTS summary figure (`--policies all`)")?;
    Ok(0)
}

fn cmd_generate(args: GenerateArgs) -> Result<u8> {
    // Plan: everything that can be wrong with the arguments is found before loading weights.
    let user = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading --prompt-file {}", f.display()))?
        }
        (None, None) => bail!("give a prompt with --prompt or --prompt-file"),
    };
    if user.trim().is_empty() {
        bail!("the prompt is empty");
    }
    if args.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    if args.prefill_chunk == 0 {
        bail!("--prefill-chunk must be at least 1");
    }
    let sampling = args.sampling.params()?;
    let spec = PolicySpec::resolve(&args.policy.policy, None)?;
    let budget = args.policy.budget()?;
    spec.validate(&budget)?;
    if spec.needs_predictor() && args.policy.predictor.is_none() {
        bail!("policy {} needs --predictor FILE.safetensors (importance-predictor weights)", spec.name);
    }
    let source = args.model.source()?;
    let opts = args.model.load_options()?;
    let trace = match &args.policy.trace {
        Some(path) => Some(TraceSink::create(path)?),
        None => None,
    };

    let lm = crate::model::load(&source, &opts)?;
    let text = if args.raw {
        user
    } else {
        let template = lm.chat_template.as_ref().context("the model has no chat template; use --raw")?;
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage { role: "system".into(), content: system.clone() });
        }
        messages.push(ChatMessage { role: "user".into(), content: user });
        template.render(&messages, true)?
    };
    let prompt = crate::model::source::encode(&lm.tokenizer, &text)?;
    let params = GenerateParams {
        max_new_tokens: args.max_new_tokens,
        sampling,
        stop_tokens: if args.ignore_eos { Vec::new() } else { lm.eos_token_ids.clone() },
        prefill_chunk: args.prefill_chunk,
    };
    let resources = PolicyResources::new(&lm, args.policy.predictor.as_deref())?;
    let rng = Rng::new(args.sampling.seed);
    let trace = trace.as_ref().map(|t| (t, "generate".to_string()));
    let sample = Sample { policy: &spec, budget: Some(budget), prompt: &prompt, params: &params, rng, trace };
    let sample = run_sample(&lm, &resources, sample)?;
    let out = &sample.generation;
    let completion = lm.completion(&out.tokens)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{completion}")?;
    stdout.flush()?;
    let policy_share =
        if out.decode_secs > 0.0 { sample.stats.policy_secs / (out.prefill_secs + out.decode_secs) } else { 0.0 };
    eprintln!(
        "policy={} prompt_tokens={} generated_tokens={} stop={} prefill_s={:.3} decode_tokens_per_s={:.1} peak_kv={} evictions={} policy_time_share={:.3}",
        spec.name,
        out.prompt_tokens,
        out.tokens.len(),
        serde_json::to_value(out.stop)?.as_str().unwrap_or("?"),
        out.prefill_secs,
        out.decode_tokens_per_sec(),
        out.peak_kv,
        sample.stats.evictions,
        policy_share
    );
    Ok(0)
}
