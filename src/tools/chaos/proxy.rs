//! A fault proxy: a TCP relay between one client and one server whose behaviour is switched at
//! run time, so the chaos harness can hurt one worker's link to Redis or Postgres.
//!
//! - When the mode is [`ProxyMode::Pass`], then bytes are relayed as they arrive.
//! - When [`ProxyMode::Delay`], then every chunk is held for the delay before it is forwarded
//!   (both directions; order is kept).
//! - When [`ProxyMode::Freeze`], then nothing is forwarded while frozen; held bytes go on (in
//!   order) when the mode changes back to one that forwards.
//! - When [`ProxyMode::Drop`], then bytes read while dropping are discarded (lost in flight),
//!   and a connection that lost bytes is closed when the mode changes: TCP never delivers a
//!   stream with a hole in it, so the real-world equivalent is packets lost until the
//!   connection dies. (Keeping it open made the Redis client read replies out of a mis-framed
//!   stream: byte corruption, not a network fault.)
//! - When switched to [`ProxyMode::Reset`], then every open connection is closed on both sides
//!   at once and new connections are closed right after accept (until the mode changes).
//! - When [`ProxyMode::BlackHole`], then new connections are accepted and never connected
//!   upstream, and open ones forward nothing (like a silent partition).
//! - Not guaranteed: byte-exact timing; a delay applies per read chunk, not per byte.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_util::sync::CancellationToken;

/// What the proxy does with the bytes it relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ProxyMode {
    /// Relay at once.
    Pass,
    /// Hold each chunk this many milliseconds.
    Delay {
        /// Milliseconds per chunk.
        ms: u64,
    },
    /// Hold every byte until the mode changes.
    Freeze,
    /// Discard bytes read (lost in flight).
    Drop,
    /// Close every connection, both sides; refuse new ones.
    Reset,
    /// Accept, never forward.
    BlackHole,
}

/// A running fault proxy; dropping it stops it.
#[derive(Debug)]
pub struct FaultProxy {
    /// The address clients connect to.
    addr: SocketAddr,
    /// The current mode (every relay task watches it).
    mode: Arc<watch::Sender<(ProxyMode, u64)>>,
    /// Stops the accept loop and every relay.
    stop: CancellationToken,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and relays to `upstream`, starting in [`ProxyMode::Pass`].
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel((ProxyMode::Pass, 0u64));
        let mode = Arc::new(mode);
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, upstream, mode.clone(), stop.clone()));
        Ok(Self { addr, mode, stop })
    }

    /// The address to connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the mode for open and new connections.
    pub fn set(&self, mode: ProxyMode) {
        // The generation makes every switch to Reset a fresh event, even Reset → Reset.
        self.mode.send_modify(|(current, generation)| {
            *current = mode;
            *generation += 1;
        });
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        self.mode.borrow().0
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: Arc<watch::Sender<(ProxyMode, u64)>>,
    stop: CancellationToken,
) {
    loop {
        let client = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => client,
                Err(_) => continue,
            },
        };
        let watcher = mode.subscribe();
        tokio::spawn(serve(client, upstream, watcher, stop.child_token()));
    }
}

/// One client connection: waits out a black hole or reset, connects upstream, relays.
async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<(ProxyMode, u64)>,
    stop: CancellationToken,
) {
    loop {
        let current = mode.borrow_and_update().0;
        match current {
            ProxyMode::Reset => return, // dropping the client closes it
            ProxyMode::BlackHole => {}
            _ => break,
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = mode.changed() => if changed.is_err() { return },
        }
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let closed = stop.child_token();
    let up = relay(client_read, server_write, mode.clone(), closed.clone());
    let down = relay(server_read, client_write, mode, closed.clone());
    tokio::join!(up, down);
}

/// Copies `from` → `to` under the watched mode until either side closes, the mode switches to
/// Reset, or `closed` fires (then the other direction stops too).
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<(ProxyMode, u64)>,
    closed: CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    // Set once this direction discarded bytes: the stream has a hole and must end.
    let mut lost_bytes = false;
    loop {
        let n = tokio::select! {
            () = closed.cancelled() => break,
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() { break }
                let current = mode.borrow_and_update().0;
                if current == ProxyMode::Reset || (lost_bytes && current != ProxyMode::Drop) {
                    break;
                }
                continue;
            }
        };
        // Decide what to do with this chunk under the mode now in force.
        loop {
            let current = mode.borrow_and_update().0;
            match current {
                ProxyMode::Pass => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        closed.cancel();
                        return;
                    }
                    break;
                }
                ProxyMode::Delay { ms } => {
                    tokio::select! {
                        () = closed.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    }
                    if to.write_all(&buf[..n]).await.is_err() {
                        closed.cancel();
                        return;
                    }
                    break;
                }
                ProxyMode::Drop => {
                    lost_bytes = true;
                    break;
                }
                ProxyMode::Reset => {
                    closed.cancel();
                    return;
                }
                ProxyMode::Freeze | ProxyMode::BlackHole => {
                    // Hold the chunk until the mode changes.
                    tokio::select! {
                        () = closed.cancelled() => return,
                        changed = mode.changed() => if changed.is_err() { closed.cancel(); return },
                    }
                }
            }
        }
    }
    closed.cancel();
    let _ = to.shutdown().await;
}
