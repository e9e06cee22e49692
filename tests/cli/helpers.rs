//! Running the binaries: a test's keys, its database URL, and child processes with their output.

use std::{
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use lockstock::services::SharedRedis;

pub use crate::test_env::{database_url, wait_decided, wait_for};

/// The path of one of the package's binaries.
pub fn binary(name: &str) -> &'static str {
    match name {
        "producer" => env!("CARGO_BIN_EXE_producer"),
        "worker" => env!("CARGO_BIN_EXE_worker"),
        "api" => env!("CARGO_BIN_EXE_api"),
        "lockctl" => env!("CARGO_BIN_EXE_lockctl"),
        other => panic!("no binary {other}"),
    }
}

/// Every binary of the package.
pub const BINARIES: [&str; 4] = ["producer", "worker", "api", "lockctl"];

/// A command for binary `name` with none of the variables the binaries read inherited from the
/// test's environment (so a developer's exported `QUEUE_KEY` cannot change a test).
pub fn command(name: &str) -> Command {
    let mut command = Command::new(binary(name));
    for var in [
        "QUEUE_KEY",
        "DEAD_KEY",
        "LOCK_PREFIX",
        "LOCK_REDIS_URLS",
        "LOG_FORMAT",
        "WORKER_ID",
        "METRICS_ADDR",
        "API_TOKEN",
        "API_BIND",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command.stdin(Stdio::null());
    command
}

/// Runs `command` to completion (at most 30 s) and returns its output.
pub fn run(mut command: Command) -> Output {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    wait_output(child, Duration::from_secs(30))
}

/// Waits up to `within` for `child` to exit (killing it if it does not) and returns its output.
pub fn wait_output(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().expect("poll the child").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the binary did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect the output")
}

/// Asserts that `binary` exited 0, showing its output otherwise.
pub fn assert_success(binary: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{binary} exited with {:?}: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A long-running binary, killed if the test ends (or panics) before stopping it.
pub struct Running(Option<Child>);

impl Running {
    /// Starts `command`.
    pub fn spawn(command: &mut Command) -> Self {
        Self(Some(command.spawn().expect("start the binary")))
    }

    /// Sends SIGTERM and waits up to 30 s for the exit; returns the output.
    pub async fn stop(mut self) -> Output {
        let child = self.0.take().expect("still running");
        terminate(&child);
        tokio::task::spawn_blocking(move || wait_output(child, Duration::from_secs(30)))
            .await
            .expect("wait for the binary")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends SIGTERM to `child`.
fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
}

/// A unique key namespace for one test.
pub fn prefix() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// The length of list `key` on `redis_url`.
pub async fn llen(redis_url: &str, key: &str) -> usize {
    let mut conn = SharedRedis::connect(redis_url)
        .await
        .expect("connect to the test redis")
        .connection();
    redis::cmd("LLEN")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("LLEN")
}

/// The subcommands a help page lists (without `help`).
pub fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}
