//! Every Redis key and channel name the lock uses, built in this one place.
//!
//! Layout for a resource `R` under prefix `P` (default `lockstock`):
//!
//! | name | type | lifetime |
//! |---|---|---|
//! | `P:{R}:lock` | string `token\nfence\nsince_ms\nowner` | the lock's TTL |
//! | `P:{R}:fence` | integer counter | never expires |
//! | `P:{R}:queue` | list of waiting acquirers, oldest first | until emptied |
//! | `P:{R}:handoff:<client>` | pub/sub channel announcing hand-offs to one client's waiters | — |
//!
//! The other primitives keep their own keys under the same `{R}` tag, so one resource name used
//! with two primitives never mixes their state:
//!
//! | primitive | keys |
//! |---|---|
//! | [`super::Semaphore`] | `P:{R}:sem:holders` (zset token → expiry ms), `:sem:owners` (hash), `:sem:fence`, `:sem:queue` (list of waiting tokens), `:sem:waiters` (hash token → entry), channels `:sem:handoff:<client>` |
//! | [`super::RwLock`] | `P:{R}:rw:writer` (string, PX ttl), `:rw:readers` (zset token → expiry ms), `:rw:owners`, `:rw:fence`, `:rw:queue`, `:rw:waiters`, channels `:rw:handoff:<client>` |
//! | [`super::FairLock`] | `P:{R}:fair:lock` (string, PX ttl), `:fair:fence`, `:fair:queue`, `:fair:waiters`, channels `:fair:handoff:<client>` |
//! | [`super::Redlock`] (on each instance) | `P:{R}:rl:lock` (string, PX ttl), `:rl:fence`, channel `:rl:released` |
//!
//! - When a script touches several keys of one resource, then they share the `{R}` hash tag, so
//!   every script is valid on Redis Cluster (all keys in one slot).
//! - Resource names may not contain `{`, `}` or control characters, so the hash tag is
//!   unambiguous and a `SCAN` pattern can list locks under a prefix.

use super::error::{LockError, Result};

/// The longest resource name accepted, in bytes.
pub const MAX_RESOURCE_LEN: usize = 512;

/// Builds the key names of every resource under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    /// Prepended to every key, e.g. `lockstock` or a per-test unique namespace.
    prefix: String,
}

/// The key names of one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceKeys {
    /// The resource name as given by the caller.
    pub resource: String,
    /// The lock string.
    pub lock: String,
    /// The fencing-token counter (never expires).
    pub fence: String,
    /// The FIFO wait queue.
    pub queue: String,
    /// The hand-off pub/sub channel.
    pub handoff: String,
}

/// The key names of one resource's counting semaphore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemaphoreKeys {
    /// The resource name as given by the caller.
    pub resource: String,
    /// Sorted set of permit holders: token → expiry (Redis server time, ms).
    pub holders: String,
    /// Hash token → `fence\nsince_ms\nowner` of each holder.
    pub owners: String,
    /// The fencing-token counter.
    pub fence: String,
    /// The FIFO list of waiting tokens.
    pub queue: String,
    /// Hash token → `ttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner` of each waiter.
    pub waiters: String,
    /// The hand-off pub/sub channel.
    pub handoff: String,
}

/// The key names of one resource's read/write lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RwLockKeys {
    /// The resource name as given by the caller.
    pub resource: String,
    /// The writer's lock string `token\nfence\nsince_ms\nowner` (PX ttl).
    pub writer: String,
    /// Sorted set of readers: token → expiry (Redis server time, ms).
    pub readers: String,
    /// Hash token → `fence\nsince_ms\nowner` of each reader.
    pub owners: String,
    /// The fencing-token counter (readers and writers draw from it).
    pub fence: String,
    /// The FIFO list of waiting tokens.
    pub queue: String,
    /// Hash token → `mode\nttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner` of each waiter.
    pub waiters: String,
    /// The hand-off pub/sub channel.
    pub handoff: String,
}

/// The key names of one resource's fair (strict FIFO) lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FairKeys {
    /// The resource name as given by the caller.
    pub resource: String,
    /// The lock string `token\nfence\nsince_ms\nowner` (PX ttl).
    pub lock: String,
    /// The fencing-token counter.
    pub fence: String,
    /// The FIFO list of waiting tokens.
    pub queue: String,
    /// Hash token → `ttl_ms\nlease_expires_ms\nlease_ms\nchannel\nowner` of each waiter.
    pub waiters: String,
    /// The hand-off pub/sub channel.
    pub handoff: String,
}

/// The key names of one resource's Redlock, the same on every instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedlockKeys {
    /// The resource name as given by the caller.
    pub resource: String,
    /// The lock string `token\nfence\nsince_ms\nowner` (PX ttl).
    pub lock: String,
    /// This instance's fencing-token counter (raised, never incremented on its own).
    pub fence: String,
    /// The pub/sub channel a release is announced on (wakes waiters).
    pub released: String,
}

impl KeySpace {
    /// A key space under `prefix`; refuses an empty prefix or one with braces.
    pub fn new(prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        if prefix.is_empty() {
            return Err(LockError::InvalidArgument(
                "the key prefix must not be empty".into(),
            ));
        }
        if prefix.contains(['{', '}']) || prefix.chars().any(char::is_control) {
            return Err(LockError::InvalidArgument(format!(
                "the key prefix {prefix:?} must not contain braces or control characters"
            )));
        }
        Ok(Self { prefix })
    }

    /// The prefix this key space was built with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The keys of `resource`, after checking the name is usable.
    pub fn resource(&self, resource: &str) -> Result<ResourceKeys> {
        let base = self.base(resource)?;
        Ok(ResourceKeys {
            resource: resource.to_owned(),
            lock: format!("{base}:lock"),
            fence: format!("{base}:fence"),
            queue: format!("{base}:queue"),
            handoff: format!("{base}:handoff"),
        })
    }

    /// The keys of `resource`'s counting semaphore.
    pub fn semaphore(&self, resource: &str) -> Result<SemaphoreKeys> {
        let base = self.base(resource)?;
        Ok(SemaphoreKeys {
            resource: resource.to_owned(),
            holders: format!("{base}:sem:holders"),
            owners: format!("{base}:sem:owners"),
            fence: format!("{base}:sem:fence"),
            queue: format!("{base}:sem:queue"),
            waiters: format!("{base}:sem:waiters"),
            handoff: format!("{base}:sem:handoff"),
        })
    }

    /// The keys of `resource`'s read/write lock.
    pub fn rwlock(&self, resource: &str) -> Result<RwLockKeys> {
        let base = self.base(resource)?;
        Ok(RwLockKeys {
            resource: resource.to_owned(),
            writer: format!("{base}:rw:writer"),
            readers: format!("{base}:rw:readers"),
            owners: format!("{base}:rw:owners"),
            fence: format!("{base}:rw:fence"),
            queue: format!("{base}:rw:queue"),
            waiters: format!("{base}:rw:waiters"),
            handoff: format!("{base}:rw:handoff"),
        })
    }

    /// The keys of `resource`'s fair lock.
    pub fn fair(&self, resource: &str) -> Result<FairKeys> {
        let base = self.base(resource)?;
        Ok(FairKeys {
            resource: resource.to_owned(),
            lock: format!("{base}:fair:lock"),
            fence: format!("{base}:fair:fence"),
            queue: format!("{base}:fair:queue"),
            waiters: format!("{base}:fair:waiters"),
            handoff: format!("{base}:fair:handoff"),
        })
    }

    /// The keys of `resource`'s Redlock (the same names on every instance).
    pub fn redlock(&self, resource: &str) -> Result<RedlockKeys> {
        let base = self.base(resource)?;
        Ok(RedlockKeys {
            resource: resource.to_owned(),
            lock: format!("{base}:rl:lock"),
            fence: format!("{base}:rl:fence"),
            released: format!("{base}:rl:released"),
        })
    }

    /// `P:{R}` after checking the resource name.
    fn base(&self, resource: &str) -> Result<String> {
        validate_resource(resource)?;
        Ok(format!("{}:{{{}}}", self.prefix, resource))
    }

    /// A `SCAN MATCH` pattern for every lock key under this prefix.
    pub fn lock_pattern(&self) -> String {
        format!("{}:{{*}}:lock", escape_glob(&self.prefix))
    }

    /// The resource name inside a lock key of this key space, if it is one.
    pub fn resource_of_lock_key<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:lock")
    }
}

impl Default for KeySpace {
    fn default() -> Self {
        Self {
            prefix: "lockstock".to_owned(),
        }
    }
}

fn validate_resource(resource: &str) -> Result<()> {
    if resource.is_empty() {
        return Err(LockError::InvalidArgument(
            "the resource name must not be empty".into(),
        ));
    }
    if resource.len() > MAX_RESOURCE_LEN {
        return Err(LockError::InvalidArgument(format!(
            "the resource name is {} bytes long; the limit is {MAX_RESOURCE_LEN}",
            resource.len()
        )));
    }
    if resource.contains(['{', '}']) || resource.chars().any(char::is_control) {
        return Err(LockError::InvalidArgument(format!(
            "the resource name {resource:?} must not contain braces or control characters"
        )));
    }
    Ok(())
}

fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_one_resource_share_a_hash_tag() {
        let keys = KeySpace::new("app").unwrap().resource("product:7").unwrap();
        for key in [&keys.lock, &keys.fence, &keys.queue, &keys.handoff] {
            assert!(key.contains("{product:7}"), "{key}");
        }
        assert_eq!(keys.lock, "app:{product:7}:lock");
    }

    #[test]
    fn every_primitive_keeps_a_resource_in_one_slot() {
        let space = KeySpace::new("app").unwrap();
        let sem = space.semaphore("r").unwrap();
        let rw = space.rwlock("r").unwrap();
        let fair = space.fair("r").unwrap();
        let red = space.redlock("r").unwrap();
        for key in [
            &sem.holders,
            &sem.owners,
            &sem.fence,
            &sem.queue,
            &sem.waiters,
            &rw.writer,
            &rw.readers,
            &rw.owners,
            &rw.fence,
            &rw.queue,
            &rw.waiters,
            &fair.lock,
            &fair.fence,
            &fair.queue,
            &fair.waiters,
            &red.lock,
            &red.fence,
        ] {
            assert!(key.starts_with("app:{r}:"), "{key}");
        }
        assert!(space.semaphore("a{b}").is_err());
    }

    #[test]
    fn bad_resource_names_are_refused() {
        let space = KeySpace::default();
        assert!(space.resource("").is_err());
        assert!(space.resource("a{b}").is_err());
        assert!(space.resource("line\nbreak").is_err());
        assert!(space.resource(&"x".repeat(MAX_RESOURCE_LEN + 1)).is_err());
    }

    #[test]
    fn a_lock_key_maps_back_to_its_resource() {
        let space = KeySpace::new("p*").unwrap();
        let keys = space.resource("r1").unwrap();
        assert_eq!(space.resource_of_lock_key(&keys.lock), Some("r1"));
        assert_eq!(space.lock_pattern(), "p\\*:{*}:lock");
    }
}
