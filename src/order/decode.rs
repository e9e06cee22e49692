//! Classifying raw queue bytes: a [`PurchaseOrder`] or a [`Poison`] that says what to do instead.

use std::fmt;

use serde_json::{Map, Value};

use super::{OrderId, ProductId, PurchaseOrder, Quantity, RejectReason};

/// Messages larger than this (64 KiB) are dead-lettered without being parsed.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A message that is not a valid purchase order.
///
/// The variant decides what the worker does with it: a [`Poison::Rejectable`] message had a
/// readable order id, so that order gets a `rejected` outcome like any other; a
/// [`Poison::DeadLetter`] message cannot be tied to an order and goes to the dead letter list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poison {
    /// The order id is valid but the rest is not: record a `rejected` outcome with `reason`.
    Rejectable {
        /// The order the message was for.
        order_id: OrderId,
        /// The raw product id, when it was an integer that fits the column (for the row).
        product_id: Option<i32>,
        /// The raw quantity, when it was an integer that fits the column (for the row).
        quantity: Option<i32>,
        /// Why the order is rejected (`invalid_product`, `invalid_quantity` or `malformed`).
        reason: RejectReason,
        /// A human-readable explanation for logs.
        detail: String,
    },
    /// No order id could be read: the message goes to the dead letter list with `reason`.
    DeadLetter {
        /// Why the message is unusable.
        kind: PoisonKind,
        /// A human-readable explanation for logs.
        detail: String,
    },
}

impl Poison {
    /// The order id, when the message had a valid one.
    pub fn order_id(&self) -> Option<OrderId> {
        match self {
            Poison::Rejectable { order_id, .. } => Some(*order_id),
            Poison::DeadLetter { .. } => None,
        }
    }

    /// The short snake_case reason recorded in Postgres or in the dead letter entry.
    pub fn reason(&self) -> &'static str {
        match self {
            Poison::Rejectable { reason, .. } => reason.as_str(),
            Poison::DeadLetter { kind, .. } => kind.as_str(),
        }
    }

    /// The human-readable explanation.
    pub fn detail(&self) -> &str {
        match self {
            Poison::Rejectable { detail, .. } | Poison::DeadLetter { detail, .. } => detail,
        }
    }
}

impl fmt::Display for Poison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason(), self.detail())
    }
}

/// Why a message without a usable order id is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoisonKind {
    /// Larger than [`MAX_MESSAGE_BYTES`]; not parsed.
    TooLarge,
    /// Not valid JSON (or not UTF-8).
    NotJson,
    /// Valid JSON, but not an object.
    NotAnObject,
    /// The object has no `id` field.
    MissingId,
    /// The `id` field is not a UUID string.
    InvalidId,
}

impl PoisonKind {
    /// The snake_case name stored in the dead letter entry.
    pub fn as_str(self) -> &'static str {
        match self {
            PoisonKind::TooLarge => "too_large",
            PoisonKind::NotJson => "not_json",
            PoisonKind::NotAnObject => "not_an_object",
            PoisonKind::MissingId => "missing_id",
            PoisonKind::InvalidId => "invalid_id",
        }
    }
}

impl fmt::Display for PoisonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decodes one queue message.
///
/// - When the bytes are a JSON object with a UUID `id`, a positive integer `product_id` and an
///   integer `quantity >= 1` (both fitting 32 bits), then the order is returned; other fields are
///   ignored.
/// - When the id is valid but `product_id` is missing or not an integer, then
///   [`RejectReason::Malformed`]; when it is an integer out of range, then
///   [`RejectReason::InvalidProduct`]. The same for `quantity` with
///   [`RejectReason::InvalidQuantity`]. The product is checked first.
/// - When there is no valid id (or the message is too large, not JSON or not an object), then
///   [`Poison::DeadLetter`].
///
/// ```
/// use lockstock::order::{decode, Poison, RejectReason};
///
/// let order = decode(br#"{"id":"6f1c1c8e-3b5e-4a55-9a1e-0c7d2b4e8f10","product_id":1,"quantity":2}"#)
///     .unwrap();
/// assert_eq!(order.quantity.get(), 2);
///
/// let poison = decode(br#"{"id":"6f1c1c8e-3b5e-4a55-9a1e-0c7d2b4e8f10","product_id":1,"quantity":0}"#)
///     .unwrap_err();
/// assert!(matches!(poison, Poison::Rejectable { reason: RejectReason::InvalidQuantity, .. }));
/// ```
pub fn decode(bytes: &[u8]) -> Result<PurchaseOrder, Poison> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(dead(
            PoisonKind::TooLarge,
            format!(
                "{} bytes is over the {MAX_MESSAGE_BYTES}-byte limit",
                bytes.len()
            ),
        ));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| dead(PoisonKind::NotJson, format!("not JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(dead(
            PoisonKind::NotAnObject,
            format!("expected a JSON object, got {}", json_type(&value)),
        ));
    };

    let order_id = match object.get("id") {
        None => return Err(dead(PoisonKind::MissingId, "no `id` field".to_owned())),
        Some(Value::String(s)) => s
            .parse::<OrderId>()
            .map_err(|e| dead(PoisonKind::InvalidId, e.to_string()))?,
        Some(other) => {
            return Err(dead(
                PoisonKind::InvalidId,
                format!("`id` must be a UUID string, got {}", json_type(other)),
            ));
        }
    };

    let product = int_field(&object, "product_id");
    let quantity = int_field(&object, "quantity");
    let reject = |reason, detail: String| Poison::Rejectable {
        order_id,
        product_id: product.fits_i32(),
        quantity: quantity.fits_i32(),
        reason,
        detail,
    };

    let product_id = match product {
        IntField::Int(n) => i64::try_from(n)
            .ok()
            .and_then(|n| ProductId::try_from(n).ok())
            .ok_or_else(|| {
                reject(
                    RejectReason::InvalidProduct,
                    format!("product_id must be a positive 32-bit integer, got {n}"),
                )
            })?,
        IntField::Missing => {
            return Err(reject(
                RejectReason::Malformed,
                "no `product_id` field".to_owned(),
            ));
        }
        IntField::WrongType(t) => {
            return Err(reject(
                RejectReason::Malformed,
                format!("`product_id` must be an integer, got {t}"),
            ));
        }
    };
    let quantity = match quantity {
        IntField::Int(n) => i64::try_from(n)
            .ok()
            .and_then(|n| Quantity::try_from(n).ok())
            .ok_or_else(|| {
                reject(
                    RejectReason::InvalidQuantity,
                    format!("quantity must be an integer of at least 1 that fits 32 bits, got {n}"),
                )
            })?,
        IntField::Missing => {
            return Err(reject(
                RejectReason::Malformed,
                "no `quantity` field".to_owned(),
            ));
        }
        IntField::WrongType(t) => {
            return Err(reject(
                RejectReason::Malformed,
                format!("`quantity` must be an integer, got {t}"),
            ));
        }
    };

    Ok(PurchaseOrder {
        id: order_id,
        product_id,
        quantity,
    })
}

fn dead(kind: PoisonKind, detail: String) -> Poison {
    Poison::DeadLetter { kind, detail }
}

/// An integer field as found in the object, before range checks.
#[derive(Clone, Copy)]
enum IntField {
    Missing,
    WrongType(&'static str),
    Int(i128),
}

impl IntField {
    fn fits_i32(self) -> Option<i32> {
        match self {
            IntField::Int(n) => i32::try_from(n).ok(),
            _ => None,
        }
    }
}

fn int_field(object: &Map<String, Value>, name: &str) -> IntField {
    match object.get(name) {
        None => IntField::Missing,
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => IntField::Int(i128::from(i)),
            (None, Some(u)) => IntField::Int(i128::from(u)),
            (None, None) => IntField::WrongType("a fractional number"),
        },
        Some(other) => IntField::WrongType(json_type(other)),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const ID: &str = "6f1c1c8e-3b5e-4a55-9a1e-0c7d2b4e8f10";

    fn rejected(json: &str) -> (RejectReason, Option<i32>, Option<i32>) {
        match decode(json.as_bytes()) {
            Err(Poison::Rejectable {
                order_id,
                product_id,
                quantity,
                reason,
                ..
            }) => {
                assert_eq!(order_id.to_string(), ID);
                (reason, product_id, quantity)
            }
            other => panic!("expected a rejectable poison for {json}, got {other:?}"),
        }
    }

    fn dead_kind(bytes: &[u8]) -> PoisonKind {
        match decode(bytes) {
            Err(Poison::DeadLetter { kind, .. }) => kind,
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }

    /// A well-formed message decodes, extra fields are ignored, and encoding round-trips.
    #[test]
    fn a_valid_message_decodes_and_round_trips() {
        let json = format!(r#"{{"id":"{ID}","product_id":3,"quantity":2,"note":"gift","x":[1]}}"#);
        let order = decode(json.as_bytes()).unwrap();
        assert_eq!(order.id.to_string(), ID);
        assert_eq!(order.product_id.get(), 3);
        assert_eq!(order.quantity.get(), 2);
        assert_eq!(decode(&order.to_json()).unwrap(), order);
        let back: PurchaseOrder = serde_json::from_slice(&order.to_json()).unwrap();
        assert_eq!(back, order);
    }

    /// Bad product ids and quantities with a readable id become rejections naming the reason.
    #[test]
    fn a_readable_id_with_bad_fields_is_rejected_with_the_reason() {
        let r = |rest: &str| rejected(&format!(r#"{{"id":"{ID}",{rest}}}"#));
        assert_eq!(
            r(r#""product_id":1,"quantity":0"#),
            (RejectReason::InvalidQuantity, Some(1), Some(0))
        );
        assert_eq!(
            r(r#""product_id":1,"quantity":-3"#),
            (RejectReason::InvalidQuantity, Some(1), Some(-3))
        );
        assert_eq!(
            r(r#""product_id":1,"quantity":99999999999"#),
            (RejectReason::InvalidQuantity, Some(1), None)
        );
        assert_eq!(
            r(r#""product_id":0,"quantity":1"#),
            (RejectReason::InvalidProduct, Some(0), Some(1))
        );
        assert_eq!(
            r(r#""product_id":-7,"quantity":1"#),
            (RejectReason::InvalidProduct, Some(-7), Some(1))
        );
        assert_eq!(
            r(r#""product_id":"1","quantity":1"#),
            (RejectReason::Malformed, None, Some(1))
        );
        assert_eq!(
            r(r#""product_id":1.5,"quantity":1"#),
            (RejectReason::Malformed, None, Some(1))
        );
        assert_eq!(
            r(r#""product_id":1,"quantity":null"#),
            (RejectReason::Malformed, Some(1), None)
        );
        assert_eq!(
            r(r#""product_id":1"#),
            (RejectReason::Malformed, Some(1), None)
        );
        assert_eq!(
            r(r#""quantity":1"#),
            (RejectReason::Malformed, None, Some(1))
        );
    }

    /// Messages without a usable id are dead letters, and oversize ones are not even parsed.
    #[test]
    fn a_message_without_a_usable_id_is_a_dead_letter() {
        assert_eq!(dead_kind(b"not json at all"), PoisonKind::NotJson);
        assert_eq!(dead_kind(b"\xff\xfe"), PoisonKind::NotJson);
        assert_eq!(dead_kind(b"[1,2,3]"), PoisonKind::NotAnObject);
        assert_eq!(
            dead_kind(br#"{"product_id":1,"quantity":1}"#),
            PoisonKind::MissingId
        );
        assert_eq!(
            dead_kind(br#"{"id":"nope","product_id":1,"quantity":1}"#),
            PoisonKind::InvalidId
        );
        assert_eq!(
            dead_kind(br#"{"id":42,"product_id":1,"quantity":1}"#),
            PoisonKind::InvalidId
        );

        let mut big = format!(r#"{{"id":"{ID}","product_id":1,"quantity":1,"pad":""#).into_bytes();
        big.resize(MAX_MESSAGE_BYTES + 1, b'a');
        assert_eq!(dead_kind(&big), PoisonKind::TooLarge);
    }

    /// The newtypes refuse out-of-range values through constructors and serde alike.
    #[test]
    fn newtypes_refuse_out_of_range_values() {
        assert!(ProductId::new(0).is_err());
        assert!(ProductId::new(1).is_ok());
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(i32::MAX).is_ok());
        assert!(serde_json::from_str::<Quantity>("0").is_err());
        assert!(serde_json::from_str::<ProductId>("4294967296").is_err());
        assert!(serde_json::from_str::<Quantity>("2").is_ok());
    }

    /// Every reject reason round-trips through its stored name and its serde name.
    #[test]
    fn reject_reasons_round_trip_through_their_names() {
        for reason in RejectReason::ALL {
            assert_eq!(reason.as_str().parse::<RejectReason>().unwrap(), reason);
            assert_eq!(
                serde_json::to_string(&reason).unwrap(),
                format!("\"{}\"", reason.as_str())
            );
        }
    }
}
