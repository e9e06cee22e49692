//! Liveness keys, the registry of workers, and recovery of dead workers' messages.

use std::{collections::BTreeSet, time::Duration};

use super::{JobQueue, Result, SCRIPTS};

/// A snapshot of the queue, for status displays and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages waiting in the pending list.
    pub pending: usize,
    /// Messages in registered workers' processing lists.
    pub processing: usize,
    /// Entries in the dead letter list.
    pub dead: usize,
    /// Registered workers.
    pub workers: usize,
    /// Registered workers whose liveness key exists.
    pub live_workers: usize,
}

/// One worker as the queue sees it, for status displays.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkerState {
    /// The worker id.
    pub id: String,
    /// Whether its liveness key exists (a dead worker's messages are about to be recovered).
    pub alive: bool,
    /// Messages in its processing list: reserved and not yet acknowledged.
    pub in_flight: usize,
}

impl JobQueue {
    /// Marks this consumer alive for `ttl` and registers it; call it before the first reserve and
    /// then well within `ttl`, periodically.
    ///
    /// - When this consumer stops calling it, then after `ttl` its liveness key is gone and any
    ///   live consumer's [`JobQueue::recover_dead_workers`] returns its messages to the queue.
    pub async fn heartbeat_liveness(&self, ttl: Duration) -> Result<()> {
        if let Some(shards) = &self.shards {
            return shards.heartbeat_liveness(ttl).await;
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.keys.alive(&self.worker_id))
            .arg(now_ms)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .cmd("SADD")
            .arg(self.keys.workers())
            .arg(&self.worker_id)
            .ignore()
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Moves every dead worker's processing list back to the front of the pending list and
    /// unregisters it; returns how many messages were moved.
    ///
    /// A worker is dead when its liveness key is gone. Candidates are the registered workers plus
    /// any worker with a processing list (found with `SCAN`), so a list is recovered even if its
    /// worker was unregistered and then died before registering again. Each worker is checked and
    /// recovered in one script, so a worker that renews its liveness at the same moment is either
    /// seen alive or fully recovered, never half. This consumer never recovers itself.
    pub async fn recover_dead_workers(&self) -> Result<usize> {
        if let Some(shards) = &self.shards {
            return shards.recover_dead_workers().await;
        }
        let mut moved_total = 0;
        for worker in self.known_workers().await? {
            if worker == self.worker_id {
                continue;
            }
            let moved = self.reclaim(&worker, "if_dead").await?;
            if moved > 0 {
                tracing::info!(worker = %worker, moved, "recovered a dead worker's messages");
            }
            moved_total += moved;
        }
        Ok(moved_total)
    }

    /// Unregisters this consumer on a clean shutdown: deletes its liveness key, removes it from the
    /// registry and moves anything left in its processing list back to the front of the pending
    /// list, in one script; returns how many messages were moved back.
    pub async fn deregister(&self) -> Result<usize> {
        if let Some(shards) = &self.shards {
            return shards.deregister().await;
        }
        let worker = self.worker_id.clone();
        self.reclaim(&worker, "always").await
    }

    /// Counts of pending, processing and dead messages and of workers.
    pub async fn stats(&self) -> Result<QueueStats> {
        if let Some(shards) = &self.shards {
            return shards.stats().await;
        }
        let mut conn = self.conn.clone();
        let workers: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.workers())
            .query_async(&mut conn)
            .await?;
        let mut pipe = redis::pipe();
        pipe.cmd("LLEN").arg(self.keys.pending());
        pipe.cmd("LLEN").arg(self.keys.dead());
        for worker in &workers {
            pipe.cmd("LLEN").arg(self.keys.processing(worker));
            pipe.cmd("EXISTS").arg(self.keys.alive(worker));
        }
        let counts: Vec<usize> = pipe.query_async(&mut conn).await?;
        let mut stats = QueueStats {
            workers: workers.len(),
            ..QueueStats::default()
        };
        let mut counts = counts.into_iter();
        stats.pending = counts.next().unwrap_or(0);
        stats.dead = counts.next().unwrap_or(0);
        while let (Some(processing), Some(alive)) = (counts.next(), counts.next()) {
            stats.processing += processing;
            stats.live_workers += usize::from(alive > 0);
        }
        Ok(stats)
    }

    /// Every known worker (registered, or owning a processing list), by id, with its liveness and
    /// in-flight count. Not a snapshot: read with one `SCAN` and one pipeline.
    pub async fn worker_states(&self) -> Result<Vec<WorkerState>> {
        if let Some(shards) = &self.shards {
            return shards.worker_states().await;
        }
        let workers = self.known_workers().await?;
        if workers.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for worker in &workers {
            pipe.cmd("LLEN").arg(self.keys.processing(worker));
            pipe.cmd("EXISTS").arg(self.keys.alive(worker));
        }
        let mut conn = self.conn.clone();
        let counts: Vec<usize> = pipe.query_async(&mut conn).await?;
        Ok(workers
            .into_iter()
            .zip(counts.chunks(2))
            .map(|(id, pair)| WorkerState {
                id,
                in_flight: pair.first().copied().unwrap_or(0),
                alive: pair.get(1).copied().unwrap_or(0) > 0,
            })
            .collect())
    }

    /// Registered workers plus owners of existing processing lists.
    pub(super) async fn known_workers(&self) -> Result<BTreeSet<String>> {
        let mut conn = self.conn.clone();
        let registered: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(self.keys.workers())
            .query_async(&mut conn)
            .await?;
        let mut workers: BTreeSet<String> = registered
            .into_iter()
            .filter_map(|w| String::from_utf8(w).ok())
            .collect();

        let prefix = self.keys.processing_prefix();
        let pattern = self.keys.processing_pattern();
        let mut cursor: u64 = 0;
        loop {
            // On a cluster, SCAN the node holding the queue's slot (not a random one).
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, keys): (u64, Vec<Vec<u8>>) =
                conn.query_at(&scan, self.keys.pending()).await?;
            workers.extend(keys.into_iter().filter_map(|key| {
                String::from_utf8(key)
                    .ok()
                    .and_then(|key| key.strip_prefix(&prefix).map(str::to_owned))
            }));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        Ok(workers)
    }

    /// Runs `reclaim_worker.lua` for `worker`; 0 when it was alive (`if_dead`).
    async fn reclaim(&self, worker: &str, mode: &str) -> Result<usize> {
        let mut conn = self.conn.clone();
        let moved: i64 = SCRIPTS
            .reclaim_worker
            .key(self.keys.alive(worker))
            .key(self.keys.processing(worker))
            .key(self.keys.pending())
            .key(self.keys.workers())
            .arg(worker)
            .arg(mode)
            .invoke_async(&mut conn)
            .await?;
        Ok(usize::try_from(moved).unwrap_or(0))
    }
}
