//! Policy presets (`policies/*.toml`, embedded in the binary) and their construction. A preset
//! names a policy family and its default parameters; experiment files and the command line
//! override them field by field. Adding a policy: one file in `src/policies/`, one preset file,
//! one line in [`PRESETS`] and one arm in [`PolicySpec::instantiate`].

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::dynts::{Dynts, DyntsParams, ImportancePredictor};
use super::full::{Full, FullParams};
use super::h2o::{H2o, H2oParams};
use super::rkv::{Rkv, RkvParams};
use super::sepllm::{SepLlm, SepLlmParams};
use super::snapkv::{SnapKv, SnapKvParams};
use super::streamingllm::{StreamingLlm, StreamingLlmParams};
use super::window::{Window, WindowParams};
use super::{Budget, Policy};
use crate::sampling::Rng;

/// The eight policies of the DynTS summary figure, in its bar order.
pub const FIGURE_POLICIES: [&str; 8] = ["full", "dynts", "window", "streamingllm", "sepllm", "h2o", "snapkv", "rkv"];

const PRESETS: [(&str, &str); 14] = [
    ("full", include_str!("../../policies/full.toml")),
    ("dynts", include_str!("../../policies/dynts.toml")),
    ("window", include_str!("../../policies/window.toml")),
    ("streamingllm", include_str!("../../policies/streamingllm.toml")),
    ("sepllm", include_str!("../../policies/sepllm.toml")),
    ("h2o", include_str!("../../policies/h2o.toml")),
    ("snapkv", include_str!("../../policies/snapkv.toml")),
    ("rkv", include_str!("../../policies/rkv.toml")),
    ("h2o-cumulative", include_str!("../../policies/h2o-cumulative.toml")),
    ("snapkv-paper", include_str!("../../policies/snapkv-paper.toml")),
    ("rkv-paper", include_str!("../../policies/rkv-paper.toml")),
    ("dynts-random", include_str!("../../policies/dynts-random.toml")),
    ("dynts-bottom", include_str!("../../policies/dynts-bottom.toml")),
    ("dynts-noque", include_str!("../../policies/dynts-noque.toml")),
];

/// A preset file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    pub name: String,
    pub family: String,
    /// The figure's bar label.
    pub label: String,
    pub description: String,
    pub paper: String,
    pub source: String,
    pub params: toml::Table,
}

pub fn presets() -> Result<Vec<Preset>> {
    PRESETS
        .iter()
        .map(|(name, text)| toml::from_str::<Preset>(text).with_context(|| format!("policy preset {name}")))
        .collect()
}

pub fn preset(name: &str) -> Result<Preset> {
    match PRESETS.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => toml::from_str(text).with_context(|| format!("policy preset {n}")),
        None => {
            bail!("unknown policy '{name}' (known: {})", PRESETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))
        }
    }
}

/// Expands `all` to the figure's eight policies; checks every name.
pub fn expand_names(names: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for n in names {
        if n == "all" {
            out.extend(FIGURE_POLICIES.iter().map(|s| s.to_string()));
        } else {
            preset(n)?;
            out.push(n.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|n| seen.insert(n.clone()));
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PolicyParams {
    Full(FullParams),
    Window(WindowParams),
    StreamingLlm(StreamingLlmParams),
    SepLlm(SepLlmParams),
    H2o(H2oParams),
    SnapKv(SnapKvParams),
    Rkv(RkvParams),
    Dynts(DyntsParams),
}

/// A policy by name with fully resolved parameters: immutable, shared by every sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySpec {
    pub name: String,
    pub params: PolicyParams,
}

/// What a policy may need from the model, tokenizer and run to start on one sequence.
pub struct PolicyContext {
    pub num_layers: usize,
    pub separator_ids: Vec<u32>,
    pub think_end: Option<u32>,
    pub predictor: Option<Arc<ImportancePredictor>>,
    /// The sample's own stream (for `dynts-random`).
    pub rng: Rng,
}

fn parse<P: for<'de> Deserialize<'de>>(name: &str, table: toml::Table) -> Result<P> {
    toml::Value::Table(table).try_into().with_context(|| format!("parameters of policy {name}"))
}

impl PolicySpec {
    /// The preset `name` with `overrides` applied key by key (unknown keys are errors).
    pub fn resolve(name: &str, overrides: Option<&toml::Table>) -> Result<Self> {
        let p = preset(name)?;
        let mut table = p.params.clone();
        if let Some(o) = overrides {
            for (k, v) in o {
                table.insert(k.clone(), v.clone());
            }
        }
        let params = match p.family.as_str() {
            "full" => PolicyParams::Full(parse(name, table)?),
            "window" => PolicyParams::Window(parse(name, table)?),
            "streamingllm" => PolicyParams::StreamingLlm(parse(name, table)?),
            "sepllm" => PolicyParams::SepLlm(parse(name, table)?),
            "h2o" => PolicyParams::H2o(parse(name, table)?),
            "snapkv" => PolicyParams::SnapKv(parse(name, table)?),
            "rkv" => PolicyParams::Rkv(parse(name, table)?),
            "dynts" => PolicyParams::Dynts(parse(name, table)?),
            other => bail!("policy preset {name} names unknown family '{other}'"),
        };
        Ok(Self { name: name.to_string(), params })
    }

    /// Checks the parameters against the budget, before any model work.
    pub fn validate(&self, budget: &Budget) -> Result<()> {
        budget.validate()?;
        match &self.params {
            PolicyParams::Window(p) if p.kept(budget) > budget.budget => {
                bail!("{}: kept_window {} exceeds the budget {}", self.name, p.kept(budget), budget.budget)
            }
            PolicyParams::StreamingLlm(p) => {
                let kept = WindowParams { kept_window: p.kept_window }.kept(budget);
                if p.sink_size + kept > budget.budget {
                    bail!(
                        "{}: sink_size {} + kept window {kept} exceeds the budget {}",
                        self.name,
                        p.sink_size,
                        budget.budget
                    );
                }
            }
            PolicyParams::Rkv(p) if p.per_head && p.ob_window >= budget.budget => {
                bail!("{}: ob_window {} must be below the budget {}", self.name, p.ob_window, budget.budget)
            }
            _ => {}
        }
        Ok(())
    }

    /// Never evicts the prompt, so the budget must exceed the prompt length.
    pub fn protects_prompt(&self) -> bool {
        matches!(&self.params, PolicyParams::Dynts(p) if p.protect_question)
    }

    pub fn needs_predictor(&self) -> bool {
        matches!(&self.params, PolicyParams::Dynts(p) if p.select != super::dynts::DyntsSelect::Random)
    }

    pub fn evicts(&self) -> bool {
        !matches!(self.params, PolicyParams::Full(_))
    }

    /// Per-sequence state for one sample.
    pub fn instantiate(&self, budget: &Budget, ctx: PolicyContext) -> Result<Box<dyn Policy>> {
        Ok(match &self.params {
            PolicyParams::Full(_) => Box::new(Full),
            PolicyParams::Window(p) => Box::new(Window { params: p.clone() }),
            PolicyParams::StreamingLlm(p) => Box::new(StreamingLlm { params: p.clone() }),
            PolicyParams::SepLlm(_) => Box::new(SepLlm { separator_ids: ctx.separator_ids }),
            PolicyParams::H2o(p) => Box::new(H2o::new(p.clone())),
            PolicyParams::SnapKv(p) => Box::new(SnapKv::new(p.clone(), *budget)),
            PolicyParams::Rkv(p) => Box::new(Rkv::new(p.clone(), *budget, ctx.num_layers)),
            PolicyParams::Dynts(p) => Box::new(Dynts::new(p.clone(), ctx.predictor, ctx.think_end, ctx.rng)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_resolves_and_all_means_the_figure() {
        for p in presets().unwrap() {
            let spec = PolicySpec::resolve(&p.name, None).unwrap();
            assert_eq!(spec.name, p.name);
        }
        assert_eq!(expand_names(&["all".into()]).unwrap().len(), 8);
        assert!(expand_names(&["nope".into()]).unwrap_err().to_string().contains("unknown policy 'nope'"));
    }

    #[test]
    fn overrides_apply_field_by_field_and_unknown_keys_fail() {
        let o: toml::Table = toml::from_str("ob_window = 16").unwrap();
        let s = PolicySpec::resolve("snapkv", Some(&o)).unwrap();
        assert!(matches!(s.params, PolicyParams::SnapKv(ref p) if p.ob_window == 16 && p.kernel_size == 5));
        let bad: toml::Table = toml::from_str("ob_windw = 16").unwrap();
        let err = format!("{:#}", PolicySpec::resolve("snapkv", Some(&bad)).unwrap_err());
        assert!(err.contains("ob_windw"), "{err}");
    }
}
