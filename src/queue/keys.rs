//! Every Redis key the queue uses, built in this one place.
//!
//! All keys derive from the pending list's key, so giving it a hash tag (e.g. `{orders}:pending`)
//! puts every derived key in the same Redis Cluster slot.
//!
//! - When the pending key has a hash tag and the dead key is the default `orders:dead`, then the
//!   dead key becomes `{tag}:dead` (so `--queue-key '{orders}:pending'` alone is enough on a
//!   cluster). The default names, `orders:pending` and `orders:dead`, are untouched.
//! - When a dead key is given explicitly, then it is kept; on a cluster it must carry the pending
//!   key's tag ([`QueueKeys::check_one_slot`]).

use super::error::QueueError;

/// The dead letter key's default name.
pub(super) const DEFAULT_DEAD_KEY: &str = "orders:dead";

/// A key's Redis Cluster hash tag: the text between the first `{` and the next `}`, if
/// non-empty (the part of the key the cluster hashes).
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    let tag = &key[open + 1..open + 1 + close];
    (!tag.is_empty()).then_some(tag)
}

/// The queue's key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    /// The pending list (producers LPUSH, consumers BLMOVE from the right).
    pending: String,
    /// The dead letter list.
    dead: String,
}

impl QueueKeys {
    /// Keys for the pending list `pending` and the dead letter list `dead` (the default dead key
    /// follows a hash-tagged pending key: see the module docs).
    pub fn new(pending: impl Into<String>, dead: impl Into<String>) -> Self {
        let pending = pending.into();
        let mut dead = dead.into();
        if dead == DEFAULT_DEAD_KEY
            && let Some(tag) = hash_tag(&pending)
        {
            dead = format!("{{{tag}}}:dead");
        }
        Self { pending, dead }
    }

    /// Checks that every key lives in one Redis Cluster slot: the pending key has a hash tag and
    /// the dead key carries the same one.
    pub fn check_one_slot(&self) -> Result<(), QueueError> {
        let Some(tag) = hash_tag(&self.pending) else {
            return Err(QueueError::Config(
                "on a Redis Cluster the pending key needs a hash tag, e.g. {orders}:pending",
            ));
        };
        if hash_tag(&self.dead) != Some(tag) {
            return Err(QueueError::Config(
                "on a Redis Cluster the dead key must carry the pending key's hash tag, e.g. {orders}:dead",
            ));
        }
        Ok(())
    }

    /// The pending list, e.g. `orders:pending`.
    pub fn pending(&self) -> &str {
        &self.pending
    }

    /// The dead letter list, e.g. `orders:dead`.
    pub fn dead(&self) -> &str {
        &self.dead
    }

    /// How many dead letters were dropped for the list's cap: `<dead>:dropped` (same slot).
    pub fn dead_dropped(&self) -> String {
        format!("{}:dropped", self.dead)
    }

    /// A worker's processing list: `<pending>:processing:<worker>`.
    pub fn processing(&self, worker: &str) -> String {
        format!("{}{worker}", self.processing_prefix())
    }

    /// A worker's short-lived liveness key: `<pending>:alive:<worker>`.
    pub fn alive(&self, worker: &str) -> String {
        format!("{}:alive:{worker}", self.pending)
    }

    /// The set of registered workers: `<pending>:workers`.
    pub fn workers(&self) -> String {
        format!("{}:workers", self.pending)
    }

    /// The count of messages restored after Redis lost them: `<pending>:restored`.
    pub fn restored(&self) -> String {
        format!("{}:restored", self.pending)
    }

    /// The part of a processing list's key before the worker id.
    pub(super) fn processing_prefix(&self) -> String {
        format!("{}:processing:", self.pending)
    }

    /// A `SCAN MATCH` pattern for every worker's processing list (glob characters in the pending
    /// key escaped).
    pub(super) fn processing_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.pending.len() + 13);
        for c in self.processing_prefix().chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Derived keys hang off the pending key, and glob characters are escaped for SCAN.
    #[test]
    fn derived_keys_hang_off_the_pending_key() {
        let keys = QueueKeys::new("orders:pending", "orders:dead");
        assert_eq!(keys.processing("w1"), "orders:pending:processing:w1");
        assert_eq!(keys.alive("w1"), "orders:pending:alive:w1");
        assert_eq!(keys.workers(), "orders:pending:workers");
        let odd = QueueKeys::new("a*b[1]", "d");
        assert_eq!(odd.processing_pattern(), r"a\*b\[1\]:processing:*");
    }

    /// The default names stay as they are; a hash-tagged pending key takes the default dead key
    /// into its slot; a cluster refuses keys in different slots.
    #[test]
    fn a_hash_tagged_pending_key_keeps_every_key_in_its_slot() {
        let plain = QueueKeys::new("orders:pending", "orders:dead");
        assert_eq!(
            (plain.pending(), plain.dead()),
            ("orders:pending", "orders:dead")
        );
        assert!(plain.check_one_slot().is_err());

        let tagged = QueueKeys::new("{orders}:pending", "orders:dead");
        assert_eq!(tagged.dead(), "{orders}:dead");
        assert!(tagged.check_one_slot().is_ok());
        for key in [
            tagged.processing("w1"),
            tagged.alive("w1"),
            tagged.workers(),
        ] {
            assert_eq!(hash_tag(&key), Some("orders"), "{key}");
        }
        let mismatched = QueueKeys::new("{orders}:pending", "{other}:dead");
        assert!(mismatched.check_one_slot().is_err());
        assert_eq!(hash_tag("a{}b{c}"), None);
        assert_eq!(hash_tag("x{y}z"), Some("y"));
    }
}
