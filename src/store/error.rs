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
    /// Postgres failed or could not be reached. The message names what went wrong: the server's
    /// SQLSTATE code and message, or the client's I/O or pool error (never the URL).
    #[error("{}", describe(.0))]
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
                sqlx::Error::Database(db) => {
                    matches!(
                        db.code().as_deref(),
                        // serialization_failure, deadlock_detected, query_canceled (statement
                        // timeout), admin/crash shutdown, cannot_connect_now, too_many_connections
                        Some("40001" | "40P01" | "57014" | "57P01" | "57P02" | "57P03" | "53300")
                    ) || db.code().is_some_and(|code| code.starts_with("08"))
                } // connection exceptions
                _ => false,
            },
            _ => false,
        }
    }
}

impl StoreError {
    /// Whether the call failed for want of a connection (the pool timed out, or Postgres refused
    /// a new one: `too_many_connections`, `cannot_connect_now`), so nothing was sent.
    pub fn is_no_connection(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::PoolTimedOut) => true,
            StoreError::Database(sqlx::Error::Database(db)) => {
                matches!(db.code().as_deref(), Some("53300" | "57P03"))
            }
            _ => false,
        }
    }
}

/// What an sqlx error says, for logs: Postgres's own errors with their SQLSTATE code (e.g.
/// `Postgres error 53300: sorry, too many clients already`), others as sqlx words them.
fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("Postgres error {code}: {}", db.message()),
            None => format!("Postgres error: {}", db.message()),
        },
        sqlx::Error::PoolTimedOut => {
            "no Postgres connection within the pool's acquire timeout (Postgres down, \
             unreachable, or every connection busy)"
                .to_owned()
        }
        other => format!("Postgres: {other}"),
    }
}

/// Shorthand for results from the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
