//! Postgres outages: a worker cut off from Postgres (Redis still answering) must not sit on
//! product locks or reserved orders.
//!
//! - Before a lane takes a product's lock it checks that Postgres answers (one pooled `SELECT 1`
//!   within `postgres_outage_limit`): a worker never holds a product lock while waiting for a
//!   connection, and when Postgres refuses connections (`too many clients`) or is down, no lock
//!   is taken at all.
//! - Under a held lock, every Postgres step (claim, commit) runs under a deadline of
//!   `postgres_outage_limit` from the step's start, whatever the retries, so a black-holed TCP
//!   connection cannot stall it. When the deadline passes, then the lock is released and the
//!   lane's unstarted orders are given back to the pending list.
//! - When an outage is seen, then the worker stops reserving orders and probes Postgres (backing
//!   off, logging each failed probe with its cause); when Postgres answers, then it resumes.
//! - Bound: a product lock is held without Postgres answering for at most
//!   `postgres_outage_limit` (default 5 s) plus one release round trip.
//! - Not guaranteed: a commit cut off by the deadline may have committed (its reply was lost);
//!   the order given back is then found decided and acknowledged without a second effect.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use super::{Ctx, retry::Retry};

/// Whether this worker currently believes Postgres is unreachable.
#[derive(Debug, Default)]
pub(crate) struct PostgresHealth {
    /// Set when a step gave up for lack of Postgres; cleared when a probe succeeds.
    down: AtomicBool,
}

impl PostgresHealth {
    /// Whether an outage is being waited out.
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// Records an outage (logged once per outage).
    pub(crate) fn mark_down(&self, why: &str) {
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                why,
                "Postgres unreachable: releasing product locks, giving unstarted orders back \
                 and pausing until it answers"
            );
        }
    }
}

/// Whether Postgres answers within the outage limit; when not, the outage is recorded.
pub(crate) async fn postgres_answers(ctx: &Ctx) -> bool {
    match tokio::time::timeout(ctx.config.postgres_outage_limit, ctx.store.ping()).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            ctx.health.mark_down(&error.to_string());
            false
        }
        Err(_) => {
            ctx.health.mark_down("no answer within the outage limit");
            false
        }
    }
}

/// Waits (without reserving anything) until Postgres answers again or `stop` fires; probes with
/// back-off and logs each failed probe with its cause.
pub(crate) async fn wait_for_postgres(ctx: &Ctx, stop: &CancellationToken) {
    let mut retry = Retry::default();
    let started = tokio::time::Instant::now();
    while ctx.health.is_down() {
        let probe = tokio::time::timeout(ctx.config.postgres_outage_limit, ctx.store.ping());
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = probe => result,
        };
        match result {
            Ok(Ok(())) => {
                ctx.health.down.store(false, Ordering::Relaxed);
                tracing::info!(
                    down_ms = started.elapsed().as_millis() as u64,
                    "Postgres answers again; resuming"
                );
                return;
            }
            Ok(Err(error)) => tracing::warn!(%error, "Postgres still unreachable"),
            Err(_) => tracing::warn!("Postgres still unreachable: no answer to a probe"),
        }
        let delay = retry.next_delay().min(Duration::from_secs(1));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}
