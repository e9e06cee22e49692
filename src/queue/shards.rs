//! A queue spread over N shards (`QUEUE_SHARDS=N`): N pending lists on different Redis Cluster
//! slots, for a queue that outgrows one master. One [`JobQueue`] routes to its shards, each an
//! ordinary one-list queue with its own processing lists, liveness keys, registry and dead
//! letters, so every guarantee of one list holds within each shard.
//!
//! - Shard `i` of a key with a hash tag `{t}` replaces the tag with `{t:i}`; of a key without
//!   one, appends `:i` ([`shard_key`]). On a cluster the base keys are first put in one slot
//!   ([`QueueConfig::for_cluster`](super::QueueConfig::for_cluster)), so `orders:pending` gives
//!   `{orders:pending:0}` … `{orders:pending:N-1}`: one slot per shard (distinct tags hash to
//!   distinct slots in all but rare cases; which master serves each is the cluster's choice).
//! - When a message is pushed, then it goes to shard `fnv1a(payload) % N` ([`shard_of`]): the
//!   same message (an order's JSON carries its id) always lands on the same shard, and
//!   acknowledging, requeueing or dead-lettering it goes to that shard without a lookup. When it
//!   is not found there (its bytes changed, e.g. a non-UTF-8 payload requeued from the dead
//!   letters), then the other shards are tried.
//! - When a consumer reserves, then the shards are tried in turn starting one further each call
//!   (fair: with every shard busy each gets an equal share of reserves), first without blocking,
//!   then blocking on one shard at a time for at most [`BLOCK_SLICE`], so a message on any shard
//!   waits at most about `N × BLOCK_SLICE` for an idle consumer.
//! - Recovery, liveness, dead letters and statistics run on every shard and add up (workers are
//!   registered on every shard, so worker counts are the largest shard's, not the sum).
//! - When messages Redis lost are restored (the durable intake's sweep), then a message counts
//!   as missing only when it is in no list of any shard, and it is pushed back onto the shard
//!   [`shard_of`] gives it, the one the producer's push chose: the restore script checks that
//!   shard's lists again atomically, not the others' (no script spans two slots), so a message
//!   that moved to another shard in between is delivered twice (consumers are idempotent).
//! - Not guaranteed: FIFO across shards (only within one), and `processing_items` lists shard by
//!   shard, not in reserve order.
//! - When `N` is 1 (the default), then none of this exists: keys and messages are exactly those
//!   of one list.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;

use super::{
    DeadLetter, DeadLetterAction, DeadLetterFilter, DeadLetterMove, JobQueue, QueueError,
    QueueKeys, QueueStats, Result, WorkerState, hash_tag,
};

/// The longest a sharded reserve blocks on one shard before trying the next.
pub const BLOCK_SLICE: Duration = Duration::from_millis(100);

/// Most shards a queue may have.
pub const MAX_SHARDS: usize = 1024;

/// Shard `index`'s name for `key` (see the module docs).
pub fn shard_key(key: &str, index: usize) -> String {
    match hash_tag(key) {
        Some(tag) => key.replacen(&format!("{{{tag}}}"), &format!("{{{tag}:{index}}}"), 1),
        None => format!("{key}:{index}"),
    }
}

/// The shard (of `shards`) a message belongs to: 64-bit FNV-1a of its bytes, stable across
/// processes, versions and platforms.
pub fn shard_of(payload: &[u8], shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in payload {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(hash % shards.max(1) as u64).unwrap_or(0)
}

/// A sharded queue's shards and its turn counter.
#[derive(Debug)]
pub(super) struct Shards {
    queues: Vec<JobQueue>,
    next: AtomicUsize,
}

impl Shards {
    /// `count` one-list queues over `base`'s connections, keys derived from `base`'s; they share
    /// `base`'s dedicated blocking connection (a consumer blocks on one shard at a time).
    pub(super) fn new(base: &JobQueue, count: usize) -> Result<Self> {
        if count > MAX_SHARDS {
            return Err(QueueError::Config("at most 1024 queue shards"));
        }
        let queues = (0..count)
            .map(|index| {
                let keys = QueueKeys::new(
                    shard_key(base.keys.pending(), index),
                    shard_key(base.keys.dead(), index),
                );
                JobQueue {
                    opener: base.opener.clone(),
                    conn: base.conn.clone(),
                    blocking: base.blocking.clone(),
                    processing: keys.processing(&base.worker_id),
                    keys,
                    worker_id: base.worker_id.clone(),
                    reply_grace: base.reply_grace,
                    push_chunk: base.push_chunk,
                    shards: None,
                }
            })
            .collect();
        Ok(Self {
            queues,
            next: AtomicUsize::new(0),
        })
    }

    /// The shards' keys, in shard order.
    pub(super) fn keys(&self) -> impl Iterator<Item = &QueueKeys> {
        self.queues.iter().map(JobQueue::keys)
    }

    /// The shards in turn, starting one further than the previous call.
    fn in_turn(&self) -> impl Iterator<Item = &JobQueue> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.queues.len();
        (0..n).map(move |k| &self.queues[(start + k) % n])
    }

    /// The payload's own shard first, then every other.
    fn owner_first(&self, payload: &[u8]) -> impl Iterator<Item = &JobQueue> {
        let n = self.queues.len();
        let own = shard_of(payload, n);
        (0..n).map(move |k| &self.queues[(own + k) % n])
    }

    /// Every call below is one shard's own (unsharded) call, boxed: the router and its shards
    /// are one type, so an unboxed call would make the router's future contain itself.
    pub(super) fn push_batch<'a>(
        &'a self,
        payloads: &'a [&'a [u8]],
    ) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            let mut pushed = 0;
            for (queue, batch) in self.queues.iter().zip(self.by_shard(payloads)) {
                pushed += queue.push_batch(&batch).await?;
            }
            Ok(pushed)
        })
    }

    pub(super) fn reserve(&self, timeout: Duration) -> BoxFuture<'_, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            for queue in self.in_turn() {
                if let Some(message) = queue.reserve(Duration::ZERO).await? {
                    return Ok(Some(message));
                }
            }
            let deadline = Instant::now() + timeout;
            let order: Vec<&JobQueue> = self.in_turn().collect();
            for queue in order.iter().cycle() {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    break;
                }
                if let Some(message) = queue.reserve(remaining.min(BLOCK_SLICE)).await? {
                    return Ok(Some(message));
                }
            }
            Ok(None)
        })
    }

    pub(super) fn reserve_many(
        &self,
        max: usize,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Vec<Vec<u8>>>> {
        Box::pin(async move {
            for queue in self.in_turn() {
                let moved = queue.reserve_many(max, Duration::ZERO).await?;
                if !moved.is_empty() {
                    return Ok(moved);
                }
            }
            Ok(self.reserve(timeout).await?.into_iter().collect())
        })
    }

    pub(super) fn ack_many<'a>(&'a self, payloads: &'a [&'a [u8]]) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            let mut removed = 0;
            for payload in payloads {
                removed += usize::from(self.ack(payload).await?);
            }
            Ok(removed)
        })
    }

    pub(super) fn ack<'a>(&'a self, payload: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            for queue in self.owner_first(payload) {
                if queue.ack(payload).await? {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    pub(super) fn requeue<'a>(&'a self, payload: &'a [u8]) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            for queue in self.owner_first(payload) {
                if queue.requeue(payload).await? {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    pub(super) fn dead_letter<'a>(
        &'a self,
        payload: &'a [u8],
        reason: &'a str,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            for queue in self.owner_first(payload) {
                if queue.dead_letter(payload, reason).await? {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }

    /// The positions of those of `payloads` that are in no list of any shard: each shard
    /// narrows down the candidates the previous one did not have.
    pub(super) fn missing<'a>(
        &'a self,
        payloads: &'a [&'a [u8]],
    ) -> BoxFuture<'a, Result<Vec<usize>>> {
        Box::pin(async move {
            let mut left: Vec<usize> = (0..payloads.len()).collect();
            for queue in &self.queues {
                if left.is_empty() {
                    break;
                }
                let candidates: Vec<&[u8]> = left.iter().map(|&i| payloads[i]).collect();
                left = queue
                    .missing(&candidates)
                    .await?
                    .into_iter()
                    .filter_map(|position| left.get(position).copied())
                    .collect();
            }
            Ok(left)
        })
    }

    /// Pushes each of `payloads` that its own shard does not hold onto that shard; returns how
    /// many were pushed.
    pub(super) fn restore_missing<'a>(
        &'a self,
        payloads: &'a [&'a [u8]],
    ) -> BoxFuture<'a, Result<usize>> {
        Box::pin(async move {
            let mut restored = 0;
            for (queue, batch) in self.queues.iter().zip(self.by_shard(payloads)) {
                restored += queue.restore_missing(&batch).await?;
            }
            Ok(restored)
        })
    }

    /// `payloads` grouped by their shard, in shard order.
    fn by_shard<'a>(&self, payloads: &[&'a [u8]]) -> Vec<Vec<&'a [u8]>> {
        let mut per_shard: Vec<Vec<&[u8]>> = vec![Vec::new(); self.queues.len()];
        for payload in payloads {
            per_shard[shard_of(payload, self.queues.len())].push(payload);
        }
        per_shard
    }

    pub(super) fn restored_count(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let mut restored = 0;
            for queue in &self.queues {
                restored += queue.restored_count().await?;
            }
            Ok(restored)
        })
    }

    pub(super) fn processing_items(&self) -> BoxFuture<'_, Result<Vec<Vec<u8>>>> {
        Box::pin(async move {
            let mut items = Vec::new();
            for queue in &self.queues {
                items.extend(queue.processing_items().await?);
            }
            Ok(items)
        })
    }

    pub(super) fn processing_tail(&self, max: usize) -> BoxFuture<'_, Result<Vec<Vec<u8>>>> {
        Box::pin(async move {
            let mut items = Vec::new();
            for queue in &self.queues {
                items.extend(queue.processing_tail(max).await?);
            }
            Ok(items)
        })
    }

    pub(super) fn depth(&self) -> BoxFuture<'_, Result<usize>> {
        Box::pin(async move {
            let mut depth = 0;
            for queue in &self.queues {
                depth += queue.depth().await?;
            }
            Ok(depth)
        })
    }

    pub(super) fn dead_letters(&self, limit: usize) -> BoxFuture<'_, Result<Vec<DeadLetter>>> {
        Box::pin(async move {
            let mut letters = Vec::new();
            for queue in &self.queues {
                letters.extend(queue.dead_letters(limit).await?);
            }
            letters.sort_by_key(|letter| std::cmp::Reverse(letter.at));
            letters.truncate(limit);
            Ok(letters)
        })
    }

    pub(super) fn dead_depth(&self) -> BoxFuture<'_, Result<usize>> {
        Box::pin(async move {
            let mut depth = 0;
            for queue in &self.queues {
                depth += queue.dead_depth().await?;
            }
            Ok(depth)
        })
    }

    pub(super) fn dead_dropped(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let mut dropped = 0;
            for queue in &self.queues {
                dropped += queue.dead_dropped().await?;
            }
            Ok(dropped)
        })
    }

    /// Moves matching dead letters shard by shard; the filter's limit counts over all shards.
    pub(super) fn move_dead_letters<'a>(
        &'a self,
        action: DeadLetterAction,
        filter: &'a DeadLetterFilter,
    ) -> BoxFuture<'a, Result<DeadLetterMove>> {
        Box::pin(async move {
            let mut done = DeadLetterMove::default();
            for queue in &self.queues {
                let mut shard_filter = filter.clone();
                if let Some(limit) = filter.limit {
                    shard_filter.limit = Some(limit.saturating_sub(done.moved));
                }
                let moved = queue.move_dead_letters(action, &shard_filter).await?;
                done.moved += moved.moved;
                done.kept += moved.kept;
            }
            Ok(done)
        })
    }

    pub(super) fn heartbeat_liveness(&self, ttl: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            for queue in &self.queues {
                queue.heartbeat_liveness(ttl).await?;
            }
            Ok(())
        })
    }

    pub(super) fn recover_dead_workers(&self) -> BoxFuture<'_, Result<usize>> {
        Box::pin(async move {
            let mut moved = 0;
            for queue in &self.queues {
                moved += queue.recover_dead_workers().await?;
            }
            Ok(moved)
        })
    }

    pub(super) fn deregister(&self) -> BoxFuture<'_, Result<usize>> {
        Box::pin(async move {
            let mut moved = 0;
            for queue in &self.queues {
                moved += queue.deregister().await?;
            }
            Ok(moved)
        })
    }

    pub(super) fn stats(&self) -> BoxFuture<'_, Result<QueueStats>> {
        Box::pin(async move {
            let mut total = QueueStats::default();
            for queue in &self.queues {
                let stats = queue.stats().await?;
                total.pending += stats.pending;
                total.processing += stats.processing;
                total.dead += stats.dead;
                total.workers = total.workers.max(stats.workers);
                total.live_workers = total.live_workers.max(stats.live_workers);
            }
            Ok(total)
        })
    }

    pub(super) fn worker_states(&self) -> BoxFuture<'_, Result<Vec<WorkerState>>> {
        Box::pin(async move {
            let mut merged: BTreeMap<String, WorkerState> = BTreeMap::new();
            for queue in &self.queues {
                for state in queue.worker_states().await? {
                    let entry = merged.entry(state.id.clone()).or_insert(WorkerState {
                        id: state.id,
                        alive: false,
                        in_flight: 0,
                    });
                    entry.alive |= state.alive;
                    entry.in_flight += state.in_flight;
                }
            }
            Ok(merged.into_values().collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shard keys keep the hash tag's shape; shard choice is stable and spreads.
    #[test]
    fn shard_keys_and_shard_choice() {
        assert_eq!(shard_key("orders:pending", 3), "orders:pending:3");
        assert_eq!(shard_key("{orders:pending}", 0), "{orders:pending:0}");
        assert_eq!(shard_key("{o}:dead", 2), "{o:2}:dead");
        let tagged = QueueKeys::new(shard_key("{o}:pending", 1), shard_key("{o}:dead", 1));
        assert!(tagged.check_one_slot().is_ok());
        assert_eq!(shard_of(b"abc", 1), 0);
        assert_eq!(shard_of(b"abc", 8), shard_of(b"abc", 8));
        let mut seen = [0usize; 4];
        for i in 0..400 {
            seen[shard_of(format!("order-{i}").as_bytes(), 4)] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
    }
}
