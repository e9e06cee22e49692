//! The mutex: [`LockClient::acquire`], [`LockClient::try_acquire`] and [`LockGuard`] — one holder
//! per resource, FIFO hand-off among waiters, a fencing token per grant.
//!
//! - When [`LockClient::try_acquire`] finds the resource free, then it returns a
//!   [`LockGuard`] in one round trip; when the lock is held, then `Ok(None)`.
//! - When [`LockClient::acquire`] finds the lock held, then the caller joins the resource's FIFO
//!   wait queue in Redis and sleeps until the holder's release hands the lock over (no polling):
//!   the hand-off costs the waiter no further round trip. A jittered retry schedule, never
//!   sleeping past the holder's remaining TTL, is the fallback for a holder that vanished or a
//!   lost hand-off message (the shared wait loop, `waiting.rs`). Past the deadline it returns
//!   [`LockError::Timeout`](crate::LockError::Timeout).
//! - While queued, the waiter holds a *lease* on its queue entry
//!   ([`LockConfig::waiter_lease`](crate::LockConfig::waiter_lease), default 3 s), renewed by
//!   its next call at least every third of it. When the holder releases, then the lock goes to
//!   the oldest entry whose lease has not run out, for the waiter's TTL capped by that lease;
//!   the waiter's guard extends it to the full TTL a third of the lease later. So a waiter that
//!   died queued is skipped once its lease ran out, and one that died within its last lease
//!   holds a handed lock **one lease at most** (not a TTL).
//! - When a queueing call's reply is lost and it is retried, then the retry (same token) finds
//!   the caller's entry and renews it in place: one entry per waiter, its place in line kept.
//!   Leaving the queue is by token too, so a retried give-up still removes the entry; if giving
//!   up fails outright, the clean-up is retried in the background and the lease bounds the rest.
//! - When a hand-off message arrives older (by the server's clock) than a call of the waiter's
//!   that already found the lock not its own, then it is discarded, never turned into a guard:
//!   the hold it announced expired (the waiter was paused) and may be someone else's now. The
//!   waiter keeps waiting; its next call queues it again at the back (the hand-off consumed its
//!   entry).
//! - When a call's reply is lost and it is retried, then re-acquiring with the same token counts
//!   as success and a repeated release is harmless.
//! - When a waiting acquire is cancelled (its future dropped), then its queue entry is removed in
//!   the background, and a lock handed to it meanwhile is released.
//! - The uncontended path is unchanged by the lease: acquire and release are one round trip
//!   each, and only queued waiters renew. On the server they run 5 commands in all (`EVALSHA` +
//!   `INCR` + `SET NX PX GET`, `EVALSHA` + `GETDEL`) and read no clock.
//! - When a waiter queues behind a hold, then it marks the hold's value, and only a marked hold's
//!   release looks at the queue (a hand-off marks the new hold, and so does a queueing call that
//!   takes a free lock while others are queued). A free lock taken by an *unqueued* call
//!   (`try_acquire`, a first look) while waiters are queued (the last holder expired) is not
//!   marked: its release frees it, and the waiters take it, or mark it, at their next look (at
//!   most a third of the lease later).
//! - Not guaranteed: fairness towards acquirers that arrive while the lock is *free* (they take
//!   it at once); FIFO order holds among those that found it held (use
//!   [`FairLock`](crate::FairLock) for strict arrival order). A waiter cut off from Redis for
//!   longer than its lease loses its place (it queues again at the back when it can).
//!
//! The protocol (acquire, queue, hand-off, expiry, fencing) is model-checked in `tests/model/`
//! (stateright): every reachable interleaving keeps one holder and increasing fences.

mod guard;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use redis::Value;

pub use self::guard::{LockGuard, LockLease};
use super::{
    client::LockClient,
    error::{LockError, Result},
    guard::{Holder, ReleaseOutcome},
    keys::ResourceKeys,
    metrics::LockMetrics,
    observe::Observed,
    options::LockOptions,
    scripts::SCRIPTS,
    token::{FencingToken, LockToken},
    waiting::{self, Attempt, Backoff, Pace, QueuedOps, Ticket, WaitPlan},
};

/// The Redis side of one mutex acquisition, waiting or held.
#[derive(Debug, Clone)]
pub(crate) struct MutexOps {
    ticket: Ticket,
    keys: Arc<ResourceKeys>,
    token: LockToken,
    /// Whether a queueing call was sent (its entry may be in Redis even if the reply was lost),
    /// shared by the waiting loop and the background clean-up of a dropped waiter.
    queued: Arc<AtomicBool>,
}

impl MutexOps {
    /// The Redis side of one acquisition of `keys` with `token`.
    fn new(
        client: &LockClient,
        keys: Arc<ResourceKeys>,
        options: &LockOptions,
        token: LockToken,
    ) -> Self {
        Self {
            ticket: Ticket::with_token(client, &keys.handoff, options, token),
            keys,
            token,
            queued: Arc::default(),
        }
    }
}

impl LockClient {
    /// Takes the lock on `resource` if it is free right now; `Ok(None)` when it is held.
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %resource), err(level = "debug"))]
    pub async fn try_acquire(
        &self,
        resource: &str,
        options: &LockOptions,
    ) -> Result<Option<LockGuard>> {
        let started = Instant::now();
        let result = waiting::none_on_timeout(
            self.acquire_waiting(resource, options, Duration::ZERO)
                .await,
        );
        let got = result.as_ref().map(Option::is_some);
        self.metrics().record_acquire(got, started.elapsed());
        result
    }

    /// Takes the lock on `resource`, waiting up to `wait` for it.
    ///
    /// Waiters are served in FIFO order and woken by the holder's release. Returns
    /// [`LockError::Timeout`](crate::LockError::Timeout) when the lock could not be had in time.
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %resource), err(level = "debug"))]
    pub async fn acquire(
        &self,
        resource: &str,
        options: &LockOptions,
        wait: Duration,
    ) -> Result<LockGuard> {
        let started = Instant::now();
        let result = self.acquire_waiting(resource, options, wait).await;
        let got = result.as_ref().map(|_| true);
        self.metrics().record_acquire(got, started.elapsed());
        result
    }

    async fn acquire_waiting(
        &self,
        resource: &str,
        options: &LockOptions,
        wait: Duration,
    ) -> Result<LockGuard> {
        options.validate()?;
        let keys = Arc::new(self.keys().resource(resource)?);
        let ops = MutexOps::new(self, keys, options, LockToken::new());
        let config = self.config();
        let grant = waiting::acquire(
            &ops,
            WaitPlan {
                resource: &ops.keys.resource,
                wait,
                pace: Pace::backoff(
                    Backoff::new(config.retry_min, config.retry_max),
                    waiting::check_waiter_lease(config.waiter_lease)?,
                ),
            },
        )
        .await?;
        Ok(LockGuard::start(ops, options, grant))
    }

    /// Raises `resource`'s fence counter to at least `floor`, returning its value afterwards.
    ///
    /// Use it after Redis lost its data (a restart without persistence): the counter restarted
    /// low, so a fenced resource refuses the new tokens until the counter passes the resource's
    /// high-water mark.
    pub async fn raise_fence_floor(&self, resource: &str, floor: u64) -> Result<FencingToken> {
        let keys = self.keys().resource(resource)?;
        let value: u64 = self
            .run(SCRIPTS.raise_fence.key(&keys.fence).arg(floor))
            .await?;
        Ok(FencingToken(value))
    }
}

impl QueuedOps for MutexOps {
    fn ticket(&self) -> &Ticket {
        &self.ticket
    }

    /// One call of `acquire.lua` (queueing, or renewing the entry's lease, when `lease_ms > 0`).
    async fn attempt(&self, lease_ms: u64) -> Result<Attempt> {
        if lease_ms > 0 {
            self.queued.store(true, Ordering::Relaxed);
        }
        let client = &self.ticket.client;
        let reply: Value = client
            .run_evalsha(&SCRIPTS.acquire, 3, |cmd| {
                cmd.arg(&self.keys.lock)
                    .arg(&self.keys.fence)
                    .arg(&self.keys.queue)
                    .arg(&self.ticket.token)
                    .arg(self.ticket.ttl_ms)
                    .arg(client.owner_json())
                    .arg(lease_ms)
                    .arg(&self.ticket.channel)
                    .arg(u8::from(client.config().observer.is_some()));
            })
            .await?;
        match reply {
            // The uncontended grant (acquire_fast.lua): the bare fence, for the TTL asked.
            Value::Int(fence) => Ok(Attempt::Granted {
                fence: fence.max(0) as u64,
                pttl_ms: self.ticket.ttl_ms,
                server_ms: None,
            }),
            Value::Array(items) => waiting::parse_attempt("acquire", &items),
            other => Err(LockError::UnexpectedReply {
                operation: "acquire",
                detail: format!("{other:?}"),
            }),
        }
    }

    /// One call of `cancel_wait.lua`: leaves the queue by token.
    async fn cancel(&self) -> Result<Option<(u64, u64)>> {
        let reply: Vec<Value> = self
            .ticket
            .client
            .run(
                SCRIPTS
                    .cancel_wait
                    .key(&self.keys.lock)
                    .key(&self.keys.queue)
                    .arg(&self.ticket.token),
            )
            .await?;
        waiting::parse_cancel("cancel_wait", &reply)
    }

    fn may_be_queued(&self) -> bool {
        self.queued.load(Ordering::Relaxed)
    }
}

impl Holder for MutexOps {
    async fn extend(&self, ttl_ms: u64) -> Result<bool> {
        self.ticket.extend_exclusive(&self.keys.lock, ttl_ms).await
    }

    async fn release(&self) -> Result<ReleaseOutcome> {
        let reply: i64 = self
            .ticket
            .client
            .run_evalsha(&SCRIPTS.release, 3, |cmd| {
                cmd.arg(&self.keys.lock)
                    .arg(&self.keys.fence)
                    .arg(&self.keys.queue)
                    .arg(&self.ticket.token)
                    .arg(self.ticket.ttl_ms);
            })
            .await?;
        ReleaseOutcome::from_reply("release", reply)
    }

    fn owner(&self) -> &str {
        self.ticket.client.owner_json()
    }

    fn metrics(&self) -> Option<Arc<LockMetrics>> {
        Some(self.ticket.client.metrics_handle())
    }

    fn observed(&self) -> Option<Observed> {
        let observer = self.ticket.client.config().observer.clone()?;
        Some(Observed {
            observer,
            token: self.token,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::options::LockConfig;

    async fn client() -> LockClient {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        LockClient::connect(&url, LockConfig::default().with_prefix(prefix).unwrap())
            .await
            .unwrap()
    }

    async fn queue_len(client: &LockClient, keys: &ResourceKeys) -> usize {
        let mut conn = client.connection();
        redis::cmd("LLEN")
            .arg(&keys.queue)
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    /// Hole 6: the queueing call ran but its reply was lost, so the caller never learned what it
    /// queued; the retry (same token) must find the entry, not queue a second one. Two
    /// `MutexOps` with one token and nothing shared are exactly that caller before and after.
    #[tokio::test]
    async fn requeueing_with_the_same_token_after_a_lost_reply_keeps_one_entry() {
        let client = client().await;
        let options = LockOptions::with_ttl(Duration::from_secs(10));
        let holder = client.try_acquire("r", &options).await.unwrap().unwrap();
        let keys = Arc::new(client.keys().resource("r").unwrap());
        let token = LockToken::new();
        let first = MutexOps::new(&client, keys.clone(), &options, token);
        let retry = MutexOps::new(&client, keys.clone(), &options, token);

        assert!(matches!(
            first.attempt(5_000).await.unwrap(),
            Attempt::Waiting { .. }
        ));
        assert!(matches!(
            retry.attempt(5_000).await.unwrap(),
            Attempt::Waiting { .. }
        ));
        assert_eq!(
            queue_len(&client, &keys).await,
            1,
            "the retry queued a second entry"
        );

        // Giving up after a lost reply: the retry of the cancel still removes the entry.
        retry.cancel().await.unwrap();
        assert_eq!(
            queue_len(&client, &keys).await,
            0,
            "giving up left the entry behind"
        );
        holder.release().await.unwrap();
    }
}
