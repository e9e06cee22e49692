//! A throwaway `redis-server` that speaks only TLS, with a certificate from a [`TestCa`].
//!
//! - When a test calls [`TlsRedis::start`], then `redis-server --port 0 --tls-port P` listens on a
//!   free 127.0.0.1 port with the CA's server certificate, does not ask clients for certificates
//!   (`--tls-auth-clients no`), and the call returns once it answers `PING` over TLS.
//! - Plain-text connections are not served (`--port 0`): every client must speak TLS.
//! - When the value is dropped, then the process is killed and its directory removed.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{ca::TestCa, redis_server::free_port};

/// A running TLS-only `redis-server` owned by a test.
#[derive(Debug)]
pub struct TlsRedis {
    /// Loopback port of the TLS listener.
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl TlsRedis {
    /// Starts a TLS-only server with `ca`'s server certificate; waits until it answers.
    pub fn start(ca: &TestCa) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("lockstock-tls-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the redis test dir");
        let path = |p: PathBuf| p.to_str().expect("utf-8 temp path").to_owned();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--tls-cert-file", &path(ca.server_pem())])
            .args(["--tls-key-file", &path(ca.server_key())])
            .args(["--tls-ca-cert-file", &path(ca.ca_pem())])
            .args(["--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &path(dir.clone())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test installs it)");
        let mut server = TlsRedis { port, dir, child };
        server.wait_until_answers(ca);
        server
    }

    /// The `rediss://` URL of this server.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// A client that trusts `ca` (given in code, not through the environment).
    pub fn client_trusting(&self, ca: &TestCa) -> redis::Client {
        let root_cert = std::fs::read(ca.ca_pem()).expect("read ca.pem");
        redis::Client::build_with_tls(
            self.url(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        )
        .expect("a rediss:// client with the test CA")
    }

    fn wait_until_answers(&mut self, ca: &TestCa) {
        let client = self.client_trusting(ca);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = client
                .get_connection_with_timeout(Duration::from_millis(500))
                .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn));
            if reply.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("redis-server with TLS exited at start ({status}); was it built with TLS?");
            }
            assert!(
                Instant::now() < deadline,
                "TLS redis-server on port {} did not answer within 10 s: {reply:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
