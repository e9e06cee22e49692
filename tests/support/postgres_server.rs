//! A throwaway Postgres cluster a test owns: it can stop and start it (never the shared server).
//!
//! - When a test calls [`PostgresServer::create`], then a temp directory is made for a fresh
//!   cluster; the test may copy files in ([`PostgresServer::copy_in`]), then
//!   [`PostgresServer::init`] runs `initdb`, appends the test's settings to `postgresql.conf`,
//!   replaces `pg_hba.conf` and starts the server on a free 127.0.0.1 port with `pg_ctl`.
//!   [`PostgresServer::plain`] does all of that for a password-less TCP server.
//! - Postgres refuses to run as root: when the test runs as root, then the cluster belongs to the
//!   `postgres` OS user and every server command runs through `runuser -u postgres --`; otherwise
//!   the calling user runs it directly.
//! - When no server binaries are installed (`/usr/lib/postgresql/*/bin`), or the test runs as root
//!   and there is no `postgres` user, then `create` prints why and returns `None`: the caller skips.
//! - [`PostgresServer::stop`] is a fast shutdown (clients are disconnected, as by a restart);
//!   [`PostgresServer::start`] starts it again on the same port with the same data.
//! - When the value is dropped, then the server is stopped (`pg_ctl stop -m immediate`) and the
//!   directory removed.
// Each test binary uses the part it needs.
#![allow(dead_code)]

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use lockstock::tools::chaos::own_postgres::{
    INITDB_ARGS, running_as_root, server_bindir, server_command,
};

use crate::redis_server::free_port;

/// A Postgres cluster owned by a test.
#[derive(Debug)]
pub struct PostgresServer {
    /// Loopback port the server listens on.
    pub port: u16,
    /// Holds the data directory, any copied-in files, sockets and the log.
    dir: PathBuf,
    /// Where `initdb`, `pg_ctl` and `postgres` are.
    bindir: PathBuf,
    /// Whether server commands run as the `postgres` OS user (the test runs as root).
    as_postgres_user: bool,
}

impl PostgresServer {
    /// A temp directory for a new cluster named after `purpose`, or `None` (with the reason on
    /// stderr) when no cluster can be run here.
    pub fn create(purpose: &str) -> Option<Self> {
        let Some(bindir) = server_bindir() else {
            skip("no Postgres server binaries under /usr/lib/postgresql/*/bin");
            return None;
        };
        let as_postgres_user = running_as_root();
        if as_postgres_user && !succeeds(Command::new("id").arg("postgres")) {
            skip("running as root, and there is no 'postgres' OS user to run the server");
            return None;
        }
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "lockstock-{purpose}-pg-{}-{port}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("create the cluster's temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod 700 the cluster's temp dir");
        Some(PostgresServer {
            port,
            dir,
            bindir,
            as_postgres_user,
        })
    }

    /// A started cluster that admits TCP clients on 127.0.0.1 without a password, as the
    /// `postgres` superuser; `None` when no cluster can be run here.
    pub fn plain() -> Option<Self> {
        Self::plain_with("")
    }

    /// As [`PostgresServer::plain`], with `settings` appended to `postgresql.conf` (e.g.
    /// `max_connections = 20\n`).
    pub fn plain_with(settings: &str) -> Option<Self> {
        let server = Self::create("plain")?;
        server.init(
            &format!("listen_addresses = '127.0.0.1'\n{settings}"),
            "local all all trust\nhost all all 127.0.0.0/8 trust\n",
        );
        Some(server)
    }

    /// The cluster's directory (for files the settings name).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Copies `from` into the cluster's directory as `name`, with file mode `mode`.
    pub fn copy_in(&self, from: &Path, name: &str, mode: u32) {
        let to = self.dir.join(name);
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", to.display()));
    }

    /// `initdb`, then `settings` appended to `postgresql.conf` (after the port, the socket
    /// directory and `fsync = off`), `pg_hba.conf` replaced by `hba`, then [`Self::start`].
    pub fn init(&self, settings: &str, hba: &str) {
        if self.as_postgres_user {
            self.must(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&self.dir),
            );
        }
        let data = self.data();
        self.must(
            self.server_command("initdb")
                .arg("-D")
                .arg(&data)
                .args(INITDB_ARGS),
        );
        let settings = format!(
            "\n# ---- lockstock test ----\nport = {}\nunix_socket_directories = '{}'\nfsync = off\n{settings}",
            self.port,
            self.dir.display()
        );
        self.append_as_owner(&data.join("postgresql.conf"), &settings);
        self.must(self.server_command("sh").arg("-c").arg(format!(
            "printf '%s' '{hba}' > '{}'",
            data.join("pg_hba.conf").display()
        )));
        self.start();
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start(&self) {
        self.must(
            self.server_command("pg_ctl")
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(self.data())
                .arg("-l")
                .arg(self.dir.join("postgres.log")),
        );
    }

    /// Stops the server with a fast shutdown: every client is disconnected.
    pub fn stop(&self) {
        self.must(
            self.server_command("pg_ctl")
                .args(["stop", "-w", "-m", "fast", "-D"])
                .arg(self.data()),
        );
    }

    /// A URL for database `database` as the `postgres` superuser through `host`, with `query`
    /// appended (e.g. `sslmode=verify-full&sslrootcert=/path/ca.pem`, or empty).
    pub fn url_via(&self, host: &str, database: &str, query: &str) -> String {
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("postgres://postgres@{host}:{}/{database}{query}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A server command (`initdb`, `pg_ctl`, or a shell) run as the cluster's owner.
    fn server_command(&self, program: &str) -> Command {
        server_command(&self.bindir, self.as_postgres_user, &self.dir, program)
    }

    fn append_as_owner(&self, file: &Path, text: &str) {
        let mut command = self.server_command("sh");
        command
            .arg("-c")
            .arg(format!("cat >> '{}'", file.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .expect("spawn sh to append to a server file");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin
                .write_all(text.as_bytes())
                .expect("write the settings");
        }
        let output = child.wait_with_output().expect("wait for sh");
        self.check(&output, "append to postgresql.conf");
    }

    fn must(&self, command: &mut Command) {
        let what = format!("{command:?}");
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("run {what}: {e}"));
        self.check(&output, &what);
    }

    fn check(&self, output: &Output, what: &str) {
        if !output.status.success() {
            let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
            panic!(
                "{what} failed ({}):\n{}\n{}\n--- postgres.log\n{log}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self
            .server_command("pg_ctl")
            .args(["stop", "-w", "-m", "immediate", "-D"])
            .arg(self.data())
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Says why a Postgres test does not run, on the real stderr (libtest captures `eprintln!`, and
/// would hide the reason for a test that passes).
fn skip(reason: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED a throwaway-Postgres test: {reason}"
    );
}

fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
