//! The locks held right now, for operators (`GET /locks`, `lockctl status`, the live page).
//!
//! Each [`HeldLock`] serializes as `{"resource", "owner": {"id", "host", "pid"}, "fence",
//! "age_ms", "ttl_left_ms"}`; [`held_locks`] lists them sorted by resource.
//!
//! - When a lock is held under the lock client's key prefix, then it is listed with its holder's owner
//!   record, its fencing token, how long it has been held and its TTL left; ages are measured on
//!   the Redis server's clock (`TIME`), so clock skew between hosts does not distort them.
//! - Not guaranteed: a snapshot. The list is a `SCAN`; locks taken or released meanwhile may or
//!   may not appear. The holder's secret token is never shown.

use serde::Serialize;

use lockstock_lock::{LockClient, LockError, LockOwner};

/// One held lock.
#[derive(Debug, Clone, Serialize)]
pub struct HeldLock {
    /// The resource, e.g. `product:1`.
    pub resource: String,
    /// Who holds it (`None` when the owner record could not be read).
    pub owner: Option<LockOwner>,
    /// The holder's fencing token.
    pub fence: u64,
    /// How long it has been held, in ms (Redis server clock).
    pub age_ms: u64,
    /// Milliseconds until it expires without an extension.
    pub ttl_left_ms: u64,
}

/// Every lock held under `locks`' key prefix.
pub async fn held_locks(locks: &LockClient) -> Result<Vec<HeldLock>, LockError> {
    let held = locks.list_held().await?;
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = locks.connection();
    let (seconds, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
    let now_ms = seconds * 1000 + micros / 1000;
    Ok(held
        .into_iter()
        .map(|info| HeldLock {
            age_ms: now_ms.saturating_sub(info.since_unix_ms),
            resource: info.resource,
            owner: info.owner,
            fence: info.fence,
            ttl_left_ms: info.ttl_left_ms,
        })
        .collect())
}
