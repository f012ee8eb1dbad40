//! `kvbench plot`: figures from a handcrafted summary CSV, through the library and the binary.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kvbench::plot::{render, PlotOptions};

const HEADER: &str = "model,dataset,policy,budget,window,ratio,questions,samples,accuracy,accuracy_ci95,pass_at_k,\
maj_at_k,peak_kv,mean_kv,kv_footprint,evictions,generated_tokens,think_closed_rate,truncated_rate,tokens_per_s,\
policy_time_share";

/// The DynTS figure's accuracies (at B = 256; +5 at 512), the labels the figure must show.
const POLICIES: [(&str, &str, f64); 8] = [
    ("full", "Transformers", 63.6),
    ("dynts", "DynTS", 63.5),
    ("window", "Window", 49.4),
    ("streamingllm", "StreamingLLM", 51.6),
    ("sepllm", "SepLLM", 54.5),
    ("h2o", "H2O", 58.8),
    ("snapkv", "SnapKV", 59.8),
    ("rkv", "R-KV", 60.9),
];

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvbench-test-{}-plot-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn row(dataset: &str, policy: &str, budget: usize, accuracy: f64, peak_kv: f64) -> String {
    format!(
        "SmolLM2-135M,{dataset},{policy},{budget},64,0.3,5,1,{accuracy},4.2,{accuracy},{accuracy},{peak_kv},{},{},3,900,1,0,120.5,0.01",
        peak_kv * 0.8,
        peak_kv * 900.0
    )
}

/// Two datasets × the eight figure policies at the given budgets (the full cache once, budget 0).
/// The datasets sit 1 point either side of the policy's accuracy, so the mean is exactly it.
fn summary_csv(dir: &Path, budgets: &[usize]) -> PathBuf {
    let mut lines = vec![HEADER.to_string()];
    for (dataset, delta) in [("gsm8k", 1.0), ("math500", -1.0)] {
        for (i, &b) in budgets.iter().enumerate() {
            for (policy, _, acc) in POLICIES {
                let acc = acc + 5.0 * i as f64 + delta;
                match policy {
                    "full" if i == 0 => lines.push(row(dataset, policy, 0, acc, 17300.0)),
                    "full" => {}
                    _ => lines.push(row(dataset, policy, b, acc, b as f64)),
                }
            }
        }
    }
    let path = dir.join("summary.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn kvbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kvbench")).args(args).output().unwrap()
}

/// Width, height and RGB pixels of a PNG.
fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn renders_the_three_figures_as_png_and_svg() {
    let dir = tempdir("render");
    let csv = summary_csv(&dir, &[256, 512]);
    let out = dir.join("figures");
    let opts = PlotOptions { budget: Some(256), ..Default::default() };
    let written = render(&csv, &out, &opts).unwrap();
    let expected: Vec<PathBuf> =
        ["summary.png", "summary.svg", "budget.png", "budget.svg", "datasets.png", "datasets.svg"]
            .iter()
            .map(|f| out.join(f))
            .collect();
    assert_eq!(written, expected);
    // Nothing else: no temporary files left behind.
    assert_eq!(files_in(&out).len(), 6, "{:?}", files_in(&out));

    for (name, size) in [("summary", Some((1800, 1080))), ("budget", Some((1800, 1080))), ("datasets", None)] {
        let (w, h, pixels) = decode_png(&out.join(format!("{name}.png")));
        if let Some(size) = size {
            assert_eq!((w, h), size, "{name}.png");
        }
        assert!(w >= 1000 && h >= 500, "{name}.png is {w}×{h}");
        let inked = pixels.chunks(3).filter(|p| p.iter().any(|&c| c < 200)).count();
        let share = inked as f64 / (w * h) as f64;
        assert!(share > 0.02 && share < 0.6, "{name}.png: {:.3} of the pixels inked", share);
    }
    // The highlighted bar is red, the full cache's navy.
    let (_, _, pixels) = decode_png(&out.join("summary.png"));
    let count = |rgb: [u8; 3]| pixels.chunks(3).filter(|p| *p == rgb).count();
    assert!(count([0xE6, 0x39, 0x46]) > 10_000, "no red bar");
    assert!(count([0x2B, 0x2D, 0x42]) > 10_000, "no navy bar");
    assert!(count([0x1E, 0x90, 0xFF]) > 1_000, "no blue KV line");

    let svg = std::fs::read_to_string(out.join("summary.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for (_, label, acc) in POLICIES {
        assert!(svg.contains(&format!(">{label}</text>")), "summary.svg lacks the label {label}");
        assert!(svg.contains(&format!(">{acc:.1}</text>")), "summary.svg lacks the value {acc:.1}");
    }
    // The 512 values are not in the 256 summary.
    assert!(!svg.contains(">68.5</text>"));
    for text in ["KV Cache Length", "Accuracy (%)", ">Accuracy</text>", "#E63946", "#2B2D42", "#1E90FF"] {
        assert!(svg.contains(text), "summary.svg lacks {text}");
    }
    assert!(svg.contains(r#"font-weight="bold" transform="rotate(-25.0"#) && svg.contains(">DynTS</text>"));
    assert!(svg.contains(r#"font-weight="bold">63.5</text>"#), "DynTS' value is not bold");
    assert!(!svg.contains("NaN"));

    let budget = std::fs::read_to_string(out.join("budget.svg")).unwrap();
    for text in [">256</text>", ">512</text>", "KV budget B (tokens)", ">R-KV</text>", ">Transformers</text>"] {
        assert!(budget.contains(text), "budget.svg lacks {text}");
    }
    let datasets = std::fs::read_to_string(out.join("datasets.svg")).unwrap();
    // gsm8k sits one point above the mean, math500 one below.
    for text in [">gsm8k</text>", ">math500</text>", ">64.5</text>", ">62.5</text>", "B = 256"] {
        assert!(datasets.contains(text), "datasets.svg lacks {text}");
    }
}

#[test]
fn binary_writes_with_a_stem_and_prints_the_paths() {
    let dir = tempdir("binary");
    let csv = summary_csv(&dir, &[256, 512]);
    let out_dir = dir.join("plots");
    let out = kvbench(&[
        "plot",
        csv.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--budget",
        "512",
        "--stem",
        "smol-",
        "--title",
        "SmolLM2 & friends",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let printed: Vec<&str> = stdout.lines().collect();
    assert_eq!(printed.len(), 6, "{stdout}");
    for p in &printed {
        assert!(Path::new(p).is_file(), "{p} not written");
        assert!(Path::new(p).file_name().unwrap().to_string_lossy().starts_with("smol-"), "{p}");
    }
    let svg = std::fs::read_to_string(out_dir.join("smol-summary.svg")).unwrap();
    assert!(svg.contains(">68.5</text>") && svg.contains(">SmolLM2 &amp; friends</text>"));
}

#[test]
fn one_budget_needs_no_flag_and_the_full_cache_alone_plots() {
    let dir = tempdir("one-budget");
    let csv = summary_csv(&dir, &[5000]);
    let out = dir.join("out");
    render(&csv, &out, &PlotOptions::default()).unwrap();
    let svg = std::fs::read_to_string(out.join("summary.svg")).unwrap();
    assert!(svg.contains(">5k</text>") && svg.contains(">63.5</text>"));
    assert!(std::fs::read_to_string(out.join("datasets.svg")).unwrap().contains("B = 5k"));

    let full = dir.join("full.csv");
    std::fs::write(&full, format!("{HEADER}\n{}\n", row("gsm8k", "full", 0, 40.0, 900.0))).unwrap();
    render(&full, &out, &PlotOptions { stem: "full-".into(), ..Default::default() }).unwrap();
    let svg = std::fs::read_to_string(out.join("full-summary.svg")).unwrap();
    assert!(svg.contains(">Transformers</text>") && svg.contains(">40.0</text>"));
}

#[test]
fn the_budget_must_be_one_of_the_csv() {
    let dir = tempdir("budget-choice");
    let csv = summary_csv(&dir, &[256, 512]);
    let out_dir = dir.join("plots");
    let out = kvbench(&["plot", csv.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    common::assert_usage_error(&out, &["several budgets", "256, 512", "--budget"]);
    let out = kvbench(&["plot", csv.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--budget", "5k"]);
    common::assert_usage_error(&out, &["budget 5k is not in", "summary.csv", "256, 512"]);
    let out = kvbench(&["plot", csv.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--budget", "lots"]);
    common::assert_usage_error(&out, &["--budget", "lots"]);
    // Nothing written, not even the folder.
    assert!(!out_dir.exists());
}

#[test]
fn bad_csvs_name_the_culprit() {
    let dir = tempdir("bad-csv");
    let out_dir = dir.join("plots");
    let plot = |csv: &Path| kvbench(&["plot", csv.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);

    let missing = dir.join("no-such.csv");
    common::assert_usage_error(&plot(&missing), &["no-such.csv"]);

    let no_accuracy = dir.join("no-accuracy.csv");
    let text = std::fs::read_to_string(summary_csv(&dir, &[256])).unwrap();
    let cut: Vec<String> = text
        .lines()
        .map(|l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            cells.remove(8);
            cells.join(",")
        })
        .collect();
    std::fs::write(&no_accuracy, cut.join("\n")).unwrap();
    common::assert_usage_error(&plot(&no_accuracy), &["no-accuracy.csv", "missing column 'accuracy'"]);

    let empty = dir.join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    common::assert_usage_error(&plot(&empty), &["empty.csv", "empty"]);
    let header_only = dir.join("header-only.csv");
    std::fs::write(&header_only, format!("{HEADER}\n")).unwrap();
    common::assert_usage_error(&plot(&header_only), &["header-only.csv", "no results"]);

    let bad_cell = dir.join("bad-cell.csv");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    // Line 4, column accuracy (the ninth).
    let mut cells: Vec<&str> = lines[3].split(',').collect();
    cells[8] = "n/a";
    lines[3] = cells.join(",");
    std::fs::write(&bad_cell, lines.join("\n")).unwrap();
    common::assert_usage_error(&plot(&bad_cell), &["bad-cell.csv:4", "column 'accuracy'", "'n/a' is not a number"]);

    let bad_budget = dir.join("bad-budget.csv");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[2] = lines[2].replacen(",256,", ",-1,", 1);
    std::fs::write(&bad_budget, lines.join("\n")).unwrap();
    common::assert_usage_error(&plot(&bad_budget), &["bad-budget.csv:3", "column 'budget'", "'-1'"]);

    let ragged = dir.join("ragged.csv");
    std::fs::write(&ragged, format!("{HEADER}\nm,gsm8k,full,0\n")).unwrap();
    common::assert_usage_error(&plot(&ragged), &["ragged.csv"]);

    assert!(!out_dir.exists(), "a failed plot wrote files");
}
