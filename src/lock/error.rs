//! The lock module's error type.
//!
//! - When Redis cannot be reached (refused, reset, timed out), then the error is
//!   [`LockError::Connection`]: retrying later may succeed.
//! - When the caller passed a bad argument, then it is [`LockError::InvalidArgument`] with a
//!   sentence saying what is wrong; nothing was sent to Redis.
//! - Losing a lock while holding it is not an error of `acquire`/`release`: it is reported by the
//!   guard's lost signal and by [`super::ReleaseOutcome::NotHeld`]. [`LockError::Lost`] is for
//!   helpers that must report it as a failure.

use std::time::Duration;

/// What went wrong with a lock operation.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// A caller-supplied argument was refused before anything was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The lock was not acquired before the caller's deadline.
    #[error("timed out after {waited:?} waiting for the lock on {resource:?}")]
    Timeout {
        /// The resource that stayed locked.
        resource: String,
        /// How long the caller waited.
        waited: Duration,
    },

    /// The lock was lost (expired, taken, or its safety deadline passed) while held.
    #[error("the lock on {resource:?} was lost while held")]
    Lost {
        /// The resource whose lock was lost.
        resource: String,
    },

    /// Redis could not be reached or did not answer in time.
    #[error("cannot reach Redis: {0}")]
    Connection(#[source] redis::RedisError),

    /// Redis answered with an error (a script error, wrong type, authentication, ...).
    #[error("Redis error: {0}")]
    Redis(#[source] redis::RedisError),

    /// Redis answered something the lock scripts never return (a bug or a foreign key).
    #[error("unexpected reply from Redis for {operation}: {detail}")]
    UnexpectedReply {
        /// The operation whose reply was malformed.
        operation: &'static str,
        /// What was wrong with it.
        detail: String,
    },
}

impl LockError {
    /// Whether retrying the same call later may succeed (connection trouble or timeout).
    pub fn is_transient(&self) -> bool {
        matches!(self, LockError::Connection(_) | LockError::Timeout { .. })
    }
}

impl From<redis::RedisError> for LockError {
    fn from(err: redis::RedisError) -> Self {
        if err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_unrecoverable_error()
        {
            LockError::Connection(err)
        } else {
            LockError::Redis(err)
        }
    }
}

/// Result alias for lock operations.
pub type Result<T, E = LockError> = std::result::Result<T, E>;
