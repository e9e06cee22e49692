//! Settings: [`LockConfig`] for a client, [`LockOptions`] for each acquisition.
//!
//! - When options are invalid (zero TTL, a heartbeat not shorter than the TTL, a drift allowance
//!   that eats the whole TTL, a heartbeat period at or past `TTL − drift`, which would extend only
//!   after the safety deadline fired), then `acquire` refuses them with
//!   [`LockError::InvalidArgument`](super::LockError::InvalidArgument) before sending anything.

use std::{sync::Arc, time::Duration};

use super::{
    error::{LockError, Result},
    keys::KeySpace,
    observe::LockObserver,
    owner::LockOwner,
};

/// How a held lock is kept alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Extend the TTL every `ttl / 3` (the default).
    Auto,
    /// Extend the TTL at this period (must be shorter than the TTL minus the drift allowance).
    Every(Duration),
    /// Never extend: the lock lasts one TTL (a hand-off, granted for the waiter's lease at most,
    /// is extended once to the TTL). The guard still fires its lost signal at the local
    /// safety deadline.
    Off,
}

/// Per-acquisition settings. `LockOptions::default()` is a 10 s TTL with automatic heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct LockOptions {
    /// How long the lock lives in Redis without an extension (millisecond precision).
    pub ttl: Duration,
    /// How the guard extends the TTL while held.
    pub heartbeat: Heartbeat,
    /// Clock-drift allowance subtracted from the TTL for the guard's local safety deadline;
    /// `None` = 1 % of the TTL plus 2 ms.
    pub drift: Option<Duration>,
    /// Stop extending once the lock has been held this long (a wedged holder then loses it).
    pub max_hold: Option<Duration>,
    /// Log a warning once the lock has been held this long, and again at each further multiple.
    pub warn_after: Option<Duration>,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            heartbeat: Heartbeat::Auto,
            drift: None,
            max_hold: None,
            warn_after: None,
        }
    }
}

impl LockOptions {
    /// Default options with this TTL.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self {
            ttl,
            ..Self::default()
        }
    }

    /// Sets the heartbeat.
    pub fn heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Sets the hold-time warning threshold.
    pub fn warn_after(mut self, threshold: Duration) -> Self {
        self.warn_after = Some(threshold);
        self
    }

    /// Sets the cap on total hold time.
    pub fn max_hold(mut self, cap: Duration) -> Self {
        self.max_hold = Some(cap);
        self
    }

    /// The TTL in whole milliseconds (at least 1).
    pub(crate) fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// The heartbeat period, if any.
    pub(crate) fn heartbeat_period(&self) -> Option<Duration> {
        match self.heartbeat {
            Heartbeat::Auto => Some(self.ttl / 3),
            Heartbeat::Every(period) => Some(period),
            Heartbeat::Off => None,
        }
    }

    /// The drift allowance.
    pub(crate) fn drift(&self) -> Duration {
        self.drift
            .unwrap_or(self.ttl / 100 + Duration::from_millis(2))
    }

    /// Refuses settings that cannot work, with a sentence saying why.
    pub fn validate(&self) -> Result<()> {
        if self.ttl.as_millis() == 0 {
            return Err(LockError::InvalidArgument(format!(
                "the lock TTL must be at least 1 ms (got {:?})",
                self.ttl
            )));
        }
        if let Some(period) = self.heartbeat_period()
            && (period.is_zero() || period >= self.ttl)
        {
            return Err(LockError::InvalidArgument(format!(
                "the heartbeat period ({period:?}) must be above zero and shorter than the TTL ({:?})",
                self.ttl
            )));
        }
        if self.drift() >= self.ttl {
            return Err(LockError::InvalidArgument(format!(
                "the drift allowance ({:?}) must be shorter than the TTL ({:?})",
                self.drift(),
                self.ttl
            )));
        }
        if let Some(period) = self.heartbeat_period()
            && period >= self.ttl - self.drift()
        {
            return Err(LockError::InvalidArgument(format!(
                "the heartbeat period ({period:?}) must be shorter than the TTL minus the drift \
                 allowance ({:?}): the guard's safety deadline would pass before the first \
                 extension",
                self.ttl - self.drift()
            )));
        }
        if self.max_hold.is_some_and(|cap| cap.is_zero()) {
            return Err(LockError::InvalidArgument(
                "max_hold must be above zero".into(),
            ));
        }
        if self.warn_after.is_some_and(|t| t.is_zero()) {
            return Err(LockError::InvalidArgument(
                "warn_after must be above zero".into(),
            ));
        }
        Ok(())
    }
}

/// Per-client settings.
#[derive(Debug, Clone)]
pub struct LockConfig {
    /// Where the keys live.
    pub keys: KeySpace,
    /// Who this process is, recorded beside every lock it holds.
    pub owner: LockOwner,
    /// First fallback retry delay of a waiting acquisition (jittered, doubled up to
    /// `retry_max`, and never longer than the holder's remaining TTL). Waiters are normally woken
    /// by a hand-off message; this schedule only matters when that message is lost.
    pub retry_min: Duration,
    /// Longest fallback retry delay.
    pub retry_max: Duration,
    /// How long one Redis command may take before it counts as a connection failure.
    pub response_timeout: Duration,
    /// How long connecting to Redis may take.
    pub connection_timeout: Duration,
    /// How long a mutex waiter's queue entry lives without renewal (the waiting acquire renews
    /// it every third of this). A hand-off to a waiter is granted for at most this long until
    /// the waiter extends it, so a waiter that died queued blocks the lock one lease at most.
    /// At least 30 ms.
    pub waiter_lease: Duration,
    /// UNSAFE, test-only (the chaos harness's self-test): keep hand-off messages that the wait
    /// loop would discard as stale or expired, so a waiter paused past its hand-off gets a guard
    /// while another holds the lock. Never set it in production.
    pub unsafe_keep_stale_handoffs: bool,
    /// Sees every grant, extension, release, loss and hand-off of this client's mutex holds
    /// (`None`: no events are built; see [`LockObserver`]).
    pub observer: Option<Arc<dyn LockObserver>>,
}

impl Default for LockConfig {
    fn default() -> Self {
        Self {
            keys: KeySpace::default(),
            owner: LockOwner::default(),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
            connection_timeout: Duration::from_secs(2),
            waiter_lease: crate::semaphore::DEFAULT_WAITER_LEASE,
            unsafe_keep_stale_handoffs: false,
            observer: None,
        }
    }
}

impl LockConfig {
    /// Sets the key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Result<Self> {
        self.keys = KeySpace::new(prefix)?;
        Ok(self)
    }

    /// Sets the owner record.
    pub fn with_owner(mut self, owner: LockOwner) -> Self {
        self.owner = owner;
        self
    }

    /// Attaches an observer of this client's mutex holds ([`LockObserver`]).
    pub fn with_observer(mut self, observer: Arc<dyn LockObserver>) -> Self {
        self.observer = Some(observer);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_are_refused_with_a_reason() {
        let zero = LockOptions::with_ttl(Duration::ZERO)
            .validate()
            .unwrap_err();
        assert!(zero.to_string().contains("at least 1 ms"), "{zero}");
        let slow = LockOptions::with_ttl(Duration::from_millis(100))
            .heartbeat(Heartbeat::Every(Duration::from_millis(100)))
            .validate()
            .unwrap_err();
        assert!(slow.to_string().contains("shorter than the TTL"), "{slow}");
        assert!(LockOptions::default().validate().is_ok());
    }

    /// A heartbeat period at or past `TTL - drift` extends only after the safety deadline has
    /// already fired the lost signal: refused.
    #[test]
    fn a_heartbeat_that_cannot_beat_the_deadline_is_refused() {
        // TTL 100 ms, drift 3 ms: the deadline is 97 ms after the grant.
        let late = LockOptions::with_ttl(Duration::from_millis(100))
            .heartbeat(Heartbeat::Every(Duration::from_millis(97)))
            .validate()
            .unwrap_err();
        assert!(late.to_string().contains("drift"), "{late}");
        assert!(
            LockOptions::with_ttl(Duration::from_millis(100))
                .heartbeat(Heartbeat::Every(Duration::from_millis(96)))
                .validate()
                .is_ok()
        );
    }
}
