//! The queue on a Redis Cluster found by the binaries (see `services::SharedRedis`): keys that
//! fit one slot, and a queue on a process's shared cluster connection.
//!
//! - When the pending key already has a hash tag (`{orders}:pending`), then
//!   [`QueueConfig::for_cluster`] keeps every key as configured.
//! - When it has none (the default `orders:pending`), then the whole key becomes the tag
//!   (`{orders:pending}`), and an untagged dead key is put in that slot: the default one as
//!   `{orders:pending}:dead`, any other as `{orders:pending}:<dead key>`. Every binary maps the
//!   same flags to the same keys, so producers, workers, the API and `lockctl` agree.
//! - Not guaranteed: that the keys of a queue once used on one server carry over; a cluster
//!   starts with empty lists anyway.

use redis::cluster_async::ClusterConnection;

use super::{
    JobQueue, QueueConfig, QueueKeys, Result,
    conn::{self, Opener, QueueConnection},
    hash_tag,
    keys::DEFAULT_DEAD_KEY,
};

impl QueueConfig {
    /// This config with keys that share one cluster slot (see the module docs); unchanged when
    /// the pending key already has a hash tag.
    pub fn for_cluster(mut self) -> Self {
        if hash_tag(&self.pending_key).is_some() {
            return self;
        }
        let tag = format!("{{{}}}", self.pending_key);
        if hash_tag(&self.dead_key).is_none() && self.dead_key != DEFAULT_DEAD_KEY {
            self.dead_key = format!("{tag}:{}", self.dead_key);
        }
        self.pending_key = tag;
        self
    }
}

impl JobQueue {
    /// A queue on a cluster through `conn` (the process's shared cluster connection); blocking
    /// moves use their own cluster connection to `nodes`, opened on the first reserve, which
    /// routes `BLMOVE` to the node that owns the pending list's slot.
    ///
    /// - When the keys do not share one slot, then [`super::QueueError::Config`] (map them with
    ///   [`QueueConfig::for_cluster`] first).
    pub fn on_cluster(
        nodes: &[&str],
        conn: ClusterConnection,
        config: QueueConfig,
    ) -> Result<Self> {
        QueueKeys::new(config.pending_key.clone(), config.dead_key.clone()).check_one_slot()?;
        let (_, blocking) = conn::cluster_clients(nodes)?;
        Self::build(
            Opener::Cluster(Box::new(blocking)),
            QueueConnection::Cluster(conn),
            config,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Untagged keys move into the pending key's slot; tagged ones stay as they are.
    #[test]
    fn untagged_keys_are_put_in_one_slot() {
        let default = QueueConfig::default().for_cluster();
        assert_eq!(default.pending_key, "{orders:pending}");
        let keys = QueueKeys::new(default.pending_key, default.dead_key);
        assert_eq!(keys.dead(), "{orders:pending}:dead");
        assert!(keys.check_one_slot().is_ok());

        let named = QueueConfig::namespaced("t").for_cluster();
        assert_eq!(
            (named.pending_key.as_str(), named.dead_key.as_str()),
            ("{t:orders:pending}", "{t:orders:pending}:t:orders:dead")
        );
        let tagged = QueueConfig::default()
            .with_pending_key("{o}:pending")
            .with_dead_key("x")
            .for_cluster();
        assert_eq!(
            (tagged.pending_key.as_str(), tagged.dead_key.as_str()),
            ("{o}:pending", "x")
        );
    }
}
