//! Logging set-up, in one place: `tracing` to stderr, filtered by `RUST_LOG`, as text or JSON.
//!
//! - When the format is [`LogFormat::Json`], then every event is one JSON object on one line
//!   (`timestamp`, `level`, `fields` with the `message`, and the spans), for log shippers.
//! - When the format is [`LogFormat::Text`], then events are human-readable lines, coloured only
//!   when stderr is a terminal: piped or redirected logs carry no ANSI escape codes.
//! - When `RUST_LOG` is set, then it is the filter; otherwise the binary's default.
//!
//! Not guaranteed: output that does not go through `tracing` (a binary's final error on exit,
//! `clap`'s usage errors) is plain text in either format.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the process's subscriber: `RUST_LOG` when set, else `default_filter`
/// (e.g. `"info"`), writing `format` to stderr. Safe to call more than once (later calls do
/// nothing).
pub fn init_tracing(default_filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
}
