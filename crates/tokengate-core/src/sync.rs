//! The atomics of the lock-free table and the user-slot sequence lock: std's, or loom's
//! in the model-check build (`RUSTFLAGS="--cfg loom"`, see `tests/loom.rs`), which explores
//! every interleaving and every value a weak memory model lets a load return. The normal
//! build re-exports std's types: nothing is added to the hot path.

#[cfg(loom)]
pub(crate) use loom::{
    hint::spin_loop,
    sync::atomic::{fence, AtomicI64, AtomicU64, AtomicUsize, Ordering},
};
#[cfg(not(loom))]
pub(crate) use std::{
    hint::spin_loop,
    sync::atomic::{fence, AtomicI64, AtomicU64, AtomicUsize, Ordering},
};
