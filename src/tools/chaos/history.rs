//! The recorded history of a chaos run and the final state it is checked against.
//!
//! Workers log history events as tracing events with target `history` and message `history`
//! (the mutex's grants, extensions, releases, hand-offs and losses from the lock observer in
//! `lock_history`, attached by `--chaos-history`; Redlock grants and releases in
//! `product_lock`; claims in the fenced sale); the harness reads them
//! back from each worker's JSON log, adds its own events (orders produced, Redis epochs, faults)
//! and writes the merged history as JSON lines, one [`Event`] per line.
//!
//! - Times are wall-clock milliseconds since the Unix epoch, taken on this machine by every
//!   process (one clock; the times of the worker whose clock the `clock-step` fault fakes are
//!   mapped back to real ones, see `clock.rs`).
//! - When Redis loses its data, then the harness records a new [`Event::Epoch`]: the lock's own
//!   fence and exclusion promises restart there (the database fence floor carries safety over).
//! - A mutex guard's validity window ends at its release, or, when it was lost (or never
//!   released), at the deadline of its last [`Event::Extend`]. Not recorded: Redlock extensions
//!   (a lost Redlock guard's window ends at its first deadline: a lower bound, so the window
//!   check never reports a false overlap there).

use serde::{Deserialize, Serialize};

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A product lock was granted to `worker`.
    Grant {
        /// The lock resource (`product:<id>`).
        resource: String,
        /// Its fencing token.
        fence: u64,
        /// Which worker process (the harness's name for it).
        #[serde(default)]
        worker: String,
        /// When the acquiring call started (local send instant, wall ms).
        start_ms: u64,
        /// When the grant came back (wall ms).
        reply_ms: u64,
        /// The local safety deadline at the grant (wall ms).
        deadline_ms: u64,
    },
    /// A product lock was released (or found lost at release).
    Release {
        /// The lock resource.
        resource: String,
        /// Its fencing token.
        fence: u64,
        /// Which worker.
        #[serde(default)]
        worker: String,
        /// When the release started (wall ms).
        at_ms: u64,
        /// Whether the guard already knew its lock was lost.
        lost: bool,
    },
    /// A held product lock was extended (the mutex only).
    Extend {
        /// The lock resource.
        resource: String,
        /// Its fencing token.
        fence: u64,
        /// Which worker.
        #[serde(default)]
        worker: String,
        /// When the extension was sent (wall ms).
        at_ms: u64,
        /// The guard's new local safety deadline (wall ms).
        deadline_ms: u64,
    },
    /// A held product lock's lost signal fired (the mutex only).
    Lost {
        /// The lock resource.
        resource: String,
        /// Its fencing token.
        fence: u64,
        /// Which worker.
        #[serde(default)]
        worker: String,
        /// When the worker saw it (wall ms).
        at_ms: u64,
        /// Why, in words.
        #[serde(default)]
        why: String,
    },
    /// A worker claimed a product row with `fence` and read `stock`.
    Claim {
        /// The product id.
        product: i32,
        /// The fence the row now carries.
        fence: u64,
        /// Which worker.
        #[serde(default)]
        worker: String,
        /// The stock read under that fence.
        stock: i32,
        /// When (wall ms).
        at_ms: u64,
    },
    /// The harness pushed an order (`valid: false`: a garbage message that must dead-letter).
    Produced {
        /// The order id (for a garbage message, the marker inside it).
        id: String,
        /// The product (0 for garbage).
        product: i32,
        /// Units.
        quantity: i32,
        /// Whether it is a well-formed order.
        valid: bool,
        /// When (wall ms).
        at_ms: u64,
    },
    /// Redis lost its data (restarted empty): lock-level promises restart from here.
    Epoch {
        /// When (wall ms).
        at_ms: u64,
    },
    /// The nemesis injected (or healed) a fault.
    Fault {
        /// The fault's kind.
        kind: String,
        /// Details (which worker, how long).
        detail: String,
        /// When (wall ms).
        at_ms: u64,
    },
}

impl Event {
    /// The event's time (wall ms).
    pub fn at_ms(&self) -> u64 {
        match self {
            Event::Grant { reply_ms, .. } => *reply_ms,
            Event::Release { at_ms, .. }
            | Event::Extend { at_ms, .. }
            | Event::Lost { at_ms, .. }
            | Event::Claim { at_ms, .. }
            | Event::Produced { at_ms, .. }
            | Event::Epoch { at_ms }
            | Event::Fault { at_ms, .. } => *at_ms,
        }
    }
}

impl Event {
    /// Maps every time of the event through `real` (undoing a worker's faked wall clock).
    pub fn map_times(&mut self, real: impl Fn(u64) -> u64) {
        match self {
            Event::Grant {
                start_ms,
                reply_ms,
                deadline_ms,
                ..
            } => {
                for time in [start_ms, reply_ms, deadline_ms] {
                    *time = real(*time);
                }
            }
            Event::Extend {
                at_ms, deadline_ms, ..
            } => {
                for time in [at_ms, deadline_ms] {
                    *time = real(*time);
                }
            }
            Event::Release { at_ms, .. }
            | Event::Lost { at_ms, .. }
            | Event::Claim { at_ms, .. }
            | Event::Produced { at_ms, .. }
            | Event::Epoch { at_ms }
            | Event::Fault { at_ms, .. } => *at_ms = real(*at_ms),
        }
    }
}

/// One outcome row of the final database.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRow {
    /// The order id.
    pub id: String,
    /// Its product (None for a poison row).
    pub product: Option<i32>,
    /// Units.
    pub quantity: Option<i32>,
    /// `fulfilled` or `rejected`.
    pub status: String,
    /// Why rejected.
    pub reason: Option<String>,
    /// The fence of the commit.
    pub fence: Option<u64>,
    /// The deciding worker.
    pub worker: Option<String>,
    /// Statement start of the commit, microseconds since the epoch (Postgres `now()`).
    pub decided_us: i64,
}

/// The final state the history is checked against.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FinalState {
    /// (product, initial stock, final stock).
    pub products: Vec<(i32, i32, i32)>,
    /// Every outcome row.
    pub outcomes: Vec<OutcomeRow>,
    /// Raw payloads in the dead letter list.
    pub dead_letters: Vec<String>,
    /// Messages still pending or in a processing list.
    pub in_flight: usize,
}

/// Parses one worker log line into a history event, if it is one (`worker` is stamped on it).
///
/// The worker logs JSON (`--log-format json`): `{"fields": {"message": "history", "event": …}}`.
pub fn parse_log_line(line: &str, worker: &str) -> Option<Event> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != "history" {
        return None;
    }
    let mut fields = fields.clone();
    let object = fields.as_object_mut()?;
    object.remove("message");
    object.insert("worker".into(), serde_json::Value::String(worker.into()));
    serde_json::from_value(fields).ok()
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    crate::product_lock::history_now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_log_line_becomes_an_event() {
        let line = r#"{"timestamp":"x","level":"INFO","fields":{"message":"history","event":"claim","product":3,"fence":7,"stock":5,"at_ms":12}}"#;
        assert_eq!(
            parse_log_line(line, "w1"),
            Some(Event::Claim {
                product: 3,
                fence: 7,
                worker: "w1".into(),
                stock: 5,
                at_ms: 12
            })
        );
        assert_eq!(
            parse_log_line(r#"{"fields":{"message":"other"}}"#, "w1"),
            None
        );
    }

    /// The lock observer's lines (`lock_history`) parse, extra fields ignored.
    #[test]
    fn the_lock_observer_lines_become_events() {
        let extend = r#"{"fields":{"message":"history","event":"extend","resource":"product:1","fence":4,"at_ms":10,"deadline_ms":90}}"#;
        assert_eq!(
            parse_log_line(extend, "w1"),
            Some(Event::Extend {
                resource: "product:1".into(),
                fence: 4,
                worker: "w1".into(),
                at_ms: 10,
                deadline_ms: 90
            })
        );
        let hand_off = r#"{"fields":{"message":"history","event":"release","resource":"product:1","fence":4,"at_ms":50,"lost":false,"hand_off":true}}"#;
        assert!(matches!(
            parse_log_line(hand_off, "w1"),
            Some(Event::Release {
                at_ms: 50,
                lost: false,
                ..
            })
        ));
        let grant = r#"{"fields":{"message":"history","event":"grant","resource":"product:1","fence":4,"start_ms":1,"reply_ms":2,"deadline_ms":30,"server_ms":2}}"#;
        assert!(matches!(
            parse_log_line(grant, "w1"),
            Some(Event::Grant {
                deadline_ms: 30,
                ..
            })
        ));
        let lost = r#"{"fields":{"message":"history","event":"lost","resource":"product:1","fence":4,"at_ms":70,"why":"deadline passed"}}"#;
        assert!(matches!(
            parse_log_line(lost, "w1"),
            Some(Event::Lost { at_ms: 70, .. })
        ));
    }
}
