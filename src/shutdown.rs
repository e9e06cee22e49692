//! Turning SIGINT/SIGTERM into cancellation.
//!
//! - When the first signal arrives, then the root token is cancelled: the process stops taking
//!   work and drains.
//! - When a second signal arrives, then the process exits at once with status 130 (work in flight
//!   stays where it is — e.g. in a worker's processing list — for recovery).
//! - The listeners are installed once, before the first signal is awaited, so a second signal
//!   that arrives right after the first (even before the drain is logged) is never missed.

use tokio_util::sync::CancellationToken;

/// SIGINT and SIGTERM listeners that stay installed across several signals.
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the listeners; one that cannot be installed is never ready.
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for the next SIGINT or SIGTERM.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.interrupt) => {}
                () = recv(&mut self.terminate) => {}
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Spawns the process's signal handler: the first signal cancels `root`, a second exits now.
pub fn spawn_signal_handler(root: CancellationToken) {
    let mut signals = Signals::install();
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!("shutdown requested; draining (signal again to exit at once)");
        root.cancel();
        signals.next().await;
        tracing::warn!("second signal: exiting at once; unfinished work stays queued for recovery");
        std::process::exit(130);
    });
}
