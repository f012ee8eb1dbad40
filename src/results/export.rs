//! `kvbench export --format lm-eval`: a results folder in the layout of lm-evaluation-harness's
//! `--output_path … --log_samples`, so that tools reading that format read kvbench's runs. Each
//! dataset × policy × (B, W, r) is one task, `<dataset>_<policy>` with `_b<B>_w<W>_r<r>` for an
//! evicting policy; its metrics are `exact_match` (avg@n), `pass@k` and `maj@k` (k = n), each with
//! the `none` filter, as fractions; `exact_match_stderr` is the standard error over questions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::record::{read_manifest, read_samples, SampleRecord};
use super::summary::{summarize, SummaryRow};
use crate::io::write_atomic;
use crate::plan::{expand, Plan};

/// The files written.
pub struct Exported {
    pub results: PathBuf,
    pub samples: Vec<PathBuf>,
}

/// The task name of a summary row (or a sample's configuration).
pub fn task_name(dataset: &str, policy: &str, budget: usize, window: usize, ratio: f64) -> String {
    if budget == 0 {
        format!("{dataset}_{policy}")
    } else {
        format!("{dataset}_{policy}_b{budget}_w{window}_r{ratio}")
    }
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// lm-eval's file-name timestamp, `2026-12-02T01-02-03.000000` (UTC).
fn timestamp(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!("{year:04}-{month:02}-{day:02}T{:02}-{:02}-{:02}.000000", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn generation_kwargs(plan: &Plan) -> Value {
    let s = &plan.sampling;
    json!({
        "max_gen_toks": plan.max_new_tokens,
        "do_sample": s.temperature > 0.0,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": s.top_k,
    })
}

/// Writes `<out>/<model>/results_<time>.json` and one `samples_<task>_<time>.jsonl` per task.
/// The questions' texts come from the datasets (`data_dir`), as the plan read them.
pub fn export_lm_eval(run: &Path, out: &Path, data_dir: &Path, now_secs: u64) -> Result<Exported> {
    let manifest =
        read_manifest(run)?.with_context(|| format!("{} has no manifest.json: not a results folder", run.display()))?;
    let plan = &manifest.plan;
    let records = read_samples(&run.join("samples.jsonl"))?;
    if records.is_empty() {
        anyhow::bail!("{} holds no samples yet", run.display());
    }
    let questions: BTreeMap<(String, usize), crate::data::Question> =
        expand(plan, data_dir)?.into_iter().map(|j| ((j.dataset.clone(), j.question.index), j.question)).collect();
    let refs: Vec<&SampleRecord> = records.iter().collect();
    let rows: Vec<SummaryRow> = summarize(&refs, &plan.model);
    let stamp = timestamp(now_secs);
    let dir = out.join(plan.model.replace(['/', ':', '@', '\\'], "__"));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let mut results = serde_json::Map::new();
    let mut configs = serde_json::Map::new();
    let (mut versions, mut n_shot, mut higher, mut n_samples) =
        (serde_json::Map::new(), serde_json::Map::new(), serde_json::Map::new(), serde_json::Map::new());
    let mut sample_files = Vec::new();
    let version = env!("CARGO_PKG_VERSION");
    for row in &rows {
        let task = task_name(&row.dataset, &row.policy, row.budget, row.window, row.ratio);
        let mine: Vec<&SampleRecord> = records
            .iter()
            .filter(|r| {
                r.dataset == row.dataset
                    && r.policy == row.policy
                    && r.budget == row.budget
                    && r.window == row.window
                    && r.ratio == row.ratio
            })
            .collect();
        let mut by_q: BTreeMap<usize, Vec<&SampleRecord>> = BTreeMap::new();
        for r in &mine {
            by_q.entry(r.question_index).or_default().push(r);
        }
        let mut lines = String::new();
        for (q, mut rs) in by_q {
            rs.sort_by_key(|r| r.sample);
            let question = questions.get(&(row.dataset.clone(), q));
            let mut content = question.map(|x| x.question.clone()).unwrap_or_default();
            if let Some(instr) = &plan.instruction {
                content = format!("{content}\n{instr}");
            }
            let doc = json!({
                "question_id": rs[0].question_id,
                "question": question.map(|x| x.question.as_str()),
                "answer": rs[0].reference,
            });
            let correct = rs.iter().filter(|r| r.correct).count();
            let exact = correct as f64 / rs.len() as f64;
            let line = json!({
                "doc_id": q,
                "doc": doc,
                "target": rs[0].reference,
                "arguments": { "gen_args_0": { "arg_0": content, "arg_1": generation_kwargs(plan) } },
                "resps": [rs.iter().map(|r| r.completion.as_str()).collect::<Vec<_>>()],
                "filtered_resps": [rs.iter().map(|r| r.extracted.as_deref()).collect::<Vec<_>>()],
                "filter": "none",
                "metrics": ["exact_match", "pass@k", "maj@k"],
                "doc_hash": sha256(&serde_json::to_string_pretty(&doc)?),
                "prompt_hash": sha256(&content),
                "target_hash": sha256(&rs[0].reference),
                "exact_match": exact,
                "pass@k": (correct > 0) as u8 as f64,
                "kvbench": rs.iter().map(|r| json!({
                    "sample": r.sample, "correct": r.correct, "reason": r.reason, "extraction": r.extraction,
                    "generated_tokens": r.generated_tokens, "peak_kv": r.peak_kv, "evictions": r.evictions,
                })).collect::<Vec<_>>(),
            });
            lines.push_str(&serde_json::to_string(&line)?);
            lines.push('\n');
        }
        let path = dir.join(format!("samples_{task}_{stamp}.jsonl"));
        write_atomic(&path, lines.as_bytes())?;
        sample_files.push(path);

        let stderr = row.accuracy_ci95 / 1.96 / 100.0;
        results.insert(
            task.clone(),
            json!({
                "alias": task,
                "exact_match,none": row.accuracy / 100.0,
                "exact_match_stderr,none": stderr,
                "pass@k,none": row.pass_at_k / 100.0,
                "pass@k_stderr,none": "N/A",
                "maj@k,none": row.maj_at_k / 100.0,
                "maj@k_stderr,none": "N/A",
            }),
        );
        let budgeted = row.budget > 0;
        configs.insert(
            task.clone(),
            json!({
                "task": task,
                "dataset_path": row.dataset,
                "output_type": "generate_until",
                "num_fewshot": 0,
                "repeats": row.samples,
                "generation_kwargs": generation_kwargs(plan),
                "metric_list": [
                    {"metric": "exact_match", "aggregation": "mean", "higher_is_better": true},
                    {"metric": "pass@k", "aggregation": "mean", "higher_is_better": true},
                    {"metric": "maj@k", "aggregation": "mean", "higher_is_better": true},
                ],
                "metadata": {
                    "kvbench_policy": row.policy,
                    "budget": budgeted.then_some(row.budget),
                    "window": budgeted.then_some(row.window),
                    "ratio": budgeted.then_some(row.ratio),
                    "policy_params": plan.policies.iter().position(|p| *p == row.policy).map(|i| &plan.policy_params[i]),
                    "system": plan.system,
                    "instruction": plan.instruction,
                    "peak_kv": row.peak_kv,
                    "generated_tokens": row.generated_tokens,
                },
            }),
        );
        versions.insert(task.clone(), json!(version));
        n_shot.insert(task.clone(), json!(0));
        higher.insert(task.clone(), json!({"exact_match": true, "pass@k": true, "maj@k": true}));
        n_samples.insert(task.clone(), json!({"original": row.questions, "effective": row.questions}));
    }
    let provenance = |k: &str| manifest.provenance.get(k).cloned().unwrap_or(Value::Null);
    let doc = json!({
        "results": results,
        "configs": configs,
        "versions": versions,
        "n-shot": n_shot,
        "higher_is_better": higher,
        "n-samples": n_samples,
        "config": {
            "model": "kvbench",
            "model_args": format!("pretrained={}", plan.model),
            "batch_size": plan.batch,
            "device": provenance("device"),
            "gen_kwargs": generation_kwargs(plan),
            "random_seed": plan.seed,
        },
        "git_hash": provenance("git_commit"),
        "date": now_secs as f64,
        "model_name": plan.model,
        "kvbench_version": version,
        "kvbench_plan": plan,
        "kvbench_provenance": manifest.provenance,
    });
    let results_path = dir.join(format!("results_{stamp}.json"));
    write_atomic(&results_path, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    Ok(Exported { results: results_path, samples: sample_files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_task_names_follow_lm_eval() {
        assert_eq!(timestamp(0), "1970-01-01T00-00-00.000000");
        assert_eq!(timestamp(1_796_173_323), "2026-12-02T01-02-03.000000");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00-00-00.000000");
        assert_eq!(task_name("gsm8k", "full", 0, 0, 1.0), "gsm8k_full");
        assert_eq!(task_name("gsm8k", "snapkv", 256, 64, 0.3), "gsm8k_snapkv_b256_w64_r0.3");
    }
}
