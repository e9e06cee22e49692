//! The dead letter list: messages that can never be handled, with the reason.
//!
//! Bounded, whatever the messages:
//! - When a message is dead-lettered, then the entry keeps at most [`DEAD_PAYLOAD_PREFIX`] bytes
//!   of it (cut at a character boundary), with its full length and SHA-256, and `truncated` says
//!   whether anything was cut: one huge message cannot become a huge entry.
//! - When the list holds [`MAX_DEAD_LETTERS`] entries, then each new one drops the oldest, and the
//!   number dropped is counted under [`super::QueueKeys::dead_dropped`]
//!   ([`JobQueue::dead_dropped`]).
//! - When dead letters are read ([`JobQueue::dead_letters`], `GET /queue`, `lockctl dead-letters
//!   list`), then at most [`MAX_DEAD_LETTERS_READ`] entries, each payload cut to the prefix (also
//!   for entries written before the cap existed).
//! - When dead letters are moved back ([`JobQueue::move_dead_letters`]), then in batches of
//!   [`MOVE_BATCH`] entries per script call, so Redis is never busy with one long script; an
//!   entry whose payload was truncated is never requeued (it is not the message any more), only
//!   purged.
//! - Not guaranteed: a snapshot across batches; entries added meanwhile may or may not be moved.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{JobQueue, Result, SCRIPTS};

/// Most payload bytes a dead letter keeps.
pub const DEAD_PAYLOAD_PREFIX: usize = 1024;
/// Most entries the dead letter list keeps; older ones are dropped and counted.
pub const MAX_DEAD_LETTERS: usize = 10_000;
/// Most entries one read returns.
pub const MAX_DEAD_LETTERS_READ: usize = 1000;
/// Entries examined per script call when moving dead letters.
pub const MOVE_BATCH: usize = 1000;

/// One entry of the dead letter list, stored as JSON:
/// `{"payload": "<prefix>", "payload_bytes": n, "payload_sha256": "<hex>", "truncated": bool,
/// "reason": "...", "worker": "...", "at": <unix ms>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The original message, or its first [`DEAD_PAYLOAD_PREFIX`] bytes when `truncated`. Bytes
    /// that are not UTF-8 are replaced (U+FFFD), so such a payload is kept for inspection but not
    /// byte for byte.
    pub payload: String,
    /// The original message's length in bytes (0 for entries written before it was recorded).
    #[serde(default)]
    pub payload_bytes: u64,
    /// The original message's SHA-256, hex (empty for entries written before it was recorded).
    #[serde(default)]
    pub payload_sha256: String,
    /// Whether `payload` is only a prefix of the message.
    #[serde(default)]
    pub truncated: bool,
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

/// What [`JobQueue::move_dead_letters`] does with the matching entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterAction {
    /// Push the payload back onto the pending list (to the back of the queue).
    Requeue,
    /// Drop the entry.
    Purge,
}

/// Which dead letters [`JobQueue::move_dead_letters`] moves; the default matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Only entries whose reason starts with this.
    pub reason: Option<String>,
    /// Only entries at least this old.
    pub older_than: Option<Duration>,
    /// At most this many entries.
    pub limit: Option<usize>,
}

/// What [`JobQueue::move_dead_letters`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadLetterMove {
    /// Entries requeued (or purged).
    pub moved: usize,
    /// Entries examined and left in place (not matching, unreadable, truncated, over the limit).
    pub kept: usize,
}

/// The first at most `max` bytes of `text`, cut at a character boundary.
fn prefix(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl DeadLetter {
    /// The entry for `payload` (see the module docs for the bounds).
    pub fn new(payload: &[u8], reason: &str, worker: &str, at: i64) -> Self {
        let cut = &payload[..payload.len().min(DEAD_PAYLOAD_PREFIX + 3)];
        let text = String::from_utf8_lossy(cut);
        let kept = prefix(&text, DEAD_PAYLOAD_PREFIX).to_owned();
        let truncated = payload.len() > DEAD_PAYLOAD_PREFIX || kept.len() < text.len();
        Self {
            payload: kept,
            payload_bytes: u64::try_from(payload.len()).unwrap_or(u64::MAX),
            payload_sha256: format!("{:x}", Sha256::digest(payload)),
            truncated,
            reason: prefix(reason, DEAD_PAYLOAD_PREFIX).to_owned(),
            worker: worker.to_owned(),
            at,
        }
    }

    /// This entry with its payload cut to the prefix (for entries stored before the bound).
    fn bounded(mut self) -> Self {
        if self.payload.len() > DEAD_PAYLOAD_PREFIX {
            if self.payload_bytes == 0 {
                self.payload_bytes = u64::try_from(self.payload.len()).unwrap_or(u64::MAX);
            }
            self.payload = prefix(&self.payload, DEAD_PAYLOAD_PREFIX).to_owned();
            self.truncated = true;
        }
        self
    }
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
        let entry = DeadLetter::new(
            payload,
            reason,
            &self.worker_id,
            chrono::Utc::now().timestamp_millis(),
        );
        let entry = serde_json::to_vec(&entry)
            .map_err(|_| super::QueueError::Config("a dead letter entry could not be encoded"))?;
        let mut conn = self.conn.clone();
        let moved: i64 = SCRIPTS
            .dead_letter
            .key(&self.processing)
            .key(self.keys.dead())
            .key(self.keys.dead_dropped())
            .arg(payload)
            .arg(entry)
            .arg(MAX_DEAD_LETTERS)
            .invoke_async(&mut conn)
            .await?;
        Ok(moved == 1)
    }

    /// Up to `limit` (at most [`MAX_DEAD_LETTERS_READ`]) dead letters, newest first, payloads
    /// bounded.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        if let Some(shards) = &self.shards {
            return shards.dead_letters(limit).await;
        }
        let limit = limit.min(MAX_DEAD_LETTERS_READ);
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
                serde_json::from_slice::<DeadLetter>(&entry)
                    .map(DeadLetter::bounded)
                    .unwrap_or_else(|_| DeadLetter::new(&entry, "unreadable", "", 0))
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

    /// How many dead letters were dropped for the list's cap, ever.
    pub async fn dead_dropped(&self) -> Result<u64> {
        if let Some(shards) = &self.shards {
            return shards.dead_dropped().await;
        }
        let mut conn = self.conn.clone();
        let count: Option<u64> = redis::cmd("GET")
            .arg(self.keys.dead_dropped())
            .query_async(&mut conn)
            .await?;
        Ok(count.unwrap_or(0))
    }

    /// Pushes every readable dead letter's payload back onto the pending list (oldest first, at
    /// the back), in batches; returns how many were requeued.
    ///
    /// - When an entry is not in the dead letter format, or its payload was truncated, then it
    ///   stays in the dead letter list.
    pub async fn requeue_dead_letters(&self) -> Result<usize> {
        let done = self
            .move_dead_letters(DeadLetterAction::Requeue, &DeadLetterFilter::default())
            .await?;
        if done.kept > 0 {
            tracing::warn!(
                kept = done.kept,
                "unreadable or truncated dead letters left in place"
            );
        }
        Ok(done.moved)
    }

    /// Requeues or purges the dead letters matching `filter`, oldest first, [`MOVE_BATCH`]
    /// entries per script call (see the module docs).
    pub async fn move_dead_letters(
        &self,
        action: DeadLetterAction,
        filter: &DeadLetterFilter,
    ) -> Result<DeadLetterMove> {
        let cutoff = filter.older_than.map_or(0, |age| {
            let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            chrono::Utc::now()
                .timestamp_millis()
                .saturating_sub(age)
                .max(1)
        });
        if let Some(shards) = &self.shards {
            return shards.move_dead_letters(action, filter).await;
        }
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut done = DeadLetterMove::default();
        let mut conn = self.conn.clone();
        while done.moved < limit {
            let (moved, kept, examined): (usize, usize, usize) = SCRIPTS
                .requeue_dead
                .key(self.keys.dead())
                .key(self.keys.pending())
                .arg(done.kept)
                .arg(MOVE_BATCH)
                .arg(filter.reason.as_deref().unwrap_or(""))
                .arg(cutoff)
                .arg(match action {
                    DeadLetterAction::Requeue => "requeue",
                    DeadLetterAction::Purge => "purge",
                })
                .arg((limit - done.moved).min(MOVE_BATCH))
                .invoke_async(&mut conn)
                .await?;
            done.moved += moved;
            done.kept += kept;
            if examined < MOVE_BATCH {
                break;
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A huge payload becomes a bounded entry that still identifies it.
    #[test]
    fn dead_letters_keep_a_bounded_prefix_length_and_hash() {
        let huge = vec![0x01_u8; 20 * 1024 * 1024];
        let entry = DeadLetter::new(&huge, "not_json", "w", 0);
        assert!(entry.truncated);
        assert_eq!(entry.payload.len(), DEAD_PAYLOAD_PREFIX);
        assert_eq!(entry.payload_bytes, 20 * 1024 * 1024);
        assert_eq!(entry.payload_sha256.len(), 64);
        assert!(serde_json::to_vec(&entry).unwrap().len() < 8 * DEAD_PAYLOAD_PREFIX);
        let small = DeadLetter::new("é{".as_bytes(), "not_json", "w", 0);
        assert!(!small.truncated);
        assert_eq!(small.payload, "é{");
        let cut = DeadLetter::new("é".repeat(DEAD_PAYLOAD_PREFIX).as_bytes(), "r", "w", 0);
        assert!(cut.truncated && cut.payload.len() <= DEAD_PAYLOAD_PREFIX);
    }
}
