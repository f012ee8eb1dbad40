//! Records the git commit the binary was built from (for result manifests) and embeds every policy
//! preset of `policies/`, so that a preset file alone adds a preset.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    embed_presets();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(commit) = git(&["rev-parse", "HEAD"]) {
        println!("cargo:rustc-env=KVBENCH_GIT_COMMIT={commit}");
    }
    // Rebuild when HEAD moves (a commit, a checkout); the git dir differs in worktrees.
    for path in ["HEAD".to_string()].into_iter().chain(git(&["symbolic-ref", "-q", "HEAD"])) {
        if let Some(file) = git(&["rev-parse", "--git-path", &path]).filter(|f| std::path::Path::new(f).exists()) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// Writes `PRESET_FILES`, (name, text) of each `policies/*.toml` by name, into `$OUT_DIR/presets.rs`.
fn embed_presets() {
    // Read when the script runs, not when it was compiled: a compiled script may serve another
    // checkout of the same crate.
    let root = std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR is set by cargo");
    let dir = Path::new(&root).join("policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("reading policies/")
        .map(|e| e.expect("reading policies/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let entries: Vec<String> = files
        .iter()
        .map(|p| {
            let name = p.file_stem().and_then(|s| s.to_str()).expect("a preset file name is UTF-8");
            format!("    ({name:?}, include_str!({:?})),\n", p.display().to_string())
        })
        .collect();
    let code = format!("const PRESET_FILES: [(&str, &str); {}] = [\n{}];\n", entries.len(), entries.concat());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo")).join("presets.rs");
    std::fs::write(out, code).expect("writing presets.rs");
    println!("cargo:rerun-if-changed={}", dir.display());
}
