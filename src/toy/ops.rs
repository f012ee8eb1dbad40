//! A fused causal softmax with its backward, for training on CPU.
//!
//! Built from candle's elementwise ops, the attention softmax of a training step allocates a dozen
//! `[batch, heads, t, t]` temporaries forward and backward (and differentiates through the
//! stabilising max); this op touches each score once each way and skips the masked half.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `softmax(scale · scores + causal mask)` over the last dim of `[.., t, t]` scores.
pub fn causal_softmax(scores: &Tensor, scale: f32) -> Result<Tensor> {
    scores.apply_op1(CausalSoftmax { scale })
}

struct CausalSoftmax {
    scale: f32,
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else { candle_core::bail!("{what}: f32 only") };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

fn square(l: &Layout, what: &str) -> Result<usize> {
    let dims = l.shape().dims();
    let t = *dims.last().unwrap_or(&0);
    if dims.len() < 2 || dims[dims.len() - 2] != t {
        candle_core::bail!("{what}: expected [.., t, t], got {:?}", dims);
    }
    Ok(t)
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous(s, l, "causal-softmax")?;
        let t = square(l, "causal-softmax")?;
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(t).zip(src.par_chunks(t)).enumerate().for_each(|(row, (d, x))| {
            let n = row % t + 1;
            let max = x[..n].iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * self.scale;
            let mut sum = 0f32;
            for (d, &x) in d[..n].iter_mut().zip(&x[..n]) {
                *d = (x * self.scale - max).exp();
                sum += *d;
            }
            let inv = 1.0 / sum;
            d[..n].iter_mut().for_each(|d| *d *= inv);
        });
        Ok((CpuStorage::F32(dst), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad.contiguous()?, &CausalSoftmaxGrad { scale: self.scale })?))
    }
}

/// d scores = scale · p ⊙ (g − Σ_j g_j p_j), row by row.
struct CausalSoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for CausalSoftmaxGrad {
    fn name(&self) -> &'static str {
        "causal-softmax-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let p = contiguous(s1, l1, "causal-softmax-grad")?;
        let g = contiguous(s2, l2, "causal-softmax-grad")?;
        let t = square(l1, "causal-softmax-grad")?;
        let mut dst = vec![0f32; p.len()];
        dst.par_chunks_mut(t).zip(p.par_chunks(t).zip(g.par_chunks(t))).enumerate().for_each(|(row, (d, (p, g)))| {
            let n = row % t + 1;
            let dot: f32 = p[..n].iter().zip(&g[..n]).map(|(p, g)| p * g).sum();
            for ((d, &p), &g) in d[..n].iter_mut().zip(&p[..n]).zip(&g[..n]) {
                *d = self.scale * p * (g - dot);
            }
        });
        Ok((CpuStorage::F32(dst), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    /// Forward and gradient equal candle's composed ops with an explicit mask.
    #[test]
    fn matches_the_composed_softmax_and_its_gradient() {
        let dev = Device::Cpu;
        let t = 7;
        let data: Vec<f32> = (0..2 * 3 * t * t).map(|i| ((i * 37 % 101) as f32 / 17.0).sin() * 3.0).collect();
        let x = Var::from_tensor(&Tensor::from_vec(data, (2, 3, t, t), &dev).unwrap()).unwrap();
        let w =
            Tensor::from_vec((0..2 * 3 * t * t).map(|i| (i % 13) as f32 - 6.0).collect(), (2, 3, t, t), &dev).unwrap();
        let scale = 0.3f32;
        let ours = causal_softmax(x.as_tensor(), scale).unwrap();
        let mask: Vec<f32> = (0..t * t).map(|i| if i % t > i / t { -1e9 } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, (t, t), &dev).unwrap();
        let theirs =
            candle_nn::ops::softmax(&(x.as_tensor() * scale as f64).unwrap().broadcast_add(&mask).unwrap(), D::Minus1)
                .unwrap();
        let max_diff =
            |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-6);
        let g1 = (ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let (g1, g2) = (g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap());
        assert!(max_diff(g1, g2) < 1e-5, "{}", max_diff(g1, g2));
    }
}
