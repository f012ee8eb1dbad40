//! `kvbench grade`: re-grades other tools' outputs and explains each verdict.

use std::process::Command;

fn tempfile(name: &str, body: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kvbench-grade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn grades_records_and_writes_reasons() {
    let input = tempfile(
        "in.jsonl",
        concat!(
            r#"{"prediction":"<think>maybe \\boxed{3}</think> So the answer is \\boxed{\\frac{1}{2}}.","reference":"\\frac12","dataset":"math500"}"#,
            "\n",
            r#"{"prediction":"The answer is 1,234 dollars.","reference":"She pays 1000 + 234 = 1234.\n#### 1,234","dataset":"gsm8k"}"#,
            "\n",
            r#"{"prediction":"I think it is (C).","reference":"B","dataset":"gpqa_diamond"}"#,
            "\n",
            r#"{"prediction":"33","reference":"033","dataset":"aime24","id":7}"#,
            "\n"
        ),
    );
    let out = input.with_file_name("out.jsonl");
    let run = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["grade", input.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let verdicts: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let correct: Vec<bool> = verdicts.iter().map(|v| v["correct"].as_bool().unwrap()).collect();
    assert_eq!(correct, vec![true, true, false, true]);
    assert_eq!(verdicts[0]["extracted"], "\\frac{1}{2}");
    assert_eq!(verdicts[3]["id"], 7, "input fields are kept");
    assert!(verdicts.iter().all(|v| !v["reason"].as_str().unwrap().is_empty()));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("gsm8k: 1/1"), "{stderr}");
}

#[test]
fn malformed_line_names_file_and_line() {
    let input = tempfile("bad.jsonl", "{\"prediction\":\"1\",\"reference\":\"1\",\"dataset\":\"gsm8k\"}\n{not json\n");
    let run = Command::new(env!("CARGO_BIN_EXE_kvbench")).args(["grade", input.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.jsonl:2") && stderr.contains("malformed"), "{stderr}");
    let input = tempfile("unknown.jsonl", "{\"prediction\":\"1\",\"reference\":\"1\",\"dataset\":\"mmlu\"}\n");
    let run = Command::new(env!("CARGO_BIN_EXE_kvbench")).args(["grade", input.to_str().unwrap()]).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("unknown dataset 'mmlu'"));
}
