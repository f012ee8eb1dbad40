//! `dynts` and its ablations — Dynamic Thinking-Token Selection. Guo et al., "Dynamic
//! Thinking-Token Selection for Efficient Reasoning in Large Reasoning Models",
//! <https://arxiv.org/abs/2601.18383> (Robin930/DynTS, `inference/dynts.py`, `models/llama.py`).
//!
//! An importance predictor (IP) on the frozen model's final hidden state (after the final norm,
//! the `lm_head` input) predicts how much the eventual answer will attend to each thinking token.
//! - The prompt gets score +∞ (never evicted); each decode step, the token being *fed in* gets
//!   IP(h_t) — the token whose K/V this step appends, so score and slot stay aligned.
//! - Once the fed token is `</think>`, it and every later (answer) token get +∞.
//! - Selection: the harness's top ⌊r·(L−W)⌋ of the older part plus the window; protected tokens
//!   take slots out of k; ties among +∞ go to the earlier slot.
//!
//! Variants (`recipes/ablation/select_*`): `dynts-random` keeps a random k of the older part
//! (`randperm`, ignoring protection), `dynts-bottom` the k lowest scores, `dynts-noque` scores the
//! prompt 0 instead of +∞.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::{Budget, Policy, PolicyContext, PolicyParams, Selection, StepInfo};
use crate::cache::KvCache;
use crate::cache::observe::{ObserveRequest, RowHead};
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DyntsSelect {
    /// Top-k by predicted importance.
    Top,
    /// A random k of the older part.
    Random,
    /// The k lowest predicted importances.
    Bottom,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DyntsParams {
    pub select: DyntsSelect,
    /// Protect the prompt with +∞ (false: `dynts-noque`).
    pub protect_question: bool,
}

impl Default for DyntsParams {
    fn default() -> Self {
        Self { select: DyntsSelect::Top, protect_question: true }
    }
}

impl PolicyParams for DyntsParams {
    fn instantiate(&self, _: &Budget, ctx: PolicyContext) -> Result<Box<dyn Policy>> {
        Ok(Box::new(Dynts::new(self.clone(), ctx.predictor, ctx.think_end, ctx.rng)?))
    }

    fn protects_prompt(&self) -> bool {
        self.protect_question
    }

    fn needs_predictor(&self) -> bool {
        self.select != DyntsSelect::Random
    }
}

/// The IP head: `Linear(d→h1, no bias) → Softplus → Linear(h1→h2) → Softplus → Linear(h2→1) →
/// Softplus` (the reference hard-codes h1 = 8192, h2 = 2048; here they come from the weights).
/// Safetensors names: `fc1.weight`, `fc2.weight`, `fc2.bias`, `fc3.weight`, `fc3.bias`.
pub struct ImportancePredictor {
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

pub fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    // log(1 + e^x) = max(x, 0) + log(1 + e^{−|x|}), stable for large |x|.
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

impl RowHead for ImportancePredictor {
    fn forward(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        ImportancePredictor::forward(self, hidden)
    }
}

impl ImportancePredictor {
    pub fn new(fc1: Linear, fc2: Linear, fc3: Linear) -> Self {
        Self { fc1, fc2, fc3 }
    }

    pub fn load(path: &Path, hidden_size: usize, dtype: DType, device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, device)
            .with_context(|| format!("reading DynTS predictor weights {}", path.display()))?;
        let get = |name: &str| {
            tensors.get(name).cloned().with_context(|| format!("{} lacks tensor '{name}'", path.display()))
        };
        let fc1 = get("fc1.weight")?;
        anyhow::ensure!(
            fc1.dim(1)? == hidden_size,
            "{}: predictor input size {} does not match the model's hidden size {hidden_size}",
            path.display(),
            fc1.dim(1)?
        );
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        let lin = |name: &str, bias: bool| -> Result<Linear> {
            let w = vb.get_unchecked(&format!("{name}.weight"))?;
            let b = if bias && vb.contains_tensor(&format!("{name}.bias")) {
                Some(vb.get_unchecked(&format!("{name}.bias"))?)
            } else {
                None
            };
            Ok(Linear::new(w, b))
        };
        Ok(Self { fc1: lin("fc1", false)?, fc2: lin("fc2", true)?, fc3: lin("fc3", true)? })
    }

    /// Predicted importance `[t]` for hidden states `[t, d]`.
    pub fn forward(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        let x = softplus(&self.fc1.forward(hidden)?)?;
        let x = softplus(&self.fc2.forward(&x)?)?;
        softplus(&self.fc3.forward(&x)?)?.squeeze(1)
    }
}

pub struct Dynts {
    pub params: DyntsParams,
    predictor: Option<Arc<ImportancePredictor>>,
    think_end: Option<u32>,
    rng: Rng,
    /// Score per cached slot; NaN while a predicted score is still on the device.
    scores: Vec<f32>,
    /// (slot, prediction `[1]`) not yet copied to the host: one copy per eviction, not per step.
    pending: Vec<(usize, Tensor)>,
    prediction: Option<Tensor>,
    think_closed: bool,
}

impl Dynts {
    pub fn new(
        params: DyntsParams,
        predictor: Option<Arc<ImportancePredictor>>,
        think_end: Option<u32>,
        rng: Rng,
    ) -> Result<Self> {
        if params.select != DyntsSelect::Random && predictor.is_none() {
            anyhow::bail!("dynts needs importance-predictor weights (--predictor FILE.safetensors)");
        }
        Ok(Self {
            params,
            predictor,
            think_end,
            rng,
            scores: Vec::new(),
            pending: Vec::new(),
            prediction: None,
            think_closed: false,
        })
    }

    fn resolve_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let values: Vec<f32> = Tensor::cat(&self.pending.iter().map(|(_, t)| t).collect::<Vec<_>>(), 0)?
            .to_dtype(DType::F32)?
            .to_vec1()?;
        for ((slot, _), v) in self.pending.drain(..).zip(values) {
            self.scores[slot] = v;
        }
        Ok(())
    }
}

impl Policy for Dynts {
    fn request(&self, step: &StepInfo) -> ObserveRequest {
        let needs_ip = self.params.select != DyntsSelect::Random && !step.prefill && !self.think_closed;
        ObserveRequest { attention: false, hidden: needs_ip }
    }

    fn hidden(&mut self, hidden: &Tensor) -> Result<()> {
        if let Some(ip) = &self.predictor {
            let t = hidden.dim(0)?;
            self.prediction = Some(ip.forward(&hidden.narrow(0, t - 1, 1)?)?);
        }
        Ok(())
    }

    fn row_head(&self) -> Option<Arc<dyn RowHead>> {
        self.predictor.clone().map(|p| p as Arc<dyn RowHead>)
    }

    fn head_output(&mut self, out: &Tensor) -> Result<()> {
        self.prediction = Some(out.clone());
        Ok(())
    }

    fn appended(&mut self, _cache: &KvCache, fed: &[u32], step: &StepInfo) -> Result<()> {
        if step.prefill {
            let v = if self.params.protect_question { f32::INFINITY } else { 0.0 };
            self.scores.extend(std::iter::repeat_n(v, fed.len()));
            return Ok(());
        }
        for &tok in fed {
            if Some(tok) == self.think_end {
                self.think_closed = true;
            }
            let slot = self.scores.len();
            match (self.think_closed, self.prediction.take()) {
                (true, _) => self.scores.push(f32::INFINITY),
                (false, Some(p)) => {
                    self.scores.push(f32::NAN);
                    self.pending.push((slot, p));
                }
                (false, None) => self.scores.push(0.0),
            }
        }
        Ok(())
    }

    fn select(&mut self, cache: &KvCache, budget: &Budget) -> Result<Option<Selection>> {
        self.resolve_pending()?;
        let Some(older) = super::scoring::older_part(&self.scores, cache.len(), budget.window, "dynts")? else {
            return Ok(None);
        };
        let scores = match self.params.select {
            DyntsSelect::Top => older.to_vec(),
            DyntsSelect::Bottom => older.iter().map(|s| -s).collect(),
            DyntsSelect::Random => older.iter().map(|_| self.rng.next_f64() as f32).collect(),
        };
        Ok(Some(Selection::Older(scores)))
    }

    fn compacted(&mut self, kept: &[usize]) -> Result<()> {
        self.scores = kept.iter().map(|&i| self.scores[i]).collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictor_loads_from_safetensors_and_scores() {
        let dev = Device::Cpu;
        let t = |v: Vec<f32>, shape: (usize, usize)| Tensor::from_vec(v, shape, &dev).unwrap();
        let mut weights = std::collections::HashMap::new();
        weights.insert("fc1.weight".to_string(), t(vec![1.0, -1.0, 0.5, 0.5], (2, 2)));
        weights.insert("fc2.weight".to_string(), t(vec![1.0, 2.0], (1, 2)));
        weights.insert("fc2.bias".to_string(), Tensor::new(&[0.5f32], &dev).unwrap());
        weights.insert("fc3.weight".to_string(), t(vec![-1.0], (1, 1)));
        weights.insert("fc3.bias".to_string(), Tensor::new(&[1.0f32], &dev).unwrap());
        let path = std::env::temp_dir().join(format!("kvbench-ip-{}.safetensors", std::process::id()));
        candle_core::safetensors::save(&weights, &path).unwrap();
        let ip = ImportancePredictor::load(&path, 2, DType::F32, &dev).unwrap();
        let got: Vec<f32> = ip.forward(&t(vec![2.0, 1.0], (1, 2))).unwrap().to_vec1().unwrap();
        let sp = |x: f32| (1.0 + x.exp()).ln();
        let (h1, h2) = (sp(2.0 - 1.0), sp(0.5 * 2.0 + 0.5 * 1.0));
        let expect = sp(-sp(h1 + 2.0 * h2 + 0.5) + 1.0);
        assert!((got[0] - expect).abs() < 1e-5, "{got:?} vs {expect}");
        let err = ImportancePredictor::load(&path, 3, DType::F32, &dev).err().unwrap().to_string();
        assert!(err.contains("hidden size 3"), "{err}");
    }

    #[test]
    fn softplus_is_stable() {
        let x = Tensor::new(&[-100f32, 0.0, 100.0], &Device::Cpu).unwrap();
        let y: Vec<f32> = softplus(&x).unwrap().to_vec1().unwrap();
        assert!(y[0] >= 0.0 && y[0] < 1e-30);
        assert!((y[1] - 2f32.ln()).abs() < 1e-6);
        assert!((y[2] - 100.0).abs() < 1e-4);
    }
}
