//! Validation errors for the order newtypes.

/// Why a value is not a valid part of a purchase order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// The order id is not a UUID.
    #[error("order id must be a UUID, got {0:?}")]
    InvalidId(String),
    /// The product id is not a positive 32-bit integer.
    #[error("product_id must be a positive 32-bit integer, got {0}")]
    InvalidProduct(i64),
    /// The quantity is not an integer between 1 and 2^31 - 1.
    #[error("quantity must be an integer of at least 1 (and fit in 32 bits), got {0}")]
    InvalidQuantity(i64),
}
