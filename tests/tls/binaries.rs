//! The real binaries over TLS: `producer` pushes to a `rediss://` Redis, `lockctl` reads it back
//! through the shared Redis connect function, each trusting the throwaway CA via `SSL_CERT_FILE`;
//! `lockctl migrate` runs against a Postgres that demands TLS with `sslmode=verify-full`.

use std::process::{Command, Output};

use crate::{ca::TestCa, tls_postgres::TlsPostgres, tls_redis::TlsRedis};

fn run(binary: &str, args: &[&str], ssl_cert_file: Option<&std::path::Path>) -> Output {
    let mut command = Command::new(binary);
    command
        .args(args)
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL");
    match ssl_cert_file {
        Some(file) => command.env("SSL_CERT_FILE", file),
        None => command.env_remove("SSL_CERT_FILE"),
    };
    command.output().expect("run the binary")
}

fn text(output: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `producer --redis-url rediss://…` with `SSL_CERT_FILE` pushes its orders; `lockctl status`
/// reads the queue over TLS; without the CA, `lockctl` fails with a certificate error.
#[tokio::test]
async fn producer_and_lockctl_use_rediss_with_ssl_cert_file() {
    let ca = TestCa::new("bins");
    let server = TlsRedis::start(&ca);
    let url = server.url();

    let pushed = run(
        env!("CARGO_BIN_EXE_producer"),
        &[
            "--redis-url",
            &url,
            "--product",
            "1",
            "--count",
            "5",
            "--no-intake",
        ],
        Some(&ca.ca_pem()),
    );
    assert!(
        pushed.status.success(),
        "producer over TLS: {}",
        text(&pushed)
    );

    let mut conn = server
        .client_trusting(&ca)
        .get_multiplexed_async_connection()
        .await
        .expect("a TLS connection trusting the CA");
    let depth: usize = redis::cmd("LLEN")
        .arg("orders:pending")
        .query_async(&mut conn)
        .await
        .expect("LLEN over TLS");
    assert_eq!(depth, 5, "the producer's orders are in the pending list");

    let status = run(
        env!("CARGO_BIN_EXE_lockctl"),
        &["status", "--redis-url", &url],
        Some(&ca.ca_pem()),
    );
    assert!(
        status.status.success(),
        "lockctl status over TLS: {}",
        text(&status)
    );

    let refused = run(
        env!("CARGO_BIN_EXE_lockctl"),
        &["status", "--redis-url", &url],
        Some(&TestCa::new("bins-other").ca_pem()),
    );
    assert!(
        !refused.status.success(),
        "an untrusted CA must be refused: {}",
        text(&refused)
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .to_lowercase()
            .contains("certificate"),
        "expected a certificate error: {}",
        text(&refused)
    );
}

/// `lockctl migrate --database-url '…?sslmode=verify-full&sslrootcert=…'` migrates a Postgres
/// that admits only TLS.
#[tokio::test]
async fn lockctl_migrates_over_verify_full() {
    let ca = TestCa::new("bins-pg");
    let Some(pg) = TlsPostgres::start(&ca) else {
        return;
    };
    let url = pg.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca.ca_pem().display()
    ));
    let migrated = run(
        env!("CARGO_BIN_EXE_lockctl"),
        &["migrate", "--database-url", &url],
        None,
    );
    assert!(
        migrated.status.success(),
        "lockctl migrate over TLS: {}",
        text(&migrated)
    );
}
