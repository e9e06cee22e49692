//! Logging set-up, in one place: `tracing` to stderr, filtered by `RUST_LOG`, as text or JSON.
//!
//! - When the format is [`LogFormat::Json`], then every event is one JSON object on one line
//!   (`timestamp`, `level`, `fields` with the `message`, and the spans), for log shippers.
//! - When the format is [`LogFormat::Text`], then events are human-readable lines, coloured only
//!   when stderr is a terminal: piped or redirected logs carry no ANSI escape codes.
//! - When `RUST_LOG` is set, then it is the filter; otherwise the binary's default.
//! - When an error is logged, then it is logged with [`cause_chain`] (`outer: inner: innermost`),
//!   so the line carries the server's own message and code, not only "database error".
//!
//! Not guaranteed: output that does not go through `tracing` (a binary's final error on exit,
//! `clap`'s usage errors) is plain text in either format.

use std::{error::Error, io::IsTerminal};

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

/// `outer: inner: innermost`: an error and every `source()` below it, for one log field.
pub fn cause_chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Wrappers often repeat their source's text (`#[error(transparent)]`, "{0}"): say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod cause_tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("database error")]
    struct Outer(#[source] std::io::Error);

    /// The chain names the innermost cause, where the server's message lives.
    #[test]
    fn the_chain_reaches_the_innermost_cause() {
        let error = Outer(std::io::Error::other(
            "FATAL 28P01: password authentication failed",
        ));
        assert_eq!(
            cause_chain(&error),
            "database error: FATAL 28P01: password authentication failed"
        );
    }
}
