//! The kernels of `fused.cu`, compiled by NVRTC once per process and loaded once per device.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaView, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Shape, WithDType};
use half::{bf16, f16};

use super::{QkvHeads, QkvRope};

const SOURCE: &str = include_str!("../fused.cu");

type Operand<'a> = (&'a CudaStorage, &'a Layout);

/// The PTX of `fused.cu` (compiled on first use; a compile error is every later call's error).
fn ptx() -> Result<&'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        candle_core::cuda_backend::cudarc::nvrtc::compile_ptx(SOURCE).map(|p| p.to_src()).map_err(|e| e.to_string())
    })
    .as_deref()
    .map_err(|e| candle_core::Error::Msg(format!("compiling the fused kernels (NVRTC): {e}")))
}

fn function(dev: &CudaDevice, name: &str, dtype: DType) -> Result<CudaFunction> {
    let suffix = match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        other => candle_core::bail!("fused kernels: no {name} for {other:?}"),
    };
    Ok(dev.get_or_load_custom_func(&format!("{name}_{suffix}"), "kvbench_fused", ptx()?)?.into_cuda_function())
}

fn view<'a, T: CudaDType>((s, l): Operand<'a>, what: &str) -> Result<CudaView<'a, T>> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(s.as_cuda_slice::<T>()?.slice(a..b)),
        None => candle_core::bail!("fused kernels: {what} must be contiguous"),
    }
}

/// Runs `$f::<T>` for the storage's float dtype.
macro_rules! by_dtype {
    ($dtype:expr, $f:ident ( $($arg:expr),* )) => {
        match $dtype {
            DType::F32 => $f::<f32>($($arg),*),
            DType::BF16 => $f::<bf16>($($arg),*),
            DType::F16 => $f::<f16>($($arg),*),
            other => candle_core::bail!("fused kernels: unsupported dtype {other:?}"),
        }
    };
}

/// Threads per block for a row of `n` elements: whole warps, at most 1024.
fn threads(n: usize) -> u32 {
    (n.div_ceil(32) * 32).clamp(32, 1024) as u32
}

pub(super) fn qkv_rope(
    op: &QkvRope,
    rows: usize,
    qkv: Operand<'_>,
    table: Operand<'_>,
    extras: Option<Operand<'_>>,
) -> Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + WithDType + DeviceRepr>(
        op: &QkvRope,
        rows: usize,
        qkv: Operand<'_>,
        table: Operand<'_>,
        extras: Option<Operand<'_>>,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &qkv.0.device;
        let QkvHeads { q: nh, kv: nkv, dim: hd, eps } = op.heads;
        let n = rows * (nh + 2 * nkv) * hd;
        let (x, t) = (view::<T>(qkv, "qkv")?, view::<T>(table, "the RoPE table")?);
        // Without extras the kernel reads none: the table stands in for the pointer.
        let e = match extras {
            Some(e) => view::<T>(e, "the bias and q/k norms")?,
            None => view::<T>(table, "the RoPE table")?,
        };
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<T>(n)? };
        let f = function(dev, "qkv_rope", T::DTYPE)?;
        let cfg = LaunchConfig {
            grid_dim: ((nh + 2 * nkv) as u32, rows as u32, 1),
            block_dim: (threads(hd / 2), 1, 1),
            shared_mem_bytes: 0,
        };
        let (nh, nkv, hd) = (nh as i32, nkv as i32, hd as i32);
        let (biased, normed) = (op.biased as i32, op.normed as i32);
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&x).arg(&t).arg(&e).arg(&out).arg(&nh).arg(&nkv).arg(&hd).arg(&biased).arg(&normed).arg(&eps);
        // SAFETY: the arguments match the kernel's signature; the grid covers every head of every row.
        unsafe { b.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from(n)))
    }
    by_dtype!(qkv.0.dtype(), run(op, rows, qkv, table, extras))
}

pub(super) fn masked_softmax(scores: Operand<'_>, lengths: Operand<'_>) -> Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + WithDType + DeviceRepr>(
        scores: Operand<'_>,
        lengths: Operand<'_>,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &scores.0.device;
        let shape = scores.1.shape().clone();
        let padded = shape.dims()[shape.rank() - 1];
        let rows = lengths.1.shape().elem_count();
        let lines = shape.elem_count() / padded;
        let (s, l) = (view::<T>(scores, "the scores")?, view::<u32>(lengths, "the lengths")?);
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<T>(shape.elem_count())? };
        let f = function(dev, "masked_softmax", T::DTYPE)?;
        let cfg =
            LaunchConfig { grid_dim: (lines as u32, 1, 1), block_dim: (threads(padded), 1, 1), shared_mem_bytes: 0 };
        let (per_row, padded) = ((lines / rows.max(1)) as i32, padded as i32);
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&s).arg(&l).arg(&out).arg(&per_row).arg(&padded);
        // SAFETY: the arguments match the kernel's signature; one block per line of scores.
        unsafe { b.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
    }
    by_dtype!(scores.0.dtype(), run(scores, lengths))
}

pub(super) fn silu_mul(gate_up: Operand<'_>) -> Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + WithDType + DeviceRepr>(gate_up: Operand<'_>) -> Result<(CudaStorage, Shape)> {
        let dev = &gate_up.0.device;
        let (rows, width) = gate_up.1.shape().dims2()?;
        let g = view::<T>(gate_up, "gate_up")?;
        let n = rows * width / 2;
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<T>(n)? };
        let f = function(dev, "silu_mul", T::DTYPE)?;
        let cfg = LaunchConfig::for_num_elems(n as u32);
        let (n, f_dim) = (n as i32, (width / 2) as i32);
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&g).arg(&out).arg(&n).arg(&f_dim);
        // SAFETY: the arguments match the kernel's signature; the kernel bounds its index by n.
        unsafe { b.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from((rows, width / 2))))
    }
    by_dtype!(gate_up.0.dtype(), run(gate_up))
}

pub(super) fn add_rms_norm(eps: f32, x: Operand<'_>, y: Operand<'_>, w: Operand<'_>) -> Result<(CudaStorage, Shape)> {
    fn run<T: CudaDType + WithDType + DeviceRepr>(
        eps: f32,
        x: Operand<'_>,
        y: Operand<'_>,
        w: Operand<'_>,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &x.0.device;
        let (rows, n) = x.1.shape().dims2()?;
        if y.1.dims() != x.1.dims() || w.1.shape().elem_count() != n {
            candle_core::bail!("add_rms_norm: {:?} + {:?}, weight {:?}", x.1.shape(), y.1.shape(), w.1.shape());
        }
        let (xs, ys, ws) = (view::<T>(x, "x")?, view::<T>(y, "y")?, view::<T>(w, "the norm's weight")?);
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<T>(2 * rows * n)? };
        let f = function(dev, "add_rms_norm", T::DTYPE)?;
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (threads(n), 1, 1), shared_mem_bytes: 0 };
        let (rows_i, n_i) = (rows as i32, n as i32);
        let stream = dev.cuda_stream();
        let mut b = stream.launch_builder(&f);
        b.arg(&xs).arg(&ys).arg(&ws).arg(&out).arg(&rows_i).arg(&n_i).arg(&eps);
        // SAFETY: the arguments match the kernel's signature; one block per row.
        unsafe { b.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from((2, rows, n))))
    }
    by_dtype!(x.0.dtype(), run(eps, x, y, w))
}
