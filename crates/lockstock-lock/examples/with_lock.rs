//! Run a closure under a lock with `LockClient::with_lock`: the lock is released when the
//! closure returns, fails or panics.
//!
//! ```text
//! cargo run -p lockstock-lock --example with_lock    # REDIS_URL overrides redis://127.0.0.1:6379
//! ```
//!
//! Two tasks contend for one resource; the second waits in Redis and is handed the lock when
//! the first one's closure ends. The fencing tokens show the order.

use std::time::Duration;

use lockstock_lock::{LockClient, LockConfig, LockError, LockLease, LockOptions, LockOwner};

/// The critical section: gets the lease (fencing token + lost signal), never the guard.
async fn bump_counter(worker: &str, lease: LockLease) -> u64 {
    let fence = lease.fence().get();
    println!("{worker}: in the critical section with fence {fence}");
    let lost = lease.lost();
    tokio::select! {
        () = lost.cancelled() => println!("{worker}: lost the lock, giving up"),
        () = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
    fence
}

#[tokio::main]
async fn main() -> Result<(), LockError> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let config = LockConfig::default()
        .with_prefix("lockstock-example")?
        .with_owner(LockOwner::this_process("with-lock-example"));
    let locks = LockClient::connect(&url, config).await?;
    let options = LockOptions::with_ttl(Duration::from_secs(2));

    let tasks = ["first", "second"].map(|worker| {
        let locks = locks.clone();
        let options = options.clone();
        tokio::spawn(async move {
            locks
                .with_lock("counter", &options, Duration::from_secs(5), |lease| {
                    bump_counter(worker, lease)
                })
                .await
        })
    });
    for task in tasks {
        match task.await {
            Ok(result) => println!("finished with fence {}", result?),
            Err(panic) => std::panic::resume_unwind(panic.into_panic()),
        }
    }
    println!("locked now: {}", locks.is_locked("counter").await?);
    Ok(())
}
