//! Benchmarks behind `lockctl bench` (the lock) and, later, `lockctl bench-pipeline`.
//!
//! Figures are only meaningful next to the reference measured in the same run (the raw Redis
//! round trip): these machines are noisy, so every report carries its ratio to that reference.
//! This is operator tooling: errors are `anyhow` with context, like a binary's.

pub mod charts;
pub mod lock;
pub mod pipeline;
pub mod primitives;
pub mod report;
pub mod scale;
pub mod stats;

pub use report::Report;
