//! `sslmode=verify-full` / `require` against a Postgres that accepts only TLS, with a throwaway
//! CA given by `sslrootcert=` in the URL; the session is checked to really be encrypted.

use std::str::FromStr;

use lockstock::store::OrderStore;
use sqlx::{ConnectOptions, postgres::PgConnectOptions};

use crate::{ca::TestCa, tls_postgres::TlsPostgres};

/// Asserts, from the server's own view (`pg_stat_ssl`), that the session running the query is
/// encrypted.
async fn assert_session_encrypted<'c>(executor: impl sqlx::PgExecutor<'c>) {
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(executor)
            .await
            .expect("read pg_stat_ssl");
    assert!(encrypted, "pg_stat_ssl says the session is not encrypted");
}

/// `OrderStore` connects with `sslmode=verify-full&sslrootcert=<ca.pem>`, migrates and queries,
/// and the server reports the session as TLS.
#[tokio::test]
async fn order_store_migrates_and_queries_over_verify_full_with_sslrootcert() {
    let ca = TestCa::new("pg-full");
    let Some(pg) = TlsPostgres::start(&ca) else {
        return;
    };
    let url = pg.url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca.ca_pem().display()
    ));
    let store = OrderStore::connect_lazy(&url, 2).expect("configure the store");
    store.migrate().await.expect("migrate over verify-full TLS");
    let products: i64 = sqlx::query_scalar("SELECT count(*) FROM products")
        .fetch_one(store.pool())
        .await
        .expect("query the migrated schema over TLS");
    assert!(products >= 0);
    assert_session_encrypted(store.pool()).await;
}

/// `sslmode=require` encrypts without checking who signed the server's certificate.
#[tokio::test]
async fn sslmode_require_encrypts_without_a_root_certificate() {
    let ca = TestCa::new("pg-require");
    let Some(pg) = TlsPostgres::start(&ca) else {
        return;
    };
    let mut conn = PgConnectOptions::from_str(&pg.url("sslmode=require"))
        .expect("parse the URL")
        .connect()
        .await
        .expect("connect with sslmode=require");
    assert_session_encrypted(&mut conn).await;
}

/// `sslmode=verify-full` (and `verify-ca`) with `sslrootcert=` naming a CA that did not sign the
/// server's certificate fail with a TLS certificate error.
#[tokio::test]
async fn verify_full_with_a_wrong_ca_fails_with_a_certificate_error() {
    let server_ca = TestCa::new("pg-server");
    let other_ca = TestCa::new("pg-other");
    let Some(pg) = TlsPostgres::start(&server_ca) else {
        return;
    };
    for mode in ["verify-full", "verify-ca"] {
        let url = pg.url(&format!(
            "sslmode={mode}&sslrootcert={}",
            other_ca.ca_pem().display()
        ));
        let error = PgConnectOptions::from_str(&url)
            .expect("parse the URL")
            .connect()
            .await
            .expect_err("a certificate from an untrusted CA must be refused");
        assert!(
            error.to_string().to_lowercase().contains("certificate"),
            "{mode}: expected a certificate error, got {error}"
        );
    }
}

/// A plain-text connection is refused by this server (it admits TLS only), so the tests above
/// really ran against a server that demands TLS.
#[tokio::test]
async fn the_test_server_refuses_plain_text() {
    let ca = TestCa::new("pg-plain");
    let Some(pg) = TlsPostgres::start(&ca) else {
        return;
    };
    let error = PgConnectOptions::from_str(&pg.url("sslmode=disable"))
        .expect("parse the URL")
        .connect()
        .await
        .expect_err("the server admits only TLS");
    assert!(
        error.to_string().contains("pg_hba.conf"),
        "expected a pg_hba.conf refusal, got {error}"
    );
}
