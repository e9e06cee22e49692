//! Where a message is: pending, in flight at which worker, or dead-lettered (`lockctl order`).
//!
//! - When a message containing the needle is in a worker's processing list, then that worker
//!   (and whether its liveness key exists) is reported; every processing list is read whole
//!   (they are bounded by the workers' reservation limits).
//! - When it is among the `scan_limit` newest entries of the pending list, then the number of
//!   messages ahead of it (to be reserved before it) is reported; older ones are not searched.
//! - When it is among the newest `scan_limit` dead letters, then that is reported.
//! - Not guaranteed: a snapshot; a message moving between lists while they are read may be
//!   seen twice or not at all. Lists are read in chunks of 1,000, so Redis is never blocked long.

use serde::Serialize;

use super::{JobQueue, Result};

/// Entries read per `LRANGE`.
const CHUNK: usize = 1000;

/// Where a message was found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Location {
    /// Messages ahead of it in the pending list (0 = next to be reserved).
    pub pending_position: Option<usize>,
    /// Workers whose processing list holds it, with whether each is alive.
    pub in_flight_at: Vec<(String, bool)>,
    /// Whether a dead letter holds it.
    pub dead_lettered: bool,
}

impl JobQueue {
    /// Looks for messages containing `needle` (see the module docs).
    pub async fn locate(&self, needle: &[u8], scan_limit: usize) -> Result<Location> {
        let mut location = Location::default();
        for worker in self.worker_states().await? {
            let key = self.keys.processing(&worker.id);
            if self.find_in(&key, needle, usize::MAX).await?.is_some() {
                location.in_flight_at.push((worker.id, worker.alive));
            }
        }
        // The pending list is pushed at the head (LPUSH) and reserved from the tail: position
        // counted from the reserving end.
        let depth = self.depth().await?;
        let from_head = self
            .find_in(self.keys.pending(), needle, scan_limit)
            .await?;
        location.pending_position = from_head.map(|index| depth.saturating_sub(index + 1));
        location.dead_lettered = self
            .find_in(self.keys.dead(), needle, scan_limit)
            .await?
            .is_some();
        Ok(location)
    }

    /// The index of the first entry of `key` (within `limit`) that contains `needle`.
    async fn find_in(&self, key: &str, needle: &[u8], limit: usize) -> Result<Option<usize>> {
        let mut conn = self.conn.clone();
        let mut start = 0_usize;
        while start < limit {
            let stop = start.saturating_add(CHUNK.min(limit - start)) - 1;
            let entries: Vec<Vec<u8>> = redis::cmd("LRANGE")
                .arg(key)
                .arg(start)
                .arg(stop)
                .query_async(&mut conn)
                .await?;
            if let Some(found) = entries
                .iter()
                .position(|entry| entry.windows(needle.len().max(1)).any(|w| w == needle))
            {
                return Ok(Some(start + found));
            }
            if entries.len() < CHUNK.min(limit - start) {
                return Ok(None);
            }
            start = stop + 1;
        }
        Ok(None)
    }
}
