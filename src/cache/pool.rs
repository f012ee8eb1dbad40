//! A pool of cache slots for batched decoding: per layer one K and one V tensor
//! `[slots, kv_heads, capacity + 1, head_dim]`, allocated once. A sequence's [`KvCache`] is one
//! slot (a view of those tensors), so a decode step can write, score and read every sequence's
//! cache with one op per layer; compaction works inside the slot as it does in a cache of its own.
//!
//! Each slot has at least one entry past its capacity: a row that decodes nothing in a step (a
//! free slot, or a finished sequence) writes its dummy K/V there, never over a sequence's entries.
//! A step attends over the longest row rounded up to [`CONTEXT_BUCKET`] entries, the rest masked.

use std::sync::{Arc, Mutex};

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};

use super::KvCache;

/// Padded lengths are multiples of this: a step's shapes then stay fixed for as many steps (what
/// graph capture needs), and since candle's CPU sums reduce 32 entries per vector pass, masked
/// padding adds exact zeros to every row's sums: a row's numbers do not depend on its neighbours.
pub const CONTEXT_BUCKET: usize = 32;

/// The tensors of a pool, shared by the pool and its slots' caches.
#[derive(Debug)]
pub(crate) struct PoolTensors {
    pub(crate) k: Vec<Tensor>,
    pub(crate) v: Vec<Tensor>,
    pub(crate) slots: usize,
    /// Entries a slot holds.
    pub(crate) capacity: usize,
    /// Entries per slot row: the capacity and a scratch entry, rounded up to the bucket.
    pub(crate) width: usize,
    pub(crate) kv_heads: usize,
    pub(crate) head_dim: usize,
    in_use: Mutex<Vec<bool>>,
}

/// A slot held by a cache; dropping the cache frees it.
#[derive(Debug)]
pub(crate) struct SlotRef {
    pub(crate) pool: Arc<PoolTensors>,
    pub(crate) index: usize,
}

impl Drop for SlotRef {
    fn drop(&mut self) {
        if let Ok(mut used) = self.pool.in_use.lock() {
            used[self.index] = false;
        }
    }
}

/// `slots` caches of up to `capacity` entries each, in one tensor per layer for K and for V.
#[derive(Debug, Clone)]
pub struct SlotPool {
    tensors: Arc<PoolTensors>,
}

impl SlotPool {
    pub fn new(
        num_layers: usize,
        kv_heads: usize,
        head_dim: usize,
        slots: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        ensure!(slots > 0 && capacity > 0, "a slot pool needs at least one slot of one entry");
        // Zeros: entries never written stay finite, so masked scores and padded products stay 0.
        let width = (capacity + 1).div_ceil(CONTEXT_BUCKET) * CONTEXT_BUCKET;
        let buf = || Tensor::zeros((slots, kv_heads, width, head_dim), dtype, device);
        let (k, v) = (0..num_layers).map(|_| Ok((buf()?, buf()?))).collect::<Result<(Vec<_>, Vec<_>)>>()?;
        let in_use = Mutex::new(vec![false; slots]);
        Ok(Self { tensors: Arc::new(PoolTensors { k, v, slots, capacity, width, kv_heads, head_dim, in_use }) })
    }

    pub fn slots(&self) -> usize {
        self.tensors.slots
    }

    pub fn capacity(&self) -> usize {
        self.tensors.capacity
    }

    /// Slots held by live caches.
    pub fn occupied(&self) -> usize {
        self.tensors.in_use.lock().map_or(0, |u| u.iter().filter(|&&b| b).count())
    }

    /// An empty cache in the lowest free slot, or `None` when every slot is held.
    pub fn checkout(&self) -> Result<Option<KvCache>> {
        let index = {
            let mut used = self.tensors.in_use.lock().map_err(|_| anyhow::anyhow!("slot pool poisoned"))?;
            let Some(index) = used.iter().position(|&b| !b) else { return Ok(None) };
            used[index] = true;
            index
        };
        let slot = SlotRef { pool: self.tensors.clone(), index };
        Ok(Some(KvCache::in_slot(slot)?))
    }
}
