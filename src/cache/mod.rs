//! The KV cache of one sequence: the one place where eviction touches the model.
//!
//! Per layer, K and V live in preallocated `[kv_heads, capacity, head_dim]` buffers, stored after
//! RoPE and written in place; they grow by doubling only when a sequence outruns its capacity (a
//! budgeted policy sizes the capacity once and never grows). Each slot remembers the original
//! absolute position and token id of the token it holds. Positions for new tokens come from an
//! absolute counter (`next_position`), never from the cache length, so evicting never shifts RoPE.
//!
//! Compaction keeps a chosen set of slots, either one set shared by every layer and KV head (the
//! DynTS harness) or one set per layer and KV head of equal size (the papers' per-head variants).

pub mod observe;
pub mod pool;

use anyhow::{bail, ensure, Result};
use candle_core::{DType, Device, Tensor};

use pool::SlotRef;

/// Which original positions each slot holds.
#[derive(Debug, Clone, PartialEq)]
pub enum SlotMap {
    /// Every layer and KV head holds the same tokens.
    Shared { positions: Vec<u32>, token_ids: Vec<u32> },
    /// After a per-head compaction: `positions[layer][kv_head][slot]`.
    PerHead { positions: Vec<Vec<Vec<u32>>> },
}

#[derive(Debug)]
struct LayerKv {
    k: Tensor,
    v: Tensor,
}

#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
    capacity: usize,
    next_position: u32,
    slots: SlotMap,
    /// Every token fed so far, by absolute position (also those since evicted).
    history: Vec<u32>,
    peak_len: usize,
    kv_heads: usize,
    head_dim: usize,
    /// When the buffers are one slot of a [`pool::SlotPool`]: which (they cannot grow).
    slot: Option<SlotRef>,
}

impl KvCache {
    pub fn new(
        num_layers: usize,
        kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let capacity = capacity.max(1);
        let layers = (0..num_layers)
            .map(|_| {
                Ok(LayerKv {
                    k: Tensor::zeros((kv_heads, capacity, head_dim), dtype, device)?,
                    v: Tensor::zeros((kv_heads, capacity, head_dim), dtype, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: 0,
            capacity,
            next_position: 0,
            slots: SlotMap::Shared { positions: Vec::new(), token_ids: Vec::new() },
            history: Vec::new(),
            peak_len: 0,
            kv_heads,
            head_dim,
            slot: None,
        })
    }

    /// An empty cache whose buffers are the views of one pool slot.
    pub(crate) fn in_slot(slot: SlotRef) -> Result<Self> {
        let p = &slot.pool;
        let layers =
            p.k.iter()
                .zip(&p.v)
                .map(|(k, v)| Ok(LayerKv { k: k.get(slot.index)?, v: v.get(slot.index)? }))
                .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: 0,
            capacity: p.capacity,
            next_position: 0,
            slots: SlotMap::Shared { positions: Vec::new(), token_ids: Vec::new() },
            history: Vec::new(),
            peak_len: 0,
            kv_heads: p.kv_heads,
            head_dim: p.head_dim,
            slot: Some(slot),
        })
    }

    /// The pool slot holding this cache, if any.
    pub(crate) fn slot(&self) -> Option<&SlotRef> {
        self.slot.as_ref()
    }

    /// Cached tokens per layer (the quantity budgets count).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Largest `len` ever reached, including the entries appended by a step before it was pruned.
    pub fn peak_len(&self) -> usize {
        self.peak_len
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    /// The absolute position the next fed token will get.
    pub fn next_position(&self) -> u32 {
        self.next_position
    }

    /// Every token fed to this sequence, indexed by absolute position.
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    pub fn slots(&self) -> &SlotMap {
        &self.slots
    }

    /// Original positions of the cached slots, when all layers and heads share them.
    pub fn positions(&self) -> Option<&[u32]> {
        match &self.slots {
            SlotMap::Shared { positions, .. } => Some(positions),
            SlotMap::PerHead { .. } => None,
        }
    }

    /// Token ids of the cached slots, when all layers and heads share them.
    pub fn token_ids(&self) -> Option<&[u32]> {
        match &self.slots {
            SlotMap::Shared { token_ids, .. } => Some(token_ids),
            SlotMap::PerHead { .. } => None,
        }
    }

    /// Keys of `layer` as a `[kv_heads, len, head_dim]` view (post-RoPE).
    pub fn keys(&self, layer: usize) -> Result<Tensor> {
        Ok(self.layers[layer].k.narrow(1, 0, self.len)?)
    }

    pub fn values(&self, layer: usize) -> Result<Tensor> {
        Ok(self.layers[layer].v.narrow(1, 0, self.len)?)
    }

    /// Makes room for `extra` more tokens, doubling the buffers when needed.
    pub fn reserve(&mut self, extra: usize) -> Result<()> {
        let needed = self.len + extra;
        if needed <= self.capacity {
            return Ok(());
        }
        if let Some(slot) = &self.slot {
            bail!(
                "a sequence needs {needed} cache entries, its pool slot {} holds {} (size the pool to the plan)",
                slot.index,
                self.capacity
            );
        }
        let new_cap = needed.max(self.capacity * 2);
        for layer in &mut self.layers {
            for buf in [&mut layer.k, &mut layer.v] {
                let grown = Tensor::zeros((self.kv_heads, new_cap, self.head_dim), buf.dtype(), buf.device())?;
                if self.len > 0 {
                    grown.slice_set(&buf.narrow(1, 0, self.len)?.contiguous()?, 1, 0)?;
                }
                *buf = grown;
            }
        }
        self.capacity = new_cap;
        Ok(())
    }

    /// Appends tokens with their K/V given per layer (`[kv_heads, t, head_dim]` each), at the
    /// counter's positions. The decoder writes layer by layer instead; this is for building caches
    /// by hand (policy tests, replay).
    pub fn append(&mut self, tokens: &[u32], keys: &[Tensor], values: &[Tensor]) -> Result<()> {
        ensure!(
            keys.len() == self.layers.len() && values.len() == self.layers.len(),
            "K/V for {} layers expected",
            self.layers.len()
        );
        let positions = self.begin_append(tokens, None)?;
        for (layer, (k, v)) in keys.iter().zip(values).enumerate() {
            self.write(layer, &k.contiguous()?, &v.contiguous()?)?;
        }
        self.commit(tokens, &positions)
    }

    /// Claims positions for `tokens` about to be fed: returns their absolute positions and records
    /// them. The caller then writes each layer's K/V with [`KvCache::write`] and calls
    /// [`KvCache::commit`]. `positions` overrides the counter (replaying kept tokens in tests).
    pub(crate) fn begin_append(&mut self, tokens: &[u32], positions: Option<&[u32]>) -> Result<Vec<u32>> {
        let positions: Vec<u32> = match positions {
            Some(p) => {
                ensure!(p.len() == tokens.len(), "{} positions for {} tokens", p.len(), tokens.len());
                p.to_vec()
            }
            None => (0..tokens.len() as u32).map(|i| self.next_position + i).collect(),
        };
        self.reserve(tokens.len())?;
        Ok(positions)
    }

    /// Writes one layer's new K/V (`[kv_heads, t, head_dim]`, contiguous) after the cached slots.
    pub(crate) fn write(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<()> {
        let l = &mut self.layers[layer];
        l.k.slice_set(k, 1, self.len)?;
        l.v.slice_set(v, 1, self.len)?;
        Ok(())
    }

    /// Keys and values of `layer` including `t` just-written entries.
    pub(crate) fn view_with(&self, layer: usize, t: usize) -> Result<(Tensor, Tensor)> {
        let l = &self.layers[layer];
        Ok((l.k.narrow(1, 0, self.len + t)?, l.v.narrow(1, 0, self.len + t)?))
    }

    pub(crate) fn commit(&mut self, tokens: &[u32], positions: &[u32]) -> Result<()> {
        match &mut self.slots {
            SlotMap::Shared { positions: p, token_ids } => {
                p.extend_from_slice(positions);
                token_ids.extend_from_slice(tokens);
            }
            SlotMap::PerHead { positions: p } => {
                for layer in p.iter_mut() {
                    for head in layer.iter_mut() {
                        head.extend_from_slice(positions);
                    }
                }
            }
        }
        for (&tok, &pos) in tokens.iter().zip(positions) {
            let pos = pos as usize;
            if self.history.len() <= pos {
                self.history.resize(pos + 1, 0);
            }
            self.history[pos] = tok;
        }
        self.len += tokens.len();
        self.peak_len = self.peak_len.max(self.len);
        if let Some(&last) = positions.last() {
            self.next_position = self.next_position.max(last + 1);
        }
        Ok(())
    }

    /// Keeps the slots `keep` (strictly increasing slot indices) in every layer and KV head.
    pub fn keep(&mut self, keep: &[usize]) -> Result<()> {
        check_increasing(keep, self.len)?;
        if keep.len() == self.len {
            return Ok(());
        }
        let device = self.layers[0].k.device().clone();
        let idx = Tensor::from_vec(keep.iter().map(|&i| i as u32).collect::<Vec<_>>(), keep.len(), &device)?;
        for l in &mut self.layers {
            for buf in [&mut l.k, &mut l.v] {
                // The whole buffer is contiguous (index_select needs that); indices are < len.
                let kept = buf.index_select(&idx, 1)?;
                buf.slice_set(&kept, 1, 0)?;
            }
        }
        match &mut self.slots {
            SlotMap::Shared { positions, token_ids } => {
                *positions = keep.iter().map(|&i| positions[i]).collect();
                *token_ids = keep.iter().map(|&i| token_ids[i]).collect();
            }
            SlotMap::PerHead { positions } => {
                for layer in positions.iter_mut() {
                    for head in layer.iter_mut() {
                        *head = keep.iter().map(|&i| head[i]).collect();
                    }
                }
            }
        }
        self.len = keep.len();
        Ok(())
    }

    /// Keeps, per layer and KV head, its own slots: `keep[layer][kv_head]`, all of one length.
    pub fn keep_per_head(&mut self, keep: &[Vec<Vec<usize>>]) -> Result<()> {
        ensure!(
            keep.len() == self.layers.len(),
            "keep sets for {} layers, cache has {}",
            keep.len(),
            self.layers.len()
        );
        let n = keep.first().and_then(|l| l.first()).map_or(0, |h| h.len());
        for (li, layer) in keep.iter().enumerate() {
            ensure!(
                layer.len() == self.kv_heads,
                "layer {li}: keep sets for {} KV heads, cache has {}",
                layer.len(),
                self.kv_heads
            );
            for head in layer {
                ensure!(head.len() == n, "per-head keep sets must have one length ({n}), got {}", head.len());
                check_increasing(head, self.len)?;
            }
        }
        let mut positions: Vec<Vec<Vec<u32>>> = match &self.slots {
            SlotMap::Shared { positions, .. } => vec![vec![positions.clone(); self.kv_heads]; self.layers.len()],
            SlotMap::PerHead { positions } => positions.clone(),
        };
        let device = self.layers[0].k.device().clone();
        for (li, l) in self.layers.iter_mut().enumerate() {
            for buf in [&mut l.k, &mut l.v] {
                let heads = (0..self.kv_heads)
                    .map(|h| {
                        let idx: Vec<u32> = keep[li][h].iter().map(|&i| i as u32).collect();
                        let idx = Tensor::from_vec(idx, n, &device)?;
                        Ok(buf.get(h)?.index_select(&idx, 0)?)
                    })
                    .collect::<Result<Vec<_>>>()?;
                buf.slice_set(&Tensor::stack(&heads, 0)?, 1, 0)?;
            }
            for (h, pos) in positions[li].iter_mut().enumerate() {
                *pos = keep[li][h].iter().map(|&i| pos[i]).collect();
            }
        }
        self.slots = SlotMap::PerHead { positions };
        self.len = n;
        Ok(())
    }
}

fn check_increasing(keep: &[usize], len: usize) -> Result<()> {
    for w in keep.windows(2) {
        if w[0] >= w[1] {
            bail!("kept slots must be strictly increasing, got {} then {}", w[0], w[1]);
        }
    }
    if let Some(&last) = keep.last() {
        ensure!(last < len, "kept slot {last} is outside the cache (len {len})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(len: usize) -> KvCache {
        let dev = Device::Cpu;
        let mut c = KvCache::new(2, 2, 4, 2, DType::F32, &dev).unwrap();
        let tokens: Vec<u32> = (100..100 + len as u32).collect();
        let pos = c.begin_append(&tokens, None).unwrap();
        for layer in 0..2 {
            // Entry value encodes (layer, head, position) so moves are visible.
            let data: Vec<f32> = (0..2)
                .flat_map(|h| (0..len).flat_map(move |p| (0..4).map(move |_| (layer * 1000 + h * 100 + p) as f32)))
                .collect();
            let k = Tensor::from_vec(data, (2, len, 4), &dev).unwrap();
            c.write(layer, &k, &k).unwrap();
        }
        c.commit(&tokens, &pos).unwrap();
        c
    }

    #[test]
    fn grows_and_keeps_shared_slots() {
        let mut c = filled(6);
        assert!(c.capacity() >= 6);
        c.keep(&[0, 2, 5]).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.positions().unwrap(), &[0, 2, 5]);
        assert_eq!(c.token_ids().unwrap(), &[100, 102, 105]);
        let k: Vec<Vec<Vec<f32>>> = c.keys(1).unwrap().to_vec3().unwrap();
        assert_eq!(k[1].iter().map(|r| r[0]).collect::<Vec<_>>(), vec![1100., 1102., 1105.]);
        assert_eq!(c.next_position(), 6);
        assert_eq!(c.peak_len(), 6);
    }

    #[test]
    fn keeps_per_head_slots() {
        let mut c = filled(5);
        c.keep_per_head(&[vec![vec![0, 1], vec![3, 4]], vec![vec![1, 2], vec![0, 4]]]).unwrap();
        let k: Vec<Vec<Vec<f32>>> = c.keys(1).unwrap().to_vec3().unwrap();
        assert_eq!(k[0].iter().map(|r| r[0]).collect::<Vec<_>>(), vec![1001., 1002.]);
        assert_eq!(k[1].iter().map(|r| r[0]).collect::<Vec<_>>(), vec![1100., 1104.]);
        match c.slots() {
            SlotMap::PerHead { positions } => assert_eq!(positions[0][1], vec![3, 4]),
            other => panic!("expected per-head slots, got {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_keep_sets() {
        let mut c = filled(4);
        assert!(c.keep(&[1, 1]).is_err());
        assert!(c.keep(&[2, 1]).is_err());
        assert!(c.keep(&[0, 4]).is_err());
        assert!(c.keep_per_head(&[vec![vec![0], vec![0, 1]], vec![vec![0], vec![1]]]).is_err());
    }
}
