//! Every Redis key and channel name the lock uses, built in this one place.
//!
//! Layout for a resource `R` under prefix `P` (default `lockstock`):
//!
//! | name | type | lifetime |
//! |---|---|---|
//! | `P:{R}:lock` | string `token\nfence\nsince_ms\nowner` | the lock's TTL |
//! | `P:{R}:fence` | integer counter | never expires |
//! | `P:{R}:queue` | list of waiting acquirers, oldest first | until emptied |
//! | `P:{R}:handoff` | pub/sub channel announcing hand-offs | — |
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
        validate_resource(resource)?;
        let base = format!("{}:{{{}}}", self.prefix, resource);
        Ok(ResourceKeys {
            resource: resource.to_owned(),
            lock: format!("{base}:lock"),
            fence: format!("{base}:fence"),
            queue: format!("{base}:queue"),
            handoff: format!("{base}:handoff"),
        })
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
