//! `Idempotency-Key`s: which order a key stands for and the answer its first request got.
//!
//! - When a key is claimed for the first time, then it is bound to the caller's order id and the
//!   request's description; every later claim of the key returns that order id (and the stored
//!   answer once there is one), whichever process asks, concurrently or after a restart.
//! - When a key is claimed with a different request description, then
//!   [`KeyClaim::Mismatch`]: a key is never reused for another request.
//! - When two answers are stored for one key (two retries racing), then the first stays and both
//!   callers get it back ([`OrderStore::store_answer`]).
//! - Not guaranteed: expiry. Keys stay until an operator deletes old rows.

use uuid::Uuid;

use super::{OrderStore, Result, StoreError};
use crate::order::OrderId;

/// The answer a request with a key got: HTTP status and JSON body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body, as sent.
    pub body: String,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key stands for this order; no answer is stored yet (first request, or an earlier one
    /// that failed or is still running): decide (again) under this order id.
    Open(OrderId),
    /// The key was answered before: send this again.
    Answered(OrderId, StoredAnswer),
    /// The key was first used for another request.
    Mismatch,
}

/// A row of `idempotency_keys` as a claim reads it.
#[derive(sqlx::FromRow)]
struct KeyRow {
    request: String,
    order_id: Uuid,
    status: Option<i16>,
    body: Option<String>,
}

impl OrderStore {
    /// Binds `key` to `order_id` and `request` unless it is bound already; says what it stands for.
    pub async fn claim_idempotency_key(
        &self,
        key: &str,
        request: &str,
        order_id: OrderId,
    ) -> Result<KeyClaim> {
        // A concurrent first claim may commit between our insert's conflict check and our
        // select's snapshot; the next statement sees it, so try again (twice is enough).
        for _ in 0..3 {
            // language=PostgreSQL
            let row: Option<KeyRow> = sqlx::query_as(
                r#"
                WITH inserted AS (
                    INSERT INTO idempotency_keys (key, request, order_id)
                    VALUES ($1, $2, $3)
                    ON CONFLICT (key) DO NOTHING
                    RETURNING request, order_id, status, body
                )
                SELECT request, order_id, status, body FROM inserted
                UNION ALL
                SELECT request, order_id, status, body FROM idempotency_keys WHERE key = $1
                LIMIT 1
                "#,
            )
            .bind(key)
            .bind(request)
            .bind(order_id.as_uuid())
            .fetch_optional(&self.pool)
            .await?;
            let Some(row) = row else { continue };
            if row.request != request {
                return Ok(KeyClaim::Mismatch);
            }
            let order_id = OrderId::from_uuid(row.order_id);
            return Ok(match (row.status, row.body) {
                (Some(status), Some(body)) => KeyClaim::Answered(
                    order_id,
                    StoredAnswer {
                        status: u16::try_from(status).unwrap_or(500),
                        body,
                    },
                ),
                _ => KeyClaim::Open(order_id),
            });
        }
        Err(StoreError::Corrupt(format!(
            "idempotency key {key:?} neither inserted nor found"
        )))
    }

    /// Stores `answer` for `key` unless one is stored already; returns the stored one.
    pub async fn store_answer(&self, key: &str, answer: StoredAnswer) -> Result<StoredAnswer> {
        // language=PostgreSQL
        let row: Option<(i16, String)> = sqlx::query_as(
            r#"
            UPDATE idempotency_keys SET status = $2, body = $3, answered_at = now()
             WHERE key = $1 AND status IS NULL
            RETURNING status, body
            "#,
        )
        .bind(key)
        .bind(i16::try_from(answer.status).unwrap_or(500))
        .bind(&answer.body)
        .fetch_optional(&self.pool)
        .await?;
        if row.is_some() {
            return Ok(answer);
        }
        // language=PostgreSQL
        let (status, body): (Option<i16>, Option<String>) =
            sqlx::query_as("SELECT status, body FROM idempotency_keys WHERE key = $1")
                .bind(key)
                .fetch_one(&self.pool)
                .await?;
        Ok(match (status, body) {
            (Some(status), Some(body)) => StoredAnswer {
                status: u16::try_from(status).unwrap_or(500),
                body,
            },
            _ => answer,
        })
    }
}
