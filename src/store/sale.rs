//! The Postgres side of the ONE fenced sale: claim, commit-if-fenced, high-water mark.
//!
//! Every sale made under a product lock goes through these calls, whoever holds the lock (a
//! worker's batch or the API's locked purchase; the lock-aware driver is `crate::sale`):
//!
//! 1. [`OrderStore::claim_product`] with the lock's fencing token, before reading anything: one
//!    statement raises the row's `last_fence` to the token and returns the stock.
//! 2. The holder decides from that stock ([`crate::order::Outcome::from_stock`], in order).
//! 3. [`OrderStore::commit_fenced_batch`] (or [`OrderStore::commit_fenced`] for one order): one
//!    statement that writes only while the row still carries the token.
//!    [`OrderStore::claim_products_on`] and [`OrderStore::commit_fenced_batches_on`] do the same
//!    for several products (each under its own token) in one statement: the worker's group
//!    commit sends the steps of several lock holds together.
//! 4. After a refused claim ([`StoreError::StaleFence`]: Redis lost its fence counters), the
//!    lock's counter is raised above [`OrderStore::fence_high_water`] and the lock taken again.
//!
//! - When a newer holder has claimed the row, then every write of an older token is refused,
//!   whatever the timing (see the [`super`] module guarantees).
//! - When an order already has an outcome, then a commit changes nothing.
//! - Not guaranteed here: that the caller decided from the stock its own claim returned; the
//!   conditional decrement still keeps the stock from going below zero.

use std::collections::HashMap;

use sqlx::PgConnection;

use super::{
    CommitResult, OrderStore, Result, StoreError,
    orders::{existing_outcome_opt, fence_i64, fence_u64},
};
use crate::order::{Outcome, ProductId, PurchaseOrder, RejectReason};

/// The product's `last_fence` (`None`: no such product), read on `conn`.
async fn last_fence_on(conn: &mut PgConnection, product_id: ProductId) -> Result<Option<u64>> {
    // language=PostgreSQL
    let fence: Option<i64> = sqlx::query_scalar("SELECT last_fence FROM products WHERE id = $1")
        .bind(product_id.get())
        .fetch_optional(conn)
        .await?;
    Ok(fence.map(fence_u64))
}

/// One decided order of a batch ([`OrderStore::commit_fenced_batch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The order.
    pub order: PurchaseOrder,
    /// What was decided for it.
    pub outcome: Outcome,
    /// How many times it has been tried (recorded on the row).
    pub attempts: u32,
}

/// What a batch commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchCommit {
    /// Every outcome row is stored and the stock decremented by the fulfilled quantities.
    Committed {
        /// The product's stock after the commit.
        remaining_stock: i32,
    },
    /// At least one order already had an outcome; nothing was written.
    SomeAlreadyDecided,
}

/// What the one-statement fenced commit saw and did.
#[derive(sqlx::FromRow)]
struct CommitRow {
    /// The product row's fence (`None`: no such product).
    last_fence: Option<i64>,
    /// The stock before this commit.
    stock: Option<i32>,
    /// Whether the outcome row was inserted (the commit happened).
    inserted: bool,
    /// The stock after a sale.
    remaining: Option<i32>,
}

/// What the one-statement grouped commit saw and did for one product.
#[derive(sqlx::FromRow)]
struct GroupRow {
    product_id: i32,
    #[sqlx(flatten)]
    seen: BatchRow,
}

/// What the one-statement batch commit saw and did.
#[derive(sqlx::FromRow)]
struct BatchRow {
    last_fence: Option<i64>,
    stock: Option<i32>,
    fresh: bool,
    inserted: i64,
    remaining: Option<i32>,
}

impl OrderStore {
    /// Registers fencing token `fence` on the product's row and returns its stock, in ONE
    /// statement. Call it right after taking the product's lock, before deciding anything.
    ///
    /// - When `fence` is strictly higher than the row's `last_fence`, then the row now carries
    ///   `fence` (every holder with a lower token is fenced off from this moment) and the stock is
    ///   returned.
    /// - When it is not (a newer or equal token already claimed the row), then
    ///   [`StoreError::StaleFence`] with the row's current fence, and nothing changes. After a
    ///   Redis restart reset the lock's fence counter, this is how stale tokens are noticed; raise
    ///   the counter above [`OrderStore::fence_high_water`] and take the lock again.
    /// - When the product does not exist, then [`StoreError::UnknownProduct`].
    #[tracing::instrument(level = "debug", skip(self), err(level = "debug"))]
    pub async fn claim_product(&self, product_id: ProductId, fence: u64) -> Result<i32> {
        let mut conn = self.pool.acquire().await?;
        self.claim_product_on(&mut conn, product_id, fence).await
    }

    /// [`OrderStore::claim_product`] on a connection the caller already holds (a lock holder
    /// takes its connection before the lock, so it never waits for one while holding it).
    pub async fn claim_product_on(
        &self,
        conn: &mut PgConnection,
        product_id: ProductId,
        fence: u64,
    ) -> Result<i32> {
        let fence_value = fence_i64(fence)?;
        // language=PostgreSQL
        let stock: Option<i32> = sqlx::query_scalar(
            r#"
            UPDATE products SET last_fence = $2
             WHERE id = $1 AND last_fence < $2
            RETURNING stock
            "#,
        )
        .bind(product_id.get())
        .bind(fence_value)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(stock) = stock {
            return Ok(stock);
        }
        // Only used to say why: the fence never decreases, so a row that refused the claim still
        // carries a fence >= ours.
        match last_fence_on(conn, product_id).await? {
            Some(current) => Err(StoreError::StaleFence { current }),
            None => Err(StoreError::UnknownProduct(product_id)),
        }
    }

    /// [`OrderStore::claim_product`] for several products at once, each under its own lock's
    /// token, in ONE statement (one round trip): one result per claim, in order.
    ///
    /// - When a claim's fence is strictly higher than its row's `last_fence`, then that row now
    ///   carries it and its stock is returned; each row is checked on its own, so a refused claim
    ///   does not hold back the others.
    /// - When it is not, then that claim's result is [`StoreError::StaleFence`] with the row's
    ///   current fence; for a missing product, [`StoreError::UnknownProduct`].
    /// - When a product appears twice, then [`StoreError::Corrupt`] and nothing changes (two
    ///   holders of one product cannot both be right).
    /// - Rows are locked in id order, so concurrent grouped claims do not deadlock.
    pub async fn claim_products_on(
        &self,
        conn: &mut PgConnection,
        claims: &[Claim],
    ) -> Result<Vec<Result<i32>>> {
        let mut ids = Vec::with_capacity(claims.len());
        let mut fences = Vec::with_capacity(claims.len());
        for claim in claims {
            if ids.contains(&claim.product_id.get()) {
                return Err(StoreError::Corrupt(format!(
                    "product {} claimed twice in one statement",
                    claim.product_id
                )));
            }
            ids.push(claim.product_id.get());
            fences.push(fence_i64(claim.fence)?);
        }
        // Lock the rows in id order first; the update re-checks each row's fence on the locked
        // (newest) version; the locked fence says why a claim was refused.
        // language=PostgreSQL
        let rows: Vec<(i32, Option<i32>, Option<i64>)> = sqlx::query_as(
            r#"
            WITH input AS (
                SELECT * FROM unnest($1::integer[], $2::bigint[]) AS t(id, fence)
            ), locked AS (
                SELECT p.id, p.last_fence FROM products p
                 WHERE p.id IN (SELECT id FROM input) ORDER BY p.id FOR UPDATE
            ), claimed AS (
                UPDATE products p SET last_fence = i.fence
                  FROM input i, locked l
                 WHERE p.id = i.id AND l.id = i.id AND p.last_fence < i.fence
                RETURNING p.id, p.stock
            )
            SELECT i.id, c.stock, l.last_fence
              FROM input i LEFT JOIN claimed c ON c.id = i.id LEFT JOIN locked l ON l.id = i.id
            "#,
        )
        .bind(&ids)
        .bind(&fences)
        .fetch_all(&mut *conn)
        .await?;
        let by_id: HashMap<i32, (Option<i32>, Option<i64>)> = rows
            .into_iter()
            .map(|(id, stock, fence)| (id, (stock, fence)))
            .collect();
        Ok(claims
            .iter()
            .map(|claim| match by_id.get(&claim.product_id.get()) {
                Some((Some(stock), _)) => Ok(*stock),
                Some((None, Some(current))) => Err(StoreError::StaleFence {
                    current: fence_u64(*current),
                }),
                _ => Err(StoreError::UnknownProduct(claim.product_id)),
            })
            .collect())
    }

    /// The highest fencing token that ever claimed the product (`last_fence`; 0 if none).
    ///
    /// After Redis lost its data, raise the product's fence counter to at least this value so new
    /// tokens are accepted again.
    ///
    /// - When the product does not exist, then [`StoreError::UnknownProduct`].
    pub async fn fence_high_water(&self, product_id: ProductId) -> Result<u64> {
        self.last_fence(product_id)
            .await?
            .ok_or(StoreError::UnknownProduct(product_id))
    }

    /// The highest fencing token over all products (0 when there are none); for a fence counter
    /// shared by every product.
    pub async fn max_fence_high_water(&self) -> Result<u64> {
        // language=PostgreSQL
        let max: i64 = sqlx::query_scalar(
            r#"
            SELECT coalesce(max(last_fence), 0)::bigint FROM products
            "#,
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(fence_u64(max))
    }

    /// Records `outcome` for `order` under fencing token `fence`, in ONE statement (one round
    /// trip, its own transaction).
    ///
    /// `outcome` is what the caller decided from the stock [`OrderStore::claim_product`] returned
    /// for the same `fence`.
    ///
    /// - When the order already has an outcome, then [`CommitResult::AlreadyDecided`] and nothing
    ///   changes (checked first, so a redelivered order is recognised whatever the fence).
    /// - When the product row no longer carries `fence` (a newer holder claimed it), then
    ///   [`StoreError::StaleFence`] and nothing changes — also for rejections, so a stale holder
    ///   cannot record `out_of_stock` from a stale read either.
    /// - When fulfilled, then the stock is decremented by the quantity, only if the row still
    ///   carries `fence` and the stock covers it (else [`StoreError::InsufficientStock`], nothing
    ///   changes): never below zero.
    /// - When the product does not exist, then [`StoreError::UnknownProduct`].
    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %order.id, product_id = %order.product_id, fence = fence), err(level = "debug"))]
    pub async fn commit_fenced(
        &self,
        order: &PurchaseOrder,
        outcome: Outcome,
        fence: u64,
        worker: &str,
        attempts: u32,
    ) -> Result<CommitResult> {
        let mut conn = self.pool.acquire().await?;
        self.commit_fenced_on(&mut conn, order, outcome, fence, worker, attempts)
            .await
    }

    /// [`OrderStore::commit_fenced`] on a connection the caller already holds.
    pub async fn commit_fenced_on(
        &self,
        conn: &mut PgConnection,
        order: &PurchaseOrder,
        outcome: Outcome,
        fence: u64,
        worker: &str,
        attempts: u32,
    ) -> Result<CommitResult> {
        let fence = fence_i64(fence)?;
        // One statement, so one round trip: lock the product row, check the fence (and the
        // stock when selling), record the outcome unless the order already has one, and sell
        // only if the outcome row was inserted. Holding the row lock from the first CTE, no
        // other holder can move the fence before the sale.
        // language=PostgreSQL
        let row: CommitRow = sqlx::query_as(
            r#"
            WITH product AS (
                SELECT last_fence, stock FROM products WHERE id = $2 FOR UPDATE
            ), allowed AS (
                SELECT stock FROM product
                 WHERE (last_fence = $6 OR $9) AND ($4 <> 'fulfilled' OR stock >= $3)
            ), inserted AS (
                INSERT INTO orders (id, product_id, quantity, status, reason, fence, worker, attempts)
                SELECT $1, $2, $3, $4, $5, $6, $7, $8 FROM allowed
                ON CONFLICT (id) DO NOTHING
                RETURNING id
            ), sold AS (
                UPDATE products SET stock = stock - $3, updated_at = now()
                 WHERE id = $2 AND $4 = 'fulfilled' AND EXISTS (SELECT 1 FROM inserted)
                RETURNING stock
            )
            SELECT (SELECT last_fence FROM product) AS last_fence,
                   (SELECT stock FROM product) AS stock,
                   EXISTS (SELECT 1 FROM inserted) AS inserted,
                   (SELECT stock FROM sold) AS remaining
            "#,
        )
        .bind(order.id.as_uuid())
        .bind(order.product_id.get())
        .bind(order.quantity.get())
        .bind(outcome.status())
        .bind(outcome.reason().map(RejectReason::as_str))
        .bind(fence)
        .bind(worker)
        .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
        .bind(self.skip_fence)
        .fetch_one(&mut *conn)
        .await?;
        if row.inserted {
            let remaining = match outcome {
                Outcome::Fulfilled => row.remaining,
                Outcome::Rejected(_) => row.stock,
            };
            return Ok(CommitResult::Committed {
                outcome,
                remaining_stock: remaining,
            });
        }
        // Nothing was written; say why (a second round trip, only on this rare path). An
        // existing outcome wins whatever the fence, so a redelivered order is recognised.
        if let Some(existing) = existing_outcome_opt(conn, order.id).await? {
            return Ok(CommitResult::AlreadyDecided(existing));
        }
        match (row.last_fence, row.stock) {
            (None, _) | (_, None) => Err(StoreError::UnknownProduct(order.product_id)),
            (Some(current), _) if current != fence => Err(StoreError::StaleFence {
                current: fence_u64(current),
            }),
            (_, Some(stock)) => Err(StoreError::InsufficientStock {
                product_id: order.product_id,
                stock,
                quantity: order.quantity.get(),
            }),
        }
    }

    /// Records the outcomes of several orders of ONE product under fencing token `fence`, in one
    /// statement (one round trip, one transaction): every outcome row and the total stock
    /// decrement, or nothing.
    ///
    /// The caller decided the outcomes in order from the stock [`OrderStore::claim_product`]
    /// returned for `fence`, so the fulfilled quantities sum to at most that stock.
    ///
    /// - When the product row no longer carries `fence`, then [`StoreError::StaleFence`] and
    ///   nothing changes.
    /// - When the fulfilled quantities exceed the stock (changed outside the fenced path), then
    ///   [`StoreError::InsufficientStock`] with the current stock, and nothing changes.
    /// - When any of the orders already has an outcome, then [`BatchCommit::SomeAlreadyDecided`]
    ///   and nothing changes: decide those orders one by one ([`OrderStore::commit_fenced`]).
    /// - When the product does not exist, then [`StoreError::UnknownProduct`].
    /// - When every row was written, then [`BatchCommit::Committed`] with the remaining stock.
    #[tracing::instrument(level = "debug", skip_all, fields(product_id = %product_id, orders = decisions.len(), fence = fence), err(level = "debug"))]
    pub async fn commit_fenced_batch(
        &self,
        product_id: ProductId,
        decisions: &[Decision],
        fence: u64,
        worker: &str,
    ) -> Result<BatchCommit> {
        let mut conn = self.pool.acquire().await?;
        self.commit_fenced_batch_on(&mut conn, product_id, decisions, fence, worker)
            .await
    }

    /// [`OrderStore::commit_fenced_batch`] on a connection the caller already holds.
    pub async fn commit_fenced_batch_on(
        &self,
        conn: &mut PgConnection,
        product_id: ProductId,
        decisions: &[Decision],
        fence: u64,
        worker: &str,
    ) -> Result<BatchCommit> {
        let fence = fence_i64(fence)?;
        let mut ids = Vec::with_capacity(decisions.len());
        let mut quantities = Vec::with_capacity(decisions.len());
        let mut statuses = Vec::with_capacity(decisions.len());
        let mut reasons: Vec<Option<&str>> = Vec::with_capacity(decisions.len());
        let mut attempts = Vec::with_capacity(decisions.len());
        for decision in decisions {
            if decision.order.product_id != product_id {
                return Err(StoreError::Corrupt(format!(
                    "order {} is for product {}, not {product_id}",
                    decision.order.id, decision.order.product_id
                )));
            }
            ids.push(decision.order.id.as_uuid());
            quantities.push(decision.order.quantity.get());
            statuses.push(decision.outcome.status());
            reasons.push(decision.outcome.reason().map(RejectReason::as_str));
            attempts.push(i32::try_from(decision.attempts).unwrap_or(i32::MAX));
        }
        // Lock the product row first (held to the end of the statement), then write every row
        // and the total decrement only if the fence matches, the stock covers the sales and
        // none of the orders is already decided.
        // language=PostgreSQL
        let row: BatchRow = sqlx::query_as(
            r#"
            WITH product AS (
                SELECT last_fence, stock FROM products WHERE id = $1 FOR UPDATE
            ), input AS (
                SELECT * FROM unnest($2::uuid[], $3::integer[], $4::text[], $5::text[], $6::integer[])
                    AS t(id, quantity, status, reason, attempts)
            ), fresh AS (
                SELECT NOT EXISTS (SELECT 1 FROM orders o JOIN input i ON o.id = i.id) AS ok
            ), wanted AS (
                SELECT coalesce(sum(quantity), 0) AS units FROM input WHERE status = 'fulfilled'
            ), allowed AS (
                SELECT 1 FROM product, fresh, wanted
                 WHERE (product.last_fence = $7 OR $9) AND fresh.ok AND product.stock >= wanted.units
            ), inserted AS (
                INSERT INTO orders (id, product_id, quantity, status, reason, fence, worker, attempts)
                SELECT i.id, $1, i.quantity, i.status, i.reason, $7, $8, i.attempts
                  FROM input i, allowed
                ON CONFLICT (id) DO NOTHING
                RETURNING quantity, status
            ), sold AS (
                UPDATE products
                   SET stock = stock - (SELECT coalesce(sum(quantity), 0) FROM inserted WHERE status = 'fulfilled'),
                       updated_at = now()
                 WHERE id = $1 AND EXISTS (SELECT 1 FROM inserted)
                RETURNING stock
            )
            SELECT (SELECT last_fence FROM product) AS last_fence,
                   (SELECT stock FROM product) AS stock,
                   (SELECT ok FROM fresh) AS fresh,
                   (SELECT count(*) FROM inserted) AS inserted,
                   (SELECT stock FROM sold) AS remaining
            "#,
        )
        .bind(product_id.get())
        .bind(&ids)
        .bind(&quantities)
        .bind(&statuses)
        .bind(&reasons)
        .bind(&attempts)
        .bind(fence)
        .bind(worker)
        .bind(self.skip_fence)
        .fetch_one(&mut *conn)
        .await?;
        if row.inserted > 0 {
            // All rows, or (only if a concurrent writer slipped in an outcome for one of these
            // ids, which fencing makes impossible for fenced writers) the rest were decided.
            return Ok(BatchCommit::Committed {
                remaining_stock: row.remaining.or(row.stock).unwrap_or(0),
            });
        }
        match (row.last_fence, row.stock) {
            (None, _) | (_, None) => Err(StoreError::UnknownProduct(product_id)),
            (Some(current), _) if current != fence => Err(StoreError::StaleFence {
                current: fence_u64(current),
            }),
            _ if !row.fresh => Ok(BatchCommit::SomeAlreadyDecided),
            (_, Some(stock)) if decisions.is_empty() => Ok(BatchCommit::Committed {
                remaining_stock: stock,
            }),
            (_, Some(stock)) => Err(StoreError::InsufficientStock {
                product_id,
                stock,
                quantity: quantities.iter().sum(),
            }),
        }
    }

    /// [`OrderStore::commit_fenced_batch`] for the batches of several products at once, each
    /// under its own lock's token, in ONE statement (one round trip, one transaction): one result
    /// per batch, in order.
    ///
    /// - Each product is checked on its own (fence, stock, no order already decided), exactly as
    ///   [`OrderStore::commit_fenced_batch`] checks one: the batches that pass are written (every
    ///   outcome row and the stock decrement), the others write nothing and get the same refusal
    ///   the one-product commit gives ([`StoreError::StaleFence`],
    ///   [`BatchCommit::SomeAlreadyDecided`], [`StoreError::InsufficientStock`],
    ///   [`StoreError::UnknownProduct`]).
    /// - When a batch holds an order of another product, then that batch's result is
    ///   [`StoreError::Corrupt`] and it is not sent; when a product appears in two batches, then
    ///   the whole call is [`StoreError::Corrupt`] and nothing changes.
    /// - Rows are locked in id order, so concurrent grouped commits do not deadlock.
    pub async fn commit_fenced_batches_on(
        &self,
        conn: &mut PgConnection,
        batches: &[ProductBatch<'_>],
    ) -> Result<Vec<Result<BatchCommit>>> {
        let mut products = Vec::with_capacity(batches.len());
        let mut fences = Vec::with_capacity(batches.len());
        let mut misfiled = HashMap::new();
        let mut input = BatchInput::default();
        for batch in batches {
            if products.contains(&batch.product_id.get()) {
                return Err(StoreError::Corrupt(format!(
                    "product {} committed twice in one statement",
                    batch.product_id
                )));
            }
            if let Some(stray) = batch
                .decisions
                .iter()
                .find(|d| d.order.product_id != batch.product_id)
            {
                misfiled.insert(
                    batch.product_id.get(),
                    format!(
                        "order {} is for product {}, not {}",
                        stray.order.id, stray.order.product_id, batch.product_id
                    ),
                );
                continue;
            }
            products.push(batch.product_id.get());
            fences.push(fence_i64(batch.fence)?);
            input.extend(batch);
        }
        // Lock the product rows (in id order, held to the end of the statement), then, per
        // product, write its rows and its total decrement only if its fence matches, its stock
        // covers its sales and none of its orders is already decided.
        // language=PostgreSQL
        let rows: Vec<GroupRow> = sqlx::query_as(
            r#"
            WITH batch AS (
                SELECT * FROM unnest($1::integer[], $2::bigint[]) AS b(product_id, fence)
            ), input AS (
                SELECT * FROM unnest($3::integer[], $4::uuid[], $5::integer[], $6::text[],
                                     $7::text[], $8::integer[], $9::text[])
                    AS t(product_id, id, quantity, status, reason, attempts, worker)
            ), product AS (
                SELECT p.id, p.last_fence, p.stock FROM products p
                 WHERE p.id IN (SELECT product_id FROM batch) ORDER BY p.id FOR UPDATE
            ), wanted AS (
                SELECT b.product_id, b.fence,
                       (SELECT coalesce(sum(i.quantity), 0) FROM input i
                         WHERE i.product_id = b.product_id AND i.status = 'fulfilled') AS units,
                       NOT EXISTS (SELECT 1 FROM orders o JOIN input i ON o.id = i.id
                                    WHERE i.product_id = b.product_id) AS fresh
                  FROM batch b
            ), allowed AS (
                SELECT w.product_id, w.fence FROM wanted w JOIN product p ON p.id = w.product_id
                 WHERE (p.last_fence = w.fence OR $10) AND w.fresh AND p.stock >= w.units
            ), inserted AS (
                INSERT INTO orders (id, product_id, quantity, status, reason, fence, worker, attempts)
                SELECT i.id, i.product_id, i.quantity, i.status, i.reason, a.fence, i.worker, i.attempts
                  FROM input i JOIN allowed a ON a.product_id = i.product_id
                ON CONFLICT (id) DO NOTHING
                RETURNING product_id, quantity, status
            ), sold AS (
                UPDATE products p
                   SET stock = p.stock - s.units, updated_at = now()
                  FROM (SELECT product_id,
                               (coalesce(sum(quantity) FILTER (WHERE status = 'fulfilled'), 0))::integer AS units
                          FROM inserted GROUP BY product_id) s
                 WHERE p.id = s.product_id
                RETURNING p.id, p.stock
            )
            SELECT w.product_id,
                   p.last_fence,
                   p.stock,
                   w.fresh,
                   (SELECT count(*) FROM inserted x WHERE x.product_id = w.product_id) AS inserted,
                   (SELECT s.stock FROM sold s WHERE s.id = w.product_id) AS remaining
              FROM wanted w LEFT JOIN product p ON p.id = w.product_id
            "#,
        )
        .bind(&products)
        .bind(&fences)
        .bind(&input.products)
        .bind(&input.ids)
        .bind(&input.quantities)
        .bind(&input.statuses)
        .bind(&input.reasons)
        .bind(&input.attempts)
        .bind(&input.workers)
        .bind(self.skip_fence)
        .fetch_all(&mut *conn)
        .await?;
        let mut by_product: HashMap<i32, BatchRow> = rows
            .into_iter()
            .map(|row| (row.product_id, row.seen))
            .collect();
        Ok(batches
            .iter()
            .map(|batch| {
                if let Some(why) = misfiled.remove(&batch.product_id.get()) {
                    return Err(StoreError::Corrupt(why));
                }
                match by_product.remove(&batch.product_id.get()) {
                    Some(row) => batch_result(batch, row),
                    None => Err(StoreError::UnknownProduct(batch.product_id)),
                }
            })
            .collect())
    }
}

/// One product's batch of a grouped commit ([`OrderStore::commit_fenced_batches_on`]).
#[derive(Debug, Clone, Copy)]
pub struct ProductBatch<'a> {
    /// The product every order of the batch is for.
    pub product_id: ProductId,
    /// The fencing token of the lock held on the product (what the claim registered).
    pub fence: u64,
    /// The orders, decided in order from the claimed stock.
    pub decisions: &'a [Decision],
    /// Recorded as the deciding worker on every row.
    pub worker: &'a str,
}

/// One product's claim of a grouped claim ([`OrderStore::claim_products_on`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// The product.
    pub product_id: ProductId,
    /// The fencing token of the lock held on it.
    pub fence: u64,
}

/// The orders of a grouped commit as the statement's parallel arrays.
#[derive(Default)]
struct BatchInput<'a> {
    products: Vec<i32>,
    ids: Vec<uuid::Uuid>,
    quantities: Vec<i32>,
    statuses: Vec<&'static str>,
    reasons: Vec<Option<&'static str>>,
    attempts: Vec<i32>,
    workers: Vec<&'a str>,
}

impl<'a> BatchInput<'a> {
    /// Adds every order of `batch`.
    fn extend(&mut self, batch: &ProductBatch<'a>) {
        for decision in batch.decisions {
            self.products.push(batch.product_id.get());
            self.ids.push(decision.order.id.as_uuid());
            self.quantities.push(decision.order.quantity.get());
            self.statuses.push(decision.outcome.status());
            self.reasons
                .push(decision.outcome.reason().map(RejectReason::as_str));
            self.attempts
                .push(i32::try_from(decision.attempts).unwrap_or(i32::MAX));
            self.workers.push(batch.worker);
        }
    }
}

/// What one product's part of a grouped commit means for its caller.
fn batch_result(batch: &ProductBatch<'_>, row: BatchRow) -> Result<BatchCommit> {
    if row.inserted > 0 {
        // All rows, or (only if a concurrent writer slipped in an outcome for one of these
        // ids, which fencing makes impossible for fenced writers) the rest were decided.
        return Ok(BatchCommit::Committed {
            remaining_stock: row.remaining.or(row.stock).unwrap_or(0),
        });
    }
    let fence = fence_i64(batch.fence)?;
    match (row.last_fence, row.stock) {
        (None, _) | (_, None) => Err(StoreError::UnknownProduct(batch.product_id)),
        (Some(current), _) if current != fence => Err(StoreError::StaleFence {
            current: fence_u64(current),
        }),
        _ if !row.fresh => Ok(BatchCommit::SomeAlreadyDecided),
        (_, Some(stock)) if batch.decisions.is_empty() => Ok(BatchCommit::Committed {
            remaining_stock: stock,
        }),
        (_, Some(stock)) => Err(StoreError::InsufficientStock {
            product_id: batch.product_id,
            stock,
            quantity: batch.decisions.iter().map(|d| d.order.quantity.get()).sum(),
        }),
    }
}
