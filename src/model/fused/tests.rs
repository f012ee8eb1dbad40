use candle_core::{Device, Tensor};

use super::*;

/// Deterministic values in `[-scale, scale)`, with exact zeros and a few large ones mixed in.
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            match i % 37 {
                0 => 0.0,
                5 => (u - 0.5) * 60.0,
                _ => (u * 2.0 - 1.0) * scale,
            }
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed, scale), shape, &Device::Cpu).unwrap()
}

fn norm(n: usize, seed: u64) -> RmsNorm {
    RmsNorm::new(tensor(&[n], seed, 1.5), 1e-6)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

fn assert_same_bits(fused: &Tensor, reference: &Tensor, what: &str) {
    assert_eq!(fused.dims(), reference.dims(), "{what}: shapes");
    let (f, r) = (bits(fused), bits(reference));
    let differ = f.iter().zip(&r).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "{what}: {differ} of {} elements differ", f.len());
}

/// Both kinds of step over the same inputs.
fn steps(rows: usize, hd: usize, attended: &[u32], padded: usize, seed: u64) -> [Step; 2] {
    let (cos, sin) = (tensor(&[rows, hd / 2], seed, 1.0), tensor(&[rows, hd / 2], seed + 1, 1.0));
    [Kernels::Fused, Kernels::Reference].map(|k| Step::new(k, cos.clone(), sin.clone(), attended, padded).unwrap())
}

/// With and without a bias and q/k norms, on candle's matmul and (a weight big enough, a few
/// rows) on the threaded Linear path, which adds the bias inside its product.
#[test]
fn qkv_rope_gives_the_reference_bits() {
    for (rows, nh, nkv, hd, d) in [(1, 4, 2, 16, 24), (3, 12, 2, 128, 64), (33, 3, 1, 8, 16), (5, 9, 3, 64, 80)] {
        let [fused, reference] = steps(rows, hd, &vec![1; rows], 32, rows as u64);
        assert!(matches!(fused.rope, StepRope::Table(_)) && matches!(reference.rope, StepRope::Pair(..)));
        let heads = QkvHeads { q: nh, kv: nkv, dim: hd, eps: 1e-6 };
        let width = (nh + 2 * nkv) * hd;
        let h = tensor(&[rows, d], 7 + hd as u64, 3.0);
        let (w, b) = (tensor(&[width, d], 11, 0.5), tensor(&[width], 13, 2.0));
        let qk_norm = QkNorm { q: norm(hd, 1), k: norm(hd, 2) };
        for bias in [None, Some(b)] {
            let proj = Proj::new(w.clone(), bias.clone());
            for normed in [None, Some(&qk_norm)] {
                let extras = QkvExtras::new(bias.as_ref(), normed).unwrap();
                let f = fused.qkv_rope(&h, &proj, normed, extras.as_ref(), heads).unwrap();
                let r = reference.qkv_rope(&h, &proj, normed, extras.as_ref(), heads).unwrap();
                let what = format!(
                    "rows {rows}, heads {nh}/{nkv}, dim {hd}, bias {}, normed {}",
                    bias.is_some(),
                    normed.is_some()
                );
                for (name, a, b) in [("q", &f.0, &r.0), ("k", &f.1, &r.1), ("v", &f.2, &r.2)] {
                    assert_same_bits(a, b, &format!("{what}: {name}"));
                }
            }
        }
    }
}

#[test]
fn masked_softmax_gives_the_reference_bits() {
    for (rows, heads, padded) in [(1, 1, 32), (4, 6, 64), (33, 2, 224)] {
        // Lengths from one key to the whole padded row.
        let attended: Vec<u32> = (0..rows).map(|r| [1, padded, padded / 2 + 3, 17][r % 4].min(padded) as u32).collect();
        let [fused, reference] = steps(rows, 8, &attended, padded, 3);
        // Scores past a row's length are what the CPU scores kernel leaves there: zeros.
        let mut s = values(rows * heads * padded, padded as u64, 8.0);
        for (i, v) in s.iter_mut().enumerate() {
            if i % padded >= attended[i / (heads * padded)] as usize {
                *v = 0.0;
            }
        }
        let scores = Tensor::from_vec(s, (rows, 1, heads, padded), &Device::Cpu).unwrap();
        let (f, r) = (fused.softmax(&scores).unwrap(), reference.softmax(&scores).unwrap());
        assert_same_bits(&f, &r, &format!("rows {rows}, heads {heads}, padded {padded}"));
    }
}

#[test]
fn silu_mul_and_add_rms_norm_give_the_reference_bits() {
    for (rows, n) in [(1, 8), (7, 96), (33, 40)] {
        let gate_up = tensor(&[rows, 2 * n], n as u64, 6.0);
        let f = silu_mul(Kernels::Fused, &gate_up).unwrap();
        assert_same_bits(&f, &silu_mul(Kernels::Reference, &gate_up).unwrap(), &format!("silu_mul {rows}×{n}"));

        let (x, y, w) = (tensor(&[rows, n], 1, 4.0), tensor(&[rows, n], 2, 4.0), norm(n, 3));
        let (fs, fh) = add_rms_norm(Kernels::Fused, &x, &y, &w, 1e-6).unwrap();
        let (rs, rh) = add_rms_norm(Kernels::Reference, &x, &y, &w, 1e-6).unwrap();
        assert_same_bits(&fs, &rs, &format!("add_rms_norm {rows}×{n}: sum"));
        assert_same_bits(&fh, &rh, &format!("add_rms_norm {rows}×{n}: norm"));
    }
}

/// 16-bit dtypes on the CPU run the reference ops, whatever was asked.
#[test]
fn the_cpu_fuses_f32_only() {
    let x = tensor(&[2, 8], 1, 1.0);
    assert!(Kernels::Fused.fused_for(&x));
    assert!(!Kernels::Fused.fused_for(&x.to_dtype(DType::BF16).unwrap()));
    assert!(!Kernels::Reference.fused_for(&x));
    assert_eq!(Kernels::default_for(&Device::Cpu), Kernels::Fused);
}
