//! [`LockClient::with_lock`]: run a closure under a lock, always releasing it.
//!
//! - When the closure returns (with any value, including an `Err`), then the lock is released.
//! - When the closure panics, then the lock is released and the panic resumes in the caller.
//! - When the lock is lost while the closure runs, then the closure sees it through
//!   [`LockLease::lost`]; `with_lock` does not cancel the closure itself.

use std::{future::Future, panic::AssertUnwindSafe, time::Duration};

use futures_util::FutureExt;

use super::{
    client::LockClient, error::Result, guard::ReleaseOutcome, mutex::LockLease,
    options::LockOptions,
};

impl LockClient {
    /// Acquires `resource` (waiting up to `wait`), runs `work` with a [`LockLease`] (fencing
    /// token + lost signal), then releases the lock on success, error and panic.
    ///
    /// ```rust,no_run
    /// # async fn demo(client: lockstock_lock::LockClient) -> Result<(), lockstock_lock::LockError> {
    /// use std::time::Duration;
    /// use lockstock_lock::LockOptions;
    ///
    /// let fence = client
    ///     .with_lock("invoice:42", &LockOptions::default(), Duration::from_secs(5), |lease| async move {
    ///         // hand lease.fence() to the database before reading; stop if lease.lost() fires
    ///         lease.fence()
    ///     })
    ///     .await?;
    /// # let _ = fence; Ok(()) }
    /// ```
    pub async fn with_lock<F, Fut, T>(
        &self,
        resource: &str,
        options: &LockOptions,
        wait: Duration,
        work: F,
    ) -> Result<T>
    where
        F: FnOnce(LockLease) -> Fut,
        Fut: Future<Output = T>,
    {
        let guard = self.acquire(resource, options, wait).await?;
        let outcome = AssertUnwindSafe(work(guard.lease())).catch_unwind().await;
        let released = guard.release().await;
        match outcome {
            Ok(value) => {
                match released {
                    Ok(ReleaseOutcome::NotHeld) => {
                        tracing::warn!(
                            resource,
                            "the lock had expired or been taken before with_lock released it"
                        );
                    }
                    Err(error) => {
                        tracing::warn!(%error, resource, "releasing after with_lock failed; the TTL will free the lock");
                    }
                    Ok(_) => {}
                }
                Ok(value)
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
