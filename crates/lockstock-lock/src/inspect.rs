//! Read-only views of held locks, for operators and tests.
//!
//! - When a resource is locked, then [`LockInfo`] shows its owner record, since when (Redis
//!   server time), the TTL left and the fencing token, read in one `GET` + `PTTL` pipeline.
//! - Listing is a `SCAN` over the prefix: not a snapshot; locks taken or released meanwhile may
//!   or may not appear. On a Redis Cluster every master is scanned in turn.

use serde::Serialize;

use super::{
    conn::LockConnection,
    error::Result,
    keys::{KeySpace, ResourceKeys},
    owner::LockOwner,
};

/// One held lock as seen in Redis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LockInfo {
    /// The resource name.
    pub resource: String,
    /// The holder's owner record (`None` if it could not be parsed).
    pub owner: Option<LockOwner>,
    /// Redis server time (Unix ms) when this holder got the lock.
    pub since_unix_ms: u64,
    /// Milliseconds until the lock expires without an extension.
    pub ttl_left_ms: u64,
    /// The holder's fencing token.
    pub fence: u64,
}

/// Parses a lock value `token\nfence\nsince_ms\nowner` (the token itself is not exposed).
fn parse(resource: &str, value: &str, pttl: i64) -> Option<LockInfo> {
    let mut parts = value.splitn(4, '\n');
    let _token = parts.next()?;
    let fence = parts.next()?.parse().ok()?;
    let since_unix_ms = parts.next()?.parse().ok()?;
    let owner = parts
        .next()
        .and_then(|json| serde_json::from_str(json).ok());
    Some(LockInfo {
        resource: resource.to_owned(),
        owner,
        since_unix_ms,
        ttl_left_ms: pttl.max(0) as u64,
        fence,
    })
}

pub(crate) async fn inspect(
    conn: &LockConnection,
    keys: &ResourceKeys,
) -> Result<Option<LockInfo>> {
    let mut conn = conn.clone();
    let (value, pttl): (Option<String>, i64) = redis::pipe()
        .get(&keys.lock)
        .pttl(&keys.lock)
        .query_async(&mut conn)
        .await?;
    Ok(value.and_then(|value| parse(&keys.resource, &value, pttl)))
}

pub(crate) async fn list(conn: &LockConnection, space: &KeySpace) -> Result<Vec<LockInfo>> {
    let mut found = Vec::new();
    for key in conn.scan_every_master(&space.lock_pattern()).await? {
        if let Some(resource) = space.resource_of_lock_key(&key) {
            let keys = space.resource(resource)?;
            if let Some(info) = inspect(conn, &keys).await? {
                found.push(info);
            }
        }
    }
    found.sort_by(|a, b| a.resource.cmp(&b.resource));
    Ok(found)
}
