//! Restoring messages Redis lost, from a durable record kept elsewhere (the order intake).
//!
//! - When [`JobQueue::restore_missing`] is given messages, then, in one script, each one that is
//!   in none of the queue's lists (pending, any known processing list, the dead letters) is
//!   pushed to the back of the pending list and counted under [`QueueKeys::restored`]; one that
//!   is in a list changes nothing. Several consumers may run it at once: the script is atomic,
//!   so the second finds the first's push.
//! - [`JobQueue::missing`] answers the same question without changing anything, so a caller can
//!   check its durable record between the two calls (see there).
//! - Not guaranteed: a message taken into a processing list that appeared after the list of
//!   workers was read is pushed again: consumers must be idempotent (they are, by order id).
//! - When the queue is sharded, then each message is checked against every shard and restored
//!   onto its own (see `queue/shards.rs`); the restored count adds up the shards'.
//! - Cost: the script reads every list of the queue once per call (O(pending + processing +
//!   dead) on the server), so call it rarely and only with candidates in hand.
//!
//! [`QueueKeys::restored`]: super::QueueKeys::restored

use super::{JobQueue, Result, SCRIPTS};

impl JobQueue {
    /// Which of `payloads` are in none of the queue's lists right now (their positions), without
    /// changing anything. A caller that checks its durable record *after* this call and pushes
    /// only what is still undecided with [`JobQueue::restore_missing`] cannot push a message
    /// that was acknowledged in between (consumers acknowledge after recording the outcome).
    pub async fn missing<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<Vec<usize>> {
        if let Some(shards) = &self.shards {
            let payloads: Vec<&[u8]> = payloads.iter().map(AsRef::as_ref).collect();
            return shards.missing(&payloads).await;
        }
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        let positions: Vec<usize> = self.run_restore("check", payloads).await?;
        Ok(positions
            .into_iter()
            .filter_map(|p| p.checked_sub(1))
            .collect())
    }

    /// Pushes each of `payloads` that is in none of the queue's lists; returns how many were
    /// pushed (see the module docs).
    pub async fn restore_missing<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<usize> {
        if let Some(shards) = &self.shards {
            let payloads: Vec<&[u8]> = payloads.iter().map(AsRef::as_ref).collect();
            return shards.restore_missing(&payloads).await;
        }
        if payloads.is_empty() {
            return Ok(0);
        }
        self.run_restore("push", payloads).await
    }

    /// Runs `restore_missing.lua` in `mode` over every list of the queue.
    async fn run_restore<P: AsRef<[u8]>, T: redis::FromRedisValue>(
        &self,
        mode: &str,
        payloads: &[P],
    ) -> Result<T> {
        let workers = self.known_workers().await?;
        let mut invocation = SCRIPTS.restore_missing.prepare_invoke();
        invocation
            .key(self.keys.pending())
            .key(self.keys.dead())
            .key(self.keys.restored());
        for worker in &workers {
            invocation.key(self.keys.processing(worker));
        }
        invocation.arg(mode);
        for payload in payloads {
            invocation.arg(payload.as_ref());
        }
        let mut conn = self.conn.clone();
        Ok(invocation.invoke_async(&mut conn).await?)
    }

    /// How many messages [`JobQueue::restore_missing`] has pushed back since the counter was
    /// created (it lives in Redis: a Redis that loses its data starts it again from 0).
    pub async fn restored_count(&self) -> Result<u64> {
        if let Some(shards) = &self.shards {
            return shards.restored_count().await;
        }
        let mut conn = self.conn.clone();
        let count: Option<u64> = redis::cmd("GET")
            .arg(self.keys.restored())
            .query_async(&mut conn)
            .await?;
        Ok(count.unwrap_or(0))
    }
}
