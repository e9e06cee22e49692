//! The order queue as the workers see it (`GET /queue`, `lockctl status`, the live page).
//!
//! A [`QueueView`] serializes as `{"pending": n, "in_flight": n, "dead_letters": n, "live_workers": n, "restored": n, "workers":
//! [{"id", "alive", "in_flight"}], "recent_dead_letters": [{"payload", "reason", "worker",
//! "at"}]}`.
//!
//! - When a worker has reserved orders and not yet acknowledged them, then they count in its
//!   `in_flight` (its processing list); a worker whose liveness key expired shows `alive: false`
//!   until a live worker recovers its list.
//! - Not guaranteed: a snapshot. Counts are read in a few round trips while workers move messages.

use serde::Serialize;

use crate::queue::{DeadLetter, JobQueue, QueueError, WorkerState};

/// The queue at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct QueueView {
    /// Messages waiting in the pending list.
    pub pending: usize,
    /// Messages reserved by workers and not yet acknowledged (all processing lists).
    pub in_flight: usize,
    /// Entries in the dead letter list.
    pub dead_letters: usize,
    /// Workers whose liveness key exists.
    pub live_workers: usize,
    /// Orders the workers' intake sweep pushed again after Redis lost them (counted in Redis:
    /// since Redis last lost its data).
    pub restored: u64,
    /// Every known worker with its in-flight count.
    pub workers: Vec<WorkerState>,
    /// The newest dead letters.
    pub recent_dead_letters: Vec<DeadLetter>,
}

/// Reads the queue's state, with up to `dead_limit` of the newest dead letters.
pub async fn queue_view(queue: &JobQueue, dead_limit: usize) -> Result<QueueView, QueueError> {
    let workers = queue.worker_states().await?;
    let pending = queue.depth().await?;
    let dead_letters = queue.dead_depth().await?;
    let recent_dead_letters = queue.dead_letters(dead_limit).await?;
    let restored = queue.restored_count().await?;
    Ok(QueueView {
        pending,
        in_flight: workers.iter().map(|w| w.in_flight).sum(),
        dead_letters,
        live_workers: workers.iter().filter(|w| w.alive).count(),
        restored,
        workers,
        recent_dead_letters,
    })
}
