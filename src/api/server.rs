//! The accept loop: HTTP/1.1 connections with a header-read timeout and a connection cap.
//!
//! `axum::serve` sets neither, so a client that opens a connection and never finishes its
//! headers holds a file descriptor for ever; a few tens of thousands of those starve the process.
//! This loop serves the same [`Router`] over hyper directly:
//!
//! - When a connection has not sent a complete request head within
//!   [`ApiConfig::header_read_timeout`](super::ApiConfig::header_read_timeout) (default 10 s),
//!   then hyper closes it; this holds for the first request and for every keep-alive request after.
//! - When [`ApiConfig::max_connections`](super::ApiConfig::max_connections) connections are open,
//!   then the loop stops accepting until one closes: new clients wait in the kernel's backlog
//!   rather than costing a file descriptor each, and since idle ones are closed by the timeout,
//!   a probe (`/healthz`) is answered within one header timeout at worst.
//! - When the shutdown token fires, then the listener is closed, idle connections are closed at
//!   once, and [`serve`] returns once every request in flight has been answered.
//! - Not guaranteed: HTTP/2 (as with `axum::serve` without its `http2` feature, only HTTP/1.x is
//!   spoken).

use std::{io, sync::Arc, time::Duration};

use axum::{Extension, Router};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;

use super::{AppState, app, guard::BoundPort};
use crate::telemetry::cause_chain;

/// Serves `app(state)` on `listener` until `shutdown` is cancelled, then waits for the requests
/// in flight (see the module docs for the limits).
///
/// ```rust,no_run
/// use lockstock::api::{AppState, serve};
/// use tokio_util::sync::CancellationToken;
///
/// # async fn demo(state: AppState) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let port = listener.local_addr()?.port();
/// let shutdown = CancellationToken::new();
/// tokio::spawn(serve(listener, state, shutdown.clone()));
/// // ... talk to http://127.0.0.1:{port} ...
/// shutdown.cancel();
/// # let _ = port; Ok(()) }
/// ```
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let header_timeout = state.config().header_read_timeout;
    let max_connections = state.config().max_connections.clamp(1, 1 << 20);
    let port = listener.local_addr()?.port();
    let router: Router = app(state).layer(Extension(BoundPort(port)));
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.map_err(io::Error::other)?,
        };
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning, keep serving the rest.
                    tracing::warn!(error.cause_chain = %cause_chain(&error), "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(error.cause_chain = %cause_chain(&error), "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Every connection holds a slot until it ends: having them all back means nothing is in flight.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    let _all = slots.acquire_many(all).await.map_err(io::Error::other)?;
    Ok(())
}
