//! Linear layers. candle's CPU matmul runs a product with a single row (batch-1 decode) on one
//! thread, yet such a product is bound by memory, not arithmetic: every weight is read once per
//! step for one multiply-add. [`Proj`] therefore splits the weight's output rows over rayon's
//! threads when only a few rows come in, so that a batch-1 decode step reads the weights with
//! every core. Larger inputs (prefill, more than [`MAX_ROWS`] stacked rows), other devices and
//! dtypes, and small weights (the toy model's, where a thread hand-off costs more than the
//! product) go to candle.
//!
//! Each output is one dot product summed in a fixed order by one task, so results do not depend
//! on the number of threads.
//!
//! A weight may instead stay GGML-quantized as the GGUF holds it (`--weights native`): it is
//! multiplied with candle's quantized matmul, which quantizes the input rows to 8 bits and reads
//! 4–6 bits per weight, a quarter of the dequantized path's bytes.

use std::sync::Arc;

use anyhow::{ensure, Result};
use candle_core::quantized::{ggml_file::qtensor_from_ggml, QMatMul, QTensor};
use candle_core::{DType, Device, Layout, Module, Storage, Tensor, D};
use candle_nn::Linear;
use rayon::prelude::*;

/// At most this many input rows take the threaded path: up to here it beats candle's matmul on
/// SmolLM2's shapes (`cargo bench --bench linear` compares the two; docs/performance.md).
const MAX_ROWS: usize = 8;
/// Weights with fewer elements stay on candle's path.
const MIN_WEIGHT_ELEMS: usize = 1 << 16;
/// f32 lanes of the portable dot product's independent accumulators (vectorised by the compiler).
const LANES: usize = 16;
/// How far ahead of its reads (in f32 elements) the AVX2 dot product prefetches the weight.
const PREFETCH: usize = 1024;

/// A projection's weight `[out, in]` as loaded: dense, or GGML-quantized.
#[derive(Clone)]
pub enum Weight {
    Dense(Tensor),
    Quantized(Arc<QTensor>),
}

/// A Linear layer `y = x Wᵀ + b` with `W: [out, in]`.
pub struct Proj {
    kind: Kind,
}

enum Kind {
    /// A dense weight; the threaded path may be taken (CPU, f32, a contiguous weight large enough).
    Dense { inner: Linear, threaded: bool },
    /// Quantized weights stacked by output row, one part per run of equal GGML types, and the
    /// stacked bias.
    Quantized { parts: Vec<QMatMul>, bias: Option<Tensor> },
}

impl Proj {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        let threaded = weight.device().is_cpu()
            && weight.dtype() == DType::F32
            && weight.is_contiguous()
            && bias.as_ref().is_none_or(|b| b.dtype() == DType::F32)
            && weight.elem_count() >= MIN_WEIGHT_ELEMS;
        Self { kind: Kind::Dense { inner: Linear::new(weight, bias), threaded } }
    }

    /// Several projections of the same input as one (their weights stacked by output row): one
    /// pass over the input and one hand-off to the threads instead of one per projection. A part
    /// without a bias gets zeros where another has one. Quantized parts stay quantized when all
    /// are (consecutive parts of one GGML type become one weight); a mix is dequantized to
    /// `dtype`. Quantized weights are placed on `device`.
    pub fn stacked(parts: Vec<(Weight, Option<Tensor>)>, dtype: DType, device: &Device) -> Result<Self> {
        let any_bias = parts.iter().any(|(_, b)| b.is_some());
        let mut weights = Vec::with_capacity(parts.len());
        let mut biases = Vec::with_capacity(parts.len());
        for (w, b) in parts {
            if any_bias {
                biases.push(match b {
                    Some(b) => b,
                    None => Tensor::zeros(w.rows()?, dtype, device)?,
                });
            }
            weights.push(w);
        }
        let bias = if any_bias { Some(Tensor::cat(&biases, 0)?) } else { None };
        let quantized: Option<Vec<&Arc<QTensor>>> = weights
            .iter()
            .map(|w| match w {
                Weight::Quantized(q) => Some(q),
                Weight::Dense(_) => None,
            })
            .collect();
        if let Some(quantized) = quantized {
            let mut runs: Vec<Vec<&QTensor>> = Vec::new();
            for q in quantized {
                match runs.last_mut() {
                    Some(run) if run[0].dtype() == q.dtype() => run.push(q),
                    _ => runs.push(vec![q]),
                }
            }
            let parts = runs
                .iter()
                .map(|run| Ok(QMatMul::from_qtensor(stack_rows(run, device)?)?))
                .collect::<Result<Vec<_>>>()?;
            return Ok(Self { kind: Kind::Quantized { parts, bias } });
        }
        let weights = weights.iter().map(|w| w.dense(dtype, device)).collect::<Result<Vec<_>>>()?;
        Ok(Self::new(Tensor::cat(&weights, 0)?, bias))
    }

    /// One projection from its weight (quantized ones stay so).
    pub fn from_weight(weight: Weight, bias: Option<Tensor>, dtype: DType, device: &Device) -> Result<Self> {
        match weight {
            Weight::Dense(w) => Ok(Self::new(w, bias)),
            quantized => Self::stacked(vec![(quantized, bias)], dtype, device),
        }
    }

    /// Whether the weight stays GGML-quantized.
    pub fn is_quantized(&self) -> bool {
        matches!(self.kind, Kind::Quantized { .. })
    }

    /// Bytes a product reads from the weight and bias.
    pub fn weight_bytes(&self) -> usize {
        let bytes = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        match &self.kind {
            Kind::Dense { inner, .. } => bytes(inner.weight()) + inner.bias().map_or(0, bytes),
            Kind::Quantized { parts, bias } => {
                let weights: usize = parts
                    .iter()
                    .map(|p| match p {
                        QMatMul::QTensor(q) => q.storage_size_in_bytes(),
                        QMatMul::Tensor(t) | QMatMul::TensorF16(t) => bytes(t),
                    })
                    .sum();
                weights + bias.as_ref().map_or(0, bytes)
            }
        }
    }

    /// The bias, if the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        match &self.kind {
            Kind::Dense { inner, .. } => inner.bias(),
            Kind::Quantized { bias, .. } => bias.as_ref(),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.product(x, true)
    }

    /// `x Wᵀ` without the bias, for a kernel that adds [`Proj::bias`] itself: in f32 the same
    /// one rounding of the same sum as [`Proj::forward`].
    pub fn forward_unbiased(&self, x: &Tensor) -> Result<Tensor> {
        self.product(x, false)
    }

    fn product(&self, x: &Tensor, with_bias: bool) -> Result<Tensor> {
        let (inner, threaded) = match &self.kind {
            Kind::Dense { inner, threaded } => (inner, *threaded),
            Kind::Quantized { parts, bias } => return quantized_forward(parts, bias.as_ref().filter(|_| with_bias), x),
        };
        let k = x.dim(D::Minus1)?;
        let rows = x.elem_count() / k.max(1);
        if threaded && rows <= MAX_ROWS && x.dtype() == DType::F32 && rayon::current_num_threads() > 1 {
            let y = forward_threaded(inner, x, rows, k, with_bias)?;
            super::ledger::op("linear", &y);
            return Ok(y);
        }
        if !with_bias && inner.bias().is_some() {
            let y = Linear::new(inner.weight().clone(), None).forward(x)?;
            super::ledger::op("matmul", &y);
            return Ok(y);
        }
        let y = inner.forward(x)?;
        super::ledger::op("matmul", &y);
        if inner.bias().is_some() {
            super::ledger::op("bias", &y);
        }
        Ok(y)
    }
}

impl Weight {
    /// Output rows.
    fn rows(&self) -> Result<usize> {
        Ok(match self {
            Weight::Dense(w) => w.dim(0)?,
            Weight::Quantized(q) => q.shape().dims()[0],
        })
    }

    /// The weight as a dense tensor of `dtype` on `device`.
    pub fn dense(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        Ok(match self {
            Weight::Dense(w) => w.to_dtype(dtype)?.to_device(device)?,
            Weight::Quantized(q) => q.dequantize(&Device::Cpu)?.to_dtype(dtype)?.to_device(device)?,
        })
    }
}

/// `x Wᵀ (+ b)` with each part's quantized product, side by side.
fn quantized_forward(parts: &[QMatMul], bias: Option<&Tensor>, x: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    let outs = parts.iter().map(|p| p.forward(&x)).collect::<candle_core::Result<Vec<_>>>()?;
    let mut y =
        if outs.len() == 1 { outs.into_iter().next().expect("one part") } else { Tensor::cat(&outs, D::Minus1)? };
    super::ledger::op("qmatmul", &y);
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
        super::ledger::op("bias", &y);
    }
    Ok(y)
}

/// Quantized weights of one GGML type `[out_i, in]` stacked by output row into one `[Σ out_i, in]`
/// on `device`: a row's blocks are contiguous bytes, so stacking concatenates them.
fn stack_rows(parts: &[&QTensor], device: &Device) -> Result<QTensor> {
    let dtype = parts[0].dtype();
    let k = parts[0].shape().dims()[1];
    let mut bytes = Vec::new();
    let mut rows = 0;
    for p in parts {
        let (n, pk) = p.shape().dims2()?;
        ensure!(p.dtype() == dtype && pk == k, "stacked weights differ in type or input width");
        bytes.extend_from_slice(&p.data()?);
        rows += n;
    }
    Ok(qtensor_from_ggml(dtype, &bytes, vec![rows, k], device)?)
}

fn forward_threaded(inner: &Linear, x: &Tensor, rows: usize, k: usize, with_bias: bool) -> Result<Tensor> {
    let w = inner.weight();
    let (n, wk) = w.dims2()?;
    anyhow::ensure!(wk == k, "linear layer: input has {k} features, the weight expects {wk}");
    let x = x.contiguous()?;
    let (x_storage, x_layout) = x.storage_and_layout();
    let (w_storage, w_layout) = w.storage_and_layout();
    let xs = cpu_f32(&x_storage, x_layout)?;
    let ws = cpu_f32(&w_storage, w_layout)?;
    let bias = inner.bias().filter(|_| with_bias).map(|b| b.storage_and_layout());
    let bs = match &bias {
        Some((s, l)) => Some(cpu_f32(s, l)?),
        None => None,
    };
    let y = matmul_few_rows(xs, rows, k, ws, n, bs);
    let mut shape = x.dims().to_vec();
    *shape.last_mut().expect("x has a last dimension") = n;
    Ok(Tensor::from_vec(y, shape, x.device())?)
}

/// A contiguous f32 CPU tensor's elements, borrowed from its storage.
fn cpu_f32<'a>(storage: &'a Storage, layout: &Layout) -> Result<&'a [f32]> {
    let Storage::Cpu(cpu) = storage else { anyhow::bail!("linear layer: expected a CPU tensor") };
    let (start, end) =
        layout.contiguous_offsets().ok_or_else(|| anyhow::anyhow!("linear layer: expected a contiguous tensor"))?;
    Ok(&cpu.as_slice::<f32>()?[start..end])
}

/// `y[r, o] = Σ_i x[r, i] · w[o, i] (+ b[o])` for `x: [m, k]`, `w: [n, k]`, with the output rows
/// `o` split over rayon's threads; returns `y: [m, n]`.
pub fn matmul_few_rows(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, bias: Option<&[f32]>) -> Vec<f32> {
    debug_assert!(x.len() == m * k && w.len() == n * k);
    // Blocks of output rows: enough tasks to balance the threads, each a few weight rows long.
    let block = n.div_ceil(rayon::current_num_threads() * 8).clamp(8, 256);
    let simd = has_avx2_fma();
    // yᵀ `[n, m]`: each task writes one contiguous stretch.
    let mut yt = vec![0f32; n * m];
    yt.par_chunks_mut(block * m).enumerate().for_each(|(bi, out)| {
        for (j, o) in out.chunks_mut(m).enumerate() {
            let row = bi * block + j;
            dots(simd, x, k, &w[row * k..(row + 1) * k], o);
            if let Some(b) = bias {
                o.iter_mut().for_each(|y| *y += b[row]);
            }
        }
    });
    if m == 1 {
        return yt;
    }
    let mut y = vec![0f32; m * n];
    for (o, col) in yt.chunks(m).enumerate() {
        for (r, &v) in col.iter().enumerate() {
            y[r * n + o] = v;
        }
    }
    y
}

/// Whether the CPU has AVX2 and FMA (asked once per product, not per weight row).
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `out[r] = Σ_i x[r·k + i] · w[i]` for every row r of `x`: with AVX2 and FMA when `simd` (the CPU
/// has them; each weight chunk is loaded once for up to four rows), else in portable code the
/// compiler vectorises for the baseline target.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
pub(crate) fn dots(simd: bool, x: &[f32], k: usize, w: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        let mut r = 0;
        while r < out.len() {
            let g = (out.len() - r).min(4);
            let xs = &x[r * k..(r + g) * k];
            // SAFETY: the CPU supports the features these functions are compiled for; the slices
            // hold g rows of k elements and w holds k.
            unsafe {
                match g {
                    1 => out[r] = dot_avx2_fma(xs, w),
                    2 => dots_avx2_fma::<2>(xs, k, w, &mut out[r..r + 2]),
                    3 => dots_avx2_fma::<3>(xs, k, w, &mut out[r..r + 3]),
                    _ => dots_avx2_fma::<4>(xs, k, w, &mut out[r..r + 4]),
                }
            }
            r += g;
        }
        return;
    }
    for (r, y) in out.iter_mut().enumerate() {
        *y = dot_portable(&x[r * k..(r + 1) * k], w);
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut out = [0f32];
    dots(has_avx2_fma(), a, a.len(), b, &mut out);
    out[0]
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    acc.iter().sum::<f32>() + tail
}

/// G rows against one weight row: each 8-wide weight chunk is loaded once and multiplied into G
/// accumulators (G independent FMA chains).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2_fma<const G: usize>(x: &[f32], k: usize, w: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let (px, pw) = (x.as_ptr(), w.as_ptr());
    let mut acc = [_mm256_setzero_ps(); G];
    let mut i = 0;
    while i + 8 <= k {
        let wv = _mm256_loadu_ps(pw.add(i));
        for (r, acc) in acc.iter_mut().enumerate() {
            *acc = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(r * k + i)), wv, *acc);
        }
        i += 8;
    }
    for r in 0..G {
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r]);
        let mut total = lanes.iter().sum::<f32>();
        for j in i..k {
            total += *px.add(r * k + j) * *pw.add(j);
        }
        out[r] = total;
    }
}

/// One row against one weight row, four accumulators to hide the FMA latency.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        // The weight rows of a task are contiguous: asking for them ahead keeps more reads in
        // flight than the hardware prefetcher does (a prefetch never faults, even past the end).
        _mm_prefetch::<_MM_HINT_T0>(pb.wrapping_add(i + PREFETCH) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(pb.wrapping_add(i + PREFETCH + 16) as *const i8);
        for (j, acc) in acc.iter_mut().enumerate() {
            let o = i + 8 * j;
            *acc = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(o)), _mm256_loadu_ps(pb.add(o)), *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    let mut total = lanes.iter().sum::<f32>();
    while i < n {
        total += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The threaded path equals candle's matmul (to float rounding), with and without bias, for
    /// one to four rows and a width that leaves a remainder after the vector lanes.
    #[test]
    fn the_threaded_path_equals_candles_matmul() {
        let dev = Device::Cpu;
        let (n, k) = (700, 123);
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
        for bias in [None, Some(b)] {
            let proj = Proj::new(w.clone(), bias.clone());
            assert!(matches!(proj.kind, Kind::Dense { threaded: true, .. }));
            for rows in 1..=MAX_ROWS {
                let x = Tensor::randn(0f32, 1.0, (rows, k), &dev).unwrap();
                let got = proj.forward(&x).unwrap();
                let mut want = x.matmul(&w.t().unwrap()).unwrap();
                if let Some(b) = &bias {
                    want = want.broadcast_add(b).unwrap();
                }
                let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(diff < 1e-4, "rows {rows}: max difference {diff}");
            }
        }
        // Both dot products agree with a plain sum, whatever the length's remainder.
        for len in [0, 1, 7, 8, 31, 32, 33, 576, 1000] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| (*x as f64) * (*y as f64)).sum();
            assert!((dot_portable(&a, &b) as f64 - want).abs() < 1e-4, "portable, len {len}");
            #[cfg(target_arch = "x86_64")]
            assert!((dot(&a, &b) as f64 - want).abs() < 1e-4, "dispatched, len {len}");
        }
        // A small weight stays on candle's path.
        assert!(matches!(
            Proj::new(Tensor::zeros((8, 8), DType::F32, &dev).unwrap(), None).kind,
            Kind::Dense { threaded: false, .. }
        ));
    }

    /// A stacked projection's output is its parts' outputs side by side, zeros standing in for a
    /// missing bias; on the threaded path each element is the same dot product, bit for bit.
    #[test]
    fn stacked_projections_equal_their_parts() {
        let dev = Device::Cpu;
        let k = 96;
        let (wq, wk) =
            (Tensor::randn(0f32, 1.0, (900, k), &dev).unwrap(), Tensor::randn(0f32, 1.0, (700, k), &dev).unwrap());
        let bq = Tensor::randn(0f32, 1.0, 900, &dev).unwrap();
        let stacked = Proj::stacked(
            vec![(Weight::Dense(wq.clone()), Some(bq.clone())), (Weight::Dense(wk.clone()), None)],
            DType::F32,
            &dev,
        )
        .unwrap();
        let (q, kp) = (Proj::new(wq, Some(bq)), Proj::new(wk, None));
        for rows in [1, 3, MAX_ROWS, MAX_ROWS + 5] {
            let x = Tensor::randn(0f32, 1.0, (rows, k), &dev).unwrap();
            let want = Tensor::cat(&[q.forward(&x).unwrap(), kp.forward(&x).unwrap()], 1).unwrap();
            let diff = (stacked.forward(&x).unwrap() - want).unwrap().abs().unwrap().max_all().unwrap();
            let diff = diff.to_scalar::<f32>().unwrap();
            if rows <= MAX_ROWS && rayon::current_num_threads() > 1 {
                assert_eq!(diff, 0.0, "rows {rows}");
            } else {
                assert!(diff < 1e-4, "rows {rows}: max difference {diff}");
            }
        }
    }

    /// Quantized parts stack into one weight per run of equal types; the stacked product is the
    /// parts' products side by side (to the float order of the kernels a width selects), with
    /// the bias where one is given.
    #[test]
    fn stacked_quantized_projections_equal_their_parts() {
        use candle_core::quantized::GgmlDType;
        let dev = Device::Cpu;
        let k = 256;
        let part = |n: usize, dtype: GgmlDType| {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            Arc::new(QTensor::quantize(&w, dtype).unwrap())
        };
        let parts = [part(64, GgmlDType::Q4K), part(32, GgmlDType::Q4K), part(48, GgmlDType::Q6K)];
        let bias = Tensor::randn(0f32, 1.0, 32, &dev).unwrap();
        let stacked = Proj::stacked(
            vec![
                (Weight::Quantized(parts[0].clone()), None),
                (Weight::Quantized(parts[1].clone()), Some(bias.clone())),
                (Weight::Quantized(parts[2].clone()), None),
            ],
            DType::F32,
            &dev,
        )
        .unwrap();
        let Kind::Quantized { parts: runs, .. } = &stacked.kind else { panic!("not quantized") };
        assert_eq!(runs.len(), 2, "two runs of equal types");
        for rows in [1, 5] {
            let x = Tensor::randn(0f32, 1.0, (rows, k), &dev).unwrap();
            let outs: Vec<Tensor> =
                parts.iter().map(|p| QMatMul::from_arc(p.clone()).unwrap().forward(&x).unwrap()).collect();
            let zeros = |n| Tensor::zeros(n, DType::F32, &dev).unwrap();
            let b = Tensor::cat(&[zeros(64), bias.clone(), zeros(48)], 0).unwrap();
            let want = Tensor::cat(&outs, 1).unwrap().broadcast_add(&b).unwrap();
            let got = stacked.forward(&x).unwrap();
            let diff = (got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let scale = want.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(diff <= 1e-5 * scale, "rows {rows}: max difference {diff}");
        }
        assert_eq!(stacked.weight_bytes(), parts.iter().map(|p| p.storage_size_in_bytes()).sum::<usize>() + 144 * 4);
    }
}
