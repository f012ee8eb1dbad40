//! `cargo bench --bench linear`: the threaded few-row Linear path ([`kvbench::model::linear::Proj`])
//! against candle's matmul, on SmolLM2-135M's weight shapes, for 1–16 input rows (sequences
//! decoded together). What `MAX_ROWS` in `src/model/linear.rs` was chosen from.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use kvbench::model::linear::Proj;

fn best_secs(mut f: impl FnMut()) -> f64 {
    f();
    (0..15)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let dev = Device::Cpu;
    println!("threads: {}", rayon::current_num_threads());
    println!(
        "{:>22} {:>5} {:>11} {:>11} {:>7} {:>9}",
        "weight [out, in]", "rows", "kvbench ms", "candle ms", "ratio", "GB/s"
    );
    let shapes =
        [("q_proj/o_proj", 576, 576), ("gate/up_proj", 1536, 576), ("down_proj", 576, 1536), ("lm_head", 49152, 576)];
    for (name, n, k) in shapes {
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let proj = Proj::new(w.clone(), None);
        let wt = w.t().unwrap();
        for rows in [1, 2, 4, 8, 16] {
            let x = Tensor::randn(0f32, 1.0, (rows, k), &dev).unwrap();
            let ours = best_secs(|| {
                std::hint::black_box(proj.forward(&x).unwrap());
            });
            let candle = best_secs(|| {
                std::hint::black_box(x.matmul(&wt).unwrap());
            });
            let gbs = (n * k * DType::F32.size_in_bytes()) as f64 / ours / 1e9;
            println!(
                "{:>14} {:>7} {rows:>5} {:>11.3} {:>11.3} {:>7.2} {gbs:>9.1}",
                name,
                format!("{n}x{k}"),
                ours * 1e3,
                candle * 1e3,
                candle / ours
            );
        }
    }
}
