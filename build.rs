//! Records the git commit the binary was built from (for result manifests).

use std::process::Command;

fn main() {
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
