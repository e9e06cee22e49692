//! Turning SIGINT/SIGTERM into cancellation.
//!
//! - When the first signal arrives, then the root token is cancelled: the process stops taking
//!   work and drains.
//! - When a second signal arrives, then the process exits at once with status 130 (work in flight
//!   stays where it is — e.g. in a worker's processing list — for recovery).

use tokio_util::sync::CancellationToken;

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Spawns the process's signal handler: the first signal cancels `root`, a second exits now.
pub fn spawn_signal_handler(root: CancellationToken) {
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested; draining (signal again to exit at once)");
        root.cancel();
        shutdown_signal().await;
        tracing::warn!("second signal: exiting at once; unfinished work stays queued for recovery");
        std::process::exit(130);
    });
}
