//! Bad arguments and an unreachable Redis give the documented errors, quickly.

use std::time::{Duration, Instant};

use lockstock_lock::{Heartbeat, LockClient, LockConfig, LockError, LockOptions};

use crate::{helpers::TestRedis, redis_server::free_port};

/// Empty resource names, zero TTLs and a heartbeat not shorter than the TTL are refused with
/// `InvalidArgument` before anything is sent.
#[tokio::test]
async fn bad_arguments_are_refused_with_invalid_argument() {
    let redis = TestRedis::new();
    let client = redis.client("a").await;
    let cases = [
        ("", LockOptions::default()),
        ("r", LockOptions::with_ttl(Duration::ZERO)),
        (
            "r",
            LockOptions::with_ttl(Duration::from_millis(100))
                .heartbeat(Heartbeat::Every(Duration::from_millis(100))),
        ),
        ("{tag}", LockOptions::default()),
    ];
    for (resource, options) in cases {
        let error = client
            .acquire(resource, &options, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(error, LockError::InvalidArgument(_)),
            "{resource:?} {options:?}: {error:?}"
        );
        let error = client.try_acquire(resource, &options).await.unwrap_err();
        assert!(matches!(error, LockError::InvalidArgument(_)), "{error:?}");
    }
    assert!(matches!(
        LockConfig::default().with_prefix(""),
        Err(LockError::InvalidArgument(_))
    ));
}

/// Connecting to a port where nothing listens fails with `Connection`, within seconds.
#[tokio::test]
async fn an_unreachable_redis_gives_a_connection_error_quickly() {
    let started = Instant::now();
    let url = format!("redis://127.0.0.1:{}", free_port());
    let error = LockClient::connect(&url, LockConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(error, LockError::Connection(_)), "{error:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// A URL that does not parse is an `InvalidArgument`, naming the problem.
#[tokio::test]
async fn an_unparsable_url_is_an_invalid_argument() {
    let error = LockClient::connect("http//nope", LockConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(error, LockError::InvalidArgument(_)), "{error:?}");
}
