//! Read-only views for operators: the product catalogue, recent orders, outcome counts.
//!
//! - When these run, then they read committed rows only and lock nothing: they never slow down a
//!   lock holder's claim or commit.
//! - Not guaranteed: consistency between two calls (a product's stock and the recent orders are
//!   read in separate statements).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    OrderRecord, OrderStore, Result,
    orders::{fence_u64, parse_outcome},
};
use crate::order::OrderId;

/// One product as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ProductRow {
    /// The product id.
    pub id: i32,
    /// Its name.
    pub name: String,
    /// Units in stock (negative only after the unsafe unlocked path oversold).
    pub stock: i32,
    /// The price as Postgres prints it (e.g. `999.00`), to keep the decimal exact.
    pub price: String,
    /// The highest fencing token that claimed the row (0 if none).
    pub last_fence: i64,
}

/// How many orders have one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeCount {
    /// `fulfilled` or `rejected`.
    pub status: String,
    /// The reject reason (`None` for fulfilled).
    pub reason: Option<String>,
    /// Number of orders.
    pub count: i64,
}

impl OrderStore {
    /// Every product, by id.
    pub async fn list_products(&self) -> Result<Vec<ProductRow>> {
        // language=PostgreSQL
        let rows = sqlx::query_as(
            r#"
            SELECT id, name, stock, price::text AS price, last_fence
              FROM products
             ORDER BY id
            "#,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    /// The `limit` most recently decided orders, newest first.
    pub async fn recent_orders(&self, limit: i64) -> Result<Vec<OrderRecord>> {
        // language=PostgreSQL
        let rows: Vec<RecentRow> = sqlx::query_as(
            r#"
            SELECT id, product_id, quantity, status, reason, fence, worker, attempts,
                   created_at, decided_at
              FROM orders
             ORDER BY decided_at DESC, id
             LIMIT $1
            "#,
        )
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(RecentRow::into_record).collect()
    }

    /// Decided orders counted by status and reason.
    pub async fn outcome_counts(&self) -> Result<Vec<OutcomeCount>> {
        // language=PostgreSQL
        let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            r#"
            SELECT status, reason, count(*)::bigint
              FROM orders
             GROUP BY status, reason
             ORDER BY status, reason
            "#,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(status, reason, count)| OutcomeCount {
                status,
                reason,
                count,
            })
            .collect())
    }

    /// Takes a pooled connection and checks that it answers (`SELECT 1`): for a caller that must
    /// hold its connection before it takes a lock.
    pub async fn checked_connection(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        let mut conn = self.pool.acquire().await?;
        // language=PostgreSQL
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        Ok(conn)
    }

    /// Whether Postgres answers a trivial query (for readiness checks).
    pub async fn ping(&self) -> Result<()> {
        // language=PostgreSQL
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// An `orders` row as [`OrderStore::recent_orders`] reads it.
#[derive(sqlx::FromRow)]
struct RecentRow {
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

impl RecentRow {
    fn into_record(self) -> Result<OrderRecord> {
        let outcome = parse_outcome(&self.status, self.reason.as_deref())?;
        Ok(OrderRecord {
            id: OrderId::from_uuid(self.id),
            product_id: self.product_id,
            quantity: self.quantity,
            outcome,
            reason_text: self.reason,
            fence: self.fence.map(fence_u64),
            worker: self.worker,
            attempts: self.attempts,
            created_at: self.created_at,
            decided_at: self.decided_at,
        })
    }
}
