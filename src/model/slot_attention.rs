//! The two products of a batched decode step's attention over a slot pool: scores `q·kᵀ·scale`
//! and the mix `p·v`, for every row, KV head and query head at once.
//!
//! On a GPU they are candle's batched matmuls. On the CPU in f32 they are the kernels below, for
//! reproducibility: a row's numbers must not depend on its neighbours (the padded length they
//! set) or on the batch, yet the gemm behind candle's CPU matmul picks its kernel, and so its
//! summation order, by the product's shape. Here every score is one fixed-order dot product over
//! the head dimension, and every mix sums a row's keys in order up to its own length (the padding
//! holds probabilities of exactly 0, so stopping there is what summing them would give), with
//! AVX2/FMA where the CPU has them.

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

/// The inputs of either product: the contiguous left operand's elements, and the pool view's
/// elements from its start with its strides (its rows of `hd` must be dense).
fn operands<'a>(
    op: &str,
    (s1, l1): (&'a CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    hd: usize,
) -> candle_core::Result<(&'a [f32], &'a [f32], Vec<usize>)> {
    if !l1.is_contiguous() || l2.stride()[3] != 1 || l2.stride()[2] != hd {
        candle_core::bail!("{op}: the left operand must be contiguous and the pool's rows dense");
    }
    let (a, b) = (s1.as_slice::<f32>()?, s2.as_slice::<f32>()?);
    Ok((&a[l1.start_offset()..], &b[l2.start_offset()..], l2.stride().to_vec()))
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
        let (q, k, ks) = operands(self.name(), (s1, l1), (s2, l2), hd)?;
        let simd = has_avx2_fma();
        let mut out = vec![0f32; rows * kv * groups * padded];
        out.par_chunks_mut(groups * padded).enumerate().for_each(|(rh, out)| {
            let (r, h) = (rh / kv, rh % kv);
            let q = &q[rh * groups * hd..(rh + 1) * groups * hd];
            let n = (self.attended[r] as usize).min(padded);
            let keys = &k[r * ks[0] + h * ks[1]..][..n * hd];
            scores_block(simd, q, keys, hd, padded, self.scale, out);
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
        let (p, v, vs) = operands(self.name(), (s1, l1), (s2, l2), hd)?;
        let simd = has_avx2_fma();
        let mut out = vec![0f32; rows * kv * groups * hd];
        out.par_chunks_mut(groups * hd).enumerate().for_each(|(rh, out)| {
            let (r, h) = (rh / kv, rh % kv);
            let n = (self.attended[r] as usize).min(padded);
            let probs = &p[rh * groups * padded..(rh + 1) * groups * padded];
            let values = &v[r * vs[0] + h * vs[1]..][..n * hd];
            mix_block(simd, probs, padded, values, hd, out);
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, kv, groups, hd))))
    }
}

/// One KV head of one row: `out[g·padded + j] = (q_g · k_j)·scale` for the keys given (dense rows
/// of `hd`); each dot sums in 8-lane chunks, then across the lanes, then the tail, in that order.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn scores_block(simd: bool, q: &[f32], keys: &[f32], hd: usize, padded: usize, scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd && hd.is_multiple_of(8) {
        // SAFETY: the CPU has AVX2 and FMA; the slices hold what the loops read.
        unsafe { scores_avx2_fma(q, keys, hd, padded, scale, out) };
        return;
    }
    let mut dot = vec![0f32; q.len() / hd];
    for (j, key) in keys.chunks_exact(hd).enumerate() {
        dots(false, q, hd, key, &mut dot);
        for (g, d) in dot.iter().enumerate() {
            out[g * padded + j] = d * scale;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_avx2_fma(q: &[f32], keys: &[f32], hd: usize, padded: usize, scale: f32, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let groups = q.len() / hd;
    for (j, key) in keys.chunks_exact(hd).enumerate() {
        for g in 0..groups {
            let qg = q.as_ptr().add(g * hd);
            let mut acc = _mm256_setzero_ps();
            for i in (0..hd).step_by(8) {
                acc = _mm256_fmadd_ps(_mm256_loadu_ps(qg.add(i)), _mm256_loadu_ps(key.as_ptr().add(i)), acc);
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
            out[g * padded + j] = lanes.iter().sum::<f32>() * scale;
        }
    }
}

/// One KV head of one row: `out[g·hd + d] = Σ_j p[g·padded + j] · v_j[d]` over the values given,
/// summed in key order (the padding's probabilities are 0: leaving them out changes nothing).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn mix_block(simd: bool, probs: &[f32], padded: usize, values: &[f32], hd: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd && hd.is_multiple_of(8) {
        // SAFETY: the CPU has AVX2 and FMA; the slices hold what the loops read.
        unsafe { mix_avx2_fma(probs, padded, values, hd, out) };
        return;
    }
    for (g, acc) in out.chunks_mut(hd).enumerate() {
        for (j, v) in values.chunks_exact(hd).enumerate() {
            let p = probs[g * padded + j];
            for (a, x) in acc.iter_mut().zip(v) {
                *a += p * x;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn mix_avx2_fma(probs: &[f32], padded: usize, values: &[f32], hd: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let groups = out.len() / hd;
    for (j, v) in values.chunks_exact(hd).enumerate() {
        for g in 0..groups {
            let p = _mm256_set1_ps(probs[g * padded + j]);
            let acc = out.as_mut_ptr().add(g * hd);
            for i in (0..hd).step_by(8) {
                let a = _mm256_loadu_ps(acc.add(i));
                _mm256_storeu_ps(acc.add(i), _mm256_fmadd_ps(p, _mm256_loadu_ps(v.as_ptr().add(i)), a));
            }
        }
    }
}
