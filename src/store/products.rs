//! Products: claiming a row with a fencing token, reading and setting stock.

use super::{
    OrderStore, Result, StoreError,
    orders::{fence_i64, fence_u64},
};
use crate::order::ProductId;

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
        .fetch_optional(&self.pool)
        .await?;
        if let Some(stock) = stock {
            return Ok(stock);
        }
        // Only used to say why: the fence never decreases, so a row that refused the claim still
        // carries a fence >= ours.
        match self.last_fence(product_id).await? {
            Some(current) => Err(StoreError::StaleFence { current }),
            None => Err(StoreError::UnknownProduct(product_id)),
        }
    }

    /// The product's current stock.
    ///
    /// - When the product does not exist, then [`StoreError::UnknownProduct`].
    pub async fn stock(&self, product_id: ProductId) -> Result<i32> {
        // language=PostgreSQL
        let stock: Option<i32> = sqlx::query_scalar(
            r#"
            SELECT stock FROM products WHERE id = $1
            "#,
        )
        .bind(product_id.get())
        .fetch_optional(&self.pool)
        .await?;
        stock.ok_or(StoreError::UnknownProduct(product_id))
    }

    /// Sets the product's stock (an operator's restock or a test's arrange step). Leaves the fence
    /// alone.
    ///
    /// - When the product does not exist, then [`StoreError::UnknownProduct`].
    pub async fn set_stock(&self, product_id: ProductId, stock: i32) -> Result<()> {
        // language=PostgreSQL
        let done = sqlx::query(
            r#"
            UPDATE products SET stock = $2, updated_at = now() WHERE id = $1
            "#,
        )
        .bind(product_id.get())
        .bind(stock)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownProduct(product_id));
        }
        Ok(())
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

    /// Makes products `1..=count` exist with `stock` each (upsert), for tests and benchmarks.
    ///
    /// - When a product already exists, then only its stock is set; its name, price and fence are
    ///   kept (a fence never goes down).
    /// - When it is new, then it is named `product <id>` and priced 1.00.
    pub async fn create_products(&self, count: i32, stock: i32) -> Result<()> {
        // language=PostgreSQL
        sqlx::query(
            r#"
            INSERT INTO products (id, name, stock, price)
            SELECT g, 'product ' || g, $2, 1.00 FROM generate_series(1, $1) AS g
            ON CONFLICT (id) DO UPDATE SET stock = EXCLUDED.stock, updated_at = now()
            "#,
        )
        .bind(count)
        .bind(stock)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn last_fence(&self, product_id: ProductId) -> Result<Option<u64>> {
        // language=PostgreSQL
        let fence: Option<i64> = sqlx::query_scalar(
            r#"
            SELECT last_fence FROM products WHERE id = $1
            "#,
        )
        .bind(product_id.get())
        .fetch_optional(&self.pool)
        .await?;
        Ok(fence.map(fence_u64))
    }
}
