//! Read-only views of holds, for operators and tests, and the one reader of what a hold stores
//! in Redis ([`HoldRecord`]).
//!
//! - When a resource is locked, then [`LockInfo`] shows its owner record, since when (Redis
//!   server time), the TTL left and the fencing token, read in one `GET` + `PTTL` pipeline.
//! - Listing is a `SCAN` over the prefix: not a snapshot; locks taken or released meanwhile may
//!   or may not appear. On a Redis Cluster every master is scanned in turn.
//! - When a stored value cannot be parsed (written by something else), then an exclusive hold
//!   reads as free and a member of an expiring set as fence 0 with no owner; nothing fails.

use std::collections::HashMap;

use redis::aio::ConnectionLike;
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

/// What the scripts store about one hold besides its token: `fence\nsince_ms\nowner` (the owner
/// record as one line of JSON). An exclusive hold's value puts its token in front
/// (`token\nfence\nsince_ms\nowner`, see `scripts/lib/lock_value.lua`); a member of an expiring
/// set (semaphore permit, reader) keeps the record in its owners hash.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HoldRecord {
    /// The hold's fencing token.
    pub(crate) fence: u64,
    /// Redis server time (Unix ms) of the grant.
    pub(crate) since_unix_ms: u64,
    /// The holder's owner record (`None` if it could not be parsed).
    pub(crate) owner: Option<LockOwner>,
}

impl HoldRecord {
    /// Parses `fence\nsince_ms\nowner`; `None` when the fence or the time is not a number.
    pub(crate) fn parse(record: &str) -> Option<Self> {
        let mut parts = record.splitn(3, '\n');
        let fence = parts.next()?.parse().ok()?;
        let since_unix_ms = parts.next()?.parse().ok()?;
        let owner = parts
            .next()
            .and_then(|json| serde_json::from_str(json).ok());
        Some(Self {
            fence,
            since_unix_ms,
            owner,
        })
    }

    /// Parses an exclusive hold's value `token\nfence\nsince_ms\nowner` (the token itself is
    /// not exposed).
    pub(crate) fn parse_lock_value(value: &str) -> Option<Self> {
        let (_token, record) = value.split_once('\n')?;
        Self::parse(record)
    }

    /// The record as a [`LockInfo`] for `resource` with `ttl_left_ms` to go.
    pub(crate) fn into_info(self, resource: &str, ttl_left_ms: u64) -> LockInfo {
        LockInfo {
            resource: resource.to_owned(),
            owner: self.owner,
            since_unix_ms: self.since_unix_ms,
            ttl_left_ms,
            fence: self.fence,
        }
    }
}

/// Reads the exclusive hold stored at `key` (`GET` + `PTTL` in one pipeline): who holds
/// `resource` there, if anyone.
pub(crate) async fn read_lock<C: ConnectionLike + Send>(
    conn: &mut C,
    key: &str,
    resource: &str,
) -> Result<Option<LockInfo>> {
    let (value, pttl): (Option<String>, i64) =
        redis::pipe().get(key).pttl(key).query_async(conn).await?;
    Ok(value
        .as_deref()
        .and_then(HoldRecord::parse_lock_value)
        .map(|record| record.into_info(resource, pttl.max(0) as u64)))
}

/// The unexpired members of an expiring set (token → expiry ms) with their [`HoldRecord`]s from
/// the `owners` hash, as [`LockInfo`]s (semaphore permits, readers).
pub(crate) async fn expiring_members(
    conn: &LockConnection,
    resource: &str,
    set: &str,
    owners: &str,
) -> Result<Vec<LockInfo>> {
    let mut conn = conn.clone();
    // Keyed commands first: on a cluster the pipeline goes to the node of the first key.
    type Members = Vec<(String, f64)>;
    type Records = Vec<(String, String)>;
    let (members, records, time): (Members, Records, Vec<u64>) = redis::pipe()
        .cmd("ZRANGE")
        .arg(set)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .cmd("HGETALL")
        .arg(owners)
        .cmd("TIME")
        .query_async(&mut conn)
        .await?;
    let now = match time.as_slice() {
        [secs, micros, ..] => secs * 1000 + micros / 1000,
        _ => 0,
    };
    let records: HashMap<String, String> = records.into_iter().collect();
    Ok(members
        .into_iter()
        .filter(|(_, expiry)| *expiry as u64 > now)
        .map(|(token, expiry)| {
            records
                .get(&token)
                .and_then(|record| HoldRecord::parse(record))
                .unwrap_or_default()
                .into_info(resource, (expiry as u64).saturating_sub(now))
        })
        .collect())
}

/// Who holds the mutex on `keys`' resource.
pub(crate) async fn inspect(
    conn: &LockConnection,
    keys: &ResourceKeys,
) -> Result<Option<LockInfo>> {
    read_lock(&mut conn.clone(), &keys.lock, &keys.resource).await
}

/// Every mutex held under `space`'s prefix (a `SCAN`; refused on a cluster).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_value_parses_without_exposing_its_token() {
        let value = "tok\n7\n1700000000000\n{\"id\":\"w1\",\"host\":\"h\",\"pid\":3}";
        let record = HoldRecord::parse_lock_value(value).unwrap();
        assert_eq!(record.fence, 7);
        assert_eq!(record.since_unix_ms, 1_700_000_000_000);
        assert_eq!(record.owner.unwrap().id, "w1");
    }

    #[test]
    fn a_malformed_value_is_no_hold_and_a_bad_owner_is_none() {
        assert_eq!(HoldRecord::parse_lock_value("tok\nx\n1\n{}"), None);
        assert_eq!(HoldRecord::parse("3\n5\nnot json").unwrap().owner, None);
    }
}
