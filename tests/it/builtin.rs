//! The built-in benchmark: with no model or data arguments `kvbench run` plans the committed toy
//! model on synthetic-chain, and that model reasons.

use std::process::Command;

fn kvbench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kvbench"))
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn with_no_model_run_plans_the_builtin_benchmark_and_says_so() {
    let out = kvbench().args(["run", "--policies", "all", "--dry-run"]).output().unwrap();
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("running the built-in benchmark"), "{t}");
    assert!(t.contains("builtin:toy-chain") && t.contains("synthetic-chain"), "{t}");
    for policy in ["full", "dynts", "window", "streamingllm", "sepllm", "h2o", "snapkv", "rkv"] {
        assert!(t.contains(policy), "{policy} missing from the plan: {t}");
    }
    // 200 problems × 8 policies.
    assert!(t.contains("1600 samples"), "{t}");
}

/// Held out: the model trained on another seed's stream of problems.
#[test]
fn the_toy_model_solves_held_out_problems_with_the_full_cache() {
    let out_dir = std::env::temp_dir().join(format!("kvbench-builtin-full-{}", std::process::id()));
    let out = kvbench()
        .args(["run", "--model", "builtin:toy-chain", "--datasets", "synthetic-chain", "--policies", "full"])
        .args(["--greedy", "--max-new-tokens", "512", "--batch", "8", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let summary = std::fs::read_to_string(out_dir.join("summary.csv")).unwrap();
    let mut reader = csv::Reader::from_reader(summary.as_bytes());
    let headers = reader.headers().unwrap().clone();
    let row = reader.records().next().unwrap().unwrap();
    let col = |name: &str| row[headers.iter().position(|h| h == name).unwrap()].to_string();
    assert_eq!(col("questions"), "200");
    let accuracy: f64 = col("accuracy").parse().unwrap();
    assert!(accuracy >= 95.0, "full-cache accuracy {accuracy} % on 200 held-out problems");
    std::fs::remove_dir_all(&out_dir).ok();
}

/// Accuracy of each policy of a run's summary, by name.
fn accuracies(summary: &std::path::Path) -> std::collections::HashMap<String, f64> {
    let mut reader = csv::Reader::from_path(summary).unwrap();
    let headers = reader.headers().unwrap().clone();
    let at = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (policy, accuracy) = (at("policy"), at("accuracy"));
    reader.records().map(|r| r.unwrap()).map(|r| (r[policy].to_string(), r[accuracy].parse().unwrap())).collect()
}

/// The committed predictor picks what matters: DynTS keeps more answers than its ablations that
/// keep a random or the least important part of the older thinking (same budget, same problems).
#[test]
fn the_trained_predictor_beats_random_and_bottom_selection() {
    let out_dir = std::env::temp_dir().join(format!("kvbench-builtin-ablation-{}", std::process::id()));
    let out = kvbench()
        .args(["run", "--policies", "dynts,dynts-random,dynts-bottom", "--limit", "100", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let acc = accuracies(&out_dir.join("summary.csv"));
    for ablation in ["dynts-random", "dynts-bottom"] {
        assert!(acc["dynts"] >= acc[ablation] + 15.0, "dynts {} vs {ablation} {}", acc["dynts"], acc[ablation]);
    }
    std::fs::remove_dir_all(&out_dir).ok();
}

#[test]
fn collecting_solutions_needs_worked_solutions() {
    let out = kvbench()
        .args(["dynts", "collect", "--solutions", "aime24", "--model", "builtin:toy-chain", "--out"])
        .arg(std::env::temp_dir().join("kvbench-never-written"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("aime24 has none"), "{}", text(&out));
}
