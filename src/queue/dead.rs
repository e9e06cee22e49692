//! The dead letter list: messages that can never be handled, with the reason.

use serde::{Deserialize, Serialize};

use super::{JobQueue, Result, SCRIPTS};

/// One entry of the dead letter list, stored as JSON:
/// `{"payload": "<original>", "reason": "...", "worker": "...", "at": <unix ms>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The original message. Bytes that are not UTF-8 are replaced (U+FFFD), so such a payload is
    /// kept for inspection but not byte for byte.
    pub payload: String,
    /// Why it was dead-lettered (e.g. `not_json`), or `unreadable` for an entry that is not in
    /// this format.
    pub reason: String,
    /// The worker that dead-lettered it.
    #[serde(default)]
    pub worker: String,
    /// When, in Unix milliseconds.
    #[serde(default)]
    pub at: i64,
}

impl JobQueue {
    /// Moves a message from this consumer's processing list to the dead letter list with `reason`,
    /// in one script; `true` when it was there.
    ///
    /// - When it was not in the processing list (recovered elsewhere meanwhile), then `false` and
    ///   nothing is pushed, so a message is never dead-lettered twice by two holders.
    pub async fn dead_letter(&self, payload: &[u8], reason: &str) -> Result<bool> {
        if let Some(shards) = &self.shards {
            return shards.dead_letter(payload, reason).await;
        }
        let entry = DeadLetter {
            payload: String::from_utf8_lossy(payload).into_owned(),
            reason: reason.to_owned(),
            worker: self.worker_id.clone(),
            at: chrono::Utc::now().timestamp_millis(),
        };
        let entry = serde_json::to_vec(&entry)
            .map_err(|_| super::QueueError::Config("a dead letter entry could not be encoded"))?;
        let mut conn = self.conn.clone();
        let moved: i64 = SCRIPTS
            .dead_letter
            .key(&self.processing)
            .key(self.keys.dead())
            .arg(payload)
            .arg(entry)
            .invoke_async(&mut conn)
            .await?;
        Ok(moved == 1)
    }

    /// Up to `limit` dead letters, newest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        if let Some(shards) = &self.shards {
            return shards.dead_letters(limit).await;
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = isize::try_from(limit).map_or(-1, |l| l - 1);
        let mut conn = self.conn.clone();
        let raw: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(self.keys.dead())
            .arg(0)
            .arg(stop)
            .query_async(&mut conn)
            .await?;
        Ok(raw
            .into_iter()
            .map(|entry| {
                serde_json::from_slice(&entry).unwrap_or_else(|_| DeadLetter {
                    payload: String::from_utf8_lossy(&entry).into_owned(),
                    reason: "unreadable".to_owned(),
                    worker: String::new(),
                    at: 0,
                })
            })
            .collect())
    }

    /// How many dead letters there are.
    pub async fn dead_depth(&self) -> Result<usize> {
        if let Some(shards) = &self.shards {
            return shards.dead_depth().await;
        }
        let mut conn = self.conn.clone();
        Ok(redis::cmd("LLEN")
            .arg(self.keys.dead())
            .query_async(&mut conn)
            .await?)
    }

    /// Pushes every dead letter's payload back onto the pending list (oldest first, at the back)
    /// and empties the dead letter list, in one script; returns how many were requeued.
    ///
    /// - When an entry is not in the dead letter format, then it stays in the dead letter list.
    /// - When the dead letter list is long, then Redis is busy for the whole move (one script).
    pub async fn requeue_dead_letters(&self) -> Result<usize> {
        if let Some(shards) = &self.shards {
            return shards.requeue_dead_letters().await;
        }
        let mut conn = self.conn.clone();
        let (requeued, kept): (usize, usize) = SCRIPTS
            .requeue_dead
            .key(self.keys.dead())
            .key(self.keys.pending())
            .invoke_async(&mut conn)
            .await?;
        if kept > 0 {
            tracing::warn!(kept, "unreadable dead letters left in place");
        }
        Ok(requeued)
    }
}
