//! Fused kernels of the batched decode step: each does in one kernel what a run of candle ops does
//! (the reference, kept beside it), so that a step issues fewer launches on a GPU.
//!
//! - `qkv_rope`: adds the stacked projection's bias where the model has one (Qwen2), splits it into
//!   q, k and v heads, applies Qwen3's per-head RMSNorm where the model has one, and rotates q and
//!   k (non-interleaved RoPE). Replaces the bias add, three copies, two RoPEs and two norms.
//! - `masked_softmax`: softmax over each row's first `attended` scores, exact zeros past them.
//!   Replaces the step's additive length mask (three ops) and, per layer, its add and the softmax.
//! - `silu_mul`: `silu(gate) · up` from the stacked `[gate | up]`. Replaces a SiLU and a product.
//! - `add_rms_norm`: the residual sum and its RMSNorm, both kept. Replaces an add and a norm.
//!
//! On the CPU in f32 each computes what the ops it replaces compute, in the same order and the same
//! precision, so the two give the same bits (the tests compare them). On CUDA the kernels
//! (`fused.cu`) are compiled at run time by NVRTC, so a CUDA build needs no extra build step; they
//! reduce in a different order, as any GPU kernel does. Elsewhere (CPU in 16-bit dtypes) the
//! reference ops run.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Module, Shape, Tensor, D};
use candle_nn::RmsNorm;
use rayon::prelude::*;

use super::ledger::op;
use super::linear::Proj;

/// Which code a batched decode step runs: candle's ops, or the fused kernels of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Kernels {
    /// candle's ops, one kernel each: the reference the fused kernels are tested against.
    Reference,
    /// The fused kernels, where they exist for the device and dtype (else the reference ops).
    #[default]
    Fused,
}

impl Kernels {
    /// The kernels a model on `device` runs unless told otherwise: fused on the CPU, where they
    /// give the reference's bits; on CUDA the reference until the fused kernels have been checked
    /// against the CPU on a GPU (`bench/gpu-run.sh` compares both).
    pub fn default_for(device: &candle_core::Device) -> Self {
        if device.is_cpu() {
            Kernels::Fused
        } else {
            Kernels::Reference
        }
    }

    /// Whether the fused kernel runs for tensors like `t`.
    fn fused_for(self, t: &Tensor) -> bool {
        self == Kernels::Fused && (t.device().is_cuda() || (t.device().is_cpu() && t.dtype() == DType::F32))
    }
}

/// The RoPE rows of a step, in the form its kernels take.
pub(crate) enum StepRope {
    /// cos and sin `[rows, 1, head_dim/2]`, for candle's `rope`.
    Pair(Tensor, Tensor),
    /// cos and sin side by side, `[rows, head_dim]`.
    Table(Tensor),
}

/// Which keys each row of a step attends to, in the form its softmax takes.
pub(crate) enum StepLengths {
    /// An additive mask `[rows, 1, 1, padded]`: 0 where visible, −∞ past the row's length.
    Mask(Tensor),
    /// The lengths themselves, `[rows]` u32.
    Lengths(Tensor),
}

/// The shared inputs of one batched step's layers.
pub(crate) struct Step {
    pub(crate) kernels: Kernels,
    pub(crate) rope: StepRope,
    pub(crate) lengths: StepLengths,
}

impl Step {
    /// Built once per step from the RoPE rows `cos`, `sin` `[rows, head_dim/2]` and the keys each
    /// row attends to (≥ 1 each) out of `padded`.
    pub(crate) fn new(
        kernels: Kernels,
        cos: Tensor,
        sin: Tensor,
        attended: &[u32],
        padded: usize,
    ) -> candle_core::Result<Self> {
        let (dev, dtype, rows) = (cos.device().clone(), cos.dtype(), attended.len());
        let lengths = Tensor::from_slice(attended, rows, &dev)?;
        if kernels.fused_for(&cos) {
            let table = Tensor::cat(&[&cos, &sin], D::Minus1)?;
            op("cat", &table);
            return Ok(Step { kernels, rope: StepRope::Table(table), lengths: StepLengths::Lengths(lengths) });
        }
        let half = cos.dim(D::Minus1)?;
        let rope = StepRope::Pair(cos.reshape((rows, 1, half))?, sin.reshape((rows, 1, half))?);
        let cols = Tensor::arange(0u32, padded as u32, &dev)?;
        op("arange", &cols);
        let visible = cols.broadcast_lt(&lengths.reshape((rows, 1))?)?;
        op("lt", &visible);
        let zero = Tensor::zeros((), dtype, &dev)?.broadcast_as((rows, padded))?;
        let hidden = Tensor::full(f32::NEG_INFINITY, (), &dev)?.to_dtype(dtype)?.broadcast_as((rows, padded))?;
        let mask = visible.where_cond(&zero, &hidden)?;
        op("where", &mask);
        Ok(Step { kernels, rope, lengths: StepLengths::Mask(mask.reshape((rows, 1, 1, padded))?) })
    }

    /// q `[rows, num_heads, head_dim]`, k and v `[rows·num_kv_heads, head_dim]` from the stacked
    /// projection `proj` `[rows, (num_heads + 2·num_kv_heads)·head_dim]` of `h` (with its bias),
    /// q and k normed (when the layer has `qk_norm`) and rotated; `extras` holds the bias and the
    /// norms' weights as the fused kernel takes them.
    pub(crate) fn qkv_rope(
        &self,
        h: &Tensor,
        proj: &Proj,
        qk_norm: Option<&QkNorm>,
        extras: Option<&QkvExtras>,
        heads: QkvHeads,
    ) -> anyhow::Result<(Tensor, Tensor, Tensor)> {
        let QkvHeads { q: nh, kv: nkv, dim: hd, .. } = heads;
        let rows = h.dim(0)?;
        if let StepRope::Table(table) = &self.rope {
            let fused = QkvRope { heads, biased: extras.is_some_and(|e| e.biased), normed: qk_norm.is_some() };
            let out = match extras {
                Some(extras) => {
                    let qkv = if fused.biased { proj.forward_unbiased(h)? } else { proj.forward(h)? };
                    qkv.apply_op3_no_bwd(table, &extras.params, &fused)?
                }
                None => proj.forward(h)?.apply_op2_no_bwd(table, &fused)?,
            };
            op("qkv_rope", &out);
            let (nq, nk) = (rows * nh * hd, rows * nkv * hd);
            return Ok((
                out.narrow(0, 0, nq)?.reshape((rows, nh, hd))?,
                out.narrow(0, nq, nk)?.reshape((rows * nkv, hd))?,
                out.narrow(0, nq + nk, nk)?.reshape((rows * nkv, hd))?,
            ));
        }
        let StepRope::Pair(cos, sin) = &self.rope else { unreachable!("a step's RoPE is a table or a pair") };
        let qkv = proj.forward(h)?;
        let mut q = qkv.narrow(D::Minus1, 0, nh * hd)?.reshape((rows, nh, hd))?;
        op("copy", &q);
        let mut k = qkv.narrow(D::Minus1, nh * hd, nkv * hd)?.reshape((rows, nkv, hd))?;
        op("copy", &k);
        let v = qkv.narrow(D::Minus1, (nh + nkv) * hd, nkv * hd)?.reshape((rows * nkv, hd))?;
        op("copy", &v);
        if let Some(norm) = qk_norm {
            q = norm.q.forward(&q)?;
            op("rms_norm", &q);
            k = norm.k.forward(&k)?;
            op("rms_norm", &k);
        }
        let q = candle_nn::rotary_emb::rope(&q.unsqueeze(2)?, cos, sin)?.reshape((rows, nh, hd))?;
        op("rope", &q);
        let k = candle_nn::rotary_emb::rope(&k.unsqueeze(2)?, cos, sin)?.reshape((rows * nkv, hd))?;
        op("rope", &k);
        Ok((q, k, v))
    }

    /// Probabilities from scores `[rows, …, padded]`: each row's softmax over the keys it attends
    /// to, exact zeros past them.
    pub(crate) fn softmax(&self, scores: &Tensor) -> candle_core::Result<Tensor> {
        let probs = match &self.lengths {
            StepLengths::Lengths(lengths) => {
                let probs = scores.apply_op2_no_bwd(lengths, &MaskedSoftmax)?;
                op("masked_softmax", &probs);
                return Ok(probs);
            }
            StepLengths::Mask(mask) => {
                let masked = scores.broadcast_add(mask)?;
                op("add", &masked);
                candle_nn::ops::softmax_last_dim(&masked)?
            }
        };
        op("softmax", &probs);
        Ok(probs)
    }
}

/// Qwen3's per-head RMSNorms of q and k.
pub(crate) struct QkNorm {
    pub(crate) q: RmsNorm,
    pub(crate) k: RmsNorm,
}

/// What the fused `qkv_rope` adds and norms with, side by side in one tensor: the stacked
/// projection's bias `[(num_heads + 2·num_kv_heads)·head_dim]` where it has one, then the q and
/// k norms' weights `[2·head_dim]` where the layer has them.
pub(crate) struct QkvExtras {
    params: Tensor,
    biased: bool,
}

impl QkvExtras {
    /// `None` when the layer has neither.
    pub(crate) fn new(bias: Option<&Tensor>, qk_norm: Option<&QkNorm>) -> candle_core::Result<Option<Self>> {
        let mut parts: Vec<&Tensor> = bias.into_iter().collect();
        if let Some(norm) = qk_norm {
            parts.extend([norm.q.weight(), norm.k.weight()]);
        }
        if parts.is_empty() {
            return Ok(None);
        }
        Ok(Some(QkvExtras { params: Tensor::cat(&parts, 0)?, biased: bias.is_some() }))
    }
}

/// The attention heads of a stacked q/k/v projection, and the epsilon of their norms.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QkvHeads {
    pub(crate) q: usize,
    pub(crate) kv: usize,
    pub(crate) dim: usize,
    pub(crate) eps: f32,
}

/// `silu(gate) · up` `[rows, f]` from `gate_up` `[rows, 2f]`.
pub(crate) fn silu_mul(kernels: Kernels, gate_up: &Tensor) -> candle_core::Result<Tensor> {
    if kernels.fused_for(gate_up) {
        let out = gate_up.apply_op1_no_bwd(&SiluMul)?;
        op("silu_mul", &out);
        return Ok(out);
    }
    let f = gate_up.dim(D::Minus1)? / 2;
    let gate = candle_nn::ops::silu(&gate_up.narrow(D::Minus1, 0, f)?)?;
    op("silu", &gate);
    let out = (gate * gate_up.narrow(D::Minus1, f, f)?)?;
    op("mul", &out);
    Ok(out)
}

/// The residual sum `x + y` and its RMSNorm by `norm` (epsilon `eps`, as the norm was built with).
pub(crate) fn add_rms_norm(
    kernels: Kernels,
    x: &Tensor,
    y: &Tensor,
    norm: &RmsNorm,
    eps: f32,
) -> candle_core::Result<(Tensor, Tensor)> {
    if kernels.fused_for(x) {
        let out = x.apply_op3_no_bwd(y, norm.weight(), &AddRmsNorm { eps })?;
        op("add_rms_norm", &out);
        return Ok((out.get(0)?, out.get(1)?));
    }
    let sum = (x + y)?;
    op("add", &sum);
    let normed = norm.forward(&sum)?;
    op("rms_norm", &normed);
    Ok((sum, normed))
}

struct QkvRope {
    heads: QkvHeads,
    /// The extras start with the projection's bias.
    biased: bool,
    /// The extras end with the q and k norms' weights.
    normed: bool,
}

struct MaskedSoftmax;

struct SiluMul;

struct AddRmsNorm {
    eps: f32,
}

/// A contiguous f32 operand's elements.
fn f32s<'a>(op: &str, s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("{op}: operands must be contiguous"),
    }
}

/// candle's RMSNorm of one row (`candle_nn::ops::rms_norm`): the sum of squares in order, then
/// `x / rms · w`.
fn rms_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum2 = x.iter().map(|&v| v * v).sum::<f32>();
    let m = (sum2 / x.len() as f32 + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(w) {
        *o = v / m * w;
    }
}

/// candle's SiLU (`x / (1 + e^-x)`).
fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

impl QkvRope {
    /// Each row's heads: q, k (plus the bias, normed when the extras hold norms, then rotated)
    /// and v (plus the bias), each written to its region of `out` (`[q heads] [k heads] [v heads]`
    /// over all rows).
    fn cpu(&self, qkv: &[f32], table: &[f32], extras: &[f32], rows: usize) -> Vec<f32> {
        let QkvHeads { q: nh, kv: nkv, dim: hd, eps } = self.heads;
        let (half, width) = (hd / 2, (nh + 2 * nkv) * hd);
        let (bias, norms) = extras.split_at(if self.biased { width } else { 0 });
        let norms = self.normed.then_some(norms);
        let mut out = vec![0f32; qkv.len()];
        let (q_out, kv_out) = out.split_at_mut(rows * nh * hd);
        let (k_out, v_out) = kv_out.split_at_mut(rows * nkv * hd);
        let (mut biased, mut normed) = (vec![0f32; if self.biased { width } else { 0 }], vec![0f32; hd]);
        for r in 0..rows {
            let mut x = &qkv[r * width..][..width];
            if self.biased {
                for ((d, &a), &b) in biased.iter_mut().zip(x).zip(bias) {
                    *d = a + b;
                }
                x = &biased;
            }
            let (cos, sin) = table[r * hd..(r + 1) * hd].split_at(half);
            for h in 0..nh + nkv {
                let src = &x[h * hd..(h + 1) * hd];
                let src = match norms {
                    Some(w) => {
                        rms_row(src, &w[if h < nh { 0 } else { hd }..][..hd], eps, &mut normed);
                        &normed[..]
                    }
                    None => src,
                };
                let dst = if h < nh { &mut q_out[(r * nh + h) * hd..] } else { &mut k_out[(r * nkv + h - nh) * hd..] };
                for i in 0..half {
                    let (a, b) = (src[i], src[i + half]);
                    dst[i] = a * cos[i] - b * sin[i];
                    dst[i + half] = a * sin[i] + b * cos[i];
                }
            }
            v_out[r * nkv * hd..(r + 1) * nkv * hd].copy_from_slice(&x[(nh + nkv) * hd..]);
        }
        out
    }

    /// The rows, once the operands' shapes are checked against the heads (and the extras, when
    /// given, against what they hold).
    fn check(&self, l_qkv: &Layout, l_table: &Layout, l_extras: Option<&Layout>) -> candle_core::Result<usize> {
        let QkvHeads { q: nh, kv: nkv, dim: hd, .. } = self.heads;
        let (rows, width) = l_qkv.shape().dims2()?;
        let extras = self.biased as usize * width + self.normed as usize * 2 * hd;
        if width != (nh + 2 * nkv) * hd
            || l_table.shape().dims2()? != (rows, hd)
            || l_extras.map_or(extras != 0, |l| l.shape().elem_count() != extras)
        {
            candle_core::bail!(
                "qkv_rope: qkv {:?}, table {:?} and extras {:?} do not fit {:?} (bias {}, norms {})",
                l_qkv.shape(),
                l_table.shape(),
                l_extras.map(|l| l.shape()),
                self.heads,
                self.biased,
                self.normed
            );
        }
        Ok(rows)
    }
}

impl CustomOp2 for QkvRope {
    fn name(&self) -> &'static str {
        "qkv-rope"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let rows = self.check(l1, l2, None)?;
        let out = self.cpu(f32s("qkv_rope", s1, l1)?, f32s("qkv_rope", s2, l2)?, &[], rows);
        let n = out.len();
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let rows = self.check(l1, l2, None)?;
        cuda::qkv_rope(self, rows, (s1, l1), (s2, l2), None)
    }
}

impl CustomOp3 for QkvRope {
    fn name(&self) -> &'static str {
        "qkv-rope-extras"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let rows = self.check(l1, l2, Some(l3))?;
        let extras = f32s("qkv_rope", s3, l3)?;
        let out = self.cpu(f32s("qkv_rope", s1, l1)?, f32s("qkv_rope", s2, l2)?, extras, rows);
        let n = out.len();
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let rows = self.check(l1, l2, Some(l3))?;
        cuda::qkv_rope(self, rows, (s1, l1), (s2, l2), Some((s3, l3)))
    }
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    /// Per row what candle's softmax of the masked scores computes: the max over the visible
    /// scores, `exp(s − max)` there and `exp(−∞) = 0` past them, the sum over the whole padded row
    /// by candle's own reduction, then the division.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use candle_core::cpu::kernels::VecOps;
        let scores = f32s(self.name(), s1, l1)?;
        let lengths = match (s2, l2.contiguous_offsets()) {
            (CpuStorage::U32(l), Some((a, b))) => &l[a..b],
            _ => candle_core::bail!("masked_softmax: the lengths must be a contiguous u32 tensor"),
        };
        let padded = l1.dims()[l1.dims().len() - 1];
        let per_row = scores.len() / lengths.len().max(1);
        let mut out = vec![0f32; scores.len()];
        out.par_chunks_mut(padded).zip(scores.par_chunks(padded)).enumerate().for_each(|(i, (dst, src))| {
            let n = (lengths[i * padded / per_row] as usize).clamp(1, padded);
            let max = src[..n].iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            for (d, &s) in dst[..n].iter_mut().zip(&src[..n]) {
                *d = (s - max).exp();
            }
            let mut sum = 0f32;
            // SAFETY: `dst` holds `padded` elements.
            unsafe { f32::vec_reduce_sum(dst.as_ptr(), &mut sum, padded) };
            for d in dst.iter_mut() {
                *d /= sum;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::masked_softmax((s1, l1), (s2, l2))
    }
}

impl CustomOp1 for SiluMul {
    fn name(&self) -> &'static str {
        "silu-mul"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32s(self.name(), s, l)?;
        let (rows, width) = l.shape().dims2()?;
        let f = width / 2;
        let mut out = vec![0f32; rows * f];
        out.par_chunks_mut(f).zip(x.par_chunks(width)).for_each(|(dst, src)| {
            let (gate, up) = src.split_at(f);
            for ((d, &g), &u) in dst.iter_mut().zip(gate).zip(up) {
                *d = silu(g) * u;
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, f))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::silu_mul((s, l))
    }
}

impl CustomOp3 for AddRmsNorm {
    fn name(&self) -> &'static str {
        "add-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, y, w) = (f32s(self.name(), s1, l1)?, f32s(self.name(), s2, l2)?, f32s(self.name(), s3, l3)?);
        let (rows, n) = l1.shape().dims2()?;
        if l2.dims() != l1.dims() || w.len() != n {
            candle_core::bail!("add_rms_norm: {:?} + {:?}, weight {:?}", l1.shape(), l2.shape(), l3.shape());
        }
        let mut out = vec![0f32; 2 * rows * n];
        let (sums, normed) = out.split_at_mut(rows * n);
        sums.par_chunks_mut(n).zip(normed.par_chunks_mut(n)).enumerate().for_each(|(r, (s, o))| {
            for ((s, &a), &b) in s.iter_mut().zip(&x[r * n..(r + 1) * n]).zip(&y[r * n..(r + 1) * n]) {
                *s = a + b;
            }
            rms_row(s, w, self.eps, o);
        });
        Ok((CpuStorage::F32(out), Shape::from((2, rows, n))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::add_rms_norm(self.eps, (s1, l1), (s2, l2), (s3, l3))
    }
}

#[cfg(feature = "cuda")]
mod cuda;

#[cfg(test)]
mod tests;
