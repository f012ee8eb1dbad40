//! The CI gate on the built-in reference: a copy passes under the exact rule and, with another
//! arithmetic in its manifest, under the paired one (0 answers flipped); a changed policy that
//! keeps the accuracy (h2o keeping its lowest scores: its real verdicts, in tests/data) and a
//! 5-point drop in one configuration fail under both.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cli::tempdir;

fn kvbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvbench")).args(args).output().unwrap()
}

fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("results/builtin-reference")
}

/// A copy of the reference whose samples `edit` changes, its summary recomputed by `kvbench run`
/// (every sample is there: nothing is decoded) and, with `arithmetic`, that in its manifest.
fn copy(name: &str, arithmetic: Option<&str>, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let dir = tempdir(&format!("gate-{name}"));
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference().join("manifest.json")).unwrap()).unwrap();
    if let Some(a) = arithmetic {
        manifest["arithmetic"] = a.into();
    }
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let samples: String = std::fs::read_to_string(reference().join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut s: serde_json::Value = serde_json::from_str(l).unwrap();
            edit(&mut s);
            format!("{s}\n")
        })
        .collect();
    std::fs::write(dir.join("samples.jsonl"), samples).unwrap();
    let out = kvbench(&["run", "--out", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// `kvbench check`'s exit code and table.
fn check(dir: &Path) -> (i32, String) {
    let out = kvbench(&["check", dir.to_str().unwrap(), "--against", reference().to_str().unwrap()]);
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).to_string())
}

const OTHER: &str = "cpu aarch64; kernels: neon; compiled for: baseline";

#[test]
fn a_copy_passes_and_a_changed_policy_or_a_five_point_drop_fails_under_both_rules() {
    let same = copy("same", None, |_| {});
    let (code, table) = check(&same);
    assert_eq!(code, 0, "{table}");
    assert!(table.contains("(exact: greedy with the same arithmetic"), "{table}");
    let other = copy("other", Some(OTHER), |_| {});
    let (code, table) = check(&other);
    assert_eq!(code, 0, "{table}");
    assert!(table.contains("(paired: exact McNemar test") && table.contains("0/0"), "{table}");

    let verdicts: serde_json::Value = serde_json::from_str(include_str!("../data/h2o-lowest-verdicts.json")).unwrap();
    let lowest = |s: &mut serde_json::Value| {
        if s["policy"] == "h2o" {
            s["correct"] = verdicts["correct"][s["question_index"].as_u64().unwrap() as usize].clone();
        }
    };
    // The same accuracy (115 of 200), 17 answers lost and 17 gained.
    for arithmetic in [None, Some(OTHER)] {
        let (code, table) = check(&copy("h2o-lowest", arithmetic, lowest));
        assert_eq!(code, 1, "{table}");
        let line = table.lines().find(|l| l.contains("/h2o ")).unwrap();
        assert!(
            line.contains("+0.0") && line.contains("17/17") && line.contains("CHANGED (answers flipped)"),
            "{line}"
        );
    }

    // The first ten right answers of window (100 of 200) made wrong: 5 points.
    let drop = |s: &mut serde_json::Value| {
        if s["policy"] == "window" && s["correct"] == true && s["question_index"].as_u64().unwrap() < 21 {
            s["correct"] = false.into();
        }
    };
    let lost = std::fs::read_to_string(reference().join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|s| s["policy"] == "window" && s["correct"] == true && s["question_index"].as_u64().unwrap() < 21)
        .count();
    assert_eq!(lost, 10, "the fixture assumes ten right window answers among the first 21 questions");
    for arithmetic in [None, Some(OTHER)] {
        let (code, table) = check(&copy("drop", arithmetic, drop));
        assert_eq!(code, 1, "{table}");
        let line = table.lines().find(|l| l.contains("/window ")).unwrap();
        assert!(line.contains("-5.0") && line.contains("10/0") && line.contains("REGRESSION (lower)"), "{line}");
    }
}
