//! A reliable Redis list queue of opaque messages. Knows Redis lists; never names an order.
//!
//! Producers `LPUSH` onto the pending list; a consumer [`JobQueue::reserve`]s with `BLMOVE pending
//! processing RIGHT LEFT`, which atomically moves the oldest message into the consumer's own
//! processing list, and removes it from there only once it is done with it ([`JobQueue::ack`],
//! [`JobQueue::dead_letter`] or [`JobQueue::requeue`]). Each consumer keeps a short-lived liveness
//! key ([`JobQueue::heartbeat_liveness`]); any live consumer hands the processing list of a dead
//! one back to the pending list ([`JobQueue::recover_dead_workers`]).
//!
//! Guarantees:
//! - When messages are pushed in order (one [`JobQueue::push_batch`] or several pushes in a row),
//!   then they are reserved in that order (FIFO), across consumers.
//! - When a consumer crashes or is killed between reserve and ack, then its messages stay in its
//!   processing list, and once its liveness key has expired a live consumer's
//!   [`JobQueue::recover_dead_workers`] moves them back to the front of the pending list in one
//!   script: no message is lost, none is duplicated by the move itself.
//! - When a message is dead-lettered, requeued or recovered, then removing it from the processing
//!   list and pushing it elsewhere happen in one Lua script: never both places, never neither.
//! - When [`JobQueue::reserve`] blocks, then it does so on a dedicated connection with no response
//!   timeout (redis-rs's default 500 ms would cut a long `BLMOVE` off, and a blocking command on
//!   the shared connection would stall every other caller); a client-side deadline of the block's
//!   own timeout plus [`QueueConfig::reply_grace`] catches a server that vanished silently.
//! - When the dedicated connection fails, then it is dropped and the next reserve reconnects.
//!
//! Non-guarantees:
//! - When a blocking move's reply is lost (timeout, reconnect, the reserve future dropped), then
//!   the server may have moved a message into this consumer's processing list without the
//!   consumer knowing. It is not lost — [`JobQueue::processing_items`] shows it and the consumer
//!   must reconcile (at start and periodically) — but it is delivered again: consumers must be
//!   idempotent.
//! - When a consumer is merely paused past its liveness TTL, then its messages are recovered and
//!   delivered to someone else while it may still finish them: again, at-least-once delivery.
//! - When the same payload bytes are pushed twice, then they are two messages; the queue does not
//!   de-duplicate.
//! - When used with Redis Cluster ([`JobQueue::connect_cluster`]), then every key of the queue
//!   must live in one slot: give the pending key a hash tag (e.g. `{orders}:pending`, or
//!   `--queue-key '{orders}:pending'` on the binaries). Processing lists, liveness keys and the
//!   worker registry derive from the pending key and inherit its tag; the default dead key
//!   follows it too (`{orders}:dead`, see [`QueueKeys::new`]). A cluster queue whose keys do not
//!   share the tag is refused with [`QueueError::Config`] before anything is sent.
//!
//! ```rust,no_run
//! use std::time::Duration;
//! use lockstock::queue::{JobQueue, QueueConfig};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let queue = JobQueue::connect("redis://127.0.0.1:6379", QueueConfig::default()).await?;
//! queue.push_batch(&[b"hello".to_vec()]).await?;
//! queue.heartbeat_liveness(Duration::from_secs(15)).await?;
//! if let Some(message) = queue.reserve(Duration::from_secs(5)).await? {
//!     // ... handle it, record the result durably ...
//!     queue.ack(&message).await?;
//! }
//! # Ok(()) }
//! ```

mod cluster;
mod config;
mod conn;
mod dead;
mod error;
mod keys;
mod liveness;
mod locate;
mod restore;
mod scripts;
mod shards;

use std::{fmt, sync::Arc, time::Duration};

use redis::{Client, aio::ConnectionManager};
use tokio::sync::{Mutex, MutexGuard};

use self::conn::{Blocking, Opener, QueueConnection};

pub use self::{
    config::{QueueConfig, default_worker_id},
    dead::{
        DEAD_PAYLOAD_PREFIX, DeadLetter, DeadLetterAction, DeadLetterFilter, DeadLetterMove,
        MAX_DEAD_LETTERS, MAX_DEAD_LETTERS_READ, MOVE_BATCH,
    },
    error::{QueueError, Result},
    keys::{QueueKeys, hash_tag},
    liveness::{QueueStats, WorkerState},
    locate::Location,
    shards::{BLOCK_SLICE, MAX_SHARDS, shard_key, shard_of},
};
use self::{scripts::SCRIPTS, shards::Shards};

/// A consumer's (or producer's) handle on one queue.
///
/// Clones share the shared connection and the dedicated blocking connection, so concurrent
/// [`JobQueue::reserve`] calls on clones take turns; build separate `JobQueue`s for parallel
/// blocking reads.
#[derive(Clone)]
pub struct JobQueue {
    /// Builds the dedicated blocking connection (again after a failure).
    opener: Opener,
    /// The process's shared connection (one server, or a cluster), for every non-blocking
    /// command.
    conn: QueueConnection,
    /// The dedicated connection for `BLMOVE`; `None` until first used and after a failure.
    blocking: Arc<Mutex<Option<Blocking>>>,
    /// Every key name, derived once from the config.
    keys: QueueKeys,
    /// This consumer's id (names its processing list and liveness key).
    worker_id: String,
    /// This consumer's processing list, cached.
    processing: String,
    /// Extra time to wait for a blocking move's reply before declaring the connection dead.
    reply_grace: Duration,
    /// Messages per `LPUSH` in a batch.
    push_chunk: usize,
    /// The shards this queue routes to (`QUEUE_SHARDS` > 1); `None`: this queue is one list.
    shards: Option<Arc<Shards>>,
}

impl fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobQueue")
            .field("keys", &self.keys)
            .field("worker_id", &self.worker_id)
            .field("reply_grace", &self.reply_grace)
            .field("push_chunk", &self.push_chunk)
            .finish_non_exhaustive()
    }
}

impl JobQueue {
    /// A queue over `conn` (the process's shared connection); `client` is used only to open the
    /// dedicated blocking connection, lazily, on the first [`JobQueue::reserve`].
    ///
    /// - When a key, the worker id or `push_chunk` is empty/zero, then [`QueueError::Config`].
    pub fn new(client: Client, conn: ConnectionManager, config: QueueConfig) -> Result<Self> {
        Self::build(
            Opener::Single(Box::new(client)),
            QueueConnection::Single(conn),
            config,
        )
    }

    /// A queue on a Redis Cluster reached through any of its `nodes` (`redis://host:port`).
    ///
    /// - When the pending key has no hash tag, or the dead key carries another one, then
    ///   [`QueueError::Config`]: the queue's scripts need every key in one slot.
    /// - When no node answers, then the cluster client's error is returned.
    pub async fn connect_cluster(nodes: &[&str], config: QueueConfig) -> Result<Self> {
        let keys = QueueKeys::new(config.pending_key.clone(), config.dead_key.clone());
        keys.check_one_slot()?;
        let (shared, blocking) = conn::cluster_clients(nodes)?;
        let conn = shared.get_async_connection().await?;
        Self::build(
            Opener::Cluster(Box::new(blocking)),
            QueueConnection::Cluster(conn),
            config,
        )
    }

    fn build(opener: Opener, conn: QueueConnection, config: QueueConfig) -> Result<Self> {
        if config.pending_key.is_empty() || config.dead_key.is_empty() {
            return Err(QueueError::Config("queue keys must not be empty"));
        }
        if config.worker_id.is_empty() {
            return Err(QueueError::Config("worker id must not be empty"));
        }
        if config.push_chunk == 0 {
            return Err(QueueError::Config("push_chunk must be at least 1"));
        }
        let keys = QueueKeys::new(config.pending_key, config.dead_key);
        let mut queue = Self {
            opener,
            conn,
            blocking: Arc::new(Mutex::new(None)),
            processing: keys.processing(&config.worker_id),
            keys,
            worker_id: config.worker_id,
            reply_grace: config.reply_grace,
            push_chunk: config.push_chunk,
            shards: None,
        };
        if config.shards > 1 {
            queue.shards = Some(Arc::new(Shards::new(&queue, config.shards)?));
        }
        Ok(queue)
    }

    /// Opens a client and a shared connection to `redis_url` and builds the queue on them.
    ///
    /// - When Redis does not answer, then the connection manager's retries run out and the error
    ///   is returned.
    pub async fn connect(redis_url: &str, config: QueueConfig) -> Result<Self> {
        let client = Client::open(redis_url)?;
        let conn = ConnectionManager::new(client.clone()).await?;
        Self::new(client, conn, config)
    }

    /// This consumer's worker id.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// The queue's key names (of a sharded queue: the base names its shards derive from; see
    /// [`JobQueue::shard_keys`]).
    pub fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    /// The key names of every shard, in shard order; one entry, [`JobQueue::keys`], when the
    /// queue is not sharded.
    pub fn shard_keys(&self) -> Vec<&QueueKeys> {
        match &self.shards {
            Some(shards) => shards.keys().collect(),
            None => vec![&self.keys],
        }
    }

    /// Pushes one message to the back of the queue.
    pub async fn push(&self, payload: &[u8]) -> Result<()> {
        self.push_batch(&[payload]).await.map(|_| ())
    }

    /// Pushes messages to the back of the queue in one pipelined round trip (`LPUSH`es of
    /// [`QueueConfig::push_chunk`] messages each); returns how many were pushed.
    ///
    /// - When it succeeds, then the messages are reserved in slice order, after everything already
    ///   pending.
    /// - When it fails, then a prefix of the chunks may have been pushed (the pipeline is not a
    ///   transaction).
    pub async fn push_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<usize> {
        if let Some(shards) = &self.shards {
            let payloads: Vec<&[u8]> = payloads.iter().map(AsRef::as_ref).collect();
            return shards.push_batch(&payloads).await;
        }
        if payloads.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for chunk in payloads.chunks(self.push_chunk) {
            let mut cmd = redis::cmd("LPUSH");
            cmd.arg(self.keys.pending());
            for payload in chunk {
                cmd.arg(payload.as_ref());
            }
            pipe.add_command(cmd).ignore();
        }
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await?;
        Ok(payloads.len())
    }

    /// Takes the oldest pending message into this consumer's processing list, waiting up to
    /// `timeout` for one; `Ok(None)` when none came.
    ///
    /// - When `timeout` is zero, then it does not block: a single `LMOVE` on the shared connection.
    /// - Otherwise `BLMOVE` runs on the dedicated connection (no response timeout); concurrent
    ///   calls on this queue (and its clones) take turns.
    /// - When the call fails or its future is dropped while waiting, then the dedicated connection
    ///   is dropped (the server stops blocking for it) and the next call reconnects; a message moved
    ///   just before that is in the processing list (see the module's non-guarantees).
    pub async fn reserve(&self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        if let Some(shards) = &self.shards {
            return shards.reserve(timeout).await;
        }
        if timeout.is_zero() {
            let mut conn = self.conn.clone();
            let item: Option<Vec<u8>> = redis::cmd("LMOVE")
                .arg(self.keys.pending())
                .arg(&self.processing)
                .arg("RIGHT")
                .arg("LEFT")
                .query_async(&mut conn)
                .await?;
            return Ok(item);
        }

        let mut slot = DropConnectionUnlessDisarmed {
            slot: self.blocking.lock().await,
            armed: true,
        };
        if slot.slot.is_none() {
            *slot.slot = Some(self.opener.open().await?);
        }
        let Some(conn) = slot.slot.as_mut() else {
            return Err(QueueError::Config(
                "blocking connection missing right after connecting",
            ));
        };
        // BLMOVE takes seconds as a decimal since Redis 6; 0 would mean "forever".
        let seconds = timeout.as_secs_f64().max(0.001);
        let deadline = timeout + self.reply_grace;
        let mut blmove = redis::cmd("BLMOVE");
        blmove
            .arg(self.keys.pending())
            .arg(&self.processing)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(seconds);
        let reply = tokio::time::timeout(deadline, conn.query::<Option<Vec<u8>>>(&blmove)).await;
        match reply {
            Ok(Ok(item)) => {
                slot.armed = false;
                Ok(item)
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(QueueError::ReplyTimeout(deadline)),
        }
    }

    /// Reserves up to `max` messages in one round trip when some are waiting; when none are, waits
    /// up to `timeout` for one (as [`JobQueue::reserve`]). Oldest first.
    ///
    /// - When messages are waiting, then up to `max` are moved to this consumer's processing list
    ///   atomically (one script) and returned; nothing blocks.
    /// - When none are, then one blocking move runs, with the same guarantees as `reserve`.
    pub async fn reserve_many(&self, max: usize, timeout: Duration) -> Result<Vec<Vec<u8>>> {
        if let Some(shards) = &self.shards {
            return shards.reserve_many(max, timeout).await;
        }
        let mut conn = self.conn.clone();
        let moved: Vec<Vec<u8>> = SCRIPTS
            .reserve_many
            .key(self.keys.pending())
            .key(&self.processing)
            .arg(max.max(1))
            .invoke_async(&mut conn)
            .await?;
        if !moved.is_empty() {
            return Ok(moved);
        }
        Ok(self.reserve(timeout).await?.into_iter().collect())
    }

    /// Acknowledges several handled messages in one pipelined round trip; returns how many were
    /// still in the processing list.
    pub async fn ack_many<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<usize> {
        if let Some(shards) = &self.shards {
            let payloads: Vec<&[u8]> = payloads.iter().map(AsRef::as_ref).collect();
            return shards.ack_many(&payloads).await;
        }
        if payloads.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for payload in payloads {
            // Scan from the tail: acknowledged messages are usually the oldest ones there.
            pipe.cmd("LREM")
                .arg(&self.processing)
                .arg(-1)
                .arg(payload.as_ref());
        }
        let mut conn = self.conn.clone();
        let removed: Vec<i64> = pipe.query_async(&mut conn).await?;
        Ok(removed.iter().filter(|n| **n > 0).count())
    }

    /// Removes a handled message from this consumer's processing list; `true` when it was there.
    ///
    /// - When it was not there (already recovered by another consumer after this one looked
    ///   dead), then `false` and nothing changes; that consumer's copy will be delivered again.
    pub async fn ack(&self, payload: &[u8]) -> Result<bool> {
        if let Some(shards) = &self.shards {
            return shards.ack(payload).await;
        }
        let mut conn = self.conn.clone();
        let removed: i64 = redis::cmd("LREM")
            .arg(&self.processing)
            .arg(-1)
            .arg(payload)
            .query_async(&mut conn)
            .await?;
        Ok(removed > 0)
    }

    /// Moves a message from this consumer's processing list to the back of the pending list, in
    /// one script; `true` when it was there.
    pub async fn requeue(&self, payload: &[u8]) -> Result<bool> {
        if let Some(shards) = &self.shards {
            return shards.requeue(payload).await;
        }
        let mut conn = self.conn.clone();
        let moved: i64 = SCRIPTS
            .requeue
            .key(&self.processing)
            .key(self.keys.pending())
            .arg(payload)
            .invoke_async(&mut conn)
            .await?;
        Ok(moved == 1)
    }

    /// This consumer's processing list, oldest first: messages reserved and not yet acknowledged,
    /// including any whose reserve reply was lost.
    pub async fn processing_items(&self) -> Result<Vec<Vec<u8>>> {
        if let Some(shards) = &self.shards {
            return shards.processing_items().await;
        }
        let mut conn = self.conn.clone();
        let mut items: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&self.processing)
            .arg(0)
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        items.reverse();
        Ok(items)
    }

    /// The oldest `max` messages of this consumer's processing list (of each shard's, when
    /// sharded), oldest first: one bounded `LRANGE` from the tail, however long the list is.
    ///
    /// - When the list holds more than `max`, then only its `max` oldest are read; messages
    ///   reserved later sit nearer the head and come into the window as older ones are
    ///   acknowledged.
    pub async fn processing_tail(&self, max: usize) -> Result<Vec<Vec<u8>>> {
        if let Some(shards) = &self.shards {
            return shards.processing_tail(max).await;
        }
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let mut items: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(&self.processing)
            .arg(-(max as i64))
            .arg(-1)
            .query_async(&mut conn)
            .await?;
        items.reverse();
        Ok(items)
    }

    /// How many messages are pending.
    pub async fn depth(&self) -> Result<usize> {
        if let Some(shards) = &self.shards {
            return shards.depth().await;
        }
        let mut conn = self.conn.clone();
        Ok(redis::cmd("LLEN")
            .arg(self.keys.pending())
            .query_async(&mut conn)
            .await?)
    }
}

/// Holds the blocking connection's slot while a `BLMOVE` is in flight and empties it unless the
/// reply arrived: a failed or abandoned (dropped) reserve never leaves a connection with a command
/// still blocking on the server. Dropping the connection is not network I/O: its driver task
/// closes the socket.
struct DropConnectionUnlessDisarmed<'a> {
    slot: MutexGuard<'a, Option<Blocking>>,
    armed: bool,
}

impl Drop for DropConnectionUnlessDisarmed<'_> {
    fn drop(&mut self) {
        if self.armed {
            *self.slot = None;
        }
    }
}
