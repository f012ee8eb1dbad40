//! `kvbench train-toy`: trains the toy model on fresh `synthetic-chain` problems with candle's
//! autograd and AdamW, on CPU.
//!
//! Recipe: loss on the output tokens only (everything after `<think>`),
//! AdamW β (0.9, 0.98), weight decay on the projection matrices only, global gradient-norm clip
//! 1.0, fresh problems every step. The learning rate stays at its peak until the long-range lookup
//! is learned (an induction-head transition that arrives late), then decays on a cosine. The
//! progress log reports the accuracy on the older operand's restated value, the token that needs
//! the lookup, because answer accuracy stays at chance until every line works.
//!
//! The training forward is written out here, differentiable, with the HF parameter names; the
//! saved weights are then run by [`crate::model::transformer::Transformer`] like any checkpoint
//! (a test holds the two forwards equal).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rayon::prelude::*;
use serde::Serialize;

use super::batches::{held_out_shards, training_shards, Batch, SHARDS};
use super::ToyShape;
use crate::data::synthetic::ChainParams;
use crate::rng::Rng;

#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    pub out: PathBuf,
    pub shape: ToyShape,
    /// The problem distribution; its seed is the training stream's (the evaluation set uses another).
    pub task: ChainParams,
    pub seed: u64,
    pub steps: usize,
    pub batch: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: usize,
    /// The step where the cosine decay from `lr` to `min_lr` begins.
    pub decay_from: usize,
    pub weight_decay: f64,
    pub clip: f64,
    pub log_every: usize,
    /// Continue from this model folder's weights (a fresh optimiser) instead of initialising.
    pub init: Option<PathBuf>,
    /// The first step's index: the problem stream and the schedule continue from it.
    pub first_step: usize,
}

/// Writes a model folder with freshly initialised (untrained) weights: for tests and examples.
pub fn write_initial_model(dir: &Path, shape: &ToyShape, seed: u64) -> Result<()> {
    super::write_model_files(dir, shape)?;
    save_weights(&init_params(shape, seed, &Device::Cpu)?, &dir.join("model.safetensors"))
}

/// Differentiable parameters with their HF names, in a fixed order.
struct Params {
    vars: Vec<(String, Var)>,
}

impl Params {
    fn get(&self, name: &str) -> &Tensor {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_tensor()).expect("known parameter")
    }
}

/// Initialisation as PyTorch's defaults: Linear U(±1/√fan_in), Embedding N(0, 1), norms 1.
fn init_params(shape: &ToyShape, seed: u64, dev: &Device) -> Result<Params> {
    let v = super::vocab_size();
    let (d, hd, f) = (shape.hidden_size, shape.head_dim(), shape.intermediate_size);
    let mut vars = Vec::new();
    let mut rng = Rng::derive(seed, &[0x1417]);
    let uniform = |name: String, rows: usize, cols: usize, rng: &mut Rng| -> Result<(String, Var)> {
        let bound = 1.0 / (cols as f64).sqrt();
        let data: Vec<f32> = (0..rows * cols).map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32).collect();
        Ok((name, Var::from_tensor(&Tensor::from_vec(data, (rows, cols), dev)?)?))
    };
    let normal: Vec<f32> = (0..v * d)
        .map(|_| {
            // Box–Muller.
            let (u1, u2) = (rng.next_f64().max(1e-12), rng.next_f64());
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
        })
        .collect();
    vars.push(("model.embed_tokens.weight".to_string(), Var::from_tensor(&Tensor::from_vec(normal, (v, d), dev)?)?));
    let ones = |name: String, n: usize| -> Result<(String, Var)> { Ok((name, Var::ones(n, DType::F32, dev)?)) };
    for l in 0..shape.num_layers {
        let p = format!("model.layers.{l}");
        vars.push(ones(format!("{p}.input_layernorm.weight"), d)?);
        vars.push(uniform(format!("{p}.self_attn.q_proj.weight"), shape.num_heads * hd, d, &mut rng)?);
        vars.push(uniform(format!("{p}.self_attn.k_proj.weight"), shape.num_kv_heads * hd, d, &mut rng)?);
        vars.push(uniform(format!("{p}.self_attn.v_proj.weight"), shape.num_kv_heads * hd, d, &mut rng)?);
        vars.push(uniform(format!("{p}.self_attn.o_proj.weight"), d, shape.num_heads * hd, &mut rng)?);
        vars.push(ones(format!("{p}.post_attention_layernorm.weight"), d)?);
        vars.push(uniform(format!("{p}.mlp.gate_proj.weight"), f, d, &mut rng)?);
        vars.push(uniform(format!("{p}.mlp.up_proj.weight"), f, d, &mut rng)?);
        vars.push(uniform(format!("{p}.mlp.down_proj.weight"), d, f, &mut rng)?);
    }
    vars.push(ones("model.norm.weight".to_string(), d)?);
    vars.push(uniform("lm_head.weight".to_string(), v, d, &mut rng)?);
    Ok(Params { vars })
}

/// The training forward: logits `[batch·t, vocab]` for token ids `[batch, t]`, causal attention.
pub fn forward(shape: &ToyShape, weights: &dyn Fn(&str) -> Tensor, tokens: &Tensor) -> Result<Tensor> {
    let (b, t) = tokens.dims2()?;
    let dev = tokens.device();
    let hd = shape.head_dim();
    let (nh, nkv) = (shape.num_heads, shape.num_kv_heads);
    let eps = shape.rms_norm_eps as f32;
    let half = hd / 2;
    let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
    for p in 0..t {
        for i in 0..half {
            let inv = 1.0 / (shape.rope_theta as f32).powf(2.0 * i as f32 / hd as f32);
            let angle = p as f32 * inv;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    let cos = Tensor::from_vec(cos, (t, half), dev)?;
    let sin = Tensor::from_vec(sin, (t, half), dev)?;
    let rope = |x: &Tensor| -> Result<Tensor> {
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let a = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
        let c = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
        Ok(Tensor::cat(&[a, c], D::Minus1)?)
    };
    let lin = |x: &Tensor, name: &str| -> Result<Tensor> { Ok(x.matmul(&weights(name).t()?)?) };
    let norm =
        |x: &Tensor, name: &str| -> Result<Tensor> { Ok(candle_nn::ops::rms_norm_slow(x, &weights(name), eps)?) };
    let heads =
        |x: Tensor, n: usize| -> Result<Tensor> { Ok(x.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?) };
    // [b, kv, t, hd] → [b, heads, t, hd], head h reading KV head h / groups (HF repeat_kv).
    let repeat = |x: Tensor| -> Result<Tensor> {
        let g = nh / nkv;
        Ok(x.unsqueeze(2)?.broadcast_as((b, nkv, g, t, hd))?.reshape((b, nh, t, hd))?)
    };
    let mut x = weights("model.embed_tokens.weight").index_select(&tokens.flatten_all()?, 0)?;
    for l in 0..shape.num_layers {
        let p = format!("model.layers.{l}");
        let h = norm(&x, &format!("{p}.input_layernorm.weight"))?;
        let q = rope(&heads(lin(&h, &format!("{p}.self_attn.q_proj.weight"))?, nh)?)?;
        let k = repeat(rope(&heads(lin(&h, &format!("{p}.self_attn.k_proj.weight"))?, nkv)?)?)?;
        let v = repeat(heads(lin(&h, &format!("{p}.self_attn.v_proj.weight"))?, nkv)?)?;
        let att = super::ops::causal_softmax(&q.matmul(&k.t()?)?, 1.0 / (hd as f32).sqrt())?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b * t, nh * hd))?;
        x = (x + lin(&y, &format!("{p}.self_attn.o_proj.weight"))?)?;
        let h = norm(&x, &format!("{p}.post_attention_layernorm.weight"))?;
        let g = lin(&h, &format!("{p}.mlp.gate_proj.weight"))?.silu()?;
        let u = lin(&h, &format!("{p}.mlp.up_proj.weight"))?;
        x = (x + lin(&(g * u)?, &format!("{p}.mlp.down_proj.weight"))?)?;
    }
    lin(&norm(&x, "model.norm.weight")?, "lm_head.weight")
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Scores {
    pub loss: f64,
    /// Share of output tokens predicted right (teacher-forced).
    pub token_acc: f64,
    /// Share of older-operand values predicted right: the long-range lookup.
    pub lookup_acc: f64,
    /// Share of problems with every output token right, which greedy decoding then reproduces.
    pub solved: f64,
}

/// Sums over a batch (or a shard of one), from which [`Scores`] are shares.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    nll: f64,
    targets: usize,
    right: usize,
    lookups: usize,
    lookups_right: usize,
    problems: usize,
    solved: usize,
}

impl Counts {
    fn add(self, o: Counts) -> Counts {
        Counts {
            nll: self.nll + o.nll,
            targets: self.targets + o.targets,
            right: self.right + o.right,
            lookups: self.lookups + o.lookups,
            lookups_right: self.lookups_right + o.lookups_right,
            problems: self.problems + o.problems,
            solved: self.solved + o.solved,
        }
    }

    fn scores(&self) -> Scores {
        Scores {
            loss: self.nll / self.targets.max(1) as f64,
            token_acc: self.right as f64 / self.targets.max(1) as f64,
            lookup_acc: self.lookups_right as f64 / self.lookups.max(1) as f64,
            solved: self.solved as f64 / self.problems.max(1) as f64,
        }
    }
}

/// The batch's summed cross-entropy divided by `denominator` (the step's target count, so that the
/// shards' losses add up to the step's mean), and its counts.
fn loss_and_counts(logits: &Tensor, batch: &Batch, denominator: usize) -> Result<(Tensor, Counts)> {
    let picked = logits.index_select(&batch.rows, 0)?;
    let targets = Tensor::from_slice(&batch.targets, (batch.targets.len(), 1), logits.device())?;
    let nll = candle_nn::ops::log_softmax(&picked, D::Minus1)?.gather(&targets, 1)?.sum_all()?.neg()?;
    let pred: Vec<u32> = picked.argmax(D::Minus1)?.to_vec1()?;
    let mut wrong = vec![false; batch.problems];
    let mut c = Counts { targets: pred.len(), problems: batch.problems, ..Counts::default() };
    for (i, (&p, &t)) in pred.iter().zip(&batch.targets).enumerate() {
        c.right += (p == t) as usize;
        wrong[batch.owner[i]] |= p != t;
        if batch.lookup[i] {
            c.lookups += 1;
            c.lookups_right += (p == t) as usize;
        }
    }
    c.solved = wrong.iter().filter(|w| !**w).count();
    c.nll = nll.to_scalar::<f32>()? as f64;
    Ok(((nll / denominator as f64)?, c))
}

/// One step's forward and backward passes, a shard per task; the gradients summed in shard order.
fn shard_gradients(
    shape: &ToyShape,
    weights: &(dyn Fn(&str) -> Tensor + Sync),
    shards: &[Batch],
    vars: &[Var],
) -> Result<(candle_core::backprop::GradStore, Counts)> {
    let denominator: usize = shards.iter().map(|b| b.targets.len()).sum();
    let pass = |b: &Batch| -> Result<(candle_core::backprop::GradStore, Counts)> {
        let logits = forward(shape, weights, &b.tokens)?;
        let (loss, counts) = loss_and_counts(&logits, b, denominator)?;
        Ok((loss.backward()?, counts))
    };
    let passes: Vec<Result<(candle_core::backprop::GradStore, Counts)>> = shards.par_iter().map(pass).collect();
    let mut passes = passes.into_iter();
    let (mut grads, mut counts) = passes.next().context("a step has at least one shard")??;
    for pass in passes {
        let (more, c) = pass?;
        counts = counts.add(c);
        for v in vars {
            let t = v.as_tensor();
            match (grads.get(t), more.get(t)) {
                (Some(a), Some(b)) => {
                    let sum = (a + b)?;
                    grads.insert(t, sum);
                }
                (None, Some(b)) => {
                    grads.insert(t, b.clone());
                }
                _ => {}
            }
        }
    }
    Ok((grads, counts))
}

/// Linear warmup from the first step (a continuation's fresh optimiser warms up again), the peak
/// until `decay_from`, then a cosine to `min_lr` at `steps`.
fn lr_at(o: &TrainOptions, step: usize) -> f64 {
    let since = step - o.first_step;
    if since < o.warmup {
        return o.lr * (since + 1) as f64 / o.warmup as f64;
    }
    if step < o.decay_from || o.steps <= o.decay_from {
        return o.lr;
    }
    let x = (step - o.decay_from) as f64 / (o.steps - o.decay_from) as f64;
    o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + (std::f64::consts::PI * x).cos())
}

/// What `train-toy` records next to the weights.
#[derive(Serialize)]
struct TrainingRecord<'a> {
    command: String,
    options: &'a TrainOptions,
    kvbench_version: &'static str,
    git_commit: Option<&'static str>,
    /// candle's threads per kernel, and the shards of each step run at once.
    threads: usize,
    shards: usize,
    seconds: f64,
    parameters: usize,
    final_eval: Scores,
}

/// Trains and writes the model folder. Returns the held-out scores at the end.
pub fn train(o: &TrainOptions) -> Result<Scores> {
    ensure!(
        o.steps > o.first_step && o.batch > 0 && o.warmup > 0,
        "--steps must exceed --first-step; --batch and --warmup must be positive"
    );
    o.task.validate()?;
    let dev = Device::Cpu;
    keep_freed_memory();
    let tok = super::tokenizer()?;
    let params = init_params(&o.shape, o.seed, &dev)?;
    if let Some(dir) = &o.init {
        let path = dir.join("model.safetensors");
        let saved =
            candle_core::safetensors::load(&path, &dev).with_context(|| format!("reading {}", path.display()))?;
        for (name, var) in &params.vars {
            let t = saved.get(name).with_context(|| format!("{} lacks {name}", path.display()))?;
            var.set(t).with_context(|| format!("{}: {name} has another shape", path.display()))?;
        }
    }
    let n_params: usize = params.vars.iter().map(|(_, v)| v.elem_count()).sum();
    let is_matrix = |n: &str| n.ends_with("proj.weight") || n == "lm_head.weight";
    let group = |decay: bool| -> Vec<Var> {
        params.vars.iter().filter(|(n, _)| is_matrix(n) == decay).map(|(_, v)| v.clone()).collect()
    };
    let adam = |wd: f64| ParamsAdamW { lr: o.lr, beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: wd };
    let all_vars: Vec<Var> = params.vars.iter().map(|(_, v)| v.clone()).collect();
    let mut opt_decay = AdamW::new(group(true), adam(o.weight_decay))?;
    let mut opt_plain = AdamW::new(group(false), adam(0.0))?;
    // Held out from training: another seed of the same distribution.
    let eval_task = ChainParams { seed: o.task.seed ^ 0x5EED_E7A1, ..o.task.clone() };
    let eval = held_out_shards(&tok, &eval_task, 64, &dev)?;

    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    super::write_model_files(&o.out, &o.shape)?;
    let log_path = o.out.join("train-log.csv");
    // A continuation (--first-step > 0) extends the log of the run it continues.
    let extend = o.first_step > 0 && log_path.is_file();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(extend)
        .truncate(!extend)
        .open(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut log = std::io::BufWriter::new(file);
    if !extend {
        writeln!(
            log,
            "step,lr,loss,token_acc,lookup_acc,solved,eval_loss,eval_token_acc,eval_lookup_acc,eval_solved,seconds"
        )?;
    }
    eprintln!(
        "training the toy model: {n_params} parameters, {} steps × {} problems in {SHARDS} shards, {} threads per kernel",
        o.steps,
        o.batch,
        candle_core::utils::get_num_threads()
    );
    let start = Instant::now();
    let weights = |name: &str| params.get(name).clone();
    let mut running = Scores::default();
    let mut pool = None;
    let mut seen = 0usize;
    for step in o.first_step..o.steps {
        let lr = lr_at(o, step);
        opt_decay.set_learning_rate(lr);
        opt_plain.set_learning_rate(lr);
        let shards = training_shards(&tok, o, step, &mut pool, &dev)?;
        let (mut grads, counts) = shard_gradients(&o.shape, &weights, &shards, &all_vars)?;
        let s = counts.scores();
        clip_gradients(&all_vars, &mut grads, o.clip)?;
        opt_decay.step(&grads)?;
        opt_plain.step(&grads)?;

        running.loss += s.loss;
        running.token_acc += s.token_acc;
        running.lookup_acc += s.lookup_acc;
        running.solved += s.solved;
        seen += 1;
        if (step + 1) % o.log_every == 0 || step + 1 == o.steps {
            let e = evaluate(&o.shape, &weights, &eval)?;
            let k = seen as f64;
            let secs = start.elapsed().as_secs_f64();
            writeln!(
                log,
                "{},{lr:.6},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{secs:.1}",
                step + 1,
                running.loss / k,
                running.token_acc / k,
                running.lookup_acc / k,
                running.solved / k,
                e.loss,
                e.token_acc,
                e.lookup_acc,
                e.solved
            )?;
            log.flush()?;
            eprintln!(
                "step {:>5}  lr {lr:.2e}  loss {:.4}  lookup {:.3}  held-out: loss {:.4} lookup {:.3} solved {:.3}  {:.2} s/step",
                step + 1,
                running.loss / k,
                running.lookup_acc / k,
                e.loss,
                e.lookup_acc,
                e.solved,
                secs / (step + 1 - o.first_step) as f64
            );
            running = Scores::default();
            seen = 0;
            save_weights(&params, &o.out.join("model.safetensors"))?;
        }
    }
    let final_eval = evaluate(&o.shape, &weights, &eval)?;
    save_weights(&params, &o.out.join("model.safetensors"))?;
    let record = TrainingRecord {
        command: std::iter::once("kvbench".to_string()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" "),
        options: o,
        kvbench_version: env!("CARGO_PKG_VERSION"),
        git_commit: option_env!("KVBENCH_GIT_COMMIT"),
        threads: candle_core::utils::get_num_threads(),
        shards: SHARDS,
        seconds: start.elapsed().as_secs_f64(),
        parameters: n_params,
        final_eval,
    };
    crate::io::write_atomic(&o.out.join("training.json"), (serde_json::to_string_pretty(&record)? + "\n").as_bytes())?;
    Ok(final_eval)
}

/// A training step allocates and frees tensors of hundreds of MB; glibc would return each to the
/// kernel and fault it back in zeroed (a third of the step time). Keep freed memory in the heap.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_MAX: i32 = -4;
        // The shards' threads would each get an arena of their own, which does return memory.
        const M_ARENA_MAX: i32 = -8;
        // SAFETY: mallopt only changes allocator thresholds; called before the large allocations.
        unsafe {
            mallopt(M_MMAP_MAX, 0);
            mallopt(M_ARENA_MAX, 1);
            mallopt(M_TRIM_THRESHOLD, i32::MAX);
        }
    }
}

fn evaluate(shape: &ToyShape, weights: &(dyn Fn(&str) -> Tensor + Sync), shards: &[Batch]) -> Result<Scores> {
    // Detached copies: no graph is kept for evaluation.
    let detached = |name: &str| weights(name).detach();
    let counts: Vec<Result<Counts>> =
        shards.par_iter().map(|b| Ok(loss_and_counts(&forward(shape, &detached, &b.tokens)?, b, 1)?.1)).collect();
    counts.into_iter().try_fold(Counts::default(), |sum, c| Ok(sum.add(c?))).map(|c| c.scores())
}

/// Scales the gradients of `vars` so that their global L2 norm is at most `max_norm`.
pub(crate) fn clip_gradients(vars: &[Var], grads: &mut candle_core::backprop::GradStore, max_norm: f64) -> Result<()> {
    let mut total = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = total.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * scale)?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(())
}

fn save_weights(params: &Params, path: &Path) -> Result<()> {
    let map: HashMap<String, Tensor> = params.vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect();
    crate::io::save_safetensors(&map, path)
}

#[cfg(test)]
mod tests {
    use super::super::batches::{batch_of, Tokenized};
    use super::super::training_tokens;
    use super::*;
    use crate::data::synthetic::problem;
    use crate::model::config::ModelConfig;
    use crate::model::transformer::{SeqStep, Transformer};

    /// The training forward and the inference decoder are the same function of the same weights.
    #[test]
    fn training_forward_equals_the_decoder() {
        let shape = ToyShape::tiny();
        let dev = Device::Cpu;
        let params = init_params(&shape, 5, &dev).unwrap();
        let tok = super::super::tokenizer().unwrap();
        let task = ChainParams { seed: 9, rows: 4, facts: [4, 5], steps: [6, 8], fact_ref: 0.4, ops: "+".into() };
        let (ids, _) = training_tokens(&tok, &problem(&task, 0)).unwrap();
        let weights = |n: &str| params.get(n).clone();
        let tokens = Tensor::from_slice(&ids, (1, ids.len()), &dev).unwrap();
        let ours = forward(&shape, &weights, &tokens).unwrap();

        let cfg = ModelConfig::from_hf_json(&shape.config_json().to_string()).unwrap();
        let map: HashMap<String, Tensor> =
            params.vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
        let vb = candle_nn::VarBuilder::from_tensors(map, DType::F32, &dev);
        let model = Transformer::load(&cfg, vb).unwrap();
        let mut cache = model.new_cache(ids.len()).unwrap();
        let mut steps = [SeqStep { cache: &mut cache, tokens: &ids, positions: None, visible: None }];
        let theirs = model.forward_all_logits(&mut steps, None).unwrap();
        let diff = (ours - theirs.reshape((ids.len(), super::super::vocab_size())).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-4, "max |Δlogit| = {diff}");
    }

    /// Two shards' summed gradients are the whole batch's (the step's mean loss, split).
    #[test]
    fn shard_gradients_add_up_to_the_batch_gradient() {
        let shape = ToyShape::tiny();
        let dev = Device::Cpu;
        let params = init_params(&shape, 5, &dev).unwrap();
        let vars: Vec<Var> = params.vars.iter().map(|(_, v)| v.clone()).collect();
        let tok = super::super::tokenizer().unwrap();
        let task = ChainParams { seed: 4, rows: 4, facts: [4, 5], steps: [3, 9], fact_ref: 0.4, ops: "+".into() };
        let seqs: Vec<Tokenized> = (0..4).map(|i| training_tokens(&tok, &problem(&task, i)).unwrap()).collect();
        let weights = |n: &str| params.get(n).clone();
        let whole = [batch_of(&seqs, &dev).unwrap()];
        let halves = [batch_of(&seqs[..2], &dev).unwrap(), batch_of(&seqs[2..], &dev).unwrap()];
        let (g1, c1) = shard_gradients(&shape, &weights, &whole, &vars).unwrap();
        let (g2, c2) = shard_gradients(&shape, &weights, &halves, &vars).unwrap();
        assert_eq!((c1.targets, c1.right, c1.lookups, c1.problems), (c2.targets, c2.right, c2.lookups, c2.problems));
        assert!((c1.nll - c2.nll).abs() < 1e-3 * c1.nll, "{} vs {}", c1.nll, c2.nll);
        for (name, v) in &params.vars {
            let (a, b) = (g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
            let scale = a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(scale > 0.0 && diff <= 1e-4 * scale, "{name}: max |Δgrad| {diff} of {scale}");
        }
    }

    /// A few steps on a tiny shape lower the loss, and the same seed gives the same weights.
    #[test]
    fn training_learns_and_is_reproducible() {
        let dir = std::env::temp_dir().join(format!("kvbench-toy-train-{}", std::process::id()));
        let o = TrainOptions {
            out: dir.join("a"),
            shape: ToyShape::tiny(),
            task: ChainParams { seed: 1, rows: 1, facts: [4, 4], steps: [6, 6], fact_ref: 0.4, ops: "+".into() },
            seed: 3,
            steps: 30,
            batch: 8,
            lr: 3e-3,
            min_lr: 3e-4,
            warmup: 5,
            decay_from: 20,
            weight_decay: 0.1,
            clip: 1.0,
            log_every: 30,
            init: None,
            first_step: 0,
        };
        let first = train(&o).unwrap();
        let log = std::fs::read_to_string(dir.join("a/train-log.csv")).unwrap();
        let loss: f64 = log.lines().nth(1).unwrap().split(',').nth(2).unwrap().parse().unwrap();
        assert!(first.loss < loss * 0.8, "held-out loss {} vs mean training loss {loss}", first.loss);
        train(&TrainOptions { out: dir.join("b"), ..o.clone() }).unwrap();
        let a = std::fs::read(dir.join("a/model.safetensors")).unwrap();
        let b = std::fs::read(dir.join("b/model.safetensors")).unwrap();
        assert!(a == b, "same seed, different weights");
        // The folder loads as a model.
        let lm = crate::model::source::load(
            &crate::model::source::ModelSource::HfDir { path: dir.join("a") },
            &Default::default(),
        )
        .unwrap();
        assert_eq!(lm.eos_token_ids, vec![super::super::EOS]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
