//! Products: reading and setting stock (claiming a row with a fence is in [`super::sale`]).

use super::{OrderStore, Result, StoreError, orders::fence_u64};
use crate::order::ProductId;

impl OrderStore {
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

    /// The row's `last_fence`; `None` when the product does not exist.
    pub(super) async fn last_fence(&self, product_id: ProductId) -> Result<Option<u64>> {
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
