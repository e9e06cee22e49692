//! Who holds a lock: the owner record stored beside every holder's token.

use serde::{Deserialize, Serialize};

/// A description of the process holding (or waiting for) a lock, stored in Redis as JSON so an
/// operator can see who holds what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    /// The application's name for this process (e.g. a worker id).
    pub id: String,
    /// The host name.
    pub host: String,
    /// The operating-system process id.
    pub pid: u32,
}

impl LockOwner {
    /// This process, named `id`.
    pub fn this_process(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: std::process::id(),
        }
    }

    /// The one-line JSON stored in Redis.
    pub(crate) fn to_json(&self) -> String {
        // Serialising a struct of strings and an integer cannot fail; fall back to the id.
        serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"id\":{:?}}}", self.id))
    }
}

impl Default for LockOwner {
    fn default() -> Self {
        Self::this_process(format!("pid-{}", std::process::id()))
    }
}
