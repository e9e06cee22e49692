//! Purchase orders as the pipeline sees them: pure domain, no Redis and no SQL.
//!
//! A message on the queue is the JSON object `{"id": "<uuid>", "product_id": <int>, "quantity":
//! <int>}`; extra fields are ignored, so other programs may add their own. [`decode`] turns raw
//! queue bytes into a [`PurchaseOrder`] or a [`Poison`] that says what is wrong with it, and
//! [`Outcome`] is what the pipeline decides for an order.
//!
//! Guarantees:
//! - When a [`PurchaseOrder`] exists, then its product id is positive and its quantity is at least
//!   1: the newtypes [`ProductId`] and [`Quantity`] cannot be built otherwise, by constructor or by
//!   serde.
//! - When [`decode`] is given more than [`MAX_MESSAGE_BYTES`], then it does not parse the bytes at
//!   all and reports [`PoisonKind::TooLarge`] (dead letter).
//! - When a message has a valid `id` but a bad `product_id` or `quantity`, then the [`Poison`] carries
//!   that id and a [`RejectReason`] (`invalid_product`, `invalid_quantity` or `malformed`), so the
//!   order still gets exactly one `rejected` outcome.
//! - When the id cannot be read, then the [`Poison`] has no id and the message belongs in the dead
//!   letter list.
//! - When [`PurchaseOrder::to_json`] encodes an order, then [`decode`] of those bytes returns the
//!   same order.
//!
//! Non-guarantees:
//! - When an order names a product that does not exist, then decoding still succeeds: only the
//!   store knows the catalogue (`unknown_product` is decided there).
//! - When two messages carry the same id, then they decode to equal-id orders; de-duplication is the
//!   store's job (one outcome per id).

mod decode;
mod error;
mod outcome;

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use self::{
    decode::{MAX_MESSAGE_BYTES, Poison, PoisonKind, decode},
    error::OrderError,
    outcome::{Outcome, RejectReason, UnknownRejectReason},
};

/// The unique id of a purchase order (a UUID); one outcome is ever recorded per id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(Uuid);

impl OrderId {
    /// A fresh random (v4) order id.
    pub fn new_v4() -> Self {
        Self(Uuid::new_v4())
    }

    /// Wraps an existing UUID.
    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for OrderId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for OrderId {
    type Err = OrderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(Self)
            .map_err(|_| OrderError::InvalidId(s.to_owned()))
    }
}

/// A product id: always strictly positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i32")]
pub struct ProductId(i32);

impl ProductId {
    /// Validates a product id (`> 0`).
    pub fn new(id: i32) -> Result<Self, OrderError> {
        Self::try_from(i64::from(id))
    }

    /// The id as stored in Postgres.
    pub fn get(self) -> i32 {
        self.0
    }
}

impl TryFrom<i64> for ProductId {
    type Error = OrderError;

    fn try_from(id: i64) -> Result<Self, Self::Error> {
        match i32::try_from(id) {
            Ok(id) if id > 0 => Ok(Self(id)),
            _ => Err(OrderError::InvalidProduct(id)),
        }
    }
}

impl TryFrom<i32> for ProductId {
    type Error = OrderError;

    fn try_from(id: i32) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl From<ProductId> for i32 {
    fn from(id: ProductId) -> Self {
        id.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How many units an order buys: always at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i32")]
pub struct Quantity(i32);

impl Quantity {
    /// Validates a quantity (`>= 1`).
    pub fn new(quantity: i32) -> Result<Self, OrderError> {
        Self::try_from(i64::from(quantity))
    }

    /// The quantity as stored in Postgres.
    pub fn get(self) -> i32 {
        self.0
    }
}

impl TryFrom<i64> for Quantity {
    type Error = OrderError;

    fn try_from(quantity: i64) -> Result<Self, Self::Error> {
        match i32::try_from(quantity) {
            Ok(q) if q >= 1 => Ok(Self(q)),
            _ => Err(OrderError::InvalidQuantity(quantity)),
        }
    }
}

impl TryFrom<i32> for Quantity {
    type Error = OrderError;

    fn try_from(quantity: i32) -> Result<Self, Self::Error> {
        Self::new(quantity)
    }
}

impl From<Quantity> for i32 {
    fn from(quantity: Quantity) -> Self {
        quantity.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A request to buy `quantity` units of `product_id`, identified by `id`.
///
/// Its serde form is the queue's wire format: `{"id": "<uuid>", "product_id": <int>, "quantity":
/// <int>}`; unknown fields are ignored when deserialising.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PurchaseOrder {
    /// Unique order id; the idempotency key for the outcome.
    pub id: OrderId,
    /// The product bought; the lock and the fence are per product.
    pub product_id: ProductId,
    /// Units bought; subtracted from stock when fulfilled.
    pub quantity: Quantity,
}

impl PurchaseOrder {
    /// An order with a fresh random id.
    pub fn new(product_id: ProductId, quantity: Quantity) -> Self {
        Self {
            id: OrderId::new_v4(),
            product_id,
            quantity,
        }
    }

    /// The wire form of this order (compact JSON), as pushed to the queue.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising three plain fields into a Vec cannot fail (no maps with non-string keys,
        // no I/O); fall back to a hand-written encoding rather than panicking anyway.
        serde_json::to_vec(self).unwrap_or_else(|_| {
            format!(
                r#"{{"id":"{}","product_id":{},"quantity":{}}}"#,
                self.id, self.product_id, self.quantity
            )
            .into_bytes()
        })
    }
}
