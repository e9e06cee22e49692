//! Reconciling this worker's processing list: adopting messages whose reserve reply was lost.
//!
//! A blocking move whose reply was lost leaves a message in our processing list that no task
//! knows about. Each pass reads a bounded window of the list's tail (its oldest messages, see
//! [`crate::queue::JobQueue::processing_tail`]) and compares digests with the in-flight set.
//!
//! - When a message in the window is not in flight in two passes in a row, then it is adopted:
//!   tracked and handed to the lanes like a fresh reservation.
//! - One pass reads at most [`WINDOW`] messages, however long the list is (a crashed worker's
//!   list taken over by id reuse may hold many); its bytes are `WINDOW` times the message size.
//! - Adoption respects the backlog's count and byte room; when orphans are left over, then the
//!   next pass runs as soon as there is room again (without the interval, and the puller does
//!   not block on an empty queue meanwhile), so a long list of orphans drains at the lanes' pace.
//! - Otherwise passes run every `reconcile_interval` (and once at start).
//! - Not guaranteed: an orphan behind more than [`WINDOW`] older in-flight messages waits until
//!   they are acknowledged.

use std::{collections::HashSet, time::Instant};

use super::{
    Ctx,
    inflight::{Digest, digest},
};

/// Most messages one pass reads from the processing list's tail.
pub(crate) const WINDOW: usize = 1024;

/// The reconciliation's state between passes.
#[derive(Debug)]
pub(super) struct Reconciler {
    /// Digests of messages found orphaned in the last pass.
    orphans_seen: HashSet<Digest>,
    /// When the next regular pass is due.
    next: Instant,
    /// Whether the last pass left orphans it had no room to adopt.
    left_over: bool,
}

impl Reconciler {
    /// A reconciler whose first pass is due at once (adopting whatever a previous process with
    /// this worker id left in the list, from its second pass).
    pub(super) fn new() -> Self {
        Self {
            orphans_seen: HashSet::new(),
            next: Instant::now(),
            left_over: false,
        }
    }

    /// Whether a pass is due now.
    pub(super) fn due(&self) -> bool {
        self.left_over || Instant::now() >= self.next
    }

    /// Whether the last pass left orphans to adopt as soon as there is room.
    pub(super) fn has_left_over(&self) -> bool {
        self.left_over
    }

    /// One pass: the messages adopted (tracked as in flight), oldest first.
    pub(super) async fn pass(&mut self, ctx: &Ctx) -> Vec<Vec<u8>> {
        self.next = Instant::now() + ctx.config.reconcile_interval;
        self.left_over = false;
        let items = match ctx.queue.processing_tail(WINDOW).await {
            Ok(items) => items,
            Err(error) => {
                tracing::debug!(%error, "reconciling the processing list failed");
                return Vec::new();
            }
        };
        let room = ctx.inflight.pull_limit(ctx.lanes.room());
        let mut adopted = Vec::new();
        let mut still_orphaned = HashSet::new();
        for item in items {
            let key = digest(&item);
            if ctx.inflight.contains(&key) {
                continue;
            }
            if self.orphans_seen.contains(&key) && adopted.len() < room {
                tracing::info!(
                    bytes = item.len(),
                    "adopting a message found in our processing list"
                );
                ctx.inflight.track(&item);
                adopted.push(item);
            } else {
                self.left_over |= self.orphans_seen.contains(&key);
                still_orphaned.insert(key);
            }
        }
        self.orphans_seen = still_orphaned;
        adopted
    }
}
