//! A plan's estimated cost (`kvbench run --dry-run`, `kvbench slurm`): prompt tokens counted with
//! the tokenizer alone equal what the run fed the model, pilot lengths stand in for generated
//! ones, and a calibration turns tokens into time by the documented rule.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cli::tempdir;
use crate::common;

fn kvbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvbench")).args(args).output().unwrap()
}

fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("results/builtin-reference")
}

/// The reference run's prompt and generated tokens, summed over its samples.
fn reference_tokens() -> (u64, u64) {
    let text = std::fs::read_to_string(reference().join("samples.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).fold((0, 0), |(p, g), s| {
        (p + s["prompt_tokens"].as_u64().unwrap(), g + s["generated_tokens"].as_u64().unwrap())
    })
}

const HEADER: &str =
    "model,device,dtype,weights,threads,policy,batch,decode,context,prefill_tok_s,cache_len,ms_per_step\n";

fn write_calibration(dir: &Path, rows: &str) -> PathBuf {
    let path = dir.join("bench.csv");
    std::fs::write(&path, format!("{HEADER}{rows}")).unwrap();
    path
}

#[test]
fn a_dry_run_counts_the_prompts_the_run_fed_and_the_pilots_lengths() {
    let dir = tempdir("estimate-tokens");
    let cal = write_calibration(&dir, "other.gguf,cuda,bf16,dequantized,1,full,8,pool,100,1000,100,1\n");
    let out_dir = dir.join("run");
    let args = ["run", "--dry-run", "--out", out_dir.to_str().unwrap(), "--calibration", cal.to_str().unwrap()];
    let pilot = reference();
    let out = kvbench(&[&args[..], &["--pilot", pilot.to_str().unwrap()]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let (prompt, generated) = reference_tokens();
    let want = format!(
        "estimate: 1600 samples to run (0 done); {prompt} prompt tokens; ≈ {generated} generated (means of 1600 of the pilot"
    );
    assert!(stderr.contains(&want), "wanted {want:?} in {stderr}");
    assert!(stderr.contains("has no rows for builtin:toy-chain on cpu (f32, dequantized weights)"), "{stderr}");
    assert!(stderr.contains("it has: other.gguf on cuda (bf16, dequantized weights)"), "{stderr}");
    assert!(
        stderr.contains("time this model with `kvbench bench --model builtin:toy-chain --device cpu --batch 8"),
        "{stderr}"
    );

    // Without a pilot every sample counts max_new_tokens.
    let out = kvbench(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("; {prompt} prompt tokens; at most 819200 generated (max_new_tokens each")),
        "{stderr}"
    );

    // Samples already in the folder are done, and their lengths stand in for the rest.
    std::fs::create_dir_all(&out_dir).unwrap();
    std::fs::copy(pilot.join("manifest.json"), out_dir.join("manifest.json")).unwrap();
    let samples = std::fs::read_to_string(pilot.join("samples.jsonl")).unwrap();
    let first: String = samples.lines().take(100).map(|l| format!("{l}\n")).collect();
    std::fs::write(out_dir.join("samples.jsonl"), first).unwrap();
    let out = kvbench(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1500 samples to run (100 done)"), "{stderr}");
    assert!(stderr.contains(" generated (means of 100 finished here)"), "{stderr}");
}

/// Flat 8 ms per step of 8 rows (1 ms a token) and 1,000 prompt tokens a second: the time is
/// one millisecond per prompt or generated token. The calibration's 1,024 threads leave no room
/// for a second worker beside the first, so the workers do not divide it.
#[test]
fn a_calibration_turns_tokens_into_time_and_slurm_divides_it_by_tasks() {
    let dir = tempdir("estimate-time");
    let cal = write_calibration(
        &dir,
        "builtin:toy-chain,cpu,f32,dequantized,1024,full,8,pool,200,1000,200,8\n\
         builtin:toy-chain,cpu,f32,dequantized,1024,full,8,pool,400,1000,400,8\n",
    );
    let (cal, pilot) = (cal.to_str().unwrap(), reference());
    let out_dir = dir.join("run");
    let inputs = ["--out", out_dir.to_str().unwrap(), "--calibration", cal, "--pilot", pilot.to_str().unwrap()];
    let out = kvbench(&[&["run", "--dry-run"], &inputs[..]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let (prompt, generated) = reference_tokens();
    let minutes = ((prompt + generated) as f64 / 1e3 / 60.0).round();
    let want = format!("time: ≈ {minutes} min on cpu (calibration {cal}: 1024 threads per worker, 1 of 2 workers");
    assert!(stderr.contains(&want), "wanted {want:?} in {stderr}");
    assert!(stderr.contains("not timed, counted as another: dynts as full"), "{stderr}");

    let out = kvbench(&[&["slurm", "--shards", "4"], &inputs[..]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let per_task = ((prompt + generated) as f64 / 1e3 / 4.0 / 60.0).round();
    assert!(stderr.contains(&format!("; {per_task} min per array task of 4")), "{stderr}");
}

#[test]
fn a_missing_calibration_or_pilot_is_named() {
    let out = kvbench(&["run", "--dry-run", "--calibration", "/nonexistent/bench.csv"]);
    common::assert_usage_error(&out, &["--calibration /nonexistent/bench.csv: no such file"]);
    let out = kvbench(&["run", "--dry-run", "--pilot", "/nonexistent/run"]);
    common::assert_usage_error(&out, &["--pilot /nonexistent/run: no samples.jsonl there"]);
}
