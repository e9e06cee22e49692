//! lockstock

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod bench;
pub mod config;
pub mod demo;
pub mod fleet;
pub mod lock;
pub mod redis_conn;
pub mod shutdown;
pub mod telemetry;
pub mod worker;

pub mod order;
pub mod producer;
pub mod queue;
pub mod store;
