//! Queue configuration.

use std::time::Duration;

/// Where the queue lives and who this process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    /// The pending list's key; every per-worker key derives from it. Default `orders:pending`.
    pub pending_key: String,
    /// The dead letter list's key. Default `orders:dead`.
    pub dead_key: String,
    /// This process's worker id: names its processing list and liveness key, so it must be unique
    /// among live workers. Default: `<hostname>-<pid>-<random>`.
    pub worker_id: String,
    /// How long past a blocking move's own timeout to wait for its reply before declaring the
    /// connection dead (guards against a silently vanished server). Default 2 s.
    pub reply_grace: Duration,
    /// How many messages one `LPUSH` carries when pushing a batch. Default 100.
    pub push_chunk: usize,
    /// How many pending lists the queue spreads over (see `queue/shards.rs`). Default 1: one
    /// list, keys exactly as named.
    pub shards: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            pending_key: "orders:pending".to_owned(),
            dead_key: super::keys::DEFAULT_DEAD_KEY.to_owned(),
            worker_id: default_worker_id(),
            reply_grace: Duration::from_secs(2),
            push_chunk: 100,
            shards: 1,
        }
    }
}

impl QueueConfig {
    /// The default keys under a namespace: `<prefix>:orders:pending` and `<prefix>:orders:dead`
    /// (tests use a unique prefix each).
    pub fn namespaced(prefix: &str) -> Self {
        Self {
            pending_key: format!("{prefix}:orders:pending"),
            dead_key: format!("{prefix}:orders:dead"),
            ..Self::default()
        }
    }

    /// Sets the pending list's key.
    pub fn with_pending_key(mut self, key: impl Into<String>) -> Self {
        self.pending_key = key.into();
        self
    }

    /// Sets the dead letter list's key.
    pub fn with_dead_key(mut self, key: impl Into<String>) -> Self {
        self.dead_key = key.into();
        self
    }

    /// Sets the worker id.
    pub fn with_worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = id.into();
        self
    }
}

/// `<hostname>-<pid>-<8 hex>`: readable in `lockctl status`, unique across restarts.
pub fn default_worker_id() -> String {
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}
