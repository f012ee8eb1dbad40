//! HF-format loading: a model directory, and a hub id resolved offline from a local HF cache
//! laid out as hf-hub writes it (`models--owner--name/{refs/main, snapshots/COMMIT/…}`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use kvbench::model::source::{load, LoadOptions, ModelSource};
use kvbench::model::{Arch, SeqStep};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A hub cache holding `kvbench-test/tiny` at revision main.
fn write_hub_cache(root: &Path) -> PathBuf {
    let repo = root.join("models--kvbench-test--tiny");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    write_model(&repo.join("snapshots").join(COMMIT));
    repo.join("snapshots").join(COMMIT)
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kvbench-hf-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn hf_directory_loads_the_same_model() {
    let dir = tempdir("dir");
    let weights = write_model(&dir);
    let lm = load(&ModelSource::parse(dir.to_str().unwrap()).unwrap(), &LoadOptions::default()).unwrap();
    assert_eq!(lm.eos_token_ids, vec![3]);
    let text = lm
        .chat_template
        .as_ref()
        .unwrap()
        .render(&[kvbench::model::chat_template::ChatMessage { role: "user".into(), content: "t5 t6".into() }], true)
        .unwrap();
    let ids = kvbench::model::source::encode(&lm.tokenizer, &text).unwrap();
    assert_eq!(ids, vec![1, 5, 6, 2]);
    let reference = build(&small_config(Arch::Qwen2), &weights);
    let mut a = lm.model.new_cache(8).unwrap();
    let mut b = reference.new_cache(8).unwrap();
    let la =
        lm.model.forward(&mut [SeqStep { cache: &mut a, tokens: &ids, positions: None, visible: None }], None).unwrap();
    let lb = reference
        .forward(&mut [SeqStep { cache: &mut b, tokens: &ids, positions: None, visible: None }], None)
        .unwrap();
    assert_eq!(max_abs_diff(&la, &lb), 0.0);
}

#[test]
fn hub_id_resolves_offline_from_the_local_cache() {
    let cache = tempdir("hub");
    write_hub_cache(&cache);
    let out = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["generate", "--model", "kvbench-test/tiny", "--prompt", "t7 t8 t9", "--max-new-tokens", "5"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("prompt_tokens=5"), "{stderr}");
}

#[test]
fn offline_hub_names_what_is_missing() {
    let cache = tempdir("hub-missing");
    let snapshot = write_hub_cache(&cache);
    std::fs::remove_file(snapshot.join("tokenizer.json")).unwrap();
    std::fs::remove_file(snapshot.join("model.safetensors")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["generate", "--model", "kvbench-test/tiny", "--prompt", "t7"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for needle in ["kvbench-test/tiny@main", "tokenizer.json", "model.safetensors", "HF_HUB_OFFLINE=1"] {
        assert!(stderr.contains(needle), "stderr lacks {needle}: {stderr}");
    }
}

#[test]
fn truncated_safetensors_is_named() {
    let dir = tempdir("truncated-st");
    write_model(&dir);
    let f = dir.join("model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(["generate", "--model", dir.to_str().unwrap(), "--prompt", "t7"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("model.safetensors") && stderr.contains("truncated"), "{stderr}");
}

/// Newer checkpoints keep the template in `chat_template.jinja` (what `save_pretrained` writes);
/// it is read when tokenizer_config.json has none, and tokenizer_config.json's wins otherwise.
#[test]
fn chat_template_jinja_is_read_when_tokenizer_config_has_none() {
    let dir = tempdir("jinja");
    write_model(&dir);
    let render = |dir: &Path| {
        let lm = load(&ModelSource::parse(dir.to_str().unwrap()).unwrap(), &LoadOptions::default()).unwrap();
        lm.chat_template
            .map(|t| t.render(&[kvbench::model::chat_template::ChatMessage::user("t5")], true).unwrap())
            .unwrap_or_default()
    };
    let from_config = render(&dir);
    assert!(!from_config.is_empty());
    std::fs::write(dir.join("chat_template.jinja"), "J{% for m in messages %}{{ m.content }}{% endfor %}").unwrap();
    assert_eq!(render(&dir), from_config);
    std::fs::write(dir.join("tokenizer_config.json"), r#"{"eos_token": "<eos>"}"#).unwrap();
    assert_eq!(render(&dir), "Jt5");
    std::fs::remove_dir_all(&dir).ok();
}
