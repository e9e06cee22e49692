//! A throwaway Postgres cluster of the run's own, so the nemesis may restart it (the shared
//! development server is never restarted).
//!
//! - When [`OwnPostgres::start`] succeeds, then a fresh cluster (`initdb`, `fsync = off`) runs
//!   from a temp directory on a free loopback port, admitting `postgres` over TCP without a
//!   password; [`OwnPostgres::url`] names its `postgres` database.
//! - Postgres refuses to run as root: when the harness runs as root, then the cluster belongs to
//!   the `postgres` OS user and every server command runs through `runuser -u postgres --`.
//! - When [`OwnPostgres::restart`] runs, then the server stops with a fast shutdown (every client
//!   disconnected, open transactions rolled back) and starts again with the same data and port.
//! - When the value is dropped, then the server is stopped (`pg_ctl stop -m immediate`) and its
//!   directory removed.
//! - When no server binaries are installed (`/usr/lib/postgresql/*/bin`), then `start` fails
//!   saying so.
//! - [`server_bindir`], [`running_as_root`], [`server_command`] and [`INITDB_ARGS`] are shared with the tests'
//!   own throwaway clusters (`tests/support/postgres_server.rs`).

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::Context;
use tokio::process::Command;

/// The run's own Postgres server.
#[derive(Debug)]
pub struct OwnPostgres {
    port: u16,
    dir: PathBuf,
    bindir: PathBuf,
    as_postgres_user: bool,
}

impl OwnPostgres {
    /// Creates and starts a cluster under `dir` (which must not exist yet or be empty).
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let bindir = server_bindir()
            .context("no Postgres server binaries under /usr/lib/postgresql/*/bin")?;
        let as_postgres_user = running_as_root();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let server = Self {
            port,
            dir: dir.to_path_buf(),
            bindir,
            as_postgres_user,
        };
        if as_postgres_user {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir))
            .await?;
        }
        let data = server.dir.join("data");
        run(server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(INITDB_ARGS))
        .await?;
        let settings = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nmax_connections = 200\n",
            server.dir.display()
        );
        let hba = "local all all trust\nhost all all 127.0.0.0/8 trust\n";
        run(server
            .command("sh")
            .arg("-c")
            .arg(format!(
                "printf '%s' \"$0\" >> '{conf}' && printf '%s' \"$1\" > '{hba_file}'",
                conf = data.join("postgresql.conf").display(),
                hba_file = data.join("pg_hba.conf").display(),
            ))
            .arg(settings)
            .arg(hba))
        .await?;
        server.pg_ctl(&["start", "-w", "-t", "60"]).await?;
        Ok(server)
    }

    /// Its `postgres` database, as the `postgres` superuser.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Fast shutdown, then start again on the same port with the same data.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["restart", "-w", "-t", "60", "-m", "fast"])
            .await
    }

    async fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        run(self
            .command("pg_ctl")
            .args(args)
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log")))
        .await
    }

    /// A server command run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        server_command(&self.bindir, self.as_postgres_user, &self.dir, program).into()
    }
}

/// `program` (a server binary from `bindir`, or `sh`), run in `dir` as the cluster's owner: the
/// `postgres` OS user through `runuser` when `as_postgres_user` (the caller is root, which
/// Postgres refuses), else the caller.
pub fn server_command(
    bindir: &Path,
    as_postgres_user: bool,
    dir: &Path,
    program: &str,
) -> std::process::Command {
    let program = match program {
        "sh" => PathBuf::from("/bin/sh"),
        name => bindir.join(name),
    };
    let mut command = if as_postgres_user {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        std::process::Command::new(program)
    };
    command.current_dir(dir).stdin(Stdio::null());
    command
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = server_command(&self.bindir, self.as_postgres_user, &self.dir, "pg_ctl")
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn run(command: &mut Command) -> anyhow::Result<()> {
    let what = format!("{:?}", command.as_std());
    let output = command
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    anyhow::ensure!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// `initdb`'s flags after `-D DIR` for a throwaway cluster: superuser `postgres`, trusted local
/// logins, UTF-8 with the C locale, no fsync while initialising.
pub const INITDB_ARGS: [&str; 7] = [
    "-U",
    "postgres",
    "--auth=trust",
    "-E",
    "UTF8",
    "--locale=C",
    "-N",
];

/// Whether this process runs as root (`id -u` says 0).
pub fn running_as_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The newest installed server binaries: `/usr/lib/postgresql/<version>/bin`.
pub fn server_bindir() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
}
