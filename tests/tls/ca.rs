//! A throwaway certificate authority made by the test, with one server certificate.
//!
//! - When a test calls [`TestCa::new`], then a fresh CA (ECDSA P-256, via `rcgen`) signs a server
//!   certificate for `127.0.0.1` and `localhost`, and the PEM files land in a new temp directory:
//!   `ca.pem`, `server.pem`, `server.key`.
//! - When the value is dropped, then that directory is removed.
//! - Two `TestCa`s never trust each other's certificates (each has its own key): a client given
//!   one CA refuses a server that presents the other's certificate.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA and the server certificate it signed, as PEM files in a temp directory.
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
}

impl TestCa {
    /// Makes a CA named `name` and a server certificate for `127.0.0.1` and `localhost`.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "lockstock-tls-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("create the CA's temp dir");

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("lockstock test CA {name}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("self-sign the CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .expect("sign the server certificate");

        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write ca.pem");
        std::fs::write(dir.join("server.pem"), server_cert.pem()).expect("write server.pem");
        std::fs::write(dir.join("server.key"), server_key.serialize_pem())
            .expect("write server.key");
        TestCa { dir }
    }

    /// The CA certificate (what a client trusts).
    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server certificate, signed by the CA.
    pub fn server_pem(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// The server certificate's private key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
