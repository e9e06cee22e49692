//! Hand-off notifications: one shared pub/sub subscription per [`super::LockClient`].
//!
//! `release.lua` hands a lock straight to the oldest waiter and publishes
//! `token\nfence\nserver_ms\nttl_ms` on that waiter's client's own channel for the resource
//! (`<handoff>:<client id>`, see [`Notifier::channel_for`]), so only the process whose waiter is
//! next wakes up. This module delivers the message to the one local task waiting with that token.
//!
//! - When the first waiter of the process needs a channel, then one pub/sub connection is opened
//!   (lazily: a process that never waits never opens it) and the channel is subscribed; the call
//!   returns once Redis confirmed the subscription, so a hand-off published afterwards is seen.
//! - When a channel has had no waiter for [`IDLE_UNSUBSCRIBE`], then it is unsubscribed.
//! - When the pub/sub connection drops, then its channels are forgotten and the next waiter
//!   reconnects. Messages published in between are lost: waiters then find out through their
//!   fallback retries (an acquire with the same token reports a handed-over lock as theirs).
//! - When the client is dropped, then the reader task ends and the connection closes.
//! - Besides hand-offs to one token, a task can [`Notifier::watch`] a channel: any message on it
//!   bumps a counter the task waits on (Redlock's releases wake every local waiter this way;
//!   a message between the task's look and its wait is not missed).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

/// A channel with no waiter for this long is unsubscribed.
pub(crate) const IDLE_UNSUBSCRIBE: Duration = Duration::from_secs(60);

/// How long connecting or subscribing may take before the waiter falls back to retries.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A hand-off announced by `release.lua`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handoff {
    /// The waiter's new fencing token.
    pub(crate) fence: u64,
    /// Redis server time (ms) when the lock was handed over.
    pub(crate) server_ms: u64,
    /// The TTL the lock was set with, ms.
    pub(crate) ttl_ms: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Local waiters by token.
    waiters: HashMap<String, oneshot::Sender<Handoff>>,
    /// Subscribed channels and when a waiter last used each.
    channels: HashMap<String, Instant>,
    /// How many local waiters use each channel right now (never unsubscribed while above 0).
    in_use: HashMap<String, usize>,
    /// Channels watched for any message: a counter bumped per message.
    watches: HashMap<String, watch::Sender<u64>>,
}

/// The process-wide hand-off listener of one lock client.
#[derive(Debug)]
pub(crate) struct Notifier {
    /// Opens the pub/sub connection.
    client: redis::Client,
    /// Waiters and channels, shared with the reader task.
    state: Mutex<State>,
    /// The subscribe side of the connection, `None` until first needed or after it dropped.
    sink: tokio::sync::Mutex<Option<PubSubSink>>,
    /// Cancelled when the notifier is dropped, ending the reader task.
    closed: CancellationToken,
    /// Distinguishes this client's own hand-off channels from other processes'.
    client_id: String,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl Notifier {
    pub(crate) fn new(client: redis::Client) -> Arc<Self> {
        Arc::new(Self {
            client,
            state: Mutex::new(State::default()),
            sink: tokio::sync::Mutex::new(None),
            closed: CancellationToken::new(),
            client_id: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    /// This client's own channel under `base` (a resource's hand-off channel name): a release
    /// that hands the lock to one of this client's waiters publishes there, so only this process
    /// wakes up.
    pub(crate) fn channel_for(&self, base: &str) -> String {
        format!("{base}:{}", self.client_id)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves only maps behind; keep using them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether `channel` is subscribed right now (no I/O).
    pub(crate) fn is_subscribed(&self, channel: &str) -> bool {
        self.state().channels.contains_key(channel)
    }

    /// Registers a waiter for `token`; the receiver gets the hand-off message if one comes.
    /// The registration is removed when the returned [`Registration`] is dropped.
    pub(crate) fn register(self: &Arc<Self>, token: &str, channel: &str) -> Registration {
        let (tx, rx) = oneshot::channel();
        let mut state = self.state();
        state.waiters.insert(token.to_owned(), tx);
        *state.in_use.entry(channel.to_owned()).or_default() += 1;
        Registration {
            notifier: Arc::downgrade(self),
            token: token.to_owned(),
            channel: channel.to_owned(),
            receiver: rx,
        }
    }

    /// Watches `channel`: the returned receiver changes on every message published there. The
    /// channel stays subscribed while the [`Watch`] lives; call [`Notifier::ensure_subscribed`]
    /// before relying on it.
    pub(crate) fn watch(self: &Arc<Self>, channel: &str) -> Watch {
        let mut state = self.state();
        let receiver = state
            .watches
            .entry(channel.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        *state.in_use.entry(channel.to_owned()).or_default() += 1;
        Watch {
            notifier: Arc::downgrade(self),
            channel: channel.to_owned(),
            receiver,
        }
    }

    /// Makes sure `channel` is subscribed; returns `false` when that could not be done quickly
    /// (the waiter then relies on its fallback retries).
    pub(crate) async fn ensure_subscribed(self: &Arc<Self>, channel: &str) -> bool {
        if self.is_subscribed(channel) {
            return true;
        }
        let mut sink = self.sink.lock().await;
        if self.is_subscribed(channel) {
            return true;
        }
        if sink.is_none() {
            match tokio::time::timeout(SUBSCRIBE_TIMEOUT, self.client.get_async_pubsub()).await {
                Ok(Ok(pubsub)) => {
                    let (new_sink, stream) = pubsub.split();
                    *sink = Some(new_sink);
                    tokio::spawn(read_messages(
                        Arc::downgrade(self),
                        stream,
                        self.closed.clone(),
                    ));
                }
                Ok(Err(error)) => {
                    tracing::debug!(%error, "pub/sub connect failed; waiting by retries");
                    return false;
                }
                Err(_) => return false,
            }
        }
        let Some(active) = sink.as_mut() else {
            return false;
        };
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, active.subscribe(channel)).await {
            Ok(Ok(())) => {
                self.state()
                    .channels
                    .insert(channel.to_owned(), Instant::now());
                true
            }
            _ => {
                // The connection is unusable: forget it so the next waiter reconnects.
                *sink = None;
                self.state().channels.clear();
                false
            }
        }
    }

    fn dispatch(&self, channel: &str, payload: &str) {
        if let Some(watchers) = self.state().watches.get(channel) {
            watchers.send_modify(|count| *count += 1);
        }
        let mut parts = payload.split('\n');
        let (Some(token), Some(fence), Some(server_ms), Some(ttl_ms)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            tracing::debug!(payload, "ignoring a malformed hand-off message");
            return;
        };
        let (Ok(fence), Ok(server_ms), Ok(ttl_ms)) =
            (fence.parse(), server_ms.parse(), ttl_ms.parse())
        else {
            tracing::debug!(payload, "ignoring a malformed hand-off message");
            return;
        };
        if let Some(waiter) = self.state().waiters.remove(token) {
            let _ = waiter.send(Handoff {
                fence,
                server_ms,
                ttl_ms,
            });
        }
    }

    fn connection_lost(&self) {
        self.state().channels.clear();
    }

    /// Channels without a waiter and unused for [`IDLE_UNSUBSCRIBE`].
    fn idle_channels(&self) -> Vec<String> {
        let now = Instant::now();
        let mut state = self.state();
        let idle: Vec<String> = state
            .channels
            .iter()
            .filter(|(channel, used)| {
                now.duration_since(**used) >= IDLE_UNSUBSCRIBE
                    && !state.in_use.contains_key(*channel)
            })
            .map(|(channel, _)| channel.clone())
            .collect();
        for channel in &idle {
            state.channels.remove(channel);
        }
        idle
    }

    async fn unsubscribe(&self, channels: Vec<String>) {
        if channels.is_empty() {
            return;
        }
        let mut sink = self.sink.lock().await;
        if let Some(active) = sink.as_mut()
            && active.unsubscribe(&channels).await.is_err()
        {
            *sink = None;
            self.connection_lost();
        }
    }
}

/// Reads hand-off messages until the connection drops or the notifier is gone.
async fn read_messages(
    notifier: Weak<Notifier>,
    mut stream: redis::aio::PubSubStream,
    closed: CancellationToken,
) {
    let mut sweep = tokio::time::interval(IDLE_UNSUBSCRIBE / 2);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = closed.cancelled() => return,
            message = stream.next() => {
                let Some(notifier) = notifier.upgrade() else { return };
                match message {
                    Some(message) => {
                        if let Ok(payload) = message.get_payload::<String>() {
                            notifier.dispatch(message.get_channel_name(), &payload);
                        }
                    }
                    None => {
                        tracing::debug!("pub/sub connection closed; hand-offs fall back to retries");
                        *notifier.sink.lock().await = None;
                        notifier.connection_lost();
                        return;
                    }
                }
            }
            _ = sweep.tick() => {
                let Some(notifier) = notifier.upgrade() else { return };
                let idle = notifier.idle_channels();
                notifier.unsubscribe(idle).await;
            }
        }
    }
}

/// A local waiter's place in the notifier; dropping it removes the waiter.
#[derive(Debug)]
pub(crate) struct Registration {
    notifier: Weak<Notifier>,
    token: String,
    channel: String,
    /// Receives the hand-off, if one arrives.
    pub(crate) receiver: oneshot::Receiver<Handoff>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(notifier) = self.notifier.upgrade() {
            let mut state = notifier.state();
            state.waiters.remove(&self.token);
            if let Some(count) = state.in_use.get_mut(&self.channel) {
                *count -= 1;
                if *count == 0 {
                    state.in_use.remove(&self.channel);
                }
            }
            if let Some(used) = state.channels.get_mut(&self.channel) {
                *used = Instant::now();
            }
        }
    }
}

/// A task's watch on a channel; dropping it ends the watch.
#[derive(Debug)]
pub(crate) struct Watch {
    notifier: Weak<Notifier>,
    channel: String,
    /// Changes on every message on the channel.
    pub(crate) receiver: watch::Receiver<u64>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(notifier) = self.notifier.upgrade() {
            let mut state = notifier.state();
            if let Some(count) = state.in_use.get_mut(&self.channel) {
                *count -= 1;
                if *count == 0 {
                    state.in_use.remove(&self.channel);
                }
            }
            // This receiver is the last one: nobody watches the channel any more.
            if state
                .watches
                .get(&self.channel)
                .is_some_and(|sender| sender.receiver_count() <= 1)
            {
                state.watches.remove(&self.channel);
            }
            if let Some(used) = state.channels.get_mut(&self.channel) {
                *used = Instant::now();
            }
        }
    }
}
