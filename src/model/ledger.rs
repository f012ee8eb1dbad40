//! An op ledger: the kernels a decode step issues, by name and output shape, recorded only when
//! asked (tests, `kvbench bench`). candle has no op counter, and on a GPU the host time per step is
//! the number of kernels times their issue cost, so the batched step accounts for each one here.

use std::cell::RefCell;

use candle_core::Tensor;

/// One kernel: what it computes and the shape it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub name: &'static str,
    pub dims: Vec<usize>,
}

thread_local! {
    static LEDGER: RefCell<Option<Vec<Op>>> = const { RefCell::new(None) };
}

/// Runs `f`, returning what it returned and the ops it issued on this thread.
pub fn record<T>(f: impl FnOnce() -> T) -> (T, Vec<Op>) {
    let outer = LEDGER.with(|l| l.replace(Some(Vec::new())));
    let out = f();
    let ops = LEDGER.with(|l| l.replace(outer)).unwrap_or_default();
    (out, ops)
}

/// Notes one kernel that produced `t` (nothing happens unless a [`record`] is running).
pub(crate) fn op(name: &'static str, t: &Tensor) {
    LEDGER.with(|l| {
        if let Some(ops) = l.borrow_mut().as_mut() {
            ops.push(Op { name, dims: t.dims().to_vec() });
        }
    });
}
