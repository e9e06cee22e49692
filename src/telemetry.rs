//! Logging set-up, in one place: `tracing` to stderr, filtered by `RUST_LOG`.

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the process's subscriber: `RUST_LOG` when set, else `default_filter`
/// (e.g. `"info"`). Safe to call more than once (later calls do nothing).
pub fn init_tracing(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
