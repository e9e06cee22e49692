//! The operator's status report (what `lockctl status` prints): the same data as `GET /queue`
//! and `GET /locks`, as plain-text tables ([`fmt::Display`]) or one JSON document
//! (`lockctl status --json`, [`serde::Serialize`]).
//!
//! - When [`StatusReport::collect`] succeeds, then the report holds the queue counts, every known
//!   worker with its liveness and in-flight count, and every held lock.
//! - The JSON document is `{"queue": {"pending", "in_flight", "dead_letters", "live_workers", "restored",
//!   "workers": [{"id", "alive", "in_flight"}], "recent_dead_letters": []}, "locks":
//!   [{"resource", "owner": {"id", "host", "pid"}, "fence", "age_ms", "ttl_left_ms"}]}`: the
//!   bodies of `GET /queue` (without dead letters) and `GET /locks`. These names are stable.
//! - Not guaranteed: a snapshot (see [`super::views`]).

use std::fmt::{self, Write as _};

use serde::Serialize;

use super::views::{HeldLock, QueueView, held_locks, queue_view};
use crate::queue::{DeadLetter, JobQueue, QueueError};
use lockstock_lock::{LockClient, LockError};

/// Why the report could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Reading the queue failed.
    #[error("reading the queue failed")]
    Queue(#[from] QueueError),
    /// Listing the locks failed.
    #[error("listing the held locks failed")]
    Locks(#[from] LockError),
}

/// Queue, workers and held locks at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The queue.
    pub queue: QueueView,
    /// Held locks.
    pub locks: Vec<HeldLock>,
}

impl StatusReport {
    /// Reads the queue (no dead letter entries) and the held locks.
    pub async fn collect(queue: &JobQueue, locks: &LockClient) -> Result<Self, StatusError> {
        Ok(Self {
            queue: queue_view(queue, 0).await?,
            locks: held_locks(locks).await?,
        })
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = &self.queue;
        writeln!(f, "queue")?;
        writeln!(f, "  pending       {}", q.pending)?;
        writeln!(f, "  in flight     {}", q.in_flight)?;
        writeln!(f, "  dead letters  {}", q.dead_letters)?;
        writeln!(
            f,
            "  restored      {} (pushed again from the intake)",
            q.restored
        )?;
        writeln!(
            f,
            "  workers       {} live of {} known",
            q.live_workers,
            q.workers.len()
        )?;
        writeln!(f)?;
        let rows: Vec<Vec<String>> = q
            .workers
            .iter()
            .map(|w| {
                vec![
                    w.id.clone(),
                    if w.alive { "live" } else { "dead" }.to_owned(),
                    w.in_flight.to_string(),
                ]
            })
            .collect();
        f.write_str(&table(
            &["WORKER", "STATE", "IN FLIGHT"],
            &rows,
            "(no workers)",
        ))?;
        writeln!(f)?;
        let rows: Vec<Vec<String>> = self
            .locks
            .iter()
            .map(|l| {
                vec![
                    l.resource.clone(),
                    l.owner.as_ref().map_or_else(
                        || "?".to_owned(),
                        |o| format!("{} ({}, pid {})", o.id, o.host, o.pid),
                    ),
                    l.fence.to_string(),
                    format!("{:.1}s", l.age_ms as f64 / 1000.0),
                    format!("{:.1}s", l.ttl_left_ms as f64 / 1000.0),
                ]
            })
            .collect();
        f.write_str(&table(
            &["LOCK", "OWNER", "FENCE", "AGE", "TTL LEFT"],
            &rows,
            "(no locks held)",
        ))
    }
}

/// Dead letters as a table, newest first.
pub fn dead_letters_table(letters: &[DeadLetter]) -> String {
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|d| {
            let at = chrono::DateTime::from_timestamp_millis(d.at).map_or_else(
                || "?".to_owned(),
                |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
            );
            let mut payload: String =
                escape_control(&d.payload.chars().take(60).collect::<String>());
            if d.truncated || d.payload.chars().count() > 60 {
                payload.push('…');
            }
            vec![
                at,
                escape_control(&d.reason),
                escape_control(&d.worker),
                payload,
            ]
        })
        .collect();
    table(
        &["AT (UTC)", "REASON", "WORKER", "PAYLOAD"],
        &rows,
        "(no dead letters)",
    )
}

/// `text` with control characters escaped (`\n`, `\u{1b}`), so a payload printed to a terminal
/// cannot move the cursor, change colours or rewrite earlier lines.
pub fn escape_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Left-aligned columns separated by two spaces; `empty` under the header when there are no rows.
fn table(header: &[&str], rows: &[Vec<String>], empty: &str) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    if rows.is_empty() {
        out.push_str(empty);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Escape sequences in a payload reach the terminal as text.
    #[test]
    fn dead_letter_tables_escape_control_characters() {
        let letter = DeadLetter::new(b"\x1b[2J\x1b]0;pwned\x07{", "not_json", "w\r", 0);
        let table = dead_letters_table(&[letter]);
        assert!(
            !table.chars().any(|c| c.is_control() && c != '\n'),
            "{table:?}"
        );
        assert!(table.contains("\\u{1b}[2J"), "{table}");
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned()],
            vec!["bbb".to_owned(), "x".to_owned()],
        ];
        let text = table(&["K", "V"], &rows, "(none)");
        assert_eq!(text, "K    V\na    long value\nbbb  x\n");
        assert_eq!(table(&["K"], &[], "(none)"), "K\n(none)\n");
    }
}
