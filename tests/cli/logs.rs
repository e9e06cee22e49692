//! `LOG_FORMAT=json` / `--log-format json` on every binary: one JSON object per stderr line;
//! text logs without colour codes when stderr is not a terminal.

use std::{
    fs::File,
    process::{Command, Output, Stdio},
    time::Duration,
};

use serde_json::Value;
use sqlx::PgPool;

use crate::{
    helpers::{Running, command, database_url, prefix, run, wait_decided, wait_for},
    redis_server::RedisServer,
};

/// Asserts that every line of `binary`'s `stderr` is a JSON object with a level and returns the
/// lines' messages.
fn json_lines(binary: &str, stderr: &str) -> Vec<String> {
    assert!(!stderr.trim().is_empty(), "{binary} logged nothing");
    stderr
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{binary}: not JSON ({e}): {line:?}"));
            assert!(value["level"].is_string(), "{binary}: no level in {line}");
            value["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

/// Runs a short-lived command and returns its stderr, asserting success.
async fn stderr_of(binary: &str, command: Command) -> String {
    let output: Output = tokio::task::spawn_blocking(move || run(command))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{binary} failed: {stderr}");
    stderr
}

/// Starts a long-running command logging to a file, waits until it logs `message`, stops it
/// with SIGTERM and returns everything it wrote to stderr.
async fn stderr_until(binary: &str, mut command: Command, message: &str) -> String {
    let log = std::env::temp_dir().join(format!("lockstock-cli-{}-{binary}.log", prefix()));
    let file = File::create(&log).expect("log file");
    let running = Running::spawn(command.stdout(Stdio::null()).stderr(file));
    wait_for(
        &format!("{binary} to log {message:?}"),
        Duration::from_secs(30),
        || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains(message)
            }
        },
    )
    .await;
    let output = running.stop().await;
    let stderr = std::fs::read_to_string(&log).expect("read the log");
    let _ = std::fs::remove_file(&log);
    assert!(
        output.status.success(),
        "{binary} exited with {:?}: {stderr}",
        output.status
    );
    stderr
}

/// Each of the four binaries, switched to JSON by the variable or the flag, writes only JSON
/// objects to stderr, one per line.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn every_binary_logs_one_json_object_per_line(pool: PgPool) {
    let redis = RedisServer::start();
    let prefix = prefix();
    let database = database_url(&pool);

    let mut producer = command("producer");
    producer
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .args(["--redis-url", &redis.url()])
        .args(["--queue-key", &format!("{prefix}:orders:pending")])
        .args(["--database-url", &database])
        .args(["--product", "1", "--count", "3"]);
    let messages = json_lines("producer", &stderr_of("producer", producer).await);
    assert!(
        messages.contains(&"orders enqueued".to_owned()),
        "{messages:?}"
    );

    let mut worker = command("worker");
    worker
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .args(["--redis-url", &redis.url(), "--database-url", &database])
        .args(["--queue-key", &format!("{prefix}:orders:pending")])
        .args(["--lock-prefix", &format!("{prefix}-locks")])
        .args(["--max-connections", "2", "--no-lock"]);
    let stderr = stderr_until("worker", worker, "worker started").await;
    let messages = json_lines("worker", &stderr);
    assert!(
        messages.contains(&"worker stopped".to_owned()),
        "{messages:?}"
    );

    let mut api = command("api");
    api.args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .args(["--bind", "127.0.0.1:0"])
        .args(["--redis-url", &redis.url(), "--database-url", &database]);
    let stderr = stderr_until("api", api, "api listening").await;
    let messages = json_lines("api", &stderr);
    assert!(
        messages.contains(&"api listening".to_owned()),
        "{messages:?}"
    );

    let mut lockctl = command("lockctl");
    lockctl
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .args(["migrate", "--database-url", &database]);
    json_lines("lockctl", &stderr_of("lockctl", lockctl).await);
}

/// Text logs written to a pipe carry no ANSI escape codes.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn text_logs_to_a_pipe_have_no_colour_codes(pool: PgPool) {
    let redis = RedisServer::start();
    let mut producer = command("producer");
    producer
        .env("RUST_LOG", "info")
        .args(["--redis-url", &redis.url()])
        .args(["--queue-key", &format!("{}:orders:pending", prefix())])
        .args(["--database-url", &database_url(&pool)])
        .args(["--product", "1", "--count", "3"]);
    let stderr = stderr_of("producer", producer).await;
    assert!(stderr.contains("orders enqueued"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "colour codes in {stderr:?}");
}

/// The per-hold `history` events (grant, claim, release: what `lockctl chaos` reads from its
/// workers, which turn them on with `RUST_LOG=…,history=info`) stay out of a worker's default
/// log: a line per lock hold is noise and work in production.
#[sqlx::test(migrator = "lockstock::store::MIGRATOR")]
async fn a_worker_logs_no_history_events_by_default(pool: PgPool) {
    let redis = RedisServer::start();
    let prefix = prefix();
    let database = database_url(&pool);
    let queue = format!("{prefix}:orders:pending");
    let mut producer = command("producer");
    producer
        .args(["--redis-url", &redis.url(), "--database-url", &database])
        .args(["--queue-key", &queue])
        .args(["--product", "1", "--count", "5"]);
    stderr_of("producer", producer).await;

    let log = std::env::temp_dir().join(format!("lockstock-cli-{prefix}-history.log"));
    let mut worker = command("worker");
    worker
        .args(["--redis-url", &redis.url(), "--database-url", &database])
        .args(["--queue-key", &queue])
        .args(["--lock-prefix", &format!("{prefix}-locks")])
        .args(["--max-connections", "2"])
        .stdout(Stdio::null())
        .stderr(File::create(&log).expect("log file"));
    let running = Running::spawn(&mut worker);
    wait_decided(&pool, 5, Duration::from_secs(30)).await;
    running.stop().await;
    let stderr = std::fs::read_to_string(&log).expect("read the log");
    let _ = std::fs::remove_file(&log);

    assert!(stderr.contains("worker started"), "{stderr}");
    assert!(
        !stderr.contains("history"),
        "history events in the default log:\n{stderr}"
    );
}
