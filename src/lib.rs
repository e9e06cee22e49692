//! lockstock

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod bench;
pub mod config;
pub mod lock;
pub mod telemetry;

pub mod order;
pub mod queue;
pub mod store;
