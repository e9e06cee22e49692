//! # lockstock
//!
//! Fenced Redis distributed locks, and the lock-guarded order workers built on them.
//!
//! ## How an order flows
//! ```text
//! producer ──LPUSH──▶ orders:pending ──BLMOVE──▶ <pending>:processing:<worker>
//!                                                     │
//!                          worker (one lane per product in the process)
//!                            1. lock "product:<id>"  (Redis; FIFO hand-off; heartbeat)
//!                            2. claim: raise products.last_fence to the lock's fence, read stock
//!                            3. slow step, decide (fulfilled / out_of_stock)
//!                            4. commit where last_fence is still ours (one statement)
//!                            5. LREM from the processing list, release the lock
//!                                                     │
//!                                                     ▼
//!                                    Postgres: orders (one row per order), products
//! ```
//!
//! ## Module map
//! | module | knows | role |
//! |---|---|---|
//! | [`lockstock_lock`] (own crate) | Redis only | the fenced mutex and the other primitives: acquire, hand-off, heartbeat, lost signal, inspect |
//! | [`queue`] | Redis lists only | reliable queue: reserve into a processing list, ack, dead letters, liveness, recovery |
//! | [`order`] | nothing | purchase orders, validation, poison classification, outcomes |
//! | [`store`] | Postgres | products, outcomes, and the fenced sale's statements (`store/sale.rs`): claims and commits, idempotent by order id |
//! | `sale` | store, product locks | the ONE fenced sale under a held lock: worker batches and API purchases |
//! | [`worker`] | all of the above | the only module that composes queue + lock + store |
//! | [`producer`] | queue, store, order | builds, records (durable intake) and pushes orders |
//! | [`observe`] | queue, store, lock crate | metrics registry (prometheus-client) and status views: used by the worker, the API and `lockctl` |
//! | [`config`], [`services`], [`telemetry`], [`shutdown`] | all of the above | what the binaries share: one set of flags, one place that connects Redis, the product locks and Postgres, logging, signals |
//! | [`product_lock`] | lock crate | product locks over the mutex or Redlock: one type for the worker and the API |
//! | [`lock_history`] | lock crate | the chaos-history lock observer (`--chaos-history`): lock events as `history` log lines |
//! | `tools` (hidden) | — | the race demo, worker processes, benchmarks: not library API |
//!
//! ## Guarantees
//! - When a worker commits an order, then the product row carried that worker's fencing token
//!   from *before* its stock read until the commit: a holder that lost its lock (expired while
//!   paused) cannot sell from a stale read, whatever the timing.
//! - Every order gets exactly one outcome row, however often it is delivered.
//! - A message leaves a worker's processing list only after its outcome is stored; a dead
//!   worker's list is moved back to the pending list by a live worker.
//! - An order the producer (or `POST /orders`) reported as enqueued was recorded in Postgres's
//!   intake first; when Redis loses it, the workers' intake sweep pushes it again.
//! - A worker that cannot reach Postgres holds no product lock beyond its outage limit (5 s).
//!
//! ## Not guaranteed
//! - Mutual exclusion by the lock alone under pauses: that is what the fence is for.
//! - Messages pushed without the intake (`producer --no-intake`, raw `LPUSH`) survive Redis
//!   losing its data.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod config;
pub mod observe;
pub mod services;
pub mod shutdown;
pub mod telemetry;
pub mod worker;

pub mod lock_history;
pub mod product_lock;
pub(crate) mod sale;
#[doc(hidden)]
pub mod tools;

pub mod order;
pub mod producer;
pub mod queue;
pub mod store;

/// The README's examples, compiled with the doc tests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
