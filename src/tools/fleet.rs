//! Starting and stopping real `worker` processes, for the demo and the pipeline benchmark.
//!
//! - When a fleet is started, then each worker is a separate OS process of the `worker` binary
//!   found next to the running executable, with its output going to a log file.
//! - When the fleet is stopped, then every worker gets SIGTERM and is waited for (a graceful
//!   drain); any still running after the grace period is killed.
//! - When the fleet is dropped, then remaining processes are killed.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use tokio::process::{Child, Command};

/// A group of worker processes.
#[derive(Debug)]
pub struct Fleet {
    children: Vec<Child>,
}

/// The `worker` binary beside the current executable (`target/<profile>/worker`).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("finding the running executable")?;
    let path = me.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found next to {} (build all binaries)",
        path.display(),
        me.display()
    );
    Ok(path)
}

impl Fleet {
    /// Starts `count` processes of `exe` with `args`; worker `i` logs to `log_dir/worker-<i>.log`.
    pub fn start(
        exe: &Path,
        args: &[String],
        count: usize,
        log_dir: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let mut children = Vec::with_capacity(count);
        for i in 0..count {
            let log_path = log_dir.join(format!("worker-{i}.log"));
            let log = std::fs::File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let child = Command::new(exe)
                .args(args)
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))?;
            children.push(child);
        }
        Ok(Self { children })
    }

    /// The process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(Child::id).collect()
    }

    /// SIGTERM to every process, then waits up to `grace` for each; kills the rest. Returns how
    /// many exited cleanly (status 0).
    pub async fn stop(mut self, grace: Duration) -> usize {
        for pid in self.pids() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let mut clean = 0;
        for child in &mut self.children {
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(Ok(status)) if status.success() => clean += 1,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill().await;
                }
            }
        }
        clean
    }
}
