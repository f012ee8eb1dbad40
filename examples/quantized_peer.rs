//! The peer for `kvbench bench --weights native`: candle-transformers' own quantized Qwen2
//! (`quantized_qwen2::ModelWeights`, its KV cache a growing concatenation, no eviction) decoding
//! the same GGUF, timed the same way: a prompt of seeded random ids per sequence, then greedy
//! decode steps, every sequence feeding one token per step.
//!
//! `cargo run --release --example quantized_peer -- MODEL.gguf [--batch 1,8] [--prompt 64] [--steps 24]`

use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor, D};
use candle_transformers::models::quantized_qwen2::ModelWeights;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut model = None;
    let (mut batches, mut prompt, mut steps) = (vec![1usize, 8], 64usize, 24usize);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--batch" => batches = value()?.split(',').map(|b| b.parse()).collect::<Result<_, _>>()?,
            "--prompt" => prompt = value()?.parse()?,
            "--steps" => steps = value()?.parse()?,
            _ if model.is_none() => model = Some(a),
            _ => bail!("unexpected argument {a}"),
        }
    }
    let model = model.context("usage: quantized_peer MODEL.gguf [--batch 1,8] [--prompt N] [--steps N]")?;
    let dev = Device::Cpu;
    println!("batch  prompt  steps  ms/step  tok/s");
    for &b in &batches {
        let mut file = std::fs::File::open(&model).with_context(|| format!("opening {model}"))?;
        let content = gguf_file::Content::read(&mut file)?;
        let mut m = ModelWeights::from_gguf(content, &mut file, &dev)?;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let ids: Vec<u32> = (0..b * prompt)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) % 150_000) as u32
            })
            .collect();
        // The prompt one position at a time: the model's prefill narrows its last row out of a
        // batch without making it contiguous, which its quantized matmul rejects for b > 1.
        let ids = Tensor::from_vec(ids, (b, prompt), &dev)?;
        let mut next = ids.narrow(1, 0, 1)?.contiguous()?;
        for p in 0..prompt {
            let logits = m.forward(&ids.narrow(1, p, 1)?.contiguous()?, p)?;
            next = logits.argmax(D::Minus1)?.reshape((b, 1))?;
        }
        // One untimed step, then the timed ones.
        let logits = m.forward(&next, prompt)?;
        next = logits.argmax(D::Minus1)?.reshape((b, 1))?;
        let start_pos = prompt + 1;
        let t = Instant::now();
        for s in 0..steps {
            let logits = m.forward(&next, start_pos + s)?;
            next = logits.argmax(D::Minus1)?.reshape((b, 1))?;
            next.to_vec2::<u32>()?;
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
        println!("{b:>5}  {prompt:>6}  {steps:>5}  {ms:>7.2}  {:>5.1}", b as f64 * 1e3 / ms);
    }
    Ok(())
}
