//! `lockctl bench-pipeline` against a stock Postgres (durable commits, `max_connections = 100`).

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use lockstock::tools::bench::pipeline::{BENCH_APPLICATION, REFERENCE_APPLICATION};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use tokio::process::Command;

use crate::{helpers::TestRedis, postgres_server::PostgresServer};

/// Every worker log under `dir`, concatenated.
fn worker_logs(dir: &Path) -> String {
    let mut text = String::new();
    for entry in walk(dir) {
        text.push_str(&std::fs::read_to_string(entry).unwrap_or_default());
    }
    text
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// With the default 4 workers × 16 lanes (64 reference connections, then up to 4 × 18 worker
/// connections) on a stock server: every line states fsync, synchronous_commit and
/// max_connections, every case finishes, and while the workers are connected none of the
/// reference connections is (sampled from `pg_stat_activity` every few milliseconds).
#[tokio::test]
async fn bench_pipeline_states_the_postgres_settings_and_closes_its_reference_pool() {
    let Some(postgres) = PostgresServer::plain_with("fsync = on\nsynchronous_commit = on\n") else {
        return;
    };
    let redis = TestRedis::start();
    let logs = std::env::temp_dir().join(format!("lockstock-bench-{}", redis.prefix));
    let url = postgres.url_via("127.0.0.1", "postgres", "");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_lockctl"))
        .args([
            "bench-pipeline",
            "--orders",
            "300",
            "--reference-seconds",
            "0.5",
            "--json",
            "--redis-url",
            &redis.url(),
            "--database-url",
            &url,
            "--log-dir",
        ])
        .arg(&logs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Sample who is connected to the bench database until the bench exits.
    let mut watcher = PgConnection::connect(&url).await.unwrap();
    let (mut saw_reference, mut saw_workers, mut overlap) = (false, false, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(240);
    while bench.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the bench did not finish in 240 s"
        );
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT coalesce(application_name, '') FROM pg_stat_activity WHERE datname = 'postgres_bench'",
        )
        .fetch_all(&mut watcher)
        .await
        .unwrap();
        let references = names.iter().any(|n| n == REFERENCE_APPLICATION);
        let workers = names
            .iter()
            .any(|n| n != REFERENCE_APPLICATION && n != BENCH_APPLICATION);
        saw_reference |= references;
        saw_workers |= workers;
        if references && workers {
            overlap = names;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let output = bench.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(saw_reference && saw_workers, "sampling saw both phases");
    assert!(
        overlap.is_empty(),
        "reference connections open beside the workers': {overlap:?}"
    );

    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let scenarios: Vec<&str> = lines
        .iter()
        .map(|line| line["scenario"].as_str().unwrap())
        .collect();
    assert_eq!(
        scenarios,
        ["pg-ceiling", "pg-single", "even", "hot", "mixed"]
    );
    for line in &lines {
        assert_eq!(line["postgres"]["fsync"], "on", "{line}");
        assert_eq!(line["postgres"]["synchronous_commit"], "on", "{line}");
        assert_eq!(line["postgres"]["max_connections"], 100, "{line}");
        assert!(line["ops_per_sec"].as_f64().unwrap() > 0.0, "{line}");
    }
    let logged = worker_logs(&logs);
    let _ = std::fs::remove_dir_all(&logs);
    assert!(
        !logged.contains("too many clients"),
        "a worker was refused a connection:\n{logged}"
    );
}
