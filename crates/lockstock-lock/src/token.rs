//! The two tokens a holder carries: who it is ([`LockToken`]) and when it got the lock
//! ([`FencingToken`]).

use std::fmt;

use uuid::Uuid;

/// A holder's secret identity for one acquisition: a random UUID v4 stored in the lock key.
///
/// Only the holder of the token can release or extend the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LockToken(Uuid);

impl LockToken {
    /// A fresh random token.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// The token as the string stored in Redis.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for LockToken {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A number that strictly increases with every successful acquisition of one resource, across
/// expiries and releases.
///
/// Hand it to the protected resource before reading from it; the resource refuses any write that
/// carries a lower token than the highest it has seen. Values stay below 2^53 in practice (Lua
/// numbers are doubles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

impl FencingToken {
    /// The token as a plain integer.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
