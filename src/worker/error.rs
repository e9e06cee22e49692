//! What can stop one order's processing, and what happens next.

use lockstock_lock::LockError;

use crate::{queue::QueueError, store::StoreError};

/// Why processing an order stopped before it was acknowledged.
///
/// The variant says what the worker does next: a [`ProcessError::Retryable`] order stays in the
/// worker's hands (and its processing list) and is tried again after a back-off; a
/// [`ProcessError::Fatal`] order can never succeed and goes to the dead letter list.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Infrastructure trouble (Redis or Postgres unreachable, lock lost, fence refused): retry.
    #[error("retryable: {0}")]
    Retryable(String),
    /// The order can never be processed (e.g. a fence that does not fit the database): dead-letter.
    #[error("fatal: {0}")]
    Fatal(String),
}

impl From<StoreError> for ProcessError {
    fn from(error: StoreError) -> Self {
        if error.is_transient() {
            ProcessError::Retryable(format!("store: {error}"))
        } else {
            match error {
                StoreError::StaleFence { .. } => ProcessError::Retryable(format!("store: {error}")),
                StoreError::FenceOutOfRange(_) | StoreError::Corrupt(_) => {
                    ProcessError::Fatal(format!("store: {error}"))
                }
                // Unknown database errors: retry (the operator sees them in the logs); an order is
                // never dropped on a guess.
                other => ProcessError::Retryable(format!("store: {other}")),
            }
        }
    }
}

impl From<LockError> for ProcessError {
    fn from(error: LockError) -> Self {
        match error {
            LockError::InvalidArgument(message) => ProcessError::Fatal(format!("lock: {message}")),
            other => ProcessError::Retryable(format!("lock: {other}")),
        }
    }
}

impl From<QueueError> for ProcessError {
    fn from(error: QueueError) -> Self {
        ProcessError::Retryable(format!("queue: {error}"))
    }
}
