//! Building, validating and enqueueing purchase orders (used by the `producer` binary).
//!
//! Orders come either generated ([`OrderProducer::push_generated`]: N identical orders for one
//! product, each with a fresh id) or from JSON lines ([`parse_json_lines`]: one order object per
//! line, as on the queue, with `id` optional), and are pushed in pipelined batches.
//!
//! Guarantees:
//! - When [`parse_json_lines`] meets a line that is not a valid order (not JSON, a missing or
//!   mistyped field, `quantity < 1`, `product_id < 1`, an `id` that is not a UUID, bytes that are
//!   not UTF-8), then it returns [`ProducerError::InvalidLine`] naming the 1-based line number and
//!   the problem; parsing the whole input before pushing means bad input enqueues nothing.
//! - When a line has no `id` (or `"id": null`), then the order gets a fresh random (v4) id.
//! - When orders are pushed, then they are pushed in input order, in batches of
//!   [`OrderProducer::DEFAULT_BATCH`] (configurable), one pipelined round trip per batch, and the
//!   progress callback hears the running total after each batch.
//! - Every message pushed is the canonical wire form `{"id","product_id","quantity"}`, so the
//!   workers' decoder accepts it.
//! - When the producer has an intake ([`OrderProducer::with_intake`]), then each batch is recorded
//!   in Postgres (one multi-row statement) *before* it is pushed: an order reported as enqueued
//!   survives Redis losing its data, because the workers' recovery sweep pushes it again. When
//!   recording fails, nothing of that batch is pushed.
//!
//! Non-guarantees:
//! - Without an intake (`producer --no-intake`), an order lives only in Redis until it is decided:
//!   a Redis restart without persistence loses it.
//! - When pushing fails after the batch was recorded, then the batch is in the intake but not in
//!   Redis; the sweep pushes it once it is older than its stale age (so a producer that retries
//!   and a sweep may both push it: harmless, orders are idempotent by id).
//! - When pushing fails part-way (Redis goes away), then the batches already pushed stay queued;
//!   the error says how far it got only through the progress callback.
//! - Extra fields on an input line are validated away, not forwarded: the queue gets the three
//!   wire fields.
//! - Product ids are not checked against the catalogue (the workers reject unknown products).

use std::io::{self, BufRead};

use serde::Deserialize;

use crate::{
    order::{OrderId, ProductId, PurchaseOrder, Quantity},
    queue::{JobQueue, QueueError},
    store::{OrderStore, StoreError},
};

/// Why producing orders failed.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// An input line is not a valid order.
    #[error("line {line}: {reason}")]
    InvalidLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The input could not be read.
    #[error("reading line {line} failed")]
    Read {
        /// 1-based number of the line being read.
        line: usize,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Pushing to the queue failed.
    #[error("pushing orders to the queue failed")]
    Queue(#[from] QueueError),
    /// Recording orders in the durable intake failed; the batch was not pushed.
    #[error("recording orders in the intake failed")]
    Intake(#[source] StoreError),
}

/// Shorthand for results from the producer.
pub type Result<T, E = ProducerError> = std::result::Result<T, E>;

/// Pushes purchase orders onto a [`JobQueue`] in pipelined batches.
///
/// ```rust,no_run
/// use lockstock::{
///     order::{ProductId, Quantity},
///     producer::OrderProducer,
///     queue::{JobQueue, QueueConfig},
/// };
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let queue = JobQueue::connect("redis://127.0.0.1:6379", QueueConfig::default()).await?;
/// let producer = OrderProducer::new(queue);
/// let pushed = producer
///     .push_generated(ProductId::new(1)?, 100, Quantity::new(1)?, |done| eprintln!("{done}"))
///     .await?;
/// assert_eq!(pushed, 100);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct OrderProducer {
    /// Where orders go.
    queue: JobQueue,
    /// Orders per pipelined round trip.
    batch_size: usize,
    /// Where each batch is recorded before it is pushed (`None`: Redis only, no guarantee).
    intake: Option<OrderStore>,
}

impl OrderProducer {
    /// Orders per pipelined round trip unless changed with [`OrderProducer::with_batch_size`].
    pub const DEFAULT_BATCH: usize = 500;

    /// A producer pushing onto `queue`.
    pub fn new(queue: JobQueue) -> Self {
        Self {
            queue,
            batch_size: Self::DEFAULT_BATCH,
            intake: None,
        }
    }

    /// Records every batch in `store`'s durable intake before pushing it (see the module docs).
    pub fn with_intake(mut self, store: OrderStore) -> Self {
        self.intake = Some(store);
        self
    }

    /// Sets the batch size (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The queue orders are pushed to.
    pub fn queue(&self) -> &JobQueue {
        &self.queue
    }

    /// Pushes `orders` in order; `progress` gets the running total after each batch. Returns how
    /// many were pushed.
    pub async fn push_orders(
        &self,
        orders: &[PurchaseOrder],
        mut progress: impl FnMut(usize),
    ) -> Result<usize> {
        let mut pushed = 0;
        for batch in orders.chunks(self.batch_size) {
            pushed += self.push_batch(batch).await?;
            progress(pushed);
        }
        Ok(pushed)
    }

    /// Pushes `count` orders of `quantity` units of `product`, each with a fresh id, generating
    /// one batch at a time; `progress` gets the running total after each batch.
    pub async fn push_generated(
        &self,
        product: ProductId,
        count: usize,
        quantity: Quantity,
        mut progress: impl FnMut(usize),
    ) -> Result<usize> {
        let mut pushed = 0;
        while pushed < count {
            let n = self.batch_size.min(count - pushed);
            let batch: Vec<PurchaseOrder> = (0..n)
                .map(|_| PurchaseOrder::new(product, quantity))
                .collect();
            pushed += self.push_batch(&batch).await?;
            progress(pushed);
        }
        Ok(pushed)
    }

    /// Records `batch` in the intake (when there is one), then pushes it in one round trip.
    async fn push_batch(&self, batch: &[PurchaseOrder]) -> Result<usize> {
        if let Some(store) = &self.intake {
            store
                .record_intake(self.queue.keys().pending(), batch)
                .await
                .map_err(ProducerError::Intake)?;
        }
        let payloads: Vec<Vec<u8>> = batch.iter().map(PurchaseOrder::to_json).collect();
        Ok(self.queue.push_batch(&payloads).await?)
    }
}

/// One input line: the wire format with `id` optional.
#[derive(Deserialize)]
struct InputLine {
    #[serde(default)]
    id: Option<OrderId>,
    product_id: ProductId,
    quantity: Quantity,
}

/// Parses JSON lines into orders, refusing the first invalid line (see the module guarantees).
/// Blank lines are skipped.
pub fn parse_json_lines(reader: impl BufRead) -> Result<Vec<PurchaseOrder>> {
    let mut orders = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let number = index + 1;
        let line = match line {
            Ok(line) => line,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(ProducerError::InvalidLine {
                    line: number,
                    reason: "not valid UTF-8".to_owned(),
                });
            }
            Err(source) => {
                return Err(ProducerError::Read {
                    line: number,
                    source,
                });
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let order = parse_json_line(&line).map_err(|reason| ProducerError::InvalidLine {
            line: number,
            reason,
        })?;
        orders.push(order);
    }
    Ok(orders)
}

/// Parses one line; the error names the problem (and its column).
fn parse_json_line(line: &str) -> Result<PurchaseOrder, String> {
    let input: InputLine = serde_json::from_str(line).map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C"; the line is always 1 here, keep the column.
        let message = message
            .rsplit_once(" at line ")
            .map_or(message.as_str(), |(head, _)| head)
            .to_owned();
        if e.column() > 0 {
            format!("{message} (column {})", e.column())
        } else {
            message
        }
    })?;
    Ok(PurchaseOrder {
        id: input.id.unwrap_or_else(OrderId::new_v4),
        product_id: input.product_id,
        quantity: input.quantity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(input: &str) -> (usize, String) {
        match parse_json_lines(input.as_bytes()) {
            Err(ProducerError::InvalidLine { line, reason }) => (line, reason),
            other => panic!("expected an invalid line, got {other:?}"),
        }
    }

    /// Bad lines are refused with their line number and a readable reason.
    #[test]
    fn bad_lines_are_refused_with_their_line_number() {
        let good = r#"{"product_id":1,"quantity":1}"#;
        let (line, why) = reason(&format!("{good}\n\n{{\"product_id\":1,\"quantity\":0}}\n"));
        assert_eq!(line, 3);
        assert!(why.contains("quantity must be"), "{why}");
        let (line, why) = reason(&format!("{good}\nnot json\n"));
        assert_eq!(line, 2);
        assert!(why.contains("column"), "{why}");
        let (_, why) = reason(r#"{"quantity":1}"#);
        assert!(why.contains("missing field `product_id`"), "{why}");
        let (_, why) = reason(r#"{"id":"x","product_id":1,"quantity":1}"#);
        assert!(why.contains("UUID"), "{why}");
        let (_, why) = reason(r#"{"product_id":1,"quantity":"2"}"#);
        assert!(why.contains("invalid type"), "{why}");
        match parse_json_lines(&b"\xff\xfe\n"[..]) {
            Err(ProducerError::InvalidLine { line: 1, reason }) => {
                assert_eq!(reason, "not valid UTF-8")
            }
            other => panic!("{other:?}"),
        }
    }

    /// Valid lines keep their ids, get fresh ones when missing, and ignore extra fields.
    #[test]
    fn valid_lines_keep_or_get_ids() {
        let id = "6f1c1c8e-3b5e-4a55-9a1e-0c7d2b4e8f10";
        let input = format!(
            "{{\"id\":\"{id}\",\"product_id\":2,\"quantity\":3,\"note\":\"x\"}}\r\n  \n{{\"product_id\":1,\"quantity\":1,\"id\":null}}\n{{\"product_id\":1,\"quantity\":1}}"
        );
        let orders = parse_json_lines(input.as_bytes()).unwrap();
        assert_eq!(orders.len(), 3);
        assert_eq!(orders[0].id.to_string(), id);
        assert_eq!(
            (orders[0].product_id.get(), orders[0].quantity.get()),
            (2, 3)
        );
        assert_ne!(orders[1].id, orders[2].id);
    }
}
