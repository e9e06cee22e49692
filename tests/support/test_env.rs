//! What every integration binary needs besides its servers: waiting for a condition under a
//! deadline, the URL of a `#[sqlx::test]` database for child processes, and the reads of the
//! `orders` table that ledger checks share.
//!
//! - When [`wait_for`]'s condition holds, then it returns at once; when `within` passes first,
//!   then it panics naming what it waited for. It polls every 20 ms: sleeping is not the
//!   synchronisation, the condition is.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashMap,
    future::Future,
    time::{Duration, Instant},
};

use sqlx::PgPool;

/// Polls `condition` until it holds; panics naming `what` if `within` passes first.
pub async fn wait_for<F, Fut>(what: &str, within: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The URL of the pool's database (a `#[sqlx::test]` one), built from `DATABASE_URL` with the
/// test database's name, for the binaries a test starts.
pub fn database_url(pool: &PgPool) -> String {
    let database = pool
        .connect_options()
        .get_database()
        .expect("test database name")
        .to_owned();
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL (scripts/test exports it)");
    let mut url = url::Url::parse(&base).expect("DATABASE_URL parses");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// Rows in `orders`: the orders decided so far.
pub async fn decided(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(pool)
        .await
        .expect("count orders")
}

/// Waits until at least `n` orders are decided; panics with how many were if `within` passes.
pub async fn wait_decided(pool: &PgPool, n: i64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let decided = decided(pool).await;
        if decided >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {decided} of {n} orders decided within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every outcome row: id -> (status, reason).
pub async fn outcomes(pool: &PgPool) -> HashMap<uuid::Uuid, (String, Option<String>)> {
    let rows: Vec<(uuid::Uuid, String, Option<String>)> =
        sqlx::query_as("SELECT id, status, reason FROM orders")
            .fetch_all(pool)
            .await
            .expect("outcomes");
    rows.into_iter()
        .map(|(id, status, reason)| (id, (status, reason)))
        .collect()
}

/// Sum of fulfilled quantities of a product.
pub async fn sold(pool: &PgPool, product: i32) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(quantity), 0)::bigint FROM orders WHERE product_id = $1 AND status = 'fulfilled'",
    )
    .bind(product)
    .fetch_one(pool)
    .await
    .expect("sold")
}
