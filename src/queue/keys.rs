//! Every Redis key the queue uses, built in this one place.
//!
//! All keys derive from the pending list's key, so giving it a hash tag (e.g. `{orders}:pending`)
//! puts every derived key in the same Redis Cluster slot; the dead letter key is configured on its
//! own and needs the same tag there.

/// The queue's key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    /// The pending list (producers LPUSH, consumers BLMOVE from the right).
    pending: String,
    /// The dead letter list.
    dead: String,
}

impl QueueKeys {
    /// Keys for the pending list `pending` and the dead letter list `dead`.
    pub fn new(pending: impl Into<String>, dead: impl Into<String>) -> Self {
        Self {
            pending: pending.into(),
            dead: dead.into(),
        }
    }

    /// The pending list, e.g. `orders:pending`.
    pub fn pending(&self) -> &str {
        &self.pending
    }

    /// The dead letter list, e.g. `orders:dead`.
    pub fn dead(&self) -> &str {
        &self.dead
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
}
