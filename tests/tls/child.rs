//! Runs one test of this binary again in a child process with extra environment variables.
//!
//! Trusting a private CA through the environment (`SSL_CERT_FILE`) is process-wide, and the test
//! harness runs tests as threads of one process, so such a test re-runs itself in a child with the
//! variables set (`std::env::set_var` is unsafe, and unsafe code is forbidden here).
//!
//! - When a test calls [`role`] in the parent, then it gets [`Role::Parent`]; it starts the servers
//!   and calls [`run_in_child`] with its own name and the variables to set.
//! - In the child, [`role`] returns [`Role::Child`] with the value the parent passed in
//!   [`CHILD_ARG`] (for example a server URL); the test then does the real work.
//! - When the child's test fails, or does not run at all (a wrong name), then the parent fails,
//!   showing the child's output.

use std::process::Command;

/// Set in the child: what the parent passes to it (a URL or a list of them).
pub const CHILD_ARG: &str = "LOCKSTOCK_TLS_CHILD_ARG";

/// Whether this process is the test harness's own or a child started by [`run_in_child`].
#[derive(Debug)]
pub enum Role {
    /// The parent: start the servers, then [`run_in_child`].
    Parent,
    /// The child, with the parent's argument.
    Child(String),
}

/// This process's role.
pub fn role() -> Role {
    match std::env::var(CHILD_ARG) {
        Ok(arg) => Role::Child(arg),
        Err(_) => Role::Parent,
    }
}

/// Runs the test `name` (its full path, e.g. `redis::some_test`) of this binary in a child
/// process with `env` and [`CHILD_ARG`] = `arg`; fails unless exactly that test ran and passed.
pub fn run_in_child(name: &str, arg: &str, env: &[(&str, &str)]) {
    let exe = std::env::current_exe().expect("path of this test binary");
    let output = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ARG, arg)
        .envs(env.iter().copied())
        .output()
        .expect("run this test binary again as a child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The child's own diagnostics, shown with the parent's output (`--nocapture` or a failure).
    eprint!("{stderr}");
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the child run of {name} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
}
