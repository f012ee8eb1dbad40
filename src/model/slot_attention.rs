//! The two products of a batched decode step's attention over a slot pool: scores `q·kᵀ·scale`
//! and the mix `p·v`, for every row, KV head and query head at once.
//!
//! On a GPU they are candle's batched matmuls. On the CPU in f32 they are the kernels below, for
//! reproducibility: a row's numbers must not depend on its neighbours (the padded length they
//! set) or on the batch, yet the gemm behind candle's CPU matmul picks its kernel, and so its
//! summation order, by the product's shape. Here every score is one fixed-order dot product over
//! the head dimension, and every mix sums a row's keys in order up to its own length (the padding
//! holds probabilities of exactly 0, so stopping there is what summing them would give).

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::linear::{dots, has_avx2_fma};

/// Scores `[rows, kv, groups, padded]` of queries `[rows, kv, groups, hd]` against the pool's keys
/// `[rows, kv, padded, hd]`; entries past a row's `attended` length are left to the mask.
pub(crate) fn scores(q: &Tensor, keys: &Tensor, attended: &[u32], scale: f64) -> candle_core::Result<Tensor> {
    if cpu_f32(q) {
        return q.apply_op2_no_bwd(keys, &Scores { attended: attended.to_vec(), scale: scale as f32 });
    }
    q.matmul(&keys.t()?)? * scale
}

/// `p·v`: probabilities `[rows, kv, groups, padded]` and values `[rows, kv, padded, hd]`.
pub(crate) fn mix(probs: &Tensor, values: &Tensor, attended: &[u32]) -> candle_core::Result<Tensor> {
    if cpu_f32(probs) {
        return probs.apply_op2_no_bwd(values, &Mix { attended: attended.to_vec() });
    }
    probs.matmul(values)
}

fn cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

struct Scores {
    attended: Vec<u32>,
    scale: f32,
}

struct Mix {
    attended: Vec<u32>,
}

/// A CPU f32 tensor's elements from its start, and its strides.
fn parts<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<(&'a [f32], Vec<usize>)> {
    let all = s.as_slice::<f32>()?;
    Ok((&all[l.start_offset()..], l.stride().to_vec()))
}

impl CustomOp2 for Scores {
    fn name(&self) -> &'static str {
        "slot-scores"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, kv, groups, hd) = l1.shape().dims4()?;
        let (_, _, padded, _) = l2.shape().dims4()?;
        if !l1.is_contiguous() || l2.stride()[3] != 1 || l2.stride()[2] != hd {
            candle_core::bail!("slot-scores: queries must be contiguous and key rows dense");
        }
        let (q, _) = parts(s1, l1)?;
        let (k, ks) = parts(s2, l2)?;
        let simd = has_avx2_fma();
        let mut out = vec![0f32; rows * kv * groups * padded];
        out.par_chunks_mut(groups * padded).enumerate().for_each(|(rh, out)| {
            let (r, h) = (rh / kv, rh % kv);
            let q = &q[rh * groups * hd..(rh + 1) * groups * hd];
            let base = r * ks[0] + h * ks[1];
            let mut dot = vec![0f32; groups];
            for j in 0..(self.attended[r] as usize).min(padded) {
                dots(simd, q, hd, &k[base + j * hd..base + (j + 1) * hd], &mut dot);
                for (g, d) in dot.iter().enumerate() {
                    out[g * padded + j] = d * self.scale;
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, kv, groups, padded))))
    }
}

impl CustomOp2 for Mix {
    fn name(&self) -> &'static str {
        "slot-mix"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, kv, groups, padded) = l1.shape().dims4()?;
        let hd = l2.shape().dims4()?.3;
        if !l1.is_contiguous() || l2.stride()[3] != 1 || l2.stride()[2] != hd {
            candle_core::bail!("slot-mix: probabilities must be contiguous and value rows dense");
        }
        let (p, _) = parts(s1, l1)?;
        let (v, vs) = parts(s2, l2)?;
        let mut out = vec![0f32; rows * kv * groups * hd];
        out.par_chunks_mut(groups * hd).enumerate().for_each(|(rh, out)| {
            let (r, h) = (rh / kv, rh % kv);
            let base = r * vs[0] + h * vs[1];
            for (g, acc) in out.chunks_mut(hd).enumerate() {
                let p = &p[(rh * groups + g) * padded..];
                for j in 0..(self.attended[r] as usize).min(padded) {
                    let (pj, v) = (p[j], &v[base + j * hd..base + (j + 1) * hd]);
                    for (a, x) in acc.iter_mut().zip(v) {
                        *a += pj * x;
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, kv, groups, hd))))
    }
}
