//! Tools, not library API: the benchmarks (`lockctl bench`, `lockctl bench-pipeline`), the race
//! demo (`lockctl demo`) and the worker process fleet they start. Public only so the `lockctl`
//! binary can call them; hidden from the docs and free to change.

pub mod bench;
pub mod chaos;
pub mod demo;
pub mod fleet;
