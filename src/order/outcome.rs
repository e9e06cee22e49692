//! What the pipeline decided for an order.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Why an order was rejected; stored in `orders.reason` as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The product had less stock than the order's quantity when the lock holder read it.
    OutOfStock,
    /// No product with that id exists.
    UnknownProduct,
    /// The message's quantity was an integer below 1 or too large.
    InvalidQuantity,
    /// The message's product id was an integer below 1 or too large.
    InvalidProduct,
    /// A field was missing or of the wrong JSON type.
    Malformed,
    /// A reason this version does not know, read back from a row a newer version wrote (the
    /// stored text is kept alongside, e.g. `OrderRecord::reason_text`). Never written: not in
    /// [`RejectReason::ALL`], never parsed from a name.
    Unrecognized,
}

impl RejectReason {
    /// Every reason, for exhaustive tests and docs.
    pub const ALL: [RejectReason; 5] = [
        RejectReason::OutOfStock,
        RejectReason::UnknownProduct,
        RejectReason::InvalidQuantity,
        RejectReason::InvalidProduct,
        RejectReason::Malformed,
    ];

    /// The stored and serialised name, e.g. `out_of_stock`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::OutOfStock => "out_of_stock",
            RejectReason::UnknownProduct => "unknown_product",
            RejectReason::InvalidQuantity => "invalid_quantity",
            RejectReason::InvalidProduct => "invalid_product",
            RejectReason::Malformed => "malformed",
            RejectReason::Unrecognized => "unrecognized",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unrecognised reject reason name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reject reason {0:?}")]
pub struct UnknownRejectReason(pub String);

impl FromStr for RejectReason {
    type Err = UnknownRejectReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RejectReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRejectReason(s.to_owned()))
    }
}

/// The single decision recorded for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", content = "reason", rename_all = "snake_case")]
pub enum Outcome {
    /// The stock was decremented by the order's quantity.
    Fulfilled,
    /// Nothing was sold, for the given reason.
    Rejected(RejectReason),
}

impl Outcome {
    /// The stored `orders.status`: `fulfilled` or `rejected`.
    pub fn status(self) -> &'static str {
        match self {
            Outcome::Fulfilled => "fulfilled",
            Outcome::Rejected(_) => "rejected",
        }
    }

    /// The stored `orders.reason`: `None` when fulfilled.
    pub fn reason(self) -> Option<RejectReason> {
        match self {
            Outcome::Fulfilled => None,
            Outcome::Rejected(reason) => Some(reason),
        }
    }

    /// Decides from the stock a lock holder read: fulfilled when `stock >= quantity`, otherwise
    /// rejected as `out_of_stock`.
    pub fn from_stock(stock: i32, quantity: super::Quantity) -> Self {
        if stock >= quantity.get() {
            Outcome::Fulfilled
        } else {
            Outcome::Rejected(RejectReason::OutOfStock)
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Fulfilled => f.write_str("fulfilled"),
            Outcome::Rejected(reason) => write!(f, "rejected ({reason})"),
        }
    }
}
