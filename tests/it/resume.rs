//! A sweep killed with SIGKILL at random moments and resumed ends with the same samples and the
//! same summary (timing columns excepted) as an uninterrupted run, and so do three shards merged;
//! a folder written by another plan is refused; a torn last line is repaired. Each worker decodes
//! three samples at a time (`--batch 3`, slots refilled as samples finish), so a resumed sample
//! has other neighbours than it had before, as it has with another number of threads. Uses a tiny
//! random model so it runs in seconds.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn setup(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let root = std::env::temp_dir().join(format!("kvbench-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let model = root.join("model");
    common::write_model(&model);
    let data = root.join("data");
    std::fs::create_dir_all(data.join("gsm8k")).unwrap();
    let rows: String = (0..6)
        .map(|i| format!("{{\"question\":\"t{} t{} t9 t10\",\"answer\":\"so #### {}\"}}\n", 5 + i, 20 + i, i))
        .collect();
    std::fs::write(data.join("gsm8k/test.jsonl"), rows).unwrap();
    (root.clone(), model, data)
}

fn args<'a>(model: &'a Path, data: &'a Path, out: &'a Path, budget: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--model",
        model.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--datasets",
        "gsm8k",
        "--policies",
        "full,h2o,window,snapkv",
        "--budget",
        budget,
        "--window",
        "8",
        "--ratio",
        "0.5",
        "--samples",
        "2",
        "--max-new-tokens",
        "48",
        "--batch",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]
}

fn run(a: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvbench")).args(a).output().unwrap()
}

/// key → the sample's deterministic fields.
fn samples(out: &Path) -> BTreeMap<String, serde_json::Value> {
    std::fs::read_to_string(out.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            for timing in ["prefill_secs", "decode_secs", "policy_secs"] {
                o.remove(timing);
            }
            (o["key"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// summary.csv without its timing columns.
fn summary(out: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(out.join("summary.csv")).unwrap();
    let headers = r.headers().unwrap().clone();
    let keep: Vec<usize> =
        (0..headers.len()).filter(|&i| !matches!(&headers[i], "tokens_per_s" | "policy_time_share")).collect();
    r.records().map(|rec| rec.unwrap()).map(|rec| keep.iter().map(|&i| rec[i].to_string()).collect()).collect()
}

/// Starts `a` and SIGKILLs it at a random moment early in the run, until `want` kills landed (at
/// most 12 tries); returns how many did.
fn kill_repeatedly(a: &[&str], full_time: Duration, want: usize, seed: u64) -> usize {
    let mut rng = kvbench::rng::Rng::new(seed);
    let mut kills = 0;
    for _ in 0..12 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvbench")).args(a).spawn().unwrap();
        // Each kill lands within the first 5–15 % of a full run's time, so several fit before the end.
        let wait = full_time.mul_f64(0.05 + 0.1 * rng.next_f64());
        std::thread::sleep(wait.min(Duration::from_secs(20)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        if kills >= want {
            break;
        }
    }
    kills
}

#[test]
fn killed_and_resumed_equals_uninterrupted() {
    let (root, model, data) = setup("kill");
    let reference = root.join("reference");
    let t = Instant::now();
    let done = run(&args(&model, &data, &reference, "24"));
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let full_time = t.elapsed();
    let expected = samples(&reference);
    assert_eq!(expected.len(), 6 * 2 * 4);

    let out = root.join("killed");
    let kills = kill_repeatedly(&args(&model, &data, &out, "24"), full_time, 5, 99);
    assert!(kills >= 5, "only {kills} runs were still going when killed");
    let resumed = run(&args(&model, &data, &out, "24"));
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(samples(&out), expected, "per-sample results differ after kills");
    assert_eq!(summary(&out), summary(&reference));

    // Running again does nothing new.
    let again = run(&args(&model, &data, &out, "24"));
    assert!(String::from_utf8_lossy(&again.stderr).contains("ran 0 samples"));
}

/// One worker or two (each with its own slot pool and share of the queue): the same samples; the
/// run reports how busy the slots were, on screen and in the manifest.
#[test]
fn threads_do_not_change_results() {
    let (root, model, data) = setup("threads");
    let (one, two) = (root.join("one"), root.join("two"));
    let mut a = args(&model, &data, &one, "24");
    a.extend(["--threads", "1"]);
    let single = run(&a);
    assert!(single.status.success(), "{}", String::from_utf8_lossy(&single.stderr));
    let mut a = args(&model, &data, &two, "24");
    a.extend(["--threads", "2"]);
    let double = run(&a);
    assert!(double.status.success(), "{}", String::from_utf8_lossy(&double.stderr));
    assert_eq!(samples(&one), samples(&two));
    assert!(String::from_utf8_lossy(&double.stderr).contains("% busy"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(two.join("manifest.json")).unwrap()).unwrap();
    let occupancy = manifest["slot_occupancy"].as_f64().expect("slot_occupancy recorded");
    assert!(occupancy > 0.5 && occupancy <= 1.0, "{occupancy}");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn a_different_plan_is_refused_and_a_torn_line_repaired() {
    let (root, model, data) = setup("plan");
    let out = root.join("out");
    assert!(run(&args(&model, &data, &out, "24")).status.success());
    let before = samples(&out);
    let other = run(&args(&model, &data, &out, "32"));
    assert_eq!(other.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(stderr.contains("different plan") && stderr.contains("budgets"), "{stderr}");

    // Drop the last sample and leave half a line, as a crash mid-write would.
    let path = out.join("samples.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let last = lines.pop().unwrap();
    std::fs::write(&path, format!("{}\n{}", lines.join("\n"), &last[..last.len() / 2])).unwrap();
    let resumed = run(&args(&model, &data, &out, "24"));
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.contains("repaired") && stderr.contains("ran 1 samples"), "{stderr}");
    assert_eq!(samples(&out), before);
}

#[test]
fn bad_plans_fail_before_loading() {
    let (root, model, data) = setup("bad");
    let out = root.join("out");
    let mut a = args(&model, &data, &out, "24");
    a[6] = "gsm9k";
    let r = run(&a);
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("unknown dataset 'gsm9k'"));
    let mut a = args(&model, &data, &out, "24");
    a[8] = "h2o,nope";
    let r = run(&a);
    assert!(String::from_utf8_lossy(&r.stderr).contains("unknown policy 'nope'"));
    let r = run(&args(&model, &data, &out, "5kk"));
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("5kk"));
    // dynts-random never evicts the prompt (6 tokens here): B = 5 cannot hold it.
    let mut a = args(&model, &data, &out, "5");
    a[8] = "dynts-random";
    a[12] = "2";
    let r = run(&a);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("prompt tokens") && stderr.contains("dynts-random"), "{stderr}");
    assert!(
        !out.join("samples.jsonl").exists() || std::fs::read_to_string(out.join("samples.jsonl")).unwrap().is_empty()
    );
    let exp = root.join("typo.toml");
    std::fs::write(&exp, "datasets = [\"gsm8k\"]\nmax_new_token = 48\n").unwrap();
    let mut a = args(&model, &data, &out, "24");
    a.extend(["--experiment", exp.to_str().unwrap()]);
    let r = run(&a);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("max_new_token") && stderr.contains("typo.toml"), "{stderr}");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::write(data.join("gsm8k/test.jsonl"), "{\"question\":\"t5\",\"answer\":\"#### 1\"}\n{broken\n").unwrap();
    let r = run(&args(&model, &data, &out, "24"));
    assert_eq!(r.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&r.stderr).contains("test.jsonl:2"));
    assert!(!out.exists(), "nothing is written for an invalid plan");
}

#[test]
fn three_shards_merged_equal_an_uninterrupted_run() {
    let (root, model, data) = setup("shards");
    let reference = root.join("reference");
    let t = Instant::now();
    assert!(run(&args(&model, &data, &reference, "24")).status.success());
    let full_time = t.elapsed();
    let out = root.join("sharded");
    let shard_args = |i: usize| -> Vec<String> {
        let mut a: Vec<String> = args(&model, &data, &out, "24").iter().map(|s| s.to_string()).collect();
        a.extend(["--shard".to_string(), format!("{i}/3")]);
        a
    };
    for i in 0..3 {
        let a = shard_args(i);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        if i == 1 {
            // One shard dies twice on the way; its resumption must not show in the merge.
            assert!(kill_repeatedly(&a, full_time / 3, 2, 7) >= 1);
        }
        let r = run(&a);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    }
    let dirs: Vec<String> = (0..3).map(|i| out.join(format!("shard-{i}-of-3")).display().to_string()).collect();
    let sizes: Vec<usize> = dirs.iter().map(|d| samples(Path::new(d)).len()).collect();
    // 48 samples in 16 groups of 3 (the batch): shards take whole groups, 6 + 5 + 5.
    assert_eq!(sizes, vec![18, 15, 15]);
    let merged = root.join("merged");
    let merge = |dirs: &[&str], into: &Path| {
        let mut a = vec!["merge"];
        a.extend(dirs);
        a.extend(["--out", into.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
        run(&a)
    };
    let all: Vec<&str> = dirs.iter().map(String::as_str).collect();
    let r = merge(&all, &merged);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(samples(&merged), samples(&reference), "merged samples differ from an uninterrupted run");
    assert_eq!(summary(&merged), summary(&reference));

    // Refusals, each with exit code 2 and the reason.
    let refused = |dirs: &[&str], what: &str| {
        let r = merge(dirs, &root.join("refused"));
        let stderr = String::from_utf8_lossy(&r.stderr).to_string();
        assert_eq!(r.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(what), "expected '{what}' in: {stderr}");
    };
    refused(&all[..2], "shards 2/3 are missing");
    refused(&[all[0], all[0], all[1]], "are both shard 0/3");
    let other = root.join("other");
    let mut a = args(&model, &data, &other, "32");
    a.extend(["--shard", "2/3"]);
    assert!(run(&a).status.success());
    let foreign = other.join("shard-2-of-3");
    refused(&[all[0], all[1], foreign.to_str().unwrap()], "different plan");
    refused(&[reference.to_str().unwrap()], "holds a whole plan");
}

/// A run whose folder holds every sample decodes nothing and loads no weights: it recomputes the
/// summary (every column the reference's has, the same text) and leaves the manifest of the run
/// that made the samples as it was.
#[test]
fn a_finished_run_rewrites_only_its_summary() {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/builtin-reference");
    let out = std::env::temp_dir().join(format!("kvbench-resume-{}-finished", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    for f in ["manifest.json", "samples.jsonl"] {
        std::fs::copy(reference.join(f), out.join(f)).unwrap();
    }
    let o = run(&["run", "--out", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("ran 0 samples, 1600 already done"), "{stderr}");
    let text = |p: PathBuf| std::fs::read_to_string(p).unwrap();
    assert_eq!(text(out.join("manifest.json")), text(reference.join("manifest.json")));
    let table = |p: PathBuf| -> Vec<BTreeMap<String, String>> {
        let mut r = csv::Reader::from_path(p).unwrap();
        let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
        r.records().map(|row| header.iter().cloned().zip(row.unwrap().iter().map(String::from)).collect()).collect()
    };
    let (got, want) = (table(out.join("summary.csv")), table(reference.join("summary.csv")));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        for (column, value) in w {
            assert_eq!(g.get(column), Some(value), "{column} of {w:?}");
        }
    }
    std::fs::remove_dir_all(&out).unwrap();
}
