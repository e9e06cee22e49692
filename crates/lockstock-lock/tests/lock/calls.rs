//! What one uncontended acquire + release costs the server, counted as `INFO commandstats`
//! counts it: the `EVALSHA` itself and every command a script runs.

use std::time::Duration;

use lockstock_lock::{LockOptions, ReleaseOutcome};
use redis::aio::ConnectionManager;

use crate::{commandstats, helpers::TestRedis};

/// Commands the server ran since the last `CONFIG RESETSTAT`, without the `INFO` that reads
/// them and the reset itself.
async fn calls_since_reset(conn: &ConnectionManager) -> u64 {
    commandstats::read(conn)
        .await
        .into_iter()
        .filter(|stat| stat.name != "info" && stat.name != "config|resetstat")
        .map(|stat| stat.calls)
        .sum()
}

async fn reset(conn: &ConnectionManager) {
    let mut conn = conn.clone();
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await
        .expect("CONFIG RESETSTAT");
}

/// Issue 10: an uncontended acquire + release costs at most 5 commands on the server
/// (`EVALSHA` + `INCR` + `SET NX GET`, then `EVALSHA` + `GETDEL`) in 2 round trips, for both
/// the waiting `acquire` and `try_acquire`. It was 9 (`GET`, `TIME`, `INCR`, `SET`; `GET`,
/// `LPOP`, `DEL`).
#[tokio::test]
async fn an_uncontended_cycle_costs_at_most_five_commands_in_two_round_trips() {
    let redis = TestRedis::new();
    let admin = redis.raw().await;
    let client = redis.client("counted").await;
    let options = LockOptions::default();
    // Load the scripts first: a server's first call of each is a NOSCRIPT + EVAL.
    let warm = client
        .acquire("warm", &options, Duration::from_secs(1))
        .await
        .unwrap();
    warm.release().await.unwrap();

    reset(&admin).await;
    let trips = client.round_trips();
    let guard = client
        .acquire("r1", &options, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
    let acquire_cycle = calls_since_reset(&admin).await;
    assert_eq!(
        client.round_trips() - trips,
        2,
        "round trips of acquire + release"
    );

    reset(&admin).await;
    let guard = client
        .try_acquire("r2", &options)
        .await
        .unwrap()
        .expect("free");
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
    let try_cycle = calls_since_reset(&admin).await;

    assert!(
        acquire_cycle <= 5 && try_cycle <= 5,
        "commands per uncontended cycle: acquire {acquire_cycle}, try_acquire {try_cycle} (want ≤ 5)"
    );
}
