//! The module graph has layers: a top-level module of `src/` uses only modules below it in
//! [`LAYERS`] (or in its own layer), so the graph has no cycle and the tree reads bottom-up as the
//! pipeline's dependencies. Every `crate::` path of every source file counts, `use` or inline.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lowest first; modules of one layer do not use each other.
const LAYERS: &[&[&str]] = &[
    &["io", "rng", "grading"],
    &["cache"],
    &["model"],
    &["decode", "policies", "data"],
    &["plan"],
    &["results"],
    &["eval", "toy"],
    &["dynts", "bench", "plot", "slurm"],
    &["cli"],
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a source text names after `crate::`, in `use` trees (`crate::{a, b::c}`)
/// and in inline paths; comments are skipped.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let ident = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: those right after `{` or a comma at depth 0.
            let (mut depth, mut start) = (0, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        start = false;
                        out.insert(ident(&group[i..]));
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

#[test]
fn crate_paths_are_read_from_use_trees_and_inline_paths() {
    let text = "use crate::{cache::{observe::X, KvCache}, io};\nlet x = crate::model::load(a); // crate::cli\n";
    assert_eq!(crate_paths(text), ["cache", "io", "model"].map(String::from).into());
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer: BTreeMap<&str, usize> =
        LAYERS.iter().enumerate().flat_map(|(i, ms)| ms.iter().map(move |m| (*m, i))).collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut seen = BTreeSet::new();
    let mut violations = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        seen.insert(top.clone());
        let Some(&own) = layer.get(top.as_str()) else {
            violations.push(format!("src/{top} is in no layer of tests/it/layers.rs"));
            continue;
        };
        for used in crate_paths(&std::fs::read_to_string(&file).unwrap()) {
            match layer.get(used.as_str()) {
                Some(&l) if l < own || used == top => {}
                Some(_) => violations.push(format!("{} uses crate::{used}, which is not below {top}", rel.display())),
                None => violations.push(format!("{} uses crate::{used}, which is in no layer", rel.display())),
            }
        }
    }
    let listed: BTreeSet<String> = layer.keys().map(|m| m.to_string()).collect();
    assert_eq!(seen, listed, "LAYERS and the modules of src/ differ");
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
