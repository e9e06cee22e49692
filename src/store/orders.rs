//! Recording order outcomes outside the fenced sale: the unfenced path, rejections of poison
//! messages and unknown products, and reading outcomes back.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::{CommitResult, OrderRecord, OrderStore, OrderTally, Result, StoreError};
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

impl OrderStore {
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

pub(super) async fn existing_outcome_opt(
    conn: &mut PgConnection,
    id: OrderId,
) -> Result<Option<Outcome>> {
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

/// A stored status and reason as an outcome. A rejection for a reason this version does not
/// know (a newer version wrote it) is [`RejectReason::Unrecognized`], never an error: the order
/// is decided, and the stored text is shown as it is.
pub(super) fn parse_outcome(status: &str, reason: Option<&str>) -> Result<Outcome> {
    match (status, reason) {
        ("fulfilled", None) => Ok(Outcome::Fulfilled),
        ("rejected", Some(reason)) => Ok(Outcome::Rejected(
            reason.parse().unwrap_or(RejectReason::Unrecognized),
        )),
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
        reason_text: row.reason,
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
