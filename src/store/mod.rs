//! The Postgres side of the pipeline: products, order outcomes and fencing. Never Redis.
//!
//! [`OrderStore`] wraps a [`PgPool`]. A lock holder uses it in two steps (the fenced sale, all in
//! `store/sale.rs`; `crate::sale` drives it under a held lock):
//!
//! 1. [`OrderStore::claim_product`] with its fencing token, right after taking the product's lock
//!    and *before* reading anything: one statement raises the row's `last_fence` to the token
//!    (only if the token is higher) and returns the stock.
//! 2. [`OrderStore::commit_fenced`] with the outcome decided from that stock: one transaction that
//!    inserts the order's outcome row and, when fulfilled, decrements the stock, and that applies
//!    only while the product row still carries the holder's token.
//!
//! Guarantees:
//! - When a holder with token `t` has claimed a product and a holder with token `u > t` claims it
//!   afterwards, then every later commit by `t` is refused with [`StoreError::StaleFence`], whether
//!   or not `u` has committed yet, and whatever the timing: `u`'s claim moved the row to `u` before
//!   `u` read the stock, so `t` can never commit on top of (or underneath) `u`'s read.
//! - When a claim arrives with a token not strictly higher than the row's `last_fence`, then it is
//!   refused with [`StoreError::StaleFence`]; tokens are never shared, even after a Redis restart
//!   reset the fence counter to a value already used.
//! - When an order id already has an outcome, then every commit for that id returns
//!   [`CommitResult::AlreadyDecided`] with the first outcome and changes nothing (one outcome per
//!   order, enforced by the primary key).
//! - When an order is fulfilled through the fenced path, then the stock never goes below zero (the
//!   decrement is conditional on `stock >= quantity`).
//! - When several processes call [`migrate`] at once, then the migrations are applied exactly once:
//!   sqlx's migrator takes a Postgres advisory lock (`pg_advisory_lock`, keyed by the database
//!   name) before it even creates `_sqlx_migrations`, and each migration runs in its own
//!   transaction.
//!
//! Non-guarantees:
//! - When a caller uses [`OrderStore::commit_unfenced`] (the seed's `--no-lock` path), then nothing
//!   stops concurrent read-then-write races: the stock can go negative. That is its purpose.
//! - When a reply is lost after `COMMIT` (Postgres or the network fails at that moment), then the
//!   caller sees an error although the outcome may be stored; retrying is safe because the retry
//!   returns [`CommitResult::AlreadyDecided`].
//! - When an operator changes stock with [`OrderStore::set_stock`] while a holder is between claim
//!   and commit, then the holder's fulfilled commit may be refused with
//!   [`StoreError::InsufficientStock`]; its `out_of_stock` decision is recorded as made.

mod error;
mod idempotency;
mod intake;
mod orders;
mod products;
mod sale;
mod schema;
mod views;

use std::time::Duration;

use chrono::{DateTime, Utc};
use std::str::FromStr;

use sqlx::{
    PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use self::{
    error::{Result, StoreError},
    idempotency::{KeyClaim, StoredAnswer},
    sale::{BatchCommit, Claim, Decision, ProductBatch},
    schema::check_schema,
    views::{OutcomeCount, ProductRow},
};
use crate::order::{OrderId, Outcome};

/// The crate's migrations (`migrations/`), embedded at compile time.
///
/// `#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]` uses it to give each test a fresh,
/// migrated database.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// How long taking a pooled connection may wait: short, so that a caller holding a lock (the
/// worker) gives up and backs off without it rather than waiting under it.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// The server-side limit on every statement of an [`OrderStore::connect_lazy`] pool.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Applies every pending migration; safe when several processes start at once.
///
/// - When another process is migrating, then this waits for its advisory lock and then finds
///   nothing left to do.
/// - When a migration fails, then the connection that holds the advisory lock is closed rather
///   than returned to the pool, so the lock is released with it and no other caller hangs.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    let mut conn = pool.acquire().await?;
    // Migrations may rewrite big tables: no statement timeout for them (reset afterwards).
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await?;
    // `run_direct` is what `Migrator::run` calls after acquiring; calling it on our own connection
    // lets us close that connection on failure, and avoids sqlx's "`Acquire` is not general
    // enough" error when this future must be `Send` (e.g. inside `tokio::spawn`).
    // Tolerant of newer builds' migrations (see `schema.rs`).
    if let Err(e) = schema::tolerant_migrator().run_direct(&mut *conn).await {
        conn.close_on_drop();
        return Err(e.into());
    }
    sqlx::query("RESET statement_timeout")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Access to products and order outcomes in Postgres.
///
/// Cheap to clone (the pool is reference-counted).
///
/// ```rust,no_run
/// use lockstock::{order::{Outcome, ProductId, PurchaseOrder, Quantity}, store::OrderStore};
///
/// # async fn demo(pool: sqlx::PgPool, fence: u64) -> Result<(), Box<dyn std::error::Error>> {
/// let store = OrderStore::new(pool);
/// let order = PurchaseOrder::new(ProductId::new(1)?, Quantity::new(1)?);
/// // ... holding the product's lock with fencing token `fence` ...
/// let stock = store.claim_product(order.product_id, fence).await?;
/// let outcome = Outcome::from_stock(stock, order.quantity);
/// store.commit_fenced(&order, outcome, fence, "worker-1", 1).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct OrderStore {
    /// The shared pool; every method takes a connection for one statement or one transaction.
    pool: PgPool,
    /// Test-only (`lockctl chaos` self-test): fenced commits skip the fence comparison.
    skip_fence: bool,
}

impl OrderStore {
    /// Wraps an existing pool.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            skip_fence: false,
        }
    }

    /// UNSAFE, for the chaos harness's self-test only: fenced commits no longer compare the
    /// fence, so a stale holder's commit lands (the checker must catch it).
    #[doc(hidden)]
    pub fn chaos_unsafe_skip_fence(mut self) -> Self {
        self.skip_fence = true;
        self
    }

    /// Opens a pool of up to `max_connections` to `database_url` (connections are made lazily, so
    /// this does not fail when Postgres is down; the first query does).
    ///
    /// - Every connection runs with `statement_timeout` = [`STATEMENT_TIMEOUT`], so a statement
    ///   stuck behind a row lock or a slow server fails instead of hanging.
    /// - Taking a connection (including connecting, which sqlx retries while Postgres refuses it)
    ///   fails after [`ACQUIRE_TIMEOUT`].
    /// - Not guaranteed: a connection whose TCP peer vanished silently is not detected by these
    ///   server-side limits; callers that must not hang put their own deadline around a call
    ///   (the worker does).
    pub fn connect_lazy(database_url: &str, max_connections: u32) -> Result<Self> {
        let options = PgConnectOptions::from_str(database_url)?.options([(
            "statement_timeout",
            format!("{}ms", STATEMENT_TIMEOUT.as_millis()),
        )]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Self::new(pool))
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations (see [`migrate`]).
    pub async fn migrate(&self) -> Result<()> {
        migrate(&self.pool).await
    }
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitResult {
    /// This call decided the order: its outcome row is stored (and, when fulfilled, the stock was
    /// decremented).
    Committed {
        /// The outcome just stored.
        outcome: Outcome,
        /// The product's stock after the commit, when the commit involved a product row.
        remaining_stock: Option<i32>,
    },
    /// The order already had an outcome; this call changed nothing.
    AlreadyDecided(Outcome),
}

impl CommitResult {
    /// The order's outcome, whichever call decided it.
    pub fn outcome(self) -> Outcome {
        match self {
            CommitResult::Committed { outcome, .. } | CommitResult::AlreadyDecided(outcome) => {
                outcome
            }
        }
    }

    /// Whether this call stored the outcome.
    pub fn is_committed(self) -> bool {
        matches!(self, CommitResult::Committed { .. })
    }
}

/// A stored order row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    /// The order id.
    pub id: OrderId,
    /// The product, when the message named a usable one.
    pub product_id: Option<i32>,
    /// The quantity, when the message carried a usable one.
    pub quantity: Option<i32>,
    /// The decision ([`crate::order::RejectReason::Unrecognized`] for a reason a newer version
    /// wrote; see [`OrderRecord::reason_text`]).
    pub outcome: Outcome,
    /// The reason exactly as stored (`None` when fulfilled): what to show, since it may be one
    /// this version does not know.
    pub reason_text: Option<String>,
    /// The fencing token the decision was made under (`None` for unfenced decisions).
    pub fence: Option<u64>,
    /// Which worker decided.
    pub worker: Option<String>,
    /// How many attempts the worker needed.
    pub attempts: Option<i32>,
    /// When the row was inserted.
    pub created_at: DateTime<Utc>,
    /// When the decision was made.
    pub decided_at: DateTime<Utc>,
}

/// Counts of decided orders, for demos, benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderTally {
    /// Orders with status `fulfilled`.
    pub fulfilled: i64,
    /// Orders with status `rejected`.
    pub rejected: i64,
    /// Sum of the fulfilled orders' quantities (what left the stock).
    pub fulfilled_quantity: i64,
}
