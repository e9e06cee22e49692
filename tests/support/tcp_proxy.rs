//! A loopback TCP proxy a test can cut: the network fault "Postgres (or Redis) silently stops
//! answering" without touching the shared server.
//!
//! - When started, then it listens on a free 127.0.0.1 port and forwards every connection to
//!   `target`, both ways.
//! - When [`TcpProxy::black_hole`] is called, then no byte moves on any connection, old or new,
//!   and nothing is closed: the client sees a half-open connection, as behind a dead router.
//! - When [`TcpProxy::heal`] is called, then the black-holed connections are closed (the client
//!   reconnects) and new connections are forwarded again.
//! - When dropped, then it stops accepting; open connections close when their tasks notice.

use std::net::SocketAddr;

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// A running proxy.
#[derive(Debug)]
pub struct TcpProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// `true` while black-holed.
    cut: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy to `target` on the current tokio runtime.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cut, watching) = watch::channel(false);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, target, watching.clone()));
            }
        });
        Self { addr, cut, accept }
    }

    /// Stops every byte, keeping every connection open.
    pub fn black_hole(&self) {
        self.cut.send_replace(true);
    }

    /// Closes the black-holed connections and forwards again.
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Forwards one connection until either side closes or the proxy is cut; a cut connection is
/// held open, silent, until the proxy heals, then closed.
async fn forward(mut client: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>) {
    if !*cut.borrow() {
        if let Ok(mut server) = TcpStream::connect(target).await {
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                _ = cut.wait_for(|cut| *cut) => {}
            }
            let _ = cut.wait_for(|cut| !*cut).await;
            drop(server);
            return;
        }
        return;
    }
    let _ = cut.wait_for(|cut| !*cut).await;
    drop(client);
}
