//! Read-only views of holds, for operators and tests, and the one reader of what a hold stores
//! in Redis ([`HoldRecord`]).
//!
//! - When a resource is locked, then [`LockInfo`] shows its owner record, since when (Redis
//!   server time), the TTL left and the fencing token, read in one `GET` + `PTTL` + `TIME`
//!   pipeline. A mutex stores no clock reading (its grant stays off the server clock): its value
//!   says the TTL the key was last set with and how long the hold had lasted then, so "since" is
//!   the server's `TIME` minus that, minus what the TTL has run down since (exact to the
//!   millisecond of the grant's server-side execution; other holds store the server time).
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

/// When a hold began, as stored: a server time, or (the mutex) the TTL its key was last set with
/// and how long the hold had lasted at that moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Since {
    /// Redis server time (Unix ms) of the grant.
    At(u64),
    /// `ttl_ms+held_ms[+w]` (`scripts/lib/mutex_value.lua`): the key was set with `ttl_ms` after
    /// the hold had lasted `held_ms`.
    Set {
        /// The TTL the key was last set with, ms.
        ttl_ms: u64,
        /// How long the hold had lasted when it was set, ms.
        held_ms: u64,
    },
}

impl Default for Since {
    fn default() -> Self {
        Self::At(0)
    }
}

impl Since {
    fn parse(field: &str) -> Option<Self> {
        if let Ok(at) = field.parse() {
            return Some(Self::At(at));
        }
        let field = field.strip_suffix("+w").unwrap_or(field);
        let (ttl, held) = field.split_once('+')?;
        Some(Self::Set {
            ttl_ms: ttl.parse().ok()?,
            held_ms: held.parse().ok()?,
        })
    }

    /// The server time (Unix ms) the hold began, given the server's clock `now_ms` and the key's
    /// TTL left `pttl_ms`.
    fn unix_ms(self, now_ms: u64, pttl_ms: u64) -> u64 {
        match self {
            Self::At(at) => at,
            Self::Set { ttl_ms, held_ms } => now_ms
                .saturating_sub(held_ms)
                .saturating_sub(ttl_ms.saturating_sub(pttl_ms)),
        }
    }
}

/// What the scripts store about one hold besides its token: `fence\nsince\nowner` (the owner
/// record as one line of JSON; `since` a server time or the mutex's `ttl_ms+held_ms[+w]`). An
/// exclusive hold's value puts its token in front (`token\nfence\nsince\nowner`, see
/// `scripts/lib/lock_value.lua` and `scripts/lib/mutex_value.lua`); a member of an expiring set
/// (semaphore permit, reader) keeps the record in its owners hash.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HoldRecord {
    /// The hold's fencing token.
    pub(crate) fence: u64,
    /// When the hold began.
    pub(crate) since: Since,
    /// The holder's owner record (`None` if it could not be parsed).
    pub(crate) owner: Option<LockOwner>,
}

impl HoldRecord {
    /// Parses `fence\nsince\nowner`; `None` when the fence or the time is not a number.
    pub(crate) fn parse(record: &str) -> Option<Self> {
        let mut parts = record.splitn(3, '\n');
        let fence = parts.next()?.parse().ok()?;
        let since = Since::parse(parts.next()?)?;
        let owner = parts
            .next()
            .and_then(|json| serde_json::from_str(json).ok());
        Some(Self {
            fence,
            since,
            owner,
        })
    }

    /// Parses an exclusive hold's value `token\nfence\nsince\nowner` (the token itself is
    /// not exposed).
    pub(crate) fn parse_lock_value(value: &str) -> Option<Self> {
        let (_token, record) = value.split_once('\n')?;
        Self::parse(record)
    }

    /// The record as a [`LockInfo`] for `resource` with `ttl_left_ms` to go, at server time
    /// `now_ms`.
    pub(crate) fn into_info(self, resource: &str, ttl_left_ms: u64, now_ms: u64) -> LockInfo {
        LockInfo {
            resource: resource.to_owned(),
            owner: self.owner,
            since_unix_ms: self.since.unix_ms(now_ms, ttl_left_ms),
            ttl_left_ms,
            fence: self.fence,
        }
    }
}

/// A `TIME` reply in Unix ms (0 when malformed).
fn time_ms(time: &[u64]) -> u64 {
    match time {
        [secs, micros, ..] => secs * 1000 + micros / 1000,
        _ => 0,
    }
}

/// Reads the exclusive hold stored at `key` (`GET` + `PTTL` + `TIME` in one pipeline; the keyed
/// commands first, so a cluster routes it to the key's node): who holds `resource` there, if
/// anyone.
pub(crate) async fn read_lock<C: ConnectionLike + Send>(
    conn: &mut C,
    key: &str,
    resource: &str,
) -> Result<Option<LockInfo>> {
    let (value, pttl, time): (Option<String>, i64, Vec<u64>) = redis::pipe()
        .get(key)
        .pttl(key)
        .cmd("TIME")
        .query_async(conn)
        .await?;
    let now = time_ms(&time);
    Ok(value
        .as_deref()
        .and_then(HoldRecord::parse_lock_value)
        .map(|record| record.into_info(resource, pttl.max(0) as u64, now)))
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
    let now = time_ms(&time);
    let records: HashMap<String, String> = records.into_iter().collect();
    Ok(members
        .into_iter()
        .filter(|(_, expiry)| *expiry as u64 > now)
        .map(|(token, expiry)| {
            records
                .get(&token)
                .and_then(|record| HoldRecord::parse(record))
                .unwrap_or_default()
                .into_info(resource, (expiry as u64).saturating_sub(now), now)
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
        assert_eq!(record.since, Since::At(1_700_000_000_000));
        assert_eq!(record.owner.unwrap().id, "w1");
    }

    /// A mutex value stores the TTL it was set with and the time held then: "since" is the
    /// server time minus both, minus what the TTL ran down since; the waiters mark is ignored.
    #[test]
    fn a_mutex_value_derives_since_from_its_ttl() {
        let value = "tok\n9\n30000+5000+w\n{\"id\":\"w1\",\"host\":\"h\",\"pid\":3}";
        let record = HoldRecord::parse_lock_value(value).unwrap();
        assert_eq!(
            record.since,
            Since::Set {
                ttl_ms: 30_000,
                held_ms: 5_000
            }
        );
        let info = record.into_info("r", 28_000, 1_700_000_010_000);
        assert_eq!(info.since_unix_ms, 1_700_000_003_000);
        assert_eq!(info.fence, 9);
        assert_eq!(HoldRecord::parse_lock_value("t\n1\n30000+x\n{}"), None);
    }

    #[test]
    fn a_malformed_value_is_no_hold_and_a_bad_owner_is_none() {
        assert_eq!(HoldRecord::parse_lock_value("tok\nx\n1\n{}"), None);
        assert_eq!(HoldRecord::parse("3\n5\nnot json").unwrap().owner, None);
    }
}
