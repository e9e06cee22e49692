//! Postgres outages: a worker cut off from Postgres (Redis still answering) must not sit on
//! product locks or reserved orders.
//!
//! - Before a lane takes a product's lock it takes a pooled connection and checks that it answers
//!   (`SELECT 1` within `postgres_outage_limit`); every statement under the lock then runs on
//!   that connection, so a holder never waits for a connection. When no connection is to be had (the pool is exhausted,
//!   or Postgres refuses more clients: `too many clients`), then the lane backs off without the
//!   lock (the pool's acquire timeout, [`crate::store::ACQUIRE_TIMEOUT`], bounds each try). The
//!   system slows down instead of stalling products.
//! - A monitor pings Postgres every `postgres_outage_limit / 5` (at most every second); when no
//!   ping was answered for `postgres_outage_limit`, then an outage is recorded: a lock taken
//!   meanwhile is released at once (a lock wait is not cut short: dropping an acquisition at the
//!   moment it is granted would leave the lock to its TTL).
//! - Under a held lock, every Postgres step (claim, commit) runs under a deadline of
//!   `postgres_outage_limit` from the step's start *and* from Postgres's last answer to the
//!   monitor, whatever the retries, so neither a black-holed TCP connection nor a chain of
//!   holders taking the lock one after another can stall a product. When the deadline passes,
//!   then the lock is released and the lane's unstarted orders are given back.
//! - When an outage is seen, then the worker stops reserving orders and probes Postgres (backing
//!   off, logging each failed probe with its cause); when Postgres answers, then it resumes.
//! - Bound: no product lock is held once Postgres has not answered for `postgres_outage_limit`
//!   (default 5 s), give or take one monitor period and one release round trip.
//! - Not guaranteed: a commit cut off by the deadline may have committed (its reply was lost);
//!   the order given back is then found decided and acknowledged without a second effect.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sqlx::{Postgres, pool::PoolConnection};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{Ctx, retry::Retry};

/// What this worker knows about Postgres: whether an outage is being waited out, and when
/// Postgres last answered the monitor.
#[derive(Debug)]
pub(crate) struct PostgresHealth {
    /// `true` while an outage is waited out; set when a step gave up or the monitor heard
    /// nothing for the outage limit, cleared when a probe succeeds.
    down: watch::Sender<bool>,
    /// When the monitor started (the origin of `last_answer_ms`).
    origin: Instant,
    /// Milliseconds after `origin` when Postgres last answered the monitor.
    last_answer_ms: AtomicU64,
}

impl Default for PostgresHealth {
    fn default() -> Self {
        Self {
            down: watch::Sender::new(false),
            origin: Instant::now(),
            last_answer_ms: AtomicU64::new(0),
        }
    }
}

impl PostgresHealth {
    /// Whether an outage is being waited out.
    pub(crate) fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// Records an outage (logged once per outage).
    pub(crate) fn mark_down(&self, why: &str) {
        if self
            .down
            .send_if_modified(|down| !std::mem::replace(down, true))
        {
            tracing::warn!(
                why,
                "Postgres unreachable: releasing product locks, giving unstarted orders back \
                 and pausing until it answers"
            );
        }
    }

    /// Records that Postgres answered just now.
    fn answered(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_answer_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// When Postgres last answered the monitor.
    fn last_answer(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_answer_ms.load(Ordering::Relaxed))
    }

    /// The deadline of a Postgres step under a held lock that starts now: `limit` from now, but
    /// no later than `limit` after Postgres last answered the monitor, so a lock taken when
    /// Postgres has already been silent for a while is given up at once rather than after
    /// another whole `limit`.
    pub(crate) fn step_deadline(&self, limit: Duration) -> Instant {
        (Instant::now() + limit).min(self.last_answer() + limit)
    }
}

/// Pings Postgres every `limit / 5` (at most every second) until `stop` fires, recording each
/// answer; when none came for `limit`, then records an outage.
pub(crate) async fn monitor(ctx: Arc<Ctx>, stop: CancellationToken) {
    let limit = ctx.config.postgres_outage_limit;
    let every = (limit / 5).min(Duration::from_secs(1));
    ctx.health.answered();
    loop {
        let ping = tokio::time::timeout(every, ctx.store.ping());
        let answered = tokio::select! {
            () = stop.cancelled() => return,
            answer = ping => matches!(answer, Ok(Ok(()))),
        };
        if answered {
            ctx.health.answered();
        } else if ctx.health.last_answer().elapsed() >= limit {
            ctx.health
                .mark_down("no answer to the monitor's pings within the outage limit");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// What the check before taking a lock found.
#[derive(Debug)]
pub(crate) enum PostgresCheck {
    /// Postgres answered on this connection: take the lock, and use the connection for every
    /// statement under it.
    Answers(PoolConnection<Postgres>),
    /// No connection to be had right now (the pool is exhausted or Postgres refuses more
    /// clients): back off without the lock.
    Busy,
    /// Postgres did not answer within the outage limit: the outage is recorded.
    Down,
}

/// Checks that Postgres answers, before a lock is taken (see the module docs).
pub(crate) async fn check_postgres(ctx: &Ctx) -> PostgresCheck {
    let check = ctx.store.checked_connection();
    match tokio::time::timeout(ctx.config.postgres_outage_limit, check).await {
        Ok(Ok(conn)) => {
            ctx.health.answered();
            PostgresCheck::Answers(conn)
        }
        Ok(Err(error)) if error.is_no_connection() => {
            tracing::warn!(%error, "no Postgres connection before taking a lock; backing off");
            PostgresCheck::Busy
        }
        Ok(Err(error)) => {
            ctx.health.mark_down(&error.to_string());
            PostgresCheck::Down
        }
        Err(_) => {
            ctx.health.mark_down("no answer within the outage limit");
            PostgresCheck::Down
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
                ctx.health.answered();
                ctx.health.down.send_replace(false);
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
