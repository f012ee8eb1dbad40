//! `kvbench merge`: shard folders of one plan combined into one results folder.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::io::write_atomic;
use crate::plan::expand;
use crate::results::record::{plan_differences, read_manifest, read_samples, Manifest, SampleRecord};
use crate::results::summary::write_summary;

/// Combines shard folders of one plan into `out`: samples in plan order, summary, manifest.
/// Refuses folders of different plans, mixed shard counts, repeated shards and duplicate or foreign
/// samples; refuses missing samples unless `allow_partial`. Returns the number of samples merged.
pub fn merge(out: &Path, shards: &[PathBuf], data_dir: &Path, allow_partial: bool) -> Result<usize> {
    let Some(first) = shards.first() else { bail!("give at least one shard folder to merge") };
    let mut manifests = Vec::new();
    for dir in shards {
        let m = read_manifest(dir)?
            .with_context(|| format!("{} has no manifest.json: not a results folder", dir.display()))?;
        manifests.push(m);
    }
    let plan = manifests[0].plan.clone();
    let mut seen_shards = BTreeMap::new();
    for (dir, m) in shards.iter().zip(&manifests) {
        let differing = plan_differences(&plan, &m.plan)?;
        if !differing.is_empty() {
            bail!(
                "{} was written by a different plan than {} (differs in: {})",
                dir.display(),
                first.display(),
                differing.join(", ")
            );
        }
        let Some(shard) = m.shard else { bail!("{} holds a whole plan, not a shard", dir.display()) };
        if shard.count != manifests[0].shard.map_or(0, |s| s.count) {
            bail!("{} is shard {shard}, but {} is of another shard count", dir.display(), first.display());
        }
        if let Some(other) = seen_shards.insert(shard.index, dir) {
            bail!("{} and {} are both shard {shard}", other.display(), dir.display());
        }
    }
    let count = manifests[0].shard.map_or(1, |s| s.count);
    let missing_shards: Vec<String> =
        (0..count).filter(|i| !seen_shards.contains_key(i)).map(|i| format!("{i}/{count}")).collect();
    if !missing_shards.is_empty() && !allow_partial {
        bail!("shards {} are missing (or pass --allow-partial)", missing_shards.join(", "));
    }
    let jobs = expand(&plan, data_dir)?;
    let order: HashMap<String, usize> = jobs.iter().enumerate().map(|(i, j)| (j.key(&plan), i)).collect();
    let mut merged: Vec<Option<SampleRecord>> = vec![None; jobs.len()];
    for dir in shards {
        for record in read_samples(&dir.join("samples.jsonl"))? {
            let Some(&i) = order.get(&record.key) else {
                bail!("{}: sample {} is not in the plan", dir.display(), record.key)
            };
            if merged[i].is_some() {
                bail!("sample {} appears twice (again in {})", record.key, dir.display());
            }
            merged[i] = Some(record);
        }
    }
    let absent = merged.iter().filter(|r| r.is_none()).count();
    if absent > 0 && !allow_partial {
        bail!(
            "{absent} of {} samples are missing: resume the unfinished shards first (or pass --allow-partial)",
            jobs.len()
        );
    }
    let records: Vec<SampleRecord> = merged.into_iter().flatten().collect();
    if let Some(existing) = read_manifest(out)? {
        if !plan_differences(&plan, &existing.plan)?.is_empty() || existing.shard.is_some() {
            bail!("{} already holds another result; merge into a new folder", out.display());
        }
    }
    let mut body = String::new();
    for r in &records {
        body.push_str(&serde_json::to_string(r)?);
        body.push('\n');
    }
    write_atomic(&out.join("samples.jsonl"), body.as_bytes())?;
    write_summary(out, &records, &plan.model)?;
    let manifest = Manifest {
        plan,
        shard: None,
        merged_from: shards.iter().map(|d| d.display().to_string()).collect(),
        provenance: manifests[0].provenance.clone(),
    };
    write_atomic(&out.join("manifest.json"), serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    Ok(records.len())
}
