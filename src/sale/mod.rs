//! The ONE fenced sale under a held product lock: claim → slow step → decide → commit only while
//! the row carries the lock's token, plus the fence-floor repair after a refused claim.
//!
//! The worker's batches and the API's locked purchase both drive a [`FencedSale`] (the API's
//! purchase is a batch of one); with `--group-commit` the worker's go through its [`SaleGroup`]
//! (`group.rs`), which sends the claims and commits of several product holds in one transaction; the Postgres statements are in `store/sale.rs`, the locks in
//! [`crate::product_lock`]. What a caller does with each [`SaleError`] (retry now, back off, take
//! the lock again, answer 503) is its own policy.
//!
//! - When the claim is refused as stale (Redis lost its fence counters), then the lock's fence
//!   counter is raised above the row's fence before [`SaleError::Stale`] is returned: the next
//!   acquisition gets a token the database accepts. An equal fence is never taken as our own
//!   claim (after Redis lost its counters another holder may hold the same token).
//! - When orders are decided, then in order from the claimed stock with
//!   [`Outcome::from_stock`]; the units of a fulfilled order are gone for the next one.
//! - When the commit finds less stock than decided from (changed outside the fenced path: an
//!   operator reset, the unsafe path), then the orders are decided again from the stock found.
//! - When an order of the batch already has an outcome (a redelivery), then the batch is decided
//!   again order by order and that order's result is [`CommitResult::AlreadyDecided`].
//! - When the lock's lost signal fires before a commit, then [`SaleError::LockLost`] and nothing
//!   more is written. Not needed for safety (the fence refuses a stale commit); it saves a
//!   doomed one.
//! - Not guaranteed: a batch must hold each order id once (the caller's job); a duplicate id
//!   would be decided twice against the stock although only one row is written.

mod group;

use std::time::Duration;

use sqlx::{Postgres, pool::PoolConnection};
use tokio_util::sync::CancellationToken;

use crate::{
    order::{Outcome, ProductId, PurchaseOrder},
    product_lock::{ProductGuard, ProductLease, ProductLocks, product_resource},
    store::{BatchCommit, Claim, CommitResult, Decision, OrderStore, StoreError},
};

pub(crate) use group::SaleGroup;
use lockstock_lock::LockError;

/// One order of a sale and how many times it has been tried (recorded on its row).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SaleOrder {
    /// The order.
    pub(crate) order: PurchaseOrder,
    /// Tries so far, this one included.
    pub(crate) attempts: u32,
}

/// Why a sale step stopped without deciding every order.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SaleError {
    /// The lock's lost signal fired: take the lock again.
    #[error("the product lock was lost")]
    LockLost,
    /// The caller's stop token fired during the slow step.
    #[error("stopped")]
    Stopped,
    /// The row carries fence `current`, not ours: take the lock again. After a refused claim the
    /// lock's counter has already been raised above `current`.
    #[error("fence refused; the row carries {current}")]
    Stale {
        /// The fence the row carries.
        current: u64,
    },
    /// The lock's counter could not be raised after a refused claim; retry later.
    #[error("raising the fence floor failed: {0}")]
    FloorNotRaised(#[source] LockError),
    /// No such product.
    #[error("unknown product {0}")]
    UnknownProduct(ProductId),
    /// Postgres failed; [`StoreError::is_transient`] says whether trying again may help.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for SaleError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::StaleFence { current } => SaleError::Stale { current },
            StoreError::UnknownProduct(product) => SaleError::UnknownProduct(product),
            other => SaleError::Store(other),
        }
    }
}

/// What [`FencedSale::sell`] decided before it stopped, and why it stopped.
///
/// `decided` holds the results of the first `decided.len()` orders, committed before the stop
/// (only when the orders were committed one by one); the rest were not written.
#[derive(Debug)]
pub(crate) struct SaleStop {
    /// Results of the leading orders that were committed.
    pub(crate) decided: Vec<CommitResult>,
    /// Why the rest were not.
    pub(crate) error: SaleError,
}

impl From<SaleError> for SaleStop {
    fn from(error: SaleError) -> Self {
        SaleStop {
            decided: Vec::new(),
            error,
        }
    }
}

/// A sale of one product's orders under a held lock of that product.
#[derive(Debug)]
pub(crate) struct FencedSale<'a> {
    /// Where the claim and the commits go.
    store: &'a OrderStore,
    /// Where the fence floor is raised after a refused claim.
    locks: &'a ProductLocks,
    /// The held lock's lost signal.
    lease: ProductLease,
    /// The held lock's fencing token.
    fence: u64,
    /// The product the lock is for.
    product: ProductId,
    /// Recorded as the deciding `worker` on every row.
    decider: &'a str,
    /// The connection every statement of this sale uses, taken before the lock (see
    /// [`FencedSale::on_connection`]); `None`: each statement takes one from the pool.
    conn: Option<tokio::sync::Mutex<PoolConnection<Postgres>>>,
    /// The group commit the claim and the batch commit go through (with `conn` only; see
    /// [`FencedSale::in_group`]); `None`: their own statements.
    group: Option<&'a SaleGroup>,
}

impl<'a> FencedSale<'a> {
    /// A sale of `product` under `guard` (a held lock of `product_resource(product)` from
    /// `locks`), recording `decider` on every row.
    pub(crate) fn new(
        store: &'a OrderStore,
        locks: &'a ProductLocks,
        guard: &ProductGuard,
        product: ProductId,
        decider: &'a str,
    ) -> Self {
        Self {
            store,
            locks,
            lease: guard.lease(),
            fence: guard.fence().get(),
            product,
            decider,
            conn: None,
            group: None,
        }
    }

    /// Runs every statement of the sale on `conn`, taken before the lock: a holder never waits
    /// for a connection while it holds the lock.
    pub(crate) fn on_connection(mut self, conn: PoolConnection<Postgres>) -> Self {
        self.conn = Some(tokio::sync::Mutex::new(conn));
        self
    }

    /// Sends the claim and the batch commit through `group`, together with other holders' steps
    /// (one transaction for several products); only with [`FencedSale::on_connection`], which
    /// the group runs them on when this sale leads. The checks are the same as alone: every row
    /// is written only while it carries this sale's token.
    pub(crate) fn in_group(mut self, group: &'a SaleGroup) -> Self {
        self.group = Some(group);
        self
    }

    /// This sale's product and token, as a grouped step names them.
    fn claim_ref(&self) -> Claim {
        Claim {
            product_id: self.product,
            fence: self.fence,
        }
    }

    /// The fencing token every write of this sale carries.
    pub(crate) fn fence(&self) -> u64 {
        self.fence
    }

    /// Whether the lock is known to be lost.
    pub(crate) fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Claims the product row with the lock's token and returns its stock (one try).
    ///
    /// - When refused as stale, then raises the lock's fence counter above the row's fence and
    ///   returns [`SaleError::Stale`] (or [`SaleError::FloorNotRaised`] if that failed).
    pub(crate) async fn claim(&self) -> Result<i32, SaleError> {
        let claimed = match &self.conn {
            Some(conn) => {
                let mut conn = conn.lock().await;
                match self.group {
                    Some(group) => group.claim(self.store, &mut conn, self.claim_ref()).await,
                    None => {
                        self.store
                            .claim_product_on(&mut conn, self.product, self.fence)
                            .await
                    }
                }
            }
            None => self.store.claim_product(self.product, self.fence).await,
        };
        match claimed {
            Ok(stock) => {
                let at_ms = crate::product_lock::history_now_ms();
                tracing::info!(target: "history", event = "claim", product = self.product.get(), fence = self.fence, stock, at_ms, "history");
                Ok(stock)
            }
            Err(StoreError::StaleFence { current }) => {
                tracing::warn!(product_id = %self.product, fence = self.fence, current, "fence counter behind the database; raising it");
                self.locks
                    .raise_fence_floor(&product_resource(self.product), current)
                    .await
                    .map_err(SaleError::FloorNotRaised)?;
                Err(SaleError::Stale { current })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The slow step between reading the stock and selling: waits `work`, unless the lock is
    /// lost ([`SaleError::LockLost`]) or `stop` fires ([`SaleError::Stopped`]) first.
    pub(crate) async fn slow_step(
        &self,
        work: Duration,
        stop: &CancellationToken,
    ) -> Result<(), SaleError> {
        if work.is_zero() {
            return Ok(());
        }
        let lost = self.lease.lost();
        tokio::select! {
            () = lost.cancelled() => Err(SaleError::LockLost),
            () = stop.cancelled() => Err(SaleError::Stopped),
            () = tokio::time::sleep(work) => Ok(()),
        }
    }

    /// Decides `orders` in order from `stock` (what [`FencedSale::claim`] returned) and commits
    /// them in one fenced statement; one result per order, in order.
    pub(crate) async fn sell(
        &self,
        stock: i32,
        orders: &[SaleOrder],
    ) -> Result<Vec<CommitResult>, SaleStop> {
        let mut stock = stock;
        loop {
            if self.is_lost() {
                return Err(SaleError::LockLost.into());
            }
            let decisions = decide_in_order(stock, orders);
            let committed = match &self.conn {
                Some(conn) => {
                    let mut conn = conn.lock().await;
                    match self.group {
                        Some(group) => {
                            group
                                .commit(
                                    self.store,
                                    &mut conn,
                                    self.claim_ref(),
                                    decisions.clone(),
                                    self.decider,
                                )
                                .await
                        }
                        None => {
                            self.store
                                .commit_fenced_batch_on(
                                    &mut conn,
                                    self.product,
                                    &decisions,
                                    self.fence,
                                    self.decider,
                                )
                                .await
                        }
                    }
                }
                None => {
                    self.store
                        .commit_fenced_batch(self.product, &decisions, self.fence, self.decider)
                        .await
                }
            };
            match committed {
                Ok(BatchCommit::Committed { remaining_stock }) => {
                    return Ok(decisions
                        .iter()
                        .map(|decision| CommitResult::Committed {
                            outcome: decision.outcome,
                            remaining_stock: Some(remaining_stock),
                        })
                        .collect());
                }
                Ok(BatchCommit::SomeAlreadyDecided) => return self.sell_each(stock, orders).await,
                // Changed outside the fenced path: decide again from what is there.
                Err(StoreError::InsufficientStock { stock: now, .. }) => stock = now,
                Err(error) => return Err(SaleError::from(error).into()),
            }
        }
    }

    /// Some of `orders` were decided before (a redelivery): decides and commits each on its own,
    /// so the decided ones come back as [`CommitResult::AlreadyDecided`] without effect.
    async fn sell_each(
        &self,
        stock: i32,
        orders: &[SaleOrder],
    ) -> Result<Vec<CommitResult>, SaleStop> {
        let mut stock = stock;
        let mut results = Vec::with_capacity(orders.len());
        for sale in orders {
            loop {
                if self.is_lost() {
                    return Err(SaleStop {
                        decided: results,
                        error: SaleError::LockLost,
                    });
                }
                let outcome = Outcome::from_stock(stock, sale.order.quantity);
                let committed = match &self.conn {
                    Some(conn) => {
                        let mut conn = conn.lock().await;
                        self.store
                            .commit_fenced_on(
                                &mut conn,
                                &sale.order,
                                outcome,
                                self.fence,
                                self.decider,
                                sale.attempts,
                            )
                            .await
                    }
                    None => {
                        self.store
                            .commit_fenced(
                                &sale.order,
                                outcome,
                                self.fence,
                                self.decider,
                                sale.attempts,
                            )
                            .await
                    }
                };
                match committed {
                    Ok(result) => {
                        if let CommitResult::Committed {
                            remaining_stock: Some(left),
                            ..
                        } = result
                        {
                            stock = left;
                        }
                        results.push(result);
                        break;
                    }
                    Err(StoreError::InsufficientStock { stock: now, .. }) => stock = now,
                    Err(error) => {
                        return Err(SaleStop {
                            decided: results,
                            error: error.into(),
                        });
                    }
                }
            }
        }
        Ok(results)
    }
}

/// The decisions for `orders`, in order, from `stock`: each is [`Outcome::from_stock`] of what
/// the fulfilled ones before it left.
fn decide_in_order(stock: i32, orders: &[SaleOrder]) -> Vec<Decision> {
    let mut available = stock;
    orders
        .iter()
        .map(|sale| {
            let outcome = Outcome::from_stock(available, sale.order.quantity);
            if outcome == Outcome::Fulfilled {
                available -= sale.order.quantity.get();
            }
            Decision {
                order: sale.order,
                outcome,
                attempts: sale.attempts,
            }
        })
        .collect()
}
