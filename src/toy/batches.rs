//! `kvbench train-toy`'s data: fresh problems tokenized, pooled by length and shuffled per pool,
//! cut into the shards of a step, each padded to its longest with the positions the loss covers.

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::train::TrainOptions;
use super::{training_tokens, PAD};
use crate::data::synthetic::{problem, ChainParams};
use crate::rng::Rng;

/// Tokens per thinking line (`e=d+a,d=4,a=3,e=7;`) and the offset, within a line, of the token
/// *before* the older operand's value (the position whose prediction needs the lookup).
const LINE: usize = 18;
const LOOKUP_OFFSET: usize = 11;

/// One batch of problems, padded to its longest, with the positions the loss covers.
pub(super) struct Batch {
    pub(super) tokens: Tensor,
    /// Flat row indices (b·t + position) whose next token is a target.
    pub(super) rows: Tensor,
    pub(super) targets: Vec<u32>,
    /// Per target: is it the older operand's value (the lookup), and which problem it belongs to.
    pub(super) lookup: Vec<bool>,
    pub(super) owner: Vec<usize>,
    pub(super) problems: usize,
}

/// A tokenized problem: its ids and the index of its `<think>`.
pub(super) type Tokenized = (Vec<u32>, usize);
/// The current pool: its index and its batches.
pub(super) type Pool = Option<(usize, Vec<Vec<Tokenized>>)>;

/// Problems `0..n`, in [`SHARDS`] batches, each padded to its longest.
pub(super) fn held_out_shards(
    tok: &tokenizers::Tokenizer,
    task: &ChainParams,
    n: usize,
    dev: &Device,
) -> Result<Vec<Batch>> {
    let seqs: Vec<Tokenized> = (0..n).map(|i| training_tokens(tok, &problem(task, i))).collect::<Result<_>>()?;
    shards_of(&seqs, dev)
}

/// `seqs` cut into [`SHARDS`] consecutive batches.
pub(super) fn shards_of(seqs: &[Tokenized], dev: &Device) -> Result<Vec<Batch>> {
    seqs.chunks(seqs.len().div_ceil(SHARDS)).map(|shard| batch_of(shard, dev)).collect()
}

/// Training batches come from pools of [`POOL`] batches' worth of fresh problems, sorted by length
/// and cut into batches, so that a batch pads little (lengths vary 2.5×); the batches of a pool
/// are taken in a shuffled order.
pub(super) const POOL: usize = 8;

/// A step's batch is split into this many shards, whose forward and backward passes run at once
/// (candle's CPU ops leave half of two cores idle on this model); their gradients are summed. A
/// constant, not the thread count, so that the weights do not depend on the machine.
pub(super) const SHARDS: usize = 2;

/// The step's problems, cut into [`SHARDS`] batches (neighbours in length).
pub(super) fn training_shards(
    tok: &tokenizers::Tokenizer,
    o: &TrainOptions,
    step: usize,
    pool: &mut Pool,
    dev: &Device,
) -> Result<Vec<Batch>> {
    let index = step / POOL;
    if pool.as_ref().is_none_or(|(i, _)| *i != index) {
        let first = index * POOL * o.batch;
        let mut seqs: Vec<Tokenized> = (first..first + POOL * o.batch)
            .map(|i| training_tokens(tok, &problem(&o.task, i)))
            .collect::<Result<_>>()?;
        seqs.sort_by_key(|(s, _)| s.len());
        let mut batches: Vec<Vec<Tokenized>> = Vec::with_capacity(POOL);
        while !seqs.is_empty() {
            let rest = seqs.split_off(o.batch.min(seqs.len()));
            batches.push(std::mem::replace(&mut seqs, rest));
        }
        let mut rng = Rng::derive(o.task.seed, &[0xB0C5, index as u64]);
        for i in (1..batches.len()).rev() {
            batches.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        *pool = Some((index, batches));
    }
    let (_, batches) = pool.as_ref().expect("filled above");
    shards_of(&batches[step % POOL], dev)
}

pub(super) fn batch_of(seqs: &[Tokenized], dev: &Device) -> Result<Batch> {
    let n = seqs.len();
    let t = seqs.iter().map(|(s, _)| s.len()).max().unwrap_or(1) - 1;
    let mut flat = Vec::with_capacity(n * t);
    let (mut rows, mut targets, mut lookup, mut owner) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (j, (ids, think)) in seqs.iter().enumerate() {
        let inputs = &ids[..ids.len() - 1];
        flat.extend_from_slice(inputs);
        flat.extend(std::iter::repeat_n(PAD, t - inputs.len()));
        // The thinking has whole lines from think+1 until `</think>`.
        let lines = (ids.len() - think - 6) / LINE;
        for p in *think..inputs.len() {
            rows.push((j * t + p) as u32);
            targets.push(ids[p + 1]);
            let in_thinking = p > *think && p - think - 1 < lines * LINE;
            lookup.push(in_thinking && (p - think - 1) % LINE == LOOKUP_OFFSET);
            owner.push(j);
        }
    }
    Ok(Batch {
        tokens: Tensor::from_vec(flat, (n, t), dev)?,
        rows: Tensor::from_vec(rows, targets.len(), dev)?,
        targets,
        lookup,
        owner,
        problems: n,
    })
}
