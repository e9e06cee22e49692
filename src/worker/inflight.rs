//! What this worker has reserved and not yet acknowledged, and the byte budget that bounds it.
//!
//! A reserved message is held once, in the task that will decide it (its exact bytes are what
//! `LREM` needs to acknowledge it); this tracker keeps only its SHA-256 digest and its length, so
//! recognising our own messages in the processing list costs 40 bytes per message, not a second
//! copy of each.
//!
//! - When the bytes of reserved, unacknowledged messages reach the budget
//!   (`WorkerConfig::max_reserved_bytes`), then [`InFlight::wait_for_room`] holds the puller
//!   until some are acknowledged, given back or dead-lettered.
//! - When the puller asks how many messages to reserve ([`InFlight::pull_limit`]), then the
//!   answer is what fits in the remaining budget at the average size seen so far (at least one):
//!   the budget is exceeded by at most one pull's estimate error, e.g. one message when sizes are
//!   alike, and one message of any size when the budget is nearly spent.
//! - When the same bytes are reserved twice (a redelivered copy), then both count: the digest
//!   is counted like a multiset.
//! - Not guaranteed: two different messages with one SHA-256 digest are told apart (the
//!   reconciliation would then take one for the other and not adopt it).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;

use super::WorkerStats;

/// A message's identity in the tracker: the SHA-256 of its bytes.
pub(crate) type Digest = [u8; 32];

/// The digest of a message.
pub(crate) fn digest(payload: &[u8]) -> Digest {
    Sha256::digest(payload).into()
}

#[derive(Debug, Default)]
struct Inner {
    /// Digest -> copies in flight.
    copies: HashMap<Digest, usize>,
    /// Bytes of every copy in flight.
    bytes: usize,
}

/// This worker's reserved, unacknowledged messages (see the module docs).
#[derive(Debug)]
pub(crate) struct InFlight {
    inner: Mutex<Inner>,
    /// Most bytes held before the puller waits.
    budget: usize,
    /// Signalled when messages leave (room in the budget).
    freed: Notify,
    /// Average size of the messages seen, in bytes (an exponential moving average).
    average: AtomicU64,
    /// Where the gauges `/metrics` shows live.
    stats: Arc<WorkerStats>,
}

impl InFlight {
    pub(crate) fn new(budget: usize, stats: Arc<WorkerStats>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            budget,
            freed: Notify::new(),
            average: AtomicU64::new(0),
            stats,
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, inner: &Inner) {
        let count: usize = inner.copies.values().sum();
        self.stats
            .reserved_messages
            .store(count as u64, Ordering::Relaxed);
        self.stats
            .reserved_bytes
            .store(inner.bytes as u64, Ordering::Relaxed);
    }

    /// Counts a reserved message.
    pub(crate) fn track(&self, payload: &[u8]) {
        let size = payload.len() as u64;
        let average = self.average.load(Ordering::Relaxed);
        let next = if average == 0 {
            size
        } else {
            (average * 7 + size) / 8
        };
        self.average.store(next.max(1), Ordering::Relaxed);
        let key = digest(payload);
        let mut inner = self.inner();
        *inner.copies.entry(key).or_default() += 1;
        inner.bytes += payload.len();
        self.publish(&inner);
    }

    /// Forgets one copy of `payload` (acknowledged, given back or dead-lettered).
    pub(crate) fn forget(&self, payload: &[u8]) {
        let key = digest(payload);
        let mut inner = self.inner();
        let Some(count) = inner.copies.get_mut(&key) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            inner.copies.remove(&key);
        }
        inner.bytes = inner.bytes.saturating_sub(payload.len());
        self.publish(&inner);
        drop(inner);
        self.freed.notify_waiters();
    }

    /// Whether a message with this digest is in flight.
    pub(crate) fn contains(&self, key: &Digest) -> bool {
        self.inner().copies.contains_key(key)
    }

    /// Bytes held now.
    pub(crate) fn bytes(&self) -> usize {
        self.inner().bytes
    }

    /// Waits until the bytes held are below the budget.
    pub(crate) async fn wait_for_room(&self) {
        loop {
            let freed = self.freed.notified();
            if self.bytes() < self.budget {
                return;
            }
            freed.await;
        }
    }

    /// How many messages of the average size fit in the budget's remainder (at least 1, at
    /// most `max`).
    pub(crate) fn pull_limit(&self, max: usize) -> usize {
        let left = self.budget.saturating_sub(self.bytes());
        let average = (self.average.load(Ordering::Relaxed).max(1)) as usize;
        (left / average).clamp(1, max.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_copies_are_counted_and_forgotten() {
        let stats = Arc::new(WorkerStats::default());
        let inflight = InFlight::new(1000, stats.clone());
        inflight.track(&[1; 300]);
        inflight.track(&[1; 300]); // a redelivered copy
        inflight.track(&[2; 300]);
        assert_eq!(inflight.bytes(), 900);
        assert_eq!(stats.reserved_messages.load(Ordering::Relaxed), 3);
        assert_eq!(
            inflight.pull_limit(64),
            1,
            "100 bytes left: one more at most"
        );
        inflight.forget(&[1; 300]);
        assert!(
            inflight.contains(&digest(&[1; 300])),
            "one copy is still in flight"
        );
        inflight.forget(&[1; 300]);
        assert!(!inflight.contains(&digest(&[1; 300])));
        assert_eq!(inflight.bytes(), 300);
        assert_eq!(inflight.pull_limit(64), 2);
        assert_eq!(inflight.pull_limit(1), 1);
        inflight.forget(&[9; 10]); // never tracked: nothing changes
        assert_eq!(stats.reserved_bytes.load(Ordering::Relaxed), 300);
    }
}
