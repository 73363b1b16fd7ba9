//! `omni-bench`: the load generator and the server under test of Omni's 'game' benchmark.
//!
//! See docs/BENCHMARKS.md for what it measures and how to rerun every figure. The library part
//! holds what both binaries and the tests share: the model, the lean frame scanner and the
//! `/proc` readers.

pub mod child;
pub mod model;
pub mod procfs;
pub mod scan;
