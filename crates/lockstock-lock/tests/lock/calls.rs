//! What one uncontended acquire + release costs the server, counted as `INFO commandstats`
//! counts it: the `EVALSHA` itself and every command a script runs.

use std::time::Duration;

use lockstock_lock::{LockOptions, ReleaseOutcome};
use redis::aio::ConnectionManager;

use crate::{
    commandstats,
    helpers::{TestRedis, held_with_a_queued_waiter},
};

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

/// Runs one administrative command (`CONFIG RESETSTAT`, `SCRIPT FLUSH`) on the test's server.
async fn run_admin(conn: &ConnectionManager, command: &str, subcommand: &str) {
    let mut conn = conn.clone();
    let () = redis::cmd(command)
        .arg(subcommand)
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|error| panic!("{command} {subcommand}: {error}"));
}

async fn reset(conn: &ConnectionManager) {
    run_admin(conn, "CONFIG", "RESETSTAT").await;
}

async fn flush_scripts(conn: &ConnectionManager) {
    run_admin(conn, "SCRIPT", "FLUSH").await;
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

/// The acquire and release of the uncontended cycle are sent as `EVALSHA`s built in place
/// (`LockClient::run_evalsha`): when the server no longer knows a script (a restart, a `SCRIPT
/// FLUSH`), each loads it and sends the call again, and the answers are the usual ones — a
/// grant with a fence above the last, a release that frees the key, a hand-off still handed.
#[tokio::test]
async fn the_cycle_reloads_its_scripts_when_the_server_forgot_them() {
    let redis = TestRedis::new();
    let admin = redis.raw().await;
    let client = redis.client("reloading").await;
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
    second.release().await.unwrap();

    // A queued waiter, then the release's script forgotten: it still hands the lock over.
    let (held, waiting) = held_with_a_queued_waiter(&redis, "h", Duration::from_secs(10)).await;
    flush_scripts(&admin).await;
    let held_fence = held.fence();
    assert_eq!(held.release().await.unwrap(), ReleaseOutcome::HandedOff);
    let handed = waiting.await.unwrap().unwrap();
    assert!(handed.fence() > held_fence);
    handed.release().await.unwrap();
}
