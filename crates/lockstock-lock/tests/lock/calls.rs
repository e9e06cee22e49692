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

async fn flush_scripts(conn: &ConnectionManager) {
    let mut conn = conn.clone();
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("SCRIPT FLUSH");
}

/// The acquire and release of the uncontended cycle are sent as `EVALSHA`s built in place
/// (`LockClient::run_evalsha`): when the server no longer knows a script (a restart, a `SCRIPT
/// FLUSH`), each loads it and sends the call again, and the answers are the usual ones — a
/// grant with a fence above the last, a release that frees the key, a hand-off still handed.
#[tokio::test]
async fn the_cycle_reloads_its_scripts_when_the_server_forgot_them() {
    let redis = TestRedis::new();
    let admin = redis.raw().await;
    let client = redis.client("reloading").await;
    let waiter_client = redis.client("waiter").await;
    let options = LockOptions::default();

    let first = client.try_acquire("r", &options).await.unwrap().unwrap();
    let first_fence = first.fence();
    flush_scripts(&admin).await;
    assert_eq!(first.release().await.unwrap(), ReleaseOutcome::Released);
    assert!(
        !client.is_locked("r").await.unwrap(),
        "the release left the key"
    );

    flush_scripts(&admin).await;
    let second = client
        .acquire("r", &options, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        second.fence() > first_fence,
        "fence {} after {}",
        second.fence(),
        first_fence
    );

    // A queued waiter, then the release's script forgotten: it still hands the lock over.
    let waiting = tokio::spawn({
        let waiter_client = waiter_client.clone();
        let options = options.clone();
        async move {
            waiter_client
                .acquire("r", &options, Duration::from_secs(10))
                .await
        }
    });
    let queue = format!("{}:{{r}}:queue", redis.prefix);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut conn = admin.clone();
        let queued: u64 = redis::cmd("LLEN")
            .arg(&queue)
            .query_async(&mut conn)
            .await
            .unwrap();
        if queued > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the waiter never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    flush_scripts(&admin).await;
    let second_fence = second.fence();
    assert_eq!(second.release().await.unwrap(), ReleaseOutcome::HandedOff);
    let handed = waiting.await.unwrap().unwrap();
    assert!(handed.fence() > second_fence);
    handed.release().await.unwrap();
}
