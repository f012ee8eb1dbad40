//! `cargo bench --bench sampling`: one row's draw at the paper's setting (T 0.6, top-p 0.95,
//! top-k 20) on a Qwen2-sized vocabulary (151,936 logits): `sample` (partial selection of the top-k)
//! against `sample_sorted` (a sort of the whole row), which draw the same tokens.

use std::time::Instant;

use kvbench::decode::sampling::{sample, sample_sorted, SamplingParams};
use kvbench::rng::Rng;

fn main() {
    const VOCAB: usize = 151_936;
    const ROWS: usize = 64;
    let mut gen = Rng::new(1);
    // Logits spread like a language model's: most far below the few that matter.
    let rows: Vec<Vec<f32>> =
        (0..ROWS).map(|_| (0..VOCAB).map(|_| (gen.next_f64() * 30.0 - 20.0) as f32).collect()).collect();
    let params = SamplingParams::PAPER;
    let time = |f: &dyn Fn(&[f32], &mut Rng) -> u32| {
        let mut rng = Rng::new(7);
        let t = Instant::now();
        let picked: Vec<u32> = rows.iter().map(|r| f(r, &mut rng)).collect();
        (t.elapsed().as_secs_f64() * 1e3 / ROWS as f64, picked)
    };
    let (partial, a) = time(&|r, rng| sample(r, &params, rng));
    let (sorted, b) = time(&|r, rng| sample_sorted(r, &params, rng));
    assert_eq!(a, b, "the two draws differ");
    println!("vocabulary {VOCAB}, {ROWS} rows, {params:?}");
    println!("sample (partial selection): {partial:.2} ms per row");
    println!("sample_sorted (full sort):  {sorted:.2} ms per row");
    println!("ratio: {:.1}x", sorted / partial);
}
