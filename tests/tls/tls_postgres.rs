//! A throwaway Postgres cluster that accepts only TLS connections, with a certificate from a
//! [`TestCa`]; the cluster itself is `tests/support/postgres_server.rs`.
//!
//! - When a test calls [`TlsPostgres::start`], then a fresh cluster starts on a free 127.0.0.1
//!   port with `ssl = on` and the CA's server certificate (it names `127.0.0.1` and `localhost`;
//!   the server also listens on `127.0.0.2`, which it does not name); `pg_hba.conf` admits TCP
//!   clients only over TLS (`hostssl`, trust), as a managed Postgres that demands TLS does.
//! - When no cluster can be run here (no server binaries, or root without a `postgres` user),
//!   then `start` prints why and returns `None`: the caller skips.
//! - When the value is dropped, then the server is stopped and its directory removed.

use crate::{ca::TestCa, postgres_server::PostgresServer};

/// A running TLS-only Postgres cluster owned by a test.
#[derive(Debug)]
pub struct TlsPostgres {
    /// The cluster.
    server: PostgresServer,
}

impl TlsPostgres {
    /// Makes and starts a cluster serving `ca`'s server certificate, or says why it cannot.
    pub fn start(ca: &TestCa) -> Option<Self> {
        let server = PostgresServer::create("tls")?;
        server.copy_in(&ca.server_pem(), "server.crt", 0o644);
        server.copy_in(&ca.server_key(), "server.key", 0o600);
        let dir = server.dir().display().to_string();
        server.init(
            &format!(
                "listen_addresses = '127.0.0.1,127.0.0.2'\n\
                 ssl = on\n\
                 ssl_cert_file = '{dir}/server.crt'\n\
                 ssl_key_file = '{dir}/server.key'\n\
                 max_connections = 20\n"
            ),
            // TCP only with TLS, as a managed Postgres that demands it.
            "local all all trust\nhostssl all all 127.0.0.0/8 trust\n",
        );
        Some(TlsPostgres { server })
    }

    /// A URL for the `postgres` database as the `postgres` superuser, with `query` appended
    /// (e.g. `sslmode=verify-full&sslrootcert=/path/ca.pem`).
    pub fn url(&self, query: &str) -> String {
        self.url_via("127.0.0.1", query)
    }

    /// As [`TlsPostgres::url`], through `host`: `127.0.0.1`, or `127.0.0.2`, where the server
    /// also listens but which its certificate does not name.
    pub fn url_via(&self, host: &str, query: &str) -> String {
        self.server.url_via(host, "postgres", query)
    }
}
