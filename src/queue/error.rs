//! Errors from the job queue.

use std::time::Duration;

/// Everything that can go wrong talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis failed or could not be reached. For the blocking move the dedicated connection has
    /// been dropped and the next call reconnects.
    #[error("redis command failed")]
    Redis(#[from] redis::RedisError),
    /// A blocking move got no reply within its timeout plus the configured grace. The connection
    /// was dropped; a message the server moved meanwhile sits in this worker's processing list,
    /// where reconciliation finds it.
    #[error("no reply to the blocking move within {0:?}")]
    ReplyTimeout(Duration),
    /// The configuration cannot work (e.g. an empty key or worker id).
    #[error("invalid queue configuration: {0}")]
    Config(&'static str),
}

/// Shorthand for results from the queue.
pub type Result<T, E = QueueError> = std::result::Result<T, E>;
