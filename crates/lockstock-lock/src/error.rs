//! The lock module's error type.
//!
//! - When Redis cannot be reached (refused, reset, timed out), then the error is
//!   [`LockError::Connection`]: retrying later may succeed.
//! - When the caller passed a bad argument, then it is [`LockError::InvalidArgument`] with a
//!   sentence saying what is wrong; nothing was sent to Redis.
//! - When a [`super::Redlock`] call cannot get a majority of its instances, then it is
//!   [`LockError::NoQuorum`], carrying what *each* instance answered (granted, held by another,
//!   in its restart quarantine, or the instance's own error) — never a bare count.
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

    /// A Redlock call did not get the majority of instances it needs.
    #[error(
        "Redlock {operation} of {resource:?} needs {needed} of {} instances and got {agreed}: {}",
        reports.len(),
        InstanceReport::summary(reports)
    )]
    NoQuorum {
        /// What was attempted: `acquire`, `extend`, `release`, `raise fence floor`.
        operation: &'static str,
        /// The resource.
        resource: String,
        /// How many instances must agree (a majority).
        needed: usize,
        /// How many did.
        agreed: usize,
        /// What each instance answered, in configuration order.
        reports: Vec<InstanceReport>,
    },

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
        matches!(
            self,
            LockError::Connection(_) | LockError::Timeout { .. } | LockError::NoQuorum { .. }
        )
    }
}

/// What one Redlock instance answered to one call.
#[derive(Debug)]
pub enum InstanceReply {
    /// It agreed: granted, extended, written or released there.
    Agreed,
    /// Another holder has the lock there, for this much longer.
    Held {
        /// Milliseconds of TTL the other holder has left there.
        ttl_left_ms: u64,
    },
    /// The instance restarted less than the restart quarantine ago and refuses to grant.
    Quarantined {
        /// Milliseconds until it grants again.
        ready_in_ms: u64,
    },
    /// The lock was not the caller's there (extend/release found it gone or taken).
    NotHeld,
    /// The instance did not answer within the per-instance timeout.
    TimedOut,
    /// The instance answered with an error, or the connection failed.
    Failed(Box<LockError>),
}

/// One instance's answer, named by its URL (password masked).
#[derive(Debug)]
pub struct InstanceReport {
    /// The instance's URL, password masked.
    pub instance: String,
    /// What it answered.
    pub reply: InstanceReply,
}

impl InstanceReport {
    fn summary(reports: &[InstanceReport]) -> String {
        reports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl std::fmt::Display for InstanceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reply {
            InstanceReply::Agreed => write!(f, "{}: agreed", self.instance),
            InstanceReply::Held { ttl_left_ms } => {
                write!(f, "{}: held by another for {ttl_left_ms} ms", self.instance)
            }
            InstanceReply::Quarantined { ready_in_ms } => write!(
                f,
                "{}: restarted recently, refuses for {ready_in_ms} ms more",
                self.instance
            ),
            InstanceReply::NotHeld => write!(f, "{}: not held by us", self.instance),
            InstanceReply::TimedOut => write!(f, "{}: no answer in time", self.instance),
            InstanceReply::Failed(error) => write!(f, "{}: {error}", self.instance),
        }
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
