//! The fault proxy relays a real Redis `PING` under each mode as its module docs promise.

use std::{net::SocketAddr, time::Duration};

use lockstock::tools::chaos::proxy::{FaultProxy, ProxyMode};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{Instant, timeout},
};

/// The configured Redis's address (`REDIS_URL`, default 127.0.0.1:6379).
fn redis_addr() -> SocketAddr {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let url = url::Url::parse(&url).expect("REDIS_URL is a URL");
    let host = url.host_str().unwrap_or("127.0.0.1");
    let port = url.port().unwrap_or(6379);
    format!("{host}:{port}")
        .parse()
        .expect("REDIS_URL names an IP address and port")
}

async fn ping(stream: &mut TcpStream) {
    stream.write_all(b"PING\r\n").await.expect("send PING");
}

/// Reads `+PONG\r\n` (7 bytes) within `within`; `None` when nothing complete arrived.
async fn pong(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = [0u8; 7];
    match timeout(within, stream.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(String::from_utf8_lossy(&buf).into_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn pass_relays_and_delay_holds_each_chunk() {
    let proxy = FaultProxy::start(redis_addr()).await.expect("proxy");
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    ping(&mut stream).await;
    assert_eq!(
        pong(&mut stream, Duration::from_secs(2)).await.as_deref(),
        Some("+PONG\r\n")
    );

    proxy.set(ProxyMode::Delay { ms: 200 });
    let sent = Instant::now();
    ping(&mut stream).await;
    assert_eq!(
        pong(&mut stream, Duration::from_secs(3)).await.as_deref(),
        Some("+PONG\r\n")
    );
    // Held once on the way in and once on the way out.
    assert!(
        sent.elapsed() >= Duration::from_millis(400),
        "{:?}",
        sent.elapsed()
    );
}

#[tokio::test]
async fn freeze_holds_bytes_until_thawed() {
    let proxy = FaultProxy::start(redis_addr()).await.expect("proxy");
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    ping(&mut stream).await;
    assert!(pong(&mut stream, Duration::from_secs(2)).await.is_some());
    proxy.set(ProxyMode::Freeze);
    ping(&mut stream).await;
    assert_eq!(pong(&mut stream, Duration::from_millis(300)).await, None);
    proxy.set(ProxyMode::Pass);
    assert_eq!(
        pong(&mut stream, Duration::from_secs(2)).await.as_deref(),
        Some("+PONG\r\n")
    );
}

#[tokio::test]
async fn drop_loses_bytes_in_flight_and_then_closes_that_connection() {
    let proxy = FaultProxy::start(redis_addr()).await.expect("proxy");
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    ping(&mut stream).await;
    assert!(pong(&mut stream, Duration::from_secs(2)).await.is_some());
    proxy.set(ProxyMode::Drop);
    ping(&mut stream).await;
    assert_eq!(pong(&mut stream, Duration::from_millis(300)).await, None);
    proxy.set(ProxyMode::Pass);
    // The dropped PING never reached Redis, and a stream with a hole is not resumed.
    let mut buf = [0u8; 1];
    let read = timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .expect("the connection that lost bytes is closed within the deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let mut fresh = TcpStream::connect(proxy.addr()).await.expect("connect");
    ping(&mut fresh).await;
    assert_eq!(
        pong(&mut fresh, Duration::from_secs(2)).await.as_deref(),
        Some("+PONG\r\n")
    );
}

#[tokio::test]
async fn reset_closes_open_and_new_connections() {
    let proxy = FaultProxy::start(redis_addr()).await.expect("proxy");
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("connect");
    ping(&mut stream).await;
    assert!(pong(&mut stream, Duration::from_secs(2)).await.is_some());
    proxy.set(ProxyMode::Reset);
    let mut buf = [0u8; 1];
    let read = timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .expect("the open connection is closed within the deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let mut fresh = TcpStream::connect(proxy.addr()).await.expect("accepted");
    let read = timeout(Duration::from_secs(2), fresh.read(&mut buf))
        .await
        .expect("a new connection is closed within the deadline");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    proxy.set(ProxyMode::Pass);
    let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
    ping(&mut again).await;
    assert!(pong(&mut again, Duration::from_secs(2)).await.is_some());
}

#[tokio::test]
async fn a_black_hole_accepts_and_never_answers_until_healed() {
    let proxy = FaultProxy::start(redis_addr()).await.expect("proxy");
    proxy.set(ProxyMode::BlackHole);
    let mut stream = TcpStream::connect(proxy.addr()).await.expect("accepted");
    ping(&mut stream).await;
    assert_eq!(pong(&mut stream, Duration::from_millis(400)).await, None);
    proxy.set(ProxyMode::Pass);
    assert_eq!(
        pong(&mut stream, Duration::from_secs(2)).await.as_deref(),
        Some("+PONG\r\n")
    );
}
