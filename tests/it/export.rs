//! `kvbench export --format lm-eval`, read back: lm-evaluation-harness's results JSON and
//! per-sample JSONL, whose values equal the run's summary.csv and samples.jsonl.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use kvbench::results::export::task_name;
use kvbench::results::summary::SummaryRow;

#[test]
fn the_lm_eval_export_reads_back_as_the_summary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = root.join("results/builtin-reference");
    let out = crate::cli::tempdir("export-lm-eval");
    let o = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .current_dir(root)
        .args(["export", "--format", "lm-eval", "--out"])
        .arg(&out)
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let written: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect();
    let results_path = written.iter().find(|p| p.contains("/results_")).expect("no results file");
    assert!(results_path.starts_with(out.join("builtin__toy-chain").to_str().unwrap()), "{results_path}");
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(results_path).unwrap()).unwrap();
    for key in ["results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config", "date"] {
        assert!(results.get(key).is_some(), "results JSON lacks {key}");
    }

    let rows: Vec<SummaryRow> =
        csv::Reader::from_path(run.join("summary.csv")).unwrap().deserialize().map(|r| r.unwrap()).collect();
    assert_eq!(results["results"].as_object().unwrap().len(), rows.len());
    // Each sample's verdict, by task and question.
    let mut correct: BTreeMap<(String, u64), bool> = BTreeMap::new();
    for line in std::fs::read_to_string(run.join("samples.jsonl")).unwrap().lines() {
        let s: serde_json::Value = serde_json::from_str(line).unwrap();
        let task = task_name(
            s["dataset"].as_str().unwrap(),
            s["policy"].as_str().unwrap(),
            s["budget"].as_u64().unwrap() as usize,
            s["window"].as_u64().unwrap() as usize,
            s["ratio"].as_f64().unwrap(),
        );
        correct.insert((task, s["question_index"].as_u64().unwrap()), s["correct"].as_bool().unwrap());
    }
    for row in &rows {
        let task = task_name(&row.dataset, &row.policy, row.budget, row.window, row.ratio);
        let r = &results["results"][&task];
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(r["exact_match,none"].as_f64().unwrap() * 100.0, row.accuracy), "{task}: {r}");
        assert!(close(r["exact_match_stderr,none"].as_f64().unwrap() * 196.0, row.accuracy_ci95), "{task}: {r}");
        assert!(close(r["pass@k,none"].as_f64().unwrap() * 100.0, row.pass_at_k), "{task}: {r}");
        assert!(close(r["maj@k,none"].as_f64().unwrap() * 100.0, row.maj_at_k), "{task}: {r}");
        assert_eq!(results["n-samples"][&task]["effective"].as_u64(), Some(row.questions as u64));
        assert_eq!(results["configs"][&task]["repeats"].as_u64(), Some(row.samples as u64));
        let samples = written.iter().find(|p| p.contains(&format!("/samples_{task}_"))).expect("no samples file");
        let lines: Vec<serde_json::Value> =
            std::fs::read_to_string(samples).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), row.questions, "{task}");
        for l in &lines {
            let doc_id = l["doc_id"].as_u64().unwrap();
            let expected = correct[&(task.clone(), doc_id)];
            assert_eq!(l["exact_match"].as_f64(), Some(expected as u8 as f64), "{task} doc {doc_id}");
            assert_eq!(l["filter"], "none");
            assert_eq!(l["target"], l["doc"]["answer"]);
            assert!(l["resps"][0][0].as_str().is_some_and(|c| !c.is_empty()), "{task} doc {doc_id}: no response");
            for h in ["doc_hash", "prompt_hash", "target_hash"] {
                assert_eq!(l[h].as_str().map(str::len), Some(64), "{h}");
            }
        }
    }
}
