//! Recording order outcomes: fenced, unfenced and rejections of poison messages.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::{
    BatchCommit, CommitResult, Decision, OrderRecord, OrderStore, OrderTally, Result, StoreError,
};
use crate::order::{OrderId, Outcome, ProductId, PurchaseOrder, RejectReason};

/// The columns of one outcome row, as inserted.
struct NewOutcome<'a> {
    id: OrderId,
    product_id: Option<i32>,
    quantity: Option<i32>,
    outcome: Outcome,
    fence: Option<i64>,
    worker: &'a str,
    attempts: u32,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    product_id: Option<i32>,
    quantity: Option<i32>,
    status: String,
    reason: Option<String>,
    fence: Option<i64>,
    worker: Option<String>,
    attempts: Option<i32>,
    created_at: DateTime<Utc>,
    decided_at: DateTime<Utc>,
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

impl OrderStore {
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
                 WHERE last_fence = $6 AND ($4 <> 'fulfilled' OR stock >= $3)
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
        .fetch_one(&self.pool)
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
        let mut conn = self.pool.acquire().await?;
        if let Some(existing) = existing_outcome_opt(&mut conn, order.id).await? {
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
                 WHERE product.last_fence = $7 AND fresh.ok AND product.stock >= wanted.units
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
        .fetch_one(&self.pool)
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

    /// Records `outcome` for `order` WITHOUT fencing: the seed's unsafe `--no-lock` path.
    ///
    /// - When fulfilled, then the stock is decremented unconditionally (`stock = stock - q`), so
    ///   concurrent callers that each read the stock earlier can oversell and drive it negative.
    ///   That is the race the demo shows.
    /// - When the order already has an outcome, then [`CommitResult::AlreadyDecided`] and nothing
    ///   changes: even the unsafe path records one outcome per order.
    /// - When the product does not exist, then [`StoreError::UnknownProduct`] and nothing changes.
    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %order.id, product_id = %order.product_id), err(level = "debug"))]
    pub async fn commit_unfenced(
        &self,
        order: &PurchaseOrder,
        outcome: Outcome,
        worker: &str,
        attempts: u32,
    ) -> Result<CommitResult> {
        let mut tx = self.pool.begin().await?;
        let new = NewOutcome {
            id: order.id,
            product_id: Some(order.product_id.get()),
            quantity: Some(order.quantity.get()),
            outcome,
            fence: None,
            worker,
            attempts,
        };
        if let Some(existing) = insert_outcome(&mut tx, &new).await? {
            tx.rollback().await?;
            return Ok(CommitResult::AlreadyDecided(existing));
        }
        let remaining: Option<i32> = match outcome {
            Outcome::Fulfilled => {
                // language=PostgreSQL
                sqlx::query_scalar(
                    r#"
                    UPDATE products SET stock = stock - $2, updated_at = now() WHERE id = $1
                    RETURNING stock
                    "#,
                )
                .bind(order.product_id.get())
                .bind(order.quantity.get())
                .fetch_optional(&mut *tx)
                .await?
            }
            Outcome::Rejected(_) => {
                // language=PostgreSQL
                sqlx::query_scalar(
                    r#"
                    SELECT stock FROM products WHERE id = $1
                    "#,
                )
                .bind(order.product_id.get())
                .fetch_optional(&mut *tx)
                .await?
            }
        };
        let Some(remaining) = remaining else {
            tx.rollback().await?;
            return Err(StoreError::UnknownProduct(order.product_id));
        };
        tx.commit().await?;
        Ok(CommitResult::Committed {
            outcome,
            remaining_stock: Some(remaining),
        })
    }

    /// Records a `rejected` outcome that touches no stock: poison messages with a readable id
    /// (`invalid_quantity`, `invalid_product`, `malformed`) and orders for an unknown product.
    ///
    /// `product_id` and `quantity` are the raw values when the message had usable ones.
    ///
    /// - When the order already has an outcome, then [`CommitResult::AlreadyDecided`] and nothing
    ///   changes.
    /// - When recorded, then [`CommitResult::Committed`] with `remaining_stock: None`.
    #[tracing::instrument(level = "debug", skip_all, fields(order_id = %order_id, reason = %reason), err(level = "debug"))]
    pub async fn record_rejection(
        &self,
        order_id: OrderId,
        product_id: Option<i32>,
        quantity: Option<i32>,
        reason: RejectReason,
        worker: &str,
        attempts: u32,
    ) -> Result<CommitResult> {
        let outcome = Outcome::Rejected(reason);
        let mut tx = self.pool.begin().await?;
        let new = NewOutcome {
            id: order_id,
            product_id,
            quantity,
            outcome,
            fence: None,
            worker,
            attempts,
        };
        if let Some(existing) = insert_outcome(&mut tx, &new).await? {
            tx.rollback().await?;
            return Ok(CommitResult::AlreadyDecided(existing));
        }
        tx.commit().await?;
        Ok(CommitResult::Committed {
            outcome,
            remaining_stock: None,
        })
    }

    /// The recorded outcome of an order, if it has one.
    pub async fn outcome(&self, order_id: OrderId) -> Result<Option<Outcome>> {
        Ok(self.order(order_id).await?.map(|record| record.outcome))
    }

    /// The whole stored row of an order, if it has one.
    pub async fn order(&self, order_id: OrderId) -> Result<Option<OrderRecord>> {
        // language=PostgreSQL
        let row: Option<OrderRow> = sqlx::query_as(
            r#"
            SELECT id, product_id, quantity, status, reason, fence, worker, attempts,
                   created_at, decided_at
              FROM orders
             WHERE id = $1
            "#,
        )
        .bind(order_id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        row.map(into_record).transpose()
    }

    /// Counts decided orders, for one product or (with `None`) for all.
    pub async fn tally(&self, product_id: Option<ProductId>) -> Result<OrderTally> {
        // language=PostgreSQL
        let (fulfilled, rejected, fulfilled_quantity): (i64, i64, i64) = sqlx::query_as(
            r#"
            SELECT count(*) FILTER (WHERE status = 'fulfilled'),
                   count(*) FILTER (WHERE status = 'rejected'),
                   coalesce(sum(quantity) FILTER (WHERE status = 'fulfilled'), 0)::bigint
              FROM orders
             WHERE $1::integer IS NULL OR product_id = $1
            "#,
        )
        .bind(product_id.map(ProductId::get))
        .fetch_one(&self.pool)
        .await?;
        Ok(OrderTally {
            fulfilled,
            rejected,
            fulfilled_quantity,
        })
    }

    /// Deletes every recorded outcome for a product and returns how many; for resetting a demo or
    /// benchmark round. Deleting outcomes lets those order ids be decided again, so never use it on
    /// orders that are still queued.
    pub async fn delete_orders_for(&self, product_id: ProductId) -> Result<u64> {
        // language=PostgreSQL
        let done = sqlx::query(
            r#"
            DELETE FROM orders WHERE product_id = $1
            "#,
        )
        .bind(product_id.get())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// Inserts the outcome row unless the order already has one; returns the existing outcome then.
///
/// `ON CONFLICT DO NOTHING` waits for a concurrent transaction inserting the same id, so when it
/// reports a conflict the other row is committed and visible to the next statement.
async fn insert_outcome(
    tx: &mut Transaction<'_, Postgres>,
    new: &NewOutcome<'_>,
) -> Result<Option<Outcome>> {
    // language=PostgreSQL
    let inserted: Option<Uuid> = sqlx::query_scalar(
        r#"
        INSERT INTO orders (id, product_id, quantity, status, reason, fence, worker, attempts)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        ON CONFLICT (id) DO NOTHING
        RETURNING id
        "#,
    )
    .bind(new.id.as_uuid())
    .bind(new.product_id)
    .bind(new.quantity)
    .bind(new.outcome.status())
    .bind(new.outcome.reason().map(RejectReason::as_str))
    .bind(new.fence)
    .bind(new.worker)
    .bind(i32::try_from(new.attempts).unwrap_or(i32::MAX))
    .fetch_optional(&mut **tx)
    .await?;
    if inserted.is_some() {
        return Ok(None);
    }
    existing_outcome(tx, new.id).await.map(Some)
}

async fn existing_outcome_opt(conn: &mut PgConnection, id: OrderId) -> Result<Option<Outcome>> {
    // language=PostgreSQL
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        r#"
        SELECT status, reason FROM orders WHERE id = $1
        "#,
    )
    .bind(id.as_uuid())
    .fetch_optional(conn)
    .await?;
    row.map(|(status, reason)| parse_outcome(&status, reason.as_deref()))
        .transpose()
}

async fn existing_outcome(conn: &mut PgConnection, id: OrderId) -> Result<Outcome> {
    // language=PostgreSQL
    let (status, reason): (String, Option<String>) = sqlx::query_as(
        r#"
        SELECT status, reason FROM orders WHERE id = $1
        "#,
    )
    .bind(id.as_uuid())
    .fetch_one(conn)
    .await?;
    parse_outcome(&status, reason.as_deref())
}

fn parse_outcome(status: &str, reason: Option<&str>) -> Result<Outcome> {
    match (status, reason) {
        ("fulfilled", None) => Ok(Outcome::Fulfilled),
        ("rejected", Some(reason)) => reason
            .parse()
            .map(Outcome::Rejected)
            .map_err(|e| StoreError::Corrupt(e.to_string())),
        (status, reason) => Err(StoreError::Corrupt(format!(
            "order status {status:?} with reason {reason:?}"
        ))),
    }
}

fn into_record(row: OrderRow) -> Result<OrderRecord> {
    Ok(OrderRecord {
        id: OrderId::from_uuid(row.id),
        product_id: row.product_id,
        quantity: row.quantity,
        outcome: parse_outcome(&row.status, row.reason.as_deref())?,
        fence: row.fence.map(fence_u64),
        worker: row.worker,
        attempts: row.attempts,
        created_at: row.created_at,
        decided_at: row.decided_at,
    })
}

/// A fencing token as the `bigint` column stores it.
pub(super) fn fence_i64(fence: u64) -> Result<i64> {
    i64::try_from(fence).map_err(|_| StoreError::FenceOutOfRange(fence))
}

/// A stored fence as a token (the column is never negative; clamp defensively).
pub(super) fn fence_u64(fence: i64) -> u64 {
    u64::try_from(fence).unwrap_or(0)
}
