//! The durable intake: orders recorded in Postgres before they are pushed to Redis.
//!
//! - When [`OrderStore::record_intake`] returns `Ok`, then every order of the batch has a row in
//!   `intake` (one multi-row statement per batch); recording an order id again changes nothing.
//! - When [`OrderStore::undecided_intake`] lists an order, then it was recorded at least `age`
//!   ago and had no outcome row when the statement ran; it may be decided a moment later, which
//!   is why pushing it again must be harmless (orders are idempotent by id).
//! - When [`OrderStore::prune_intake`] deletes rows, then only rows whose order has an outcome:
//!   the outcome row is the durable record from then on.
//! - Not guaranteed: the intake does not know whether an order is in Redis; the worker's sweep
//!   asks the queue.

use std::time::Duration;

use uuid::Uuid;

use super::{OrderStore, Result};
use crate::order::{OrderId, ProductId, PurchaseOrder, Quantity};

impl OrderStore {
    /// Records `orders`, bound for the pending list `queue`, in the intake in one statement;
    /// returns how many rows were new.
    #[tracing::instrument(level = "debug", skip_all, fields(orders = orders.len()), err(level = "debug"))]
    pub async fn record_intake(&self, queue: &str, orders: &[PurchaseOrder]) -> Result<u64> {
        if orders.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = orders.iter().map(|o| o.id.as_uuid()).collect();
        let products: Vec<i32> = orders.iter().map(|o| o.product_id.get()).collect();
        let quantities: Vec<i32> = orders.iter().map(|o| o.quantity.get()).collect();
        // language=PostgreSQL
        let done = sqlx::query(
            r#"
            INSERT INTO intake (id, product_id, quantity, queue)
            SELECT id, product_id, quantity, $4
            FROM UNNEST($1::uuid[], $2::integer[], $3::integer[]) AS t (id, product_id, quantity)
            ON CONFLICT (id) DO NOTHING
            "#,
        )
        .bind(&ids)
        .bind(&products)
        .bind(&quantities)
        .bind(queue)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Up to `limit` orders recorded for the pending list `queue` without an outcome, recorded
    /// at least `age` ago, oldest first.
    pub async fn undecided_intake(
        &self,
        queue: &str,
        age: Duration,
        limit: i64,
    ) -> Result<Vec<PurchaseOrder>> {
        // language=PostgreSQL
        let rows: Vec<(Uuid, i32, i32)> = sqlx::query_as(
            r#"
            SELECT i.id, i.product_id, i.quantity FROM intake i
            WHERE i.queue = $3 AND i.enqueued_at < now() - make_interval(secs => $1)
              AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = i.id)
            ORDER BY i.enqueued_at
            LIMIT $2
            "#,
        )
        .bind(age.as_secs_f64())
        .bind(limit)
        .bind(queue)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, product, quantity)| {
                Some(PurchaseOrder {
                    id: OrderId::from_uuid(id),
                    product_id: ProductId::new(product).ok()?,
                    quantity: Quantity::new(quantity).ok()?,
                })
            })
            .collect())
    }

    /// Those of `ids` that have no outcome row (yet).
    pub async fn undecided(&self, ids: &[OrderId]) -> Result<Vec<OrderId>> {
        let ids: Vec<Uuid> = ids.iter().map(OrderId::as_uuid).collect();
        // language=PostgreSQL
        let rows: Vec<Uuid> = sqlx::query_scalar(
            r#"
            SELECT t.id FROM UNNEST($1::uuid[]) AS t (id)
            WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = t.id)
            "#,
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(OrderId::from_uuid).collect())
    }

    /// Deletes up to `limit` intake rows whose order has an outcome; returns how many.
    pub async fn prune_intake(&self, limit: i64) -> Result<u64> {
        // language=PostgreSQL
        let done = sqlx::query(
            r#"
            DELETE FROM intake WHERE id IN (
                SELECT i.id FROM intake i JOIN orders o ON o.id = i.id LIMIT $1
            )
            "#,
        )
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
