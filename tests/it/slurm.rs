//! `kvbench slurm` against a real Slurm (`scripts/local-slurm.sh start`): the built-in benchmark
//! submitted as a 4-task array and a dependent merge gives exactly the committed reference's
//! samples, also when a task is requeued while it runs. These tests need a running Slurm: they run
//! when `KVBENCH_SLURM_TESTS=1` (CI sets it, and then a Slurm that does not answer fails them) and
//! skip with a message otherwise.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ENABLE: &str = "KVBENCH_SLURM_TESTS";
/// Generous: the whole built-in benchmark on however few cores the machine has, twice at once.
const WAIT: Duration = Duration::from_secs(40 * 60);

fn enabled(test: &str) -> bool {
    if std::env::var(ENABLE).is_ok_and(|v| v == "1") {
        let sinfo = Command::new("sinfo").arg("-h").output();
        assert!(
            sinfo.as_ref().is_ok_and(|o| o.status.success()),
            "{ENABLE}=1 but Slurm does not answer (sinfo: {sinfo:?}); start it with \
             `scripts/local-slurm.sh start` and export the SLURM_CONF it prints"
        );
        return true;
    }
    eprintln!(
        "SKIP {test}: needs a running Slurm; as root: `scripts/local-slurm.sh start`, export the \
         SLURM_CONF it prints, and set {ENABLE}=1"
    );
    false
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A line on the test's stderr that the harness does not capture: CI's log shows the job ids and
/// states each test saw.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Submits the built-in benchmark in 4 shards; returns (array id, merge id, out folder).
fn submit(name: &str) -> (String, String, PathBuf) {
    let dir = root().join("target/slurm-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("builtin");
    let stdout = run(Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .current_dir(root())
        .args(["slurm", "--shards", "4", "--threads", "1", "--submit", "--job-name"])
        .arg(format!("kvbench-test-{name}"))
        .arg("--out")
        .arg(&out)
        .arg("--plots")
        .arg(dir.join("plots")));
    // "submitted array job A (4 tasks) and merge job M (after all succeed)"
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let after = |w: &str| words.iter().position(|x| *x == w).map(|i| words[i + 1].to_string());
    let (Some(array), Some(merge)) = (after("job"), words.iter().rposition(|x| *x == "job").map(|i| words[i + 1]))
    else {
        panic!("no job ids in {stdout:?}")
    };
    report(&format!("{name}: array job {array}, merge job {merge}"));
    (array, merge.to_string(), out)
}

/// Every job and task's states as sacct records them (`-D`: requeued runs too).
fn sacct(ids: &str) -> Vec<(String, String)> {
    run(Command::new("sacct").args(["-X", "-D", "-n", "-P", "-o", "JobID,State", "-j", ids]))
        .lines()
        .filter_map(|l| l.split_once('|').map(|(a, b)| (a.to_string(), b.to_string())))
        .collect()
}

fn wait_for(merge: &str, ids: &str) -> Vec<(String, String)> {
    let start = Instant::now();
    loop {
        let states = sacct(ids);
        let merge_state = states.iter().rev().find(|(j, _)| j == merge).map(|(_, s)| s.clone());
        match merge_state.as_deref() {
            Some("COMPLETED") => return states,
            Some(s) if !matches!(s, "PENDING" | "RUNNING" | "REQUEUED") => {
                panic!("merge job {merge} ended {s}; all states: {states:?}")
            }
            _ => {}
        }
        assert!(start.elapsed() < WAIT, "jobs {ids} not done after {WAIT:?}: {states:?}");
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The samples by key: whether each is correct and its completion.
fn samples(dir: &Path) -> BTreeMap<String, (bool, String)> {
    let text = std::fs::read_to_string(dir.join("samples.jsonl")).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["key"].as_str().unwrap().to_string();
        let previous =
            out.insert(key.clone(), (v["correct"].as_bool().unwrap(), v["completion"].as_str().unwrap().to_string()));
        assert!(previous.is_none(), "{}: sample {key} twice", dir.display());
    }
    out
}

/// The merged result holds every sample of the reference, each with the same completion and
/// verdict (so no answer flipped), and `kvbench check` passes.
fn assert_exact(out: &Path) {
    let reference = root().join("results/builtin-reference");
    let (ours, theirs) = (samples(out), samples(&reference));
    assert_eq!(ours.len(), theirs.len(), "sample count");
    let differing: Vec<&String> = theirs.keys().filter(|k| ours.get(*k) != theirs.get(*k)).collect();
    assert!(differing.is_empty(), "{} samples differ from the reference, e.g. {:?}", differing.len(), &differing[..1]);
    let check = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .current_dir(root())
        .args(["check"])
        .arg(out)
        .arg("--against")
        .arg(&reference)
        .output()
        .unwrap();
    assert!(check.status.success(), "kvbench check: {}", String::from_utf8_lossy(&check.stdout));
    assert!(out.parent().unwrap().join("plots/summary.png").is_file(), "the merge job drew no figure");
}

#[test]
fn the_builtin_benchmark_as_a_slurm_array_is_exact() {
    if !enabled("the_builtin_benchmark_as_a_slurm_array_is_exact") {
        return;
    }
    let (array, merge, out) = submit("whole");
    let states = wait_for(&merge, &format!("{array},{merge}"));
    report(&format!("sacct -j {array},{merge}: {states:?}"));
    let tasks: Vec<&(String, String)> = states.iter().filter(|(j, _)| j.starts_with(&format!("{array}_"))).collect();
    assert_eq!(tasks.len(), 4, "{states:?}");
    assert!(tasks.iter().all(|(_, s)| s == "COMPLETED"), "{states:?}");
    assert_exact(&out);
}

#[test]
fn a_task_requeued_mid_run_resumes_its_shard() {
    if !enabled("a_task_requeued_mid_run_resumes_its_shard") {
        return;
    }
    let (array, merge, out) = submit("requeued");
    let task = format!("{array}_1");
    let shard = out.join("shard-1-of-4/samples.jsonl");
    // Wait until task 1 runs and has written part of its shard, then requeue it (as pre-emption
    // does: the running task is killed and goes back to the queue).
    let start = Instant::now();
    let written = loop {
        let n = std::fs::read_to_string(&shard).map(|t| t.lines().count()).unwrap_or(0);
        let running = sacct(&task).iter().any(|(_, s)| s == "RUNNING");
        if running && n > 0 {
            break n;
        }
        assert!(start.elapsed() < WAIT, "task {task} never ran: {:?}", sacct(&array));
        std::thread::sleep(Duration::from_millis(200));
    };
    run(Command::new("scontrol").args(["requeue", &task]));
    // A requeued job waits for a begin time; start it at once.
    run(Command::new("scontrol").args(["update", &format!("jobid={task}"), "StartTime=now"]));
    report(&format!("requeued {task} after {written} of its samples"));
    let states = wait_for(&merge, &format!("{array},{merge}"));
    report(&format!("sacct -j {array},{merge}: {states:?}"));
    assert!(states.iter().any(|(j, s)| *j == task && s == "REQUEUED"), "{states:?}");
    let log = std::fs::read_to_string(out.join(format!("slurm/logs/{task}.log"))).unwrap();
    assert!(log.contains("restart 1"), "task {task} did not run again:\n{log}");
    assert_exact(&out);
}
