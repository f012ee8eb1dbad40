//! `kvbench dynts train`: fitting DynTS's importance predictor (IP) to the collected labels. Guo et
//! al., <https://arxiv.org/abs/2601.18383>; Robin930/DynTS `verl_sft_fsdp.py`.
//!
//! The frozen model's hidden states are inputs, so only the IP trains: `Linear(d→h1, no bias) →
//! Softplus → Linear(h1→h2) → Softplus → Linear(h2→1) → Softplus`, labels transformed per family
//! (Llama y = 10000·I; Qwen y = 10·I^0.3/0.3), MSE weighted 5 for labels in [4, 5) and 1
//! elsewhere, AdamW (lr 5e-4, β 0.9/0.95, wd 0.01), cosine schedule with 10 % warmup, clip 1.0.
//! The reference hard-codes h1 = 8192, h2 = 2048 for d = 3584/4096; the paper states
//! d → 2d → d/2 → 1, the default here, so small models get a proportionate head.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::io::{save_safetensors, write_atomic};
use crate::rng::Rng;

/// How importance becomes the regression target (`verl_sft_fsdp.py` L1396–1405).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LabelTransform {
    /// y = 10000 · I (the Llama recipe).
    Llama,
    /// y = 10 · I^0.3 / 0.3 (the Qwen recipe).
    Qwen,
}

impl LabelTransform {
    pub fn for_arch(arch: &str) -> Self {
        if arch.starts_with("qwen") {
            LabelTransform::Qwen
        } else {
            LabelTransform::Llama
        }
    }

    fn apply(self, i: f32) -> f32 {
        match self {
            LabelTransform::Llama => 10_000.0 * i,
            LabelTransform::Qwen => 10.0 * i.max(0.0).powf(0.3) / 0.3,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FitOptions {
    pub traces: PathBuf,
    pub out: PathBuf,
    /// `None`: by the collecting model's family.
    pub transform: Option<LabelTransform>,
    /// (h1, h2); `None`: (2d, d/2).
    pub hidden: Option<(usize, usize)>,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f64,
    pub seed: u64,
}

/// What `train` reports and records next to the weights.
#[derive(Debug, Serialize)]
pub struct FitReport {
    pub options: FitOptions,
    pub transform: LabelTransform,
    /// d: the model's hidden size.
    pub input_size: usize,
    pub hidden: (usize, usize),
    pub train_tokens: usize,
    pub validation_tokens: usize,
    /// Weighted MSE on the held-out traces (every 10th), before and after training.
    pub validation_loss_initial: f64,
    pub validation_loss: f64,
    /// Spearman correlation of predicted and true importance within held-out traces (mean).
    pub validation_spearman: f64,
    pub seconds: f64,
    pub kvbench_version: &'static str,
}

struct Head {
    fc1: Var,
    fc2: Var,
    b2: Var,
    fc3: Var,
    b3: Var,
}

impl Head {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        use crate::policies::dynts::softplus;
        let x = softplus(&x.matmul(&self.fc1.t()?)?)?;
        let x = softplus(&x.matmul(&self.fc2.t()?)?.broadcast_add(&self.b2)?)?;
        Ok(softplus(&x.matmul(&self.fc3.t()?)?.broadcast_add(&self.b3)?)?.squeeze(1)?)
    }
}

fn weighted_mse(pred: &Tensor, y: &Tensor) -> Result<Tensor> {
    // Weight 5 for labels in [4, 5), 1 elsewhere.
    let w = (((y.ge(4f32)?.to_dtype(DType::F32)? * y.lt(5f32)?.to_dtype(DType::F32)?)? * 4.0)? + 1.0)?;
    Ok(((pred - y)?.sqr()? * w)?.mean_all()?)
}

/// `kvbench dynts train`: fits the IP on collected traces; writes `out` (safetensors) and
/// `out` with `.json` (the report).
pub fn fit(o: &FitOptions) -> Result<FitReport> {
    let start = std::time::Instant::now();
    let dev = Device::Cpu;
    let t =
        candle_core::safetensors::load(&o.traces, &dev).with_context(|| format!("reading {}", o.traces.display()))?;
    let get = |k: &str| {
        t.get(k).cloned().with_context(|| format!("{} lacks '{k}' (not written by dynts collect?)", o.traces.display()))
    };
    let (hidden, importance, trace) = (get("hidden")?, get("importance")?, get("trace")?);
    let summary_path = o.traces.with_file_name("collect.json");
    let arch = std::fs::read_to_string(&summary_path)
        .ok()
        .and_then(|s| serde_json::from_str::<super::collect::CollectSummary>(&s).ok())
        .map(|s| s.model_arch)
        .unwrap_or_default();
    let transform = o.transform.unwrap_or_else(|| LabelTransform::for_arch(&arch));
    let d = hidden.dim(1)?;
    let (h1, h2) = o.hidden.unwrap_or((2 * d, (d / 2).max(1)));
    let y: Vec<f32> = importance.to_vec1::<f32>()?.into_iter().map(|i| transform.apply(i)).collect();
    let trace: Vec<u32> = trace.to_vec1()?;
    let (train_idx, val_idx): (Vec<u32>, Vec<u32>) =
        (0..y.len() as u32).partition(|&i| !trace[i as usize].is_multiple_of(10));
    ensure!(!train_idx.is_empty() && !val_idx.is_empty(), "too few traces to hold out every 10th (need ≥ 2)");
    ensure!(o.epochs > 0 && o.batch > 0, "--epochs and --batch must be positive");
    let y = Tensor::from_vec(y, trace.len(), &dev)?;
    let pick = |idx: &[u32]| -> Result<(Tensor, Tensor)> {
        let i = Tensor::from_slice(idx, idx.len(), &dev)?;
        Ok((hidden.index_select(&i, 0)?, y.index_select(&i, 0)?))
    };
    let (val_x, val_y) = pick(&val_idx)?;

    let mut rng = Rng::derive(o.seed, &[0x1f]);
    let mut uniform = |rows: usize, cols: usize, fan_in: usize| -> Result<Var> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let v: Vec<f32> = (0..rows * cols).map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32).collect();
        Ok(Var::from_tensor(&Tensor::from_vec(v, (rows, cols), &dev)?)?)
    };
    let head = Head {
        fc1: uniform(h1, d, d)?,
        fc2: uniform(h2, h1, h1)?,
        b2: uniform(1, h2, h1)?,
        fc3: uniform(1, h2, h2)?,
        b3: uniform(1, 1, h2)?,
    };
    let vars = vec![head.fc1.clone(), head.fc2.clone(), head.b2.clone(), head.fc3.clone(), head.b3.clone()];
    let mut opt =
        AdamW::new(vars.clone(), ParamsAdamW { lr: o.lr, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.01 })?;
    let validation_loss_initial = weighted_mse(&head.forward(&val_x)?, &val_y)?.to_scalar::<f32>()? as f64;
    let per_epoch = train_idx.len().div_ceil(o.batch);
    let total = per_epoch * o.epochs;
    let warmup = (total / 10).max(1);
    let mut order = train_idx.clone();
    let mut step = 0;
    for _ in 0..o.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        for chunk in order.chunks(o.batch) {
            let lr = if step < warmup {
                o.lr * (step + 1) as f64 / warmup as f64
            } else {
                let x = (step - warmup) as f64 / (total - warmup).max(1) as f64;
                0.5 * o.lr * (1.0 + (std::f64::consts::PI * x).cos())
            };
            opt.set_learning_rate(lr);
            let (x, y) = pick(chunk)?;
            let loss = weighted_mse(&head.forward(&x)?, &y)?;
            let mut grads = loss.backward()?;
            crate::toy::train::clip_gradients(&vars, &mut grads, 1.0)?;
            opt.step(&grads)?;
            step += 1;
        }
    }
    let val_pred = head.forward(&val_x)?;
    let validation_loss = weighted_mse(&val_pred, &val_y)?.to_scalar::<f32>()? as f64;
    let validation_spearman = mean_spearman(
        &val_pred.to_vec1()?,
        &val_y.to_vec1()?,
        &val_idx.iter().map(|&i| trace[i as usize]).collect::<Vec<_>>(),
    );
    let tensors: HashMap<String, Tensor> = [
        ("fc1.weight", head.fc1.as_tensor()),
        ("fc2.weight", head.fc2.as_tensor()),
        ("fc2.bias", &head.b2.as_tensor().squeeze(0)?),
        ("fc3.weight", head.fc3.as_tensor()),
        ("fc3.bias", &head.b3.as_tensor().squeeze(0)?),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.detach()))
    .collect();
    if let Some(parent) = o.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    save_safetensors(&tensors, &o.out)?;
    let report = FitReport {
        options: o.clone(),
        transform,
        input_size: d,
        hidden: (h1, h2),
        train_tokens: train_idx.len(),
        validation_tokens: val_idx.len(),
        validation_loss_initial,
        validation_loss,
        validation_spearman,
        seconds: start.elapsed().as_secs_f64(),
        kvbench_version: env!("CARGO_PKG_VERSION"),
    };
    write_atomic(&o.out.with_extension("json"), (serde_json::to_string_pretty(&report)? + "\n").as_bytes())?;
    Ok(report)
}

/// Mean over groups (traces) of the Spearman rank correlation of `a` and `b`.
fn mean_spearman(a: &[f32], b: &[f32], group: &[u32]) -> f64 {
    let mut groups: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, g) in group.iter().enumerate() {
        groups.entry(*g).or_default().push(i);
    }
    let ranks = |idx: &[usize], v: &[f32]| -> Vec<f64> {
        let mut order: Vec<usize> = (0..idx.len()).collect();
        order.sort_by(|&x, &y| v[idx[x]].total_cmp(&v[idx[y]]));
        let mut r = vec![0.0; idx.len()];
        for (rank, &o) in order.iter().enumerate() {
            r[o] = rank as f64;
        }
        r
    };
    let mut sum = 0.0;
    let mut n = 0;
    for idx in groups.values().filter(|g| g.len() > 2) {
        let (ra, rb) = (ranks(idx, a), ranks(idx, b));
        let m = (idx.len() - 1) as f64 / 2.0;
        let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - m) * (y - m)).sum();
        let var: f64 = ra.iter().map(|x| (x - m).powi(2)).sum();
        sum += cov / var;
        n += 1;
    }
    if n == 0 {
        return f64::NAN;
    }
    sum / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On labels that are a function of the hidden state, the fit ranks held-out tokens well.
    #[test]
    fn the_predictor_learns_a_learnable_importance() {
        let dir = std::env::temp_dir().join(format!("kvbench-fit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (n, d) = (4000, 8);
        let mut rng = Rng::new(3);
        let hidden: Vec<f32> = (0..n * d).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
        // I ∈ [0, 8e-4]: y = 10000·I spans [0, 8], across the up-weighted [4, 5).
        let importance: Vec<f32> = (0..n).map(|i| 4e-4 * (1.0 + hidden[i * d] * hidden[i * d + 1].abs())).collect();
        let dev = Device::Cpu;
        let tensors: HashMap<String, Tensor> = [
            ("hidden", Tensor::from_vec(hidden, (n, d), &dev).unwrap()),
            ("importance", Tensor::from_vec(importance, n, &dev).unwrap()),
            ("trace", Tensor::from_vec((0..n as u32).map(|i| i / 100).collect::<Vec<_>>(), n, &dev).unwrap()),
            ("position", Tensor::from_vec((0..n as u32).collect::<Vec<_>>(), n, &dev).unwrap()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        save_safetensors(&tensors, &dir.join("traces.safetensors")).unwrap();
        let o = FitOptions {
            traces: dir.join("traces.safetensors"),
            out: dir.join("ip.safetensors"),
            transform: None,
            hidden: None,
            epochs: 30,
            batch: 128,
            lr: 3e-3,
            seed: 1,
        };
        let r = fit(&o).unwrap();
        assert_eq!(r.transform, LabelTransform::Llama);
        assert!(r.validation_loss < r.validation_loss_initial * 0.2, "{r:?}");
        assert!(r.validation_spearman > 0.8, "{r:?}");
        // The policy loads what was written and predicts the same.
        let ip = crate::policies::dynts::ImportancePredictor::load(&o.out, d, DType::F32, &dev).unwrap();
        let x = Tensor::from_vec(vec![0.5f32, -0.5, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5], (1, d), &dev).unwrap();
        let y = ip.forward(&x).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((y - 10_000.0 * 4e-4 * 1.25).abs() < 1.0, "{y}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
