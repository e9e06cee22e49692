//! Errors from the order store.

use crate::order::ProductId;

/// Everything that can go wrong talking to the store.
///
/// The domain cases ([`StoreError::StaleFence`], [`StoreError::UnknownProduct`],
/// [`StoreError::InsufficientStock`]) mean the write was refused and nothing changed; the
/// infrastructure cases wrap sqlx and may or may not be worth a retry ([`StoreError::is_transient`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A newer lock holder has claimed the product: the row carries fence `current`, which is not
    /// this caller's token. The caller's write was refused (rolled back); it must not retry with the
    /// same token.
    #[error("stale fencing token: product row now carries fence {current}")]
    StaleFence {
        /// The fence the product row carries now.
        current: u64,
    },
    /// No product with this id exists.
    #[error("unknown product {0}")]
    UnknownProduct(ProductId),
    /// The fence still matched, but the stock is lower than the order's quantity: something outside
    /// the fenced path (an operator's `set_stock`, the unsafe unfenced path) changed it after the
    /// claim. Nothing was written; re-read and decide again.
    #[error(
        "product {product_id} has {stock} in stock, fewer than the {quantity} the commit assumed"
    )]
    InsufficientStock {
        /// The product.
        product_id: ProductId,
        /// The stock found at commit time.
        stock: i32,
        /// The quantity the caller wanted to sell.
        quantity: i32,
    },
    /// A fencing token above `i64::MAX` cannot be stored in the `bigint` column.
    #[error("fencing token {0} does not fit a Postgres bigint")]
    FenceOutOfRange(u64),
    /// A stored row holds a value this version does not understand (e.g. an unknown reason).
    #[error("unexpected stored value: {0}")]
    Corrupt(String),
    /// The database lacks migrations this build needs (listed); run `lockctl migrate`.
    #[error(
        "the database schema is older than this build needs: missing {0}; run `lockctl migrate`"
    )]
    SchemaBehind(String),
    /// Applying the migrations failed.
    #[error("applying migrations failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Postgres failed or could not be reached.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl StoreError {
    /// Whether retrying the same call later may succeed: connection and pool problems, and
    /// serialization failures or deadlocks reported by Postgres.
    ///
    /// - When this returns `true`, then nothing was committed by the failed call *as far as this
    ///   process can tell*; a lost reply after `COMMIT` is possible, which is why every write is
    ///   idempotent by order id.
    /// - When the error is a domain refusal ([`StoreError::StaleFence`] and friends), then this is
    ///   `false`: retrying the same call gives the same answer.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => matches!(
                    db.code().as_deref(),
                    // serialization_failure, deadlock_detected, admin/crash shutdown, cannot_connect_now
                    Some("40001" | "40P01" | "57P01" | "57P02" | "57P03")
                ),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Shorthand for results from the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
