//! Acquiring a Redlock: one attempt on every instance (lock + fence proposal in one script),
//! the undo of a failed attempt, the fencing write-back, and the wait between attempts.
//!
//! - When a majority granted with validity left and the proposal beat every counter read, then
//!   the token is handed out at once; when some counter was at or above the proposal, then the
//!   token `highest + 1` is written back first and handed out only once a majority confirmed it
//!   under the caller's lock.
//! - When an attempt fails, then whatever it may have granted is undone on every instance
//!   (including those that did not answer).
//! - While waiting, the caller retries when any instance announces a release (after a random
//!   delay of up to 0.4 ms) and after a jittered back-off bounded by the holder's TTL.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use redis::Value;

use super::{
    Redlock, RedlockGuard,
    quorum::{Call, agreed, count},
};
use crate::{
    error::{InstanceReply, InstanceReport, LockError, Result},
    keys::RedlockKeys,
    notify::Watch,
    options::LockOptions,
    scripts::SCRIPTS,
    token::LockToken,
    waiting::{Backoff, Grant},
};

/// What one acquisition attempt came to.
enum Attempt {
    Acquired {
        fence: u64,
        sent: Instant,
    },
    Failed {
        error: LockError,
        /// Someone else holds it somewhere (contention rather than failure).
        held: bool,
        /// When to try again at the latest (the shortest TTL or quarantine reported).
        retry_in: Option<Duration>,
    },
}

impl Redlock {
    /// One attempt: the lock if a majority grants it now; `Ok(None)` when another holder has it.
    ///
    /// - When no majority can be reached for other reasons (instances down or in quarantine),
    ///   then [`LockError::NoQuorum`] with every instance's answer.
    pub async fn try_acquire(
        &self,
        resource: &str,
        options: &LockOptions,
    ) -> Result<Option<RedlockGuard>> {
        self.check_options(options)?;
        let keys = self.keys().redlock(resource)?;
        let token = LockToken::new().to_string();
        match self.attempt(&keys, &token, options).await {
            Attempt::Acquired { fence, sent } => {
                Ok(Some(self.guard(keys, token, fence, options, sent)))
            }
            Attempt::Failed { held: true, .. } => Ok(None),
            Attempt::Failed { error, .. } => Err(error),
        }
    }

    /// Takes the lock, retrying up to `wait`.
    ///
    /// - When another holder kept it the whole time, then [`LockError::Timeout`].
    /// - When instances kept failing (no majority reachable), then [`LockError::NoQuorum`] from
    ///   the last attempt, with every instance's answer — within `wait` plus one per-instance
    ///   timeout.
    #[tracing::instrument(level = "debug", skip_all, fields(resource = %resource), err(level = "debug"))]
    pub async fn acquire(
        &self,
        resource: &str,
        options: &LockOptions,
        wait: Duration,
    ) -> Result<RedlockGuard> {
        self.check_options(options)?;
        let keys = self.keys().redlock(resource)?;
        let token = LockToken::new().to_string();
        let started = Instant::now();
        let deadline = started + wait;
        let mut watches: Option<Vec<Watch>> = None;
        let mut backoff = Backoff::new(self.inner.config.retry_min, self.inner.config.retry_max);
        loop {
            let (held, retry_in, error) = match self.attempt(&keys, &token, options).await {
                Attempt::Acquired { fence, sent } => {
                    return Ok(self.guard(keys, token, fence, options, sent));
                }
                Attempt::Failed {
                    error,
                    held,
                    retry_in,
                } => (held, retry_in, error),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(if held {
                    LockError::Timeout {
                        resource: keys.resource,
                        waited: started.elapsed(),
                    }
                } else {
                    error
                });
            }
            tracing::debug!(%error, "Redlock attempt failed; retrying");
            let watches = watches.get_or_insert_with(|| self.watch_releases(&keys.released));
            let jittered = backoff.next_delay();
            let nap = retry_in
                .map_or(jittered, |r| r.min(jittered))
                .min(deadline.saturating_duration_since(now));
            let changed = watches.iter_mut().map(|w| Box::pin(w.receiver.changed()));
            let announced = tokio::select! {
                _ = futures_util::future::select_all(changed) => true,
                () = tokio::time::sleep(nap) => false,
            };
            if announced {
                // Every waiter hears the same announcement: a short random delay spreads their
                // attempts, so fewer of them split the instances' votes between them.
                tokio::time::sleep(Duration::from_micros(fastrand::u64(0..400))).await;
            }
        }
    }

    /// A proposal above the wall clock in µs and above this client's last proposal.
    fn propose(&self) -> u64 {
        let clock = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut last = self.inner.last_proposal.load(Ordering::Relaxed);
        loop {
            let next = clock.max(last + 1);
            match self.inner.last_proposal.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(current) => last = current,
            }
        }
    }

    async fn attempt(&self, keys: &RedlockKeys, token: &str, options: &LockOptions) -> Attempt {
        let proposal = self.propose();
        let quarantine = self.quarantine_ms(options);
        let ttl_ms = options.ttl_ms();
        let sent = Instant::now();
        let replies = self
            .on_all(
                Call::new(&SCRIPTS.redlock_acquire)
                    .key(&keys.lock)
                    .key(&keys.fence)
                    .arg(token)
                    .arg(ttl_ms)
                    .arg(&self.inner.owner_json)
                    .arg(proposal)
                    .arg(quarantine),
                |reply| matches!(reply, Value::Array(items) if matches!(items.first(), Some(Value::Int(1)))),
            )
            .await;
        let mut highest = 0u64;
        let reports = self.reports("redlock_acquire", replies, |reply| {
            let Value::Array(items) = reply else {
                return None;
            };
            match items.as_slice() {
                [Value::Int(1), Value::Int(counter), ..] => {
                    highest = highest.max((*counter).max(0) as u64);
                    Some(InstanceReply::Agreed)
                }
                [Value::Int(0), Value::Int(counter), Value::Int(pttl), ..] => {
                    highest = highest.max((*counter).max(0) as u64);
                    Some(InstanceReply::Held {
                        ttl_left_ms: (*pttl).max(0) as u64,
                    })
                }
                [Value::Int(-1), Value::Int(ready), ..] => Some(InstanceReply::Quarantined {
                    ready_in_ms: (*ready).max(0) as u64,
                }),
                _ => None,
            }
        });
        let granted = count(&reports, agreed);
        let held = reports
            .iter()
            .any(|r| matches!(r.reply, InstanceReply::Held { .. }));
        // An instance that failed or timed out may have granted.
        let unknown = reports
            .iter()
            .any(|r| matches!(r.reply, InstanceReply::Failed(_) | InstanceReply::TimedOut));
        let retry_in = reports
            .iter()
            .filter_map(|r| match r.reply {
                InstanceReply::Held { ttl_left_ms: ms }
                | InstanceReply::Quarantined { ready_in_ms: ms } => Some(ms),
                _ => None,
            })
            .min()
            .map(|ms| Duration::from_millis(ms + fastrand::u64(0..3)));

        let valid =
            |now: Instant| options.ttl.saturating_sub(now.duration_since(sent)) > options.drift();
        if granted < self.inner.quorum || !valid(Instant::now()) {
            if granted > 0 || unknown {
                self.undo(keys, token).await;
            }
            let error = if granted >= self.inner.quorum {
                LockError::Timeout {
                    resource: keys.resource.clone(),
                    waited: sent.elapsed(),
                }
            } else {
                self.no_quorum("acquire", &keys.resource, granted, reports)
            };
            return Attempt::Failed {
                error,
                held,
                retry_in,
            };
        }

        let fence = proposal.max(highest + 1);
        if fence != proposal {
            // Some counter was at or above the proposal: write the token back before using it.
            let (written, reports) = self.write_fence(keys, token, fence).await;
            if written < self.inner.quorum || !valid(Instant::now()) {
                self.undo(keys, token).await;
                return Attempt::Failed {
                    error: self.no_quorum("fence write-back", &keys.resource, written, reports),
                    held: false,
                    retry_in: None,
                };
            }
        }
        Attempt::Acquired { fence, sent }
    }

    /// Writes `fence` to every instance; counts those where the caller's lock held it.
    async fn write_fence(
        &self,
        keys: &RedlockKeys,
        token: &str,
        fence: u64,
    ) -> (usize, Vec<InstanceReport>) {
        let replies = self
            .on_all(
                Call::new(&SCRIPTS.redlock_fence)
                    .key(&keys.lock)
                    .key(&keys.fence)
                    .arg(token)
                    .arg(fence),
                |reply| matches!(reply, Value::Int(1)),
            )
            .await;
        let reports = self.reports("redlock_fence", replies, |reply| match reply {
            Value::Int(1) => Some(InstanceReply::Agreed),
            Value::Int(0) => Some(InstanceReply::NotHeld),
            _ => None,
        });
        (count(&reports, agreed), reports)
    }

    /// Deletes the caller's lock on every instance (a failed acquisition's partial grants),
    /// waiting for every instance (or the deadline).
    async fn undo(&self, keys: &RedlockKeys, token: &str) {
        let _ = self.release_all(keys, token, 0, |_| false).await;
    }

    /// Watches every instance's release channel (subscribing in the background, so a slow or
    /// dead instance does not delay the waiter).
    fn watch_releases(&self, channel: &str) -> Vec<Watch> {
        self.inner
            .instances
            .iter()
            .map(|instance| {
                let watch = instance.notifier.watch(channel);
                let notifier = instance.notifier.clone();
                let channel = channel.to_owned();
                tokio::spawn(async move {
                    notifier.ensure_subscribed(&channel).await;
                });
                watch
            })
            .collect()
    }

    fn guard(
        &self,
        keys: RedlockKeys,
        token: String,
        fence: u64,
        options: &LockOptions,
        sent: Instant,
    ) -> RedlockGuard {
        RedlockGuard::start(
            self.clone(),
            keys,
            token,
            options,
            Grant {
                fence,
                base: sent,
                valid_for: options.ttl,
                server_ms: None,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RedlockConfig;

    #[test]
    fn proposals_strictly_increase() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let urls = [
                "redis://127.0.0.1:1",
                "redis://127.0.0.1:2",
                "redis://127.0.0.1:3",
            ];
            let redlock = Redlock::connect(&urls, RedlockConfig::default())
                .await
                .unwrap();
            let mut last = 0;
            for _ in 0..1000 {
                let p = redlock.propose();
                assert!(p > last);
                last = p;
            }
            assert!(last < 1 << 53);
        });
    }

    /// Hole 2: an instance still holding the caller's token from an earlier attempt (whose undo
    /// was lost) must count for the new attempt only as a fresh grant: the TTL reset to the new
    /// attempt's, the fence counter and the stored fence raised to the new proposal.
    #[tokio::test]
    async fn a_regrant_with_the_same_token_refreshes_the_ttl_and_takes_the_new_fence() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let mut conn = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let base = format!("test-{}", uuid::Uuid::new_v4().simple());
        let (lock, counter) = (format!("{base}:lock"), format!("{base}:fence"));
        // Attempt k's leftover: granted with fence 5, 500 ms of TTL left.
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(&lock)
            .arg("T\n5\n0\n{}")
            .arg("PX")
            .arg(500)
            .ignore()
            .cmd("SET")
            .arg(&counter)
            .arg(5)
            .ignore()
            .query_async(&mut conn)
            .await
            .unwrap();
        // Attempt j: same token, TTL 10 s, proposal 9.
        let reply: Vec<i64> = SCRIPTS
            .redlock_acquire
            .key(&lock)
            .key(&counter)
            .arg("T")
            .arg(10_000)
            .arg("{}")
            .arg(9)
            .arg(0)
            .invoke_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            reply,
            vec![1, 5],
            "granted, reporting the counter as it was"
        );
        let (pttl, count, value): (i64, u64, String) = redis::pipe()
            .cmd("PTTL")
            .arg(&lock)
            .cmd("GET")
            .arg(&counter)
            .cmd("GET")
            .arg(&lock)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("DEL")
            .arg(&lock)
            .arg(&counter)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            pttl > 5_000,
            "the re-grant kept the old attempt's TTL ({pttl} ms)"
        );
        assert_eq!(count, 9, "the re-grant did not raise the fence counter");
        assert!(
            value.starts_with("T\n9\n"),
            "the re-grant kept the old fence: {value:?}"
        );
    }
}
