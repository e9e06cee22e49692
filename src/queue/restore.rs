//! Restoring messages Redis lost, from a durable record kept elsewhere (the order intake).
//!
//! - When [`JobQueue::restore_missing`] is given messages, then, in one script, each one that is
//!   in none of the queue's lists (pending, any known processing list, the dead letters) is
//!   pushed to the back of the pending list and counted under [`QueueKeys::restored`]; one that
//!   is in a list changes nothing. Several consumers may run it at once: the script is atomic,
//!   so the second finds the first's push.
//! - Not guaranteed: a message taken into a processing list that appeared after the list of
//!   workers was read, or acknowledged between the caller's check of its durable record and the
//!   script, is pushed again: consumers must be idempotent (they are, by order id).
//! - Cost: the script reads every list of the queue once per call (O(pending + processing +
//!   dead) on the server), so call it rarely and only with candidates in hand.
//!
//! [`QueueKeys::restored`]: super::QueueKeys::restored

use super::{JobQueue, Result, SCRIPTS};

impl JobQueue {
    /// Pushes each of `payloads` that is in none of the queue's lists; returns how many were
    /// pushed (see the module docs).
    pub async fn restore_missing<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<usize> {
        if payloads.is_empty() {
            return Ok(0);
        }
        let workers = self.known_workers().await?;
        let mut invocation = SCRIPTS.restore_missing.prepare_invoke();
        invocation
            .key(self.keys.pending())
            .key(self.keys.dead())
            .key(self.keys.restored());
        for worker in &workers {
            invocation.key(self.keys.processing(worker));
        }
        for payload in payloads {
            invocation.arg(payload.as_ref());
        }
        let mut conn = self.conn.clone();
        let pushed: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(usize::try_from(pushed).unwrap_or(0))
    }

    /// How many messages [`JobQueue::restore_missing`] has pushed back since the counter was
    /// created (it lives in Redis: a Redis that loses its data starts it again from 0).
    pub async fn restored_count(&self) -> Result<u64> {
        let mut conn = self.conn.clone();
        let count: Option<u64> = redis::cmd("GET")
            .arg(self.keys.restored())
            .query_async(&mut conn)
            .await?;
        Ok(count.unwrap_or(0))
    }
}
