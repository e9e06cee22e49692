//! `lockctl chaos` end to end: real worker processes, its own `redis-server`, a database of its
//! own on the configured Postgres.

use std::process::Command;

/// Runs `lockctl chaos ARGS --json` and returns its exit success and report.
fn chaos(args: &[&str]) -> (bool, serde_json::Value) {
    let dir = std::env::temp_dir().join(format!(
        "lockstock-chaos-test-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let output = Command::new(env!("CARGO_BIN_EXE_lockctl"))
        .arg("chaos")
        .args(args)
        .arg("--json")
        .arg("--dir")
        .arg(&dir)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("lockctl runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "no JSON report; stdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), report)
}

fn rules(report: &serde_json::Value) -> Vec<String> {
    report["violations"]
        .as_array()
        .expect("violations is a list")
        .iter()
        .map(|v| v["rule"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The run `scripts/test` makes on every change: 60 seconds of every fault (the Postgres
/// restarts on a server of the run's own; `clock-step` is skipped, and says so, without
/// libfaketime), seed 1, and the checker finds nothing, every rule strict.
#[test]
fn a_sixty_second_seeded_run_under_faults_has_no_violation() {
    let (ok, report) = chaos(&["--seconds", "60", "--seed", "1", "--own-postgres"]);
    assert!(
        ok && rules(&report).is_empty(),
        "violations (replay with the seed):\n{report:#}"
    );
    assert!(report["orders"].as_u64().unwrap_or(0) > 500, "{report}");
    let faults = report["faults"].as_object().expect("faults by kind");
    assert!(
        faults.len() >= 5,
        "too few kinds of fault injected: {report}"
    );
    // The workers' lock observer (`--chaos-history`) recorded extensions: the window check
    // used the last deadline of each lost guard, not its first.
    let history = std::fs::read_to_string(report["history"].as_str().expect("history path"))
        .expect("reading the history");
    assert!(
        history
            .lines()
            .any(|line| line.contains(r#""event":"extend""#)),
        "no extension in the history: {report}"
    );
}

/// The checker is not a rubber stamp: with the fence comparison removed from the commit, the
/// aimed `stale-commit` fault (a worker cut from Redis and Postgres right after its claim, past
/// the lock TTL) makes its commit land after a newer holder's, and the run says so.
///
/// Deterministic enough for every run: each fault waits for a claim instead of a random moment;
/// `--work-ms 100` leaves the nemesis 100 ms or more between the claim and the commit, and a
/// 5 s liveness TTL keeps the cut-off worker's orders its own (not redelivered and decided
/// elsewhere first). A 20 s run makes about seven such cuts; one suffices.
#[test]
fn without_the_fence_check_the_run_finds_stale_commits() {
    let (ok, report) = chaos(&[
        "--seconds",
        "20",
        "--seed",
        "1",
        "--faults",
        "stale-commit",
        "--work-ms",
        "100",
        "--liveness-ttl-ms",
        "5000",
        "--unsafe-skip-fence",
    ]);
    assert!(!ok, "the run must fail: {report}");
    assert!(
        rules(&report).iter().any(|r| r == "commit_fence_order"),
        "{report:#}"
    );
}

/// The checker is not a rubber stamp for the lock either: with the hand-off discarding undone
/// (`--unsafe-keep-stale-handoffs`), a waiter paused past the hold handed to it wakes up with a
/// fresh guard while the next holder holds the lock, and `window_overlap` says so.
///
/// The aimed `pause-waiter` fault stops the worker queued longest right after another's grant,
/// for 2 × TTL + 1 s. One product keeps every worker queued on it, and one long wait slice
/// (10 s, instead of the workers' 500 ms) lets the paused waiter resume inside its wait: with
/// 500 ms slices its wait has ended by the time the hold handed to it runs out, so the old
/// message is never read. Whether the resumed waiter reads the message before or after its next
/// look is tokio's random `select!` order; only the second makes the stale guard (the first is a
/// guard born expired), so each fault hits with even odds; a 30 s run makes about seven.
#[test]
fn without_hand_off_discarding_the_run_finds_overlapping_windows() {
    let (ok, report) = chaos(&[
        "--seconds",
        "30",
        "--seed",
        "1",
        "--products",
        "1",
        "--faults",
        "pause-waiter",
        "--lock-wait-ms",
        "10000",
        "--lock-wait-slice-ms",
        "10000",
        "--unsafe-keep-stale-handoffs",
    ]);
    assert!(!ok, "the run must fail: {report}");
    assert!(
        rules(&report).iter().any(|r| r == "window_overlap"),
        "{report:#}"
    );
}

/// Finding 1 (RELIABILITY.md): after Redis loses its data while orders are in flight and the
/// producer re-pushes the undecided ones, every order is still decided once (seed 3 left three
/// undecided before the durable intake; clean since, seeds 3–5).
#[test]
fn redis_losing_its_data_leaves_no_order_undecided() {
    let (ok, report) = chaos(&["--seconds", "15", "--seed", "3", "--faults", "redis-wipe"]);
    assert!(
        ok && rules(&report).is_empty(),
        "violations (replay with the seed):\n{report:#}"
    );
}
