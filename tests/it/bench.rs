//! `kvbench bench` on the built-in toy model: the rows it measures say what was timed.

use std::process::Command;

fn kvbench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kvbench"))
}

fn text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn bench_times_each_policy_at_each_context_and_writes_the_csv() {
    let csv_path = std::env::temp_dir().join(format!("kvbench-bench-{}.csv", std::process::id()));
    let out = kvbench()
        .args(["bench", "--model", "builtin:toy-chain", "--policies", "full,streamingllm,dynts"])
        .args(["--budget", "160", "--window", "32", "--ratio", "0.5", "--prompt", "32", "--context", "64,256"])
        .args(["--steps", "8", "--batch", "1,2", "--bandwidth-gib", "0.02", "--out"])
        .arg(&csv_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    let col = |r: &csv::StringRecord, name: &str| -> String {
        r[headers.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"))].to_string()
    };
    let num = |r: &csv::StringRecord, name: &str| -> f64 { col(r, name).parse().unwrap_or(f64::NAN) };
    let keys: Vec<(String, String, String)> =
        rows.iter().map(|r| (col(r, "batch"), col(r, "policy"), col(r, "context"))).collect();
    let want: Vec<(String, String, String)> = ["1", "2"]
        .iter()
        .flat_map(|b| {
            ["full", "streamingllm", "dynts"]
                .iter()
                .flat_map(move |p| ["64", "256"].map(|c| (b.to_string(), p.to_string(), c.to_string())))
        })
        .collect();
    assert_eq!(keys, want);
    // Decoding from one slot pool, a step issues the same kernels at batch 2 as at batch 1.
    let (one, two) = rows.split_at(rows.len() / 2);
    for (a, b) in one.iter().zip(two) {
        assert_eq!(col(a, "ops_per_step"), col(b, "ops_per_step"), "{a:?} / {b:?}");
        // The toy model's 4 layers (no q/k/v biases) of 13 fused kernels each and 5 around them
        // (`tests/it/slots.rs` lists them); what a policy observes adds to that.
        let model_ops = (4 * 13 + 5) as f64;
        match col(a, "policy").as_str() {
            "full" => assert_eq!(num(a, "ops_per_step"), model_ops, "{a:?}"),
            _ => assert!(num(a, "ops_per_step") >= model_ops, "{a:?}"),
        }
        assert_eq!(col(a, "decode"), "pool");
        assert_eq!(col(a, "kernels"), "fused", "the CPU's default");
    }
    for r in &rows {
        let (policy, ctx) = (col(r, "policy"), num(r, "context"));
        // A timed step at history h reads h cached tokens and its own: h + 1, for 8 steps from ctx.
        if policy == "full" {
            assert_eq!(num(r, "cache_len"), ctx + 4.5, "{r:?}");
            assert_eq!(num(r, "evictions"), 0.0);
            // The harness's bookkeeping only: nothing to score or compact.
            assert!(num(r, "policy_share") < 0.01, "{r:?}");
        } else {
            assert!(num(r, "cache_len") <= 161.0, "{r:?}");
        }
        for c in ["ms_per_step", "tok_s", "roofline_pct", "bandwidth_gb_s", "peak_rss_mib"] {
            assert!(num(r, c) > 0.0, "{c} in {r:?}");
        }
        // dynts never evicts the prompt: a 256-token prompt does not fit B = 160.
        if policy == "dynts" && ctx == 256.0 {
            assert_eq!(col(r, "prefill_tok_s"), "");
        } else {
            assert!(num(r, "prefill_tok_s") > 0.0 && num(r, "ttft_ms") > 0.0, "{r:?}");
        }
        assert!((0.0..1.0).contains(&num(r, "policy_share")), "{r:?}");
    }
    // The committed predictor drives dynts.
    let late = |p: &str| rows.iter().find(|r| col(r, "policy") == p && col(r, "context") == "256").unwrap();
    assert!(col(late("dynts"), "predictor").ends_with("dynts-predictor.safetensors"));
    std::fs::remove_file(&csv_path).ok();
}

#[test]
fn bad_bench_arguments_exit_2_before_loading() {
    for (args, culprit) in [
        (vec!["--context", "256,64"], "ascending"),
        (vec!["--prompt", "128", "--context", "64"], "--prompt"),
        (vec!["--context", "1kk"], "--context"),
        (vec!["--budget", "100", "--window", "200"], "window"),
    ] {
        let out = kvbench().args(["bench", "--model", "builtin:toy-chain"]).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(culprit), "{args:?}: {}", text(&out));
        assert!(!text(&out).contains("bandwidth"), "{args:?} loaded before failing: {}", text(&out));
    }
}
