//! `rediss://` for every way this project opens Redis from a URL: the lock client, Redlock and the
//! queue, trusting a private CA through `SSL_CERT_FILE`; and a refusal, not a hang, when the
//! client does not trust the server's CA.

use std::time::{Duration, Instant};

use lockstock::queue::{JobQueue, QueueConfig};
use lockstock_lock::{LockClient, LockConfig, LockOptions, Redlock, RedlockConfig, ReleaseOutcome};

use crate::{
    ca::TestCa,
    child::{Role, role, run_in_child},
    tls_redis::TlsRedis,
};

/// `LockClient::connect` and `JobQueue::connect` over `rediss://`, trusting the throwaway CA via
/// `SSL_CERT_FILE`: a lock is taken and released, and a message goes through the queue (the
/// queue's blocking reserve runs on its own TLS connection).
#[tokio::test]
async fn lock_client_and_queue_work_over_rediss_trusting_the_ca_in_ssl_cert_file() {
    let url = match role() {
        Role::Parent => {
            let ca = TestCa::new("redis");
            let server = TlsRedis::start(&ca);
            run_in_child(
                "rediss::lock_client_and_queue_work_over_rediss_trusting_the_ca_in_ssl_cert_file",
                &server.url(),
                &[("SSL_CERT_FILE", ca.ca_pem().to_str().expect("utf-8 path"))],
            );
            return;
        }
        Role::Child(url) => url,
    };
    assert!(url.starts_with("rediss://"), "{url}");

    let locks = LockClient::connect(&url, LockConfig::default())
        .await
        .expect("LockClient::connect over rediss://");
    let options = LockOptions::with_ttl(Duration::from_secs(10));
    let guard = locks
        .try_acquire("tls-resource", &options)
        .await
        .expect("try_acquire over TLS")
        .expect("the lock is free");
    assert!(
        locks
            .try_acquire("tls-resource", &options)
            .await
            .expect("second try_acquire over TLS")
            .is_none(),
        "a held lock must not be granted twice"
    );
    assert_eq!(
        guard.release().await.expect("release over TLS"),
        ReleaseOutcome::Released
    );
    // Waiting on a held lock uses the pub/sub hand-off connection, also over TLS.
    let first = locks
        .try_acquire("tls-handoff", &options)
        .await
        .expect("try_acquire")
        .expect("free");
    let waiter = {
        let locks = locks.clone();
        let options = options.clone();
        tokio::spawn(async move {
            locks
                .acquire("tls-handoff", &options, Duration::from_secs(10))
                .await
        })
    };
    wait_until_queued(&url, &locks, "tls-handoff").await;
    first.release().await.expect("release the first holder");
    let second = waiter
        .await
        .expect("waiter task")
        .expect("the waiter gets the lock over TLS");
    second.release().await.expect("release the second holder");

    let queue = JobQueue::connect(
        &url,
        QueueConfig::namespaced("tls").with_worker_id("tls-test"),
    )
    .await
    .expect("JobQueue::connect over rediss://");
    queue.push(b"over-tls").await.expect("push over TLS");
    let reserved = queue
        .reserve(Duration::from_secs(5))
        .await
        .expect("reserve over TLS");
    assert_eq!(reserved.as_deref(), Some(&b"over-tls"[..]));
}

/// `Redlock::connect` over three `rediss://` instances, trusting the CA via `SSL_CERT_FILE`.
#[tokio::test]
async fn redlock_works_over_three_rediss_instances() {
    let urls = match role() {
        Role::Parent => {
            let ca = TestCa::new("redlock");
            let servers: Vec<TlsRedis> = (0..3).map(|_| TlsRedis::start(&ca)).collect();
            let urls: Vec<String> = servers.iter().map(TlsRedis::url).collect();
            run_in_child(
                "rediss::redlock_works_over_three_rediss_instances",
                &urls.join(" "),
                &[("SSL_CERT_FILE", ca.ca_pem().to_str().expect("utf-8 path"))],
            );
            return;
        }
        Role::Child(urls) => urls,
    };
    let urls: Vec<&str> = urls.split(' ').collect();
    // The servers were just started: no restart quarantine, or they would refuse for a TTL.
    let config = RedlockConfig::default().with_restart_quarantine(Duration::ZERO);
    let redlock = Redlock::connect(&urls, config)
        .await
        .expect("Redlock::connect over rediss://");
    let options = LockOptions::with_ttl(Duration::from_secs(10));
    // Waits, rather than one try: the first calls open the lazy TLS connections, whose handshakes
    // may outlast the 100 ms per-instance timeout on a loaded machine (a debug build).
    let started = Instant::now();
    let guard = redlock
        .acquire("tls-redlock", &options, Duration::from_secs(10))
        .await
        .expect("a majority answers over TLS");
    eprintln!(
        "Redlock: the first acquire over TLS took {:?}",
        started.elapsed()
    );
    assert!(
        redlock
            .try_acquire("tls-redlock", &options)
            .await
            .expect("second attempt")
            .is_none(),
        "a held Redlock must not be granted twice"
    );
    guard.release().await.expect("release over TLS");
}

/// A client whose trusted roots do not include the server's CA (here: another throwaway CA in
/// `SSL_CERT_FILE`) is refused with a certificate error by the lock client and the queue, within
/// a bound (not a hang).
#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused_with_a_certificate_error() {
    let url = match role() {
        Role::Parent => {
            let server_ca = TestCa::new("server");
            let other_ca = TestCa::new("other");
            let server = TlsRedis::start(&server_ca);
            run_in_child(
                "rediss::a_client_that_does_not_trust_the_ca_is_refused_with_a_certificate_error",
                &server.url(),
                &[(
                    "SSL_CERT_FILE",
                    other_ca.ca_pem().to_str().expect("utf-8 path"),
                )],
            );
            return;
        }
        Role::Child(url) => url,
    };
    let started = Instant::now();
    let error = LockClient::connect(&url, LockConfig::default())
        .await
        .expect_err("a server signed by an untrusted CA must be refused");
    assert_refused_for_the_certificate(
        "LockClient::connect",
        &error,
        started,
        Duration::from_secs(5),
    );
    // The queue's connection manager retries with its default back-off (about 10 s in all).
    let started = Instant::now();
    let error = JobQueue::connect(&url, QueueConfig::namespaced("tls"))
        .await
        .expect_err("the queue must refuse the untrusted server too");
    assert_refused_for_the_certificate(
        "JobQueue::connect",
        &error,
        started,
        Duration::from_secs(30),
    );
}

/// A client given the CA in code (`redis::Client::build_with_tls`) works without touching the
/// environment; `LockClient::with_connection` takes such a client.
#[tokio::test]
async fn a_client_built_with_the_ca_in_code_takes_a_lock() {
    let ca = TestCa::new("in-code");
    let server = TlsRedis::start(&ca);
    let client = server.client_trusting(&ca);
    let conn = redis::aio::ConnectionManager::new(client.clone())
        .await
        .expect("a TLS connection manager");
    let locks = LockClient::with_connection(client, conn, LockConfig::default());
    let guard = locks
        .try_acquire(
            "tls-in-code",
            &LockOptions::with_ttl(Duration::from_secs(10)),
        )
        .await
        .expect("try_acquire over TLS")
        .expect("the lock is free");
    assert_eq!(
        guard.release().await.expect("release"),
        ReleaseOutcome::Released
    );
}

/// Waits (5 s deadline) until a waiter is in `resource`'s FIFO queue, so the release hands off.
async fn wait_until_queued(url: &str, locks: &LockClient, resource: &str) {
    let queue_key = locks
        .keys()
        .resource(resource)
        .expect("resource keys")
        .queue;
    let mut conn = redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("a plain command connection over TLS");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let exists: bool = redis::cmd("EXISTS")
            .arg(&queue_key)
            .query_async(&mut conn)
            .await
            .expect("EXISTS over TLS");
        if exists {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the waiter never queued on {resource}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts that `what` failed within `bound` of `started` (a refusal, not a hang), and that its
/// error or one of the error's sources (what an operator sees in the binaries' error chain)
/// names the certificate.
fn assert_refused_for_the_certificate(
    what: &str,
    error: &(dyn std::error::Error + 'static),
    started: Instant,
    bound: Duration,
) {
    let took = started.elapsed();
    eprintln!("{what} refused after {took:?}");
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    assert!(
        chain.to_lowercase().contains("certificate"),
        "{what}: expected a certificate error, got: {chain} ({error:?})"
    );
    assert!(
        took < bound,
        "{what} took {took:?} to refuse (bound {bound:?})"
    );
}
