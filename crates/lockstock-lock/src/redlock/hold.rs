//! A held Redlock: [`RedlockGuard`], whose heartbeat extends on every instance and whose
//! release deletes the lock everywhere.
//!
//! - When an extension reaches a majority, then the hold stands; an instance where the key is
//!   missing (restarted, or unreachable past the TTL) and out of quarantine gets it set again.
//! - When enough instances have another holder that a majority is out of reach, then the
//!   extension reports the hold gone (the lost signal fires at once); when instances merely fail,
//!   then it reports an error and the generic guard retries until the safety deadline.
//! - Extensions and releases raise every reached instance's fence counter to the holder's token.
//! - When the release deletes the lock anywhere, then [`ReleaseOutcome::Released`]; when a
//!   majority answered that it was not the caller's, then `NotHeld`; else
//!   [`LockError::NoQuorum`].

use redis::Value;

use super::{
    Redlock,
    quorum::{Call, agreed, count},
};
use crate::{
    error::{InstanceReply, Result},
    guard::{Held, Holder, ReleaseOutcome, held_guard_methods},
    keys::RedlockKeys,
    options::LockOptions,
    scripts::SCRIPTS,
    waiting::Grant,
};

/// A held Redlock. Release it with [`RedlockGuard::release`]; watch [`RedlockGuard::lost`].
#[derive(Debug)]
#[must_use = "a Redlock guard should be released with `release().await`"]
pub struct RedlockGuard {
    held: Held<RedlockHold>,
}

/// The Redis side of one held Redlock.
#[derive(Debug)]
struct RedlockHold {
    redlock: Redlock,
    keys: RedlockKeys,
    token: String,
    fence: u64,
}

impl RedlockGuard {
    /// Starts the heartbeat of a granted Redlock.
    pub(super) fn start(
        redlock: Redlock,
        keys: RedlockKeys,
        token: String,
        options: &LockOptions,
        grant: Grant,
    ) -> Self {
        let resource = keys.resource.clone();
        let hold = RedlockHold {
            redlock,
            keys,
            token,
            fence: grant.fence,
        };
        Self {
            held: Held::start(hold, "redlock", &resource, options, grant),
        }
    }

    held_guard_methods!();
}

impl Redlock {
    pub(super) async fn release_all(
        &self,
        keys: &RedlockKeys,
        token: &str,
        fence: u64,
        agreed: impl Fn(&Value) -> bool,
    ) -> Vec<Result<Value>> {
        self.on_all(
            Call::new(&SCRIPTS.redlock_release)
                .key(&keys.lock)
                .key(&keys.fence)
                .arg(token)
                .arg(fence)
                .arg(&keys.released),
            agreed,
        )
        .await
    }
}

impl Holder for RedlockHold {
    async fn extend(&self, ttl_ms: u64) -> Result<bool> {
        let redlock = &self.redlock;
        let quarantine = redlock
            .inner
            .config
            .restart_quarantine
            .map_or(ttl_ms, |q| u64::try_from(q.as_millis()).unwrap_or(u64::MAX));
        let replies = redlock
            .on_all(
                Call::new(&SCRIPTS.redlock_extend)
                    .key(&self.keys.lock)
                    .key(&self.keys.fence)
                    .arg(&self.token)
                    .arg(ttl_ms)
                    .arg(self.fence)
                    .arg(&redlock.inner.owner_json)
                    .arg(quarantine),
                |reply| matches!(reply, Value::Int(1 | 2)),
            )
            .await;
        let reports = redlock.reports("redlock_extend", replies, |reply| match reply {
            Value::Int(1 | 2) => Some(InstanceReply::Agreed),
            Value::Int(0) => Some(InstanceReply::NotHeld),
            Value::Int(-1) => Some(InstanceReply::Quarantined { ready_in_ms: 0 }),
            _ => None,
        });
        let extended = count(&reports, agreed);
        let taken = count(&reports, |r| matches!(r, InstanceReply::NotHeld));
        if extended >= redlock.inner.quorum {
            return Ok(true);
        }
        if redlock.inner.instances.len() - taken < redlock.inner.quorum {
            // Enough instances have another holder that a majority is out of reach.
            return Ok(false);
        }
        Err(redlock.no_quorum("extend", &self.keys.resource, extended, reports))
    }

    async fn release(&self) -> Result<ReleaseOutcome> {
        let redlock = &self.redlock;
        let replies = redlock
            .release_all(&self.keys, &self.token, self.fence, |reply| {
                matches!(reply, Value::Int(1))
            })
            .await;
        let reports = redlock.reports("redlock_release", replies, |reply| match reply {
            Value::Int(1) => Some(InstanceReply::Agreed),
            Value::Int(0) => Some(InstanceReply::NotHeld),
            _ => None,
        });
        let released = count(&reports, agreed);
        let answered = released + count(&reports, |r| matches!(r, InstanceReply::NotHeld));
        if released > 0 {
            Ok(ReleaseOutcome::Released)
        } else if answered >= redlock.inner.quorum {
            Ok(ReleaseOutcome::NotHeld)
        } else {
            Err(redlock.no_quorum("release", &self.keys.resource, released, reports))
        }
    }

    fn owner(&self) -> &str {
        &self.redlock.inner.owner_json
    }
}
