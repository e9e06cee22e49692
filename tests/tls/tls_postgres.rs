//! A throwaway Postgres cluster that accepts only TLS connections, with a certificate from a
//! [`TestCa`].
//!
//! - When a test calls [`TlsPostgres::start`], then `initdb` makes a fresh cluster in a temp
//!   directory and `pg_ctl` starts it on a free 127.0.0.1 port with `ssl = on` and the CA's server
//!   certificate (it names `127.0.0.1` and `localhost`; the server also listens on `127.0.0.2`,
//!   which it does not name); `pg_hba.conf` admits TCP clients only over TLS (`hostssl`, trust),
//!   as a managed Postgres that demands TLS does. Unix sockets live in the temp directory.
//! - Postgres refuses to run as root: when the test runs as root, then the cluster belongs to the
//!   `postgres` OS user and every server command runs through `runuser -u postgres --`; otherwise
//!   the calling user runs it directly.
//! - When no server binaries are installed (`/usr/lib/postgresql/*/bin`), or the test runs as root
//!   and there is no `postgres` user, then `start` prints why and returns `None`: the caller skips.
//! - When the value is dropped, then the server is stopped (`pg_ctl stop -m immediate`) and the
//!   directory removed.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use crate::{ca::TestCa, redis_server::free_port};

/// A running TLS-only Postgres cluster owned by a test.
#[derive(Debug)]
pub struct TlsPostgres {
    /// Loopback port the server listens on.
    pub port: u16,
    /// Holds the data directory, the server's certificate and key, sockets and the log.
    dir: PathBuf,
    /// Where `initdb`, `pg_ctl` and `postgres` are.
    bindir: PathBuf,
    /// Whether server commands run as the `postgres` OS user (the test runs as root).
    as_postgres_user: bool,
}

impl TlsPostgres {
    /// Makes and starts a cluster serving `ca`'s server certificate, or says why it cannot.
    pub fn start(ca: &TestCa) -> Option<Self> {
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
            "lockstock-tls-pg-{}-{port}-{}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("create the cluster's temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod 700 the cluster's temp dir");
        std::fs::copy(ca.server_pem(), dir.join("server.crt")).expect("copy server.crt");
        std::fs::copy(ca.server_key(), dir.join("server.key")).expect("copy server.key");
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod 600 server.key");
        let cluster = TlsPostgres {
            port,
            dir,
            bindir,
            as_postgres_user,
        };
        if as_postgres_user {
            cluster.must(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&cluster.dir),
            );
        }

        let data = cluster.data();
        cluster.must(cluster.server_command("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-N",
        ]));
        let dir = cluster.dir.display();
        let settings = format!(
            "\n# ---- lockstock TLS test ----\n\
             port = {port}\n\
             listen_addresses = '127.0.0.1,127.0.0.2'\n\
             unix_socket_directories = '{dir}'\n\
             ssl = on\n\
             ssl_cert_file = '{dir}/server.crt'\n\
             ssl_key_file = '{dir}/server.key'\n\
             fsync = off\n\
             max_connections = 20\n"
        );
        cluster.append_as_owner(&data.join("postgresql.conf"), &settings);
        // Replace the generated rules: TCP only with TLS, as a managed Postgres that demands it.
        cluster.must(cluster.server_command("sh").arg("-c").arg(format!(
            "printf 'local all all trust\\nhostssl all all 127.0.0.0/8 trust\\n' > '{}'",
            data.join("pg_hba.conf").display()
        )));
        cluster.must(
            cluster
                .server_command("pg_ctl")
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(&data)
                .arg("-l")
                .arg(cluster.dir.join("postgres.log")),
        );
        Some(cluster)
    }

    /// A URL for the `postgres` database as the `postgres` superuser, with `query` appended
    /// (e.g. `sslmode=verify-full&sslrootcert=/path/ca.pem`).
    pub fn url(&self, query: &str) -> String {
        self.url_via("127.0.0.1", query)
    }

    /// As [`TlsPostgres::url`], through `host`: `127.0.0.1`, or `127.0.0.2`, where the server
    /// also listens but which its certificate does not name.
    pub fn url_via(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A server command (`initdb`, `pg_ctl`, or a shell) run as the cluster's owner.
    fn server_command(&self, program: &str) -> Command {
        let program = match program {
            "sh" => PathBuf::from("/bin/sh"),
            name => self.bindir.join(name),
        };
        let mut command = if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
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

impl Drop for TlsPostgres {
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
    let _ = writeln!(std::io::stderr(), "SKIPPED a TLS Postgres test: {reason}");
}

/// The newest installed server binaries: `/usr/lib/postgresql/<version>/bin`.
fn server_bindir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
