//! Acquire a fenced lock, use its fencing token, watch the lost signal, release it.
//!
//! ```text
//! cargo run -p lockstock-lock --example basic        # REDIS_URL overrides redis://127.0.0.1:6379
//! ```
//!
//! The second half takes a lock with a short TTL and no heartbeat, so its lost signal fires at
//! the local safety deadline: what a holder sees when Redis stops answering or the lock expires.

use std::time::Duration;

use lockstock_lock::{
    Heartbeat, LockClient, LockConfig, LockError, LockOptions, LockOwner, ReleaseOutcome,
};

#[tokio::main]
async fn main() -> Result<(), LockError> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let config = LockConfig::default()
        .with_prefix("lockstock-example")?
        .with_owner(LockOwner::this_process("basic-example"));
    let locks = LockClient::connect(&url, config).await?;

    // 1. Acquire, waiting up to 5 s; the heartbeat keeps it alive every ttl / 3.
    let guard = locks
        .acquire(
            "invoice:42",
            &LockOptions::default(),
            Duration::from_secs(5),
        )
        .await?;
    println!(
        "acquired {} with fencing token {}",
        guard.resource(),
        guard.fence()
    );

    // 2. The fencing token goes to the protected resource before reading from it; every later
    //    holder gets a higher one, so the resource can refuse a stale holder's writes.
    if let Some(info) = locks.inspect("invoice:42").await? {
        println!(
            "held by {:?}, {} ms of TTL left",
            info.owner, info.ttl_left_ms
        );
    }

    // 3. Work while watching the lost signal.
    let lost = guard.lost();
    tokio::select! {
        () = lost.cancelled() => println!("lost the lock: not committing"),
        () = tokio::time::sleep(Duration::from_millis(200)) => println!("work done under the lock"),
    }

    // 4. Release explicitly: the heartbeat stops, then the lock goes to the next waiter if any.
    match guard.release().await? {
        ReleaseOutcome::Released => println!("released"),
        ReleaseOutcome::HandedOff => println!("handed to the next waiter"),
        ReleaseOutcome::NotHeld => println!("it had expired: nothing changed"),
    }

    // The lost signal in action: a 300 ms lock that is never extended.
    let short = LockOptions::with_ttl(Duration::from_millis(300)).heartbeat(Heartbeat::Off);
    let guard = locks
        .acquire("invoice:42", &short, Duration::from_secs(5))
        .await?;
    let lost = guard.lost();
    tokio::select! {
        () = lost.cancelled() => println!(
            "lost signal fired after {:?} (fence {}): stop writing",
            guard.held_for(),
            guard.fence()
        ),
        () = tokio::time::sleep(Duration::from_secs(2)) => println!("unexpected: still held"),
    }
    // The signal fires a drift allowance before Redis expires the key, so this release may still
    // find it (Released) or not (NotHeld); either way the holder stopped in time.
    println!(
        "release after the lost signal: {:?}",
        guard.release().await?
    );
    Ok(())
}
