//! TLS to the database, configured as libpq users configure it, in the URL's query:
//!
//! - `sslmode`: `disable` (never), `allow` and `prefer` (TLS when the server offers it, libpq's
//!   default; the certificate is not checked), `require` (TLS or nothing; the certificate is checked
//!   against `sslrootcert` when one is given, as libpq does), `verify-ca` (the chain must lead to a
//!   root of `sslrootcert`), `verify-full` (that, and the certificate names the host);
//! - `sslrootcert`: a PEM file of trusted roots, or `system` for the Mozilla roots built into the
//!   binary; without it, `verify-*` looks for libpq's `~/.postgresql/root.crt`;
//! - `sslcert` and `sslkey`: a client certificate and its key, both PEM.
//!
//! rustls with the ring provider: the TLS stack the binary's HTTP client already carries, and no
//! system OpenSSL to match. An option this does not know is refused, never ignored.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Postgres(#[from] postgres::Error),
    #[error("the database URL's TLS options: {0}")]
    Options(String),
    #[error("cannot read {what} {}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the database URL's TLS options")]
    Tls(#[from] rustls::Error),
}

/// What a database URL says about where to connect and how.
pub struct Target {
    pub config: tokio_postgres::Config,
    /// The TLS connector; none for `sslmode=disable`.
    pub tls: Option<MakeRustlsConnect>,
}

/// How the server's certificate is checked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// Reads `url`: the connection parameters tokio-postgres knows, and the TLS options above.
pub fn target(url: &str) -> Result<Target, ConnectError> {
    if !super::is_database_url(url) {
        // A key-value string: tokio-postgres reads `sslmode` (disable, prefer, require) itself.
        let config = tokio_postgres::Config::from_str(url)?;
        let tls = match config.get_ssl_mode() {
            SslMode::Disable => None,
            _ => Some(connector(None, Check::Nothing, None)?),
        };
        return Ok(Target { config, tls });
    }
    let mut parsed = url::Url::parse(url).map_err(|e| ConnectError::Options(format!("not a URL ({e})")))?;
    let (mut mode, mut root, mut cert, mut key) = (None, None, None, None);
    let mut kept = Vec::new();
    for (k, v) in parsed.query_pairs() {
        match k.as_ref() {
            "sslmode" => mode = Some(v.into_owned()),
            "sslrootcert" => root = Some(v.into_owned()),
            "sslcert" => cert = Some(PathBuf::from(v.as_ref())),
            "sslkey" => key = Some(PathBuf::from(v.as_ref())),
            _ => kept.push((k.into_owned(), v.into_owned())),
        }
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    let mut config = tokio_postgres::Config::from_str(parsed.as_str())?;
    let (ssl_mode, check) = match mode.as_deref().unwrap_or("prefer") {
        "disable" => {
            config.ssl_mode(SslMode::Disable);
            return Ok(Target { config, tls: None });
        }
        "allow" | "prefer" => (SslMode::Prefer, Check::Nothing),
        "require" if root.is_some() => (SslMode::Require, Check::Chain),
        "require" => (SslMode::Require, Check::Nothing),
        "verify-ca" => (SslMode::Require, Check::Chain),
        "verify-full" => (SslMode::Require, Check::ChainAndName),
        other => {
            return Err(ConnectError::Options(format!(
                "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )))
        }
    };
    config.ssl_mode(ssl_mode);
    let client_auth = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => return Err(ConnectError::Options("sslcert and sslkey go together".into())),
    };
    Ok(Target { config, tls: Some(connector(root.as_deref(), check, client_auth)?) })
}

/// A rustls connector that checks the server's certificate as `check` says.
fn connector(
    root: Option<&str>,
    check: Check,
    client_auth: Option<(PathBuf, PathBuf)>,
) -> Result<MakeRustlsConnect, ConnectError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = if check == Check::Nothing {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(Unchecked(provider)))
    } else {
        let roots = Arc::new(roots(root)?);
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| ConnectError::Options(format!("the trusted roots cannot be used ({e})")))?;
        if check == Check::Chain {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
        } else {
            builder.dangerous().with_custom_certificate_verifier(webpki)
        }
    };
    let tls = match client_auth {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(&cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|source| ConnectError::File { what: "sslcert", path: cert.clone(), source })?;
            let key = PrivateKeyDer::from_pem_file(&key).map_err(|source| ConnectError::File {
                what: "sslkey",
                path: key.clone(),
                source,
            })?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    Ok(MakeRustlsConnect::new(tls))
}

/// The trusted roots `sslrootcert` names.
fn roots(root: Option<&str>) -> Result<RootCertStore, ConnectError> {
    let mut store = RootCertStore::empty();
    if root == Some("system") {
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(store);
    }
    let path = match root {
        Some(path) => PathBuf::from(path),
        None => {
            let default = std::env::var_os("HOME").map(|h| Path::new(&h).join(".postgresql/root.crt"));
            match default {
                Some(path) if path.exists() => path,
                _ => {
                    return Err(ConnectError::Options(
                        "checking the server's certificate needs sslrootcert=<PEM file> (or sslrootcert=system); \
                         libpq's default ~/.postgresql/root.crt does not exist"
                            .into(),
                    ))
                }
            }
        }
    };
    let certs = CertificateDer::pem_file_iter(&path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| ConnectError::File { what: "sslrootcert", path: path.clone(), source })?;
    let (added, _) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(ConnectError::Options(format!("sslrootcert {} holds no certificate", path.display())));
    }
    Ok(store)
}

/// `prefer` and `require` without roots: encrypted, the certificate taken as it comes (libpq's
/// behaviour); the handshake's signatures are still checked.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the whole web-PKI check but the name. The verifier checks the chain before the
/// name, so a certificate refused only for its name has a valid chain.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use crate::events::store::{EventStore, ExpectedVersion};
    use crate::storage::postgres::log::PostgresStore;
    use crate::storage::postgres::server::PgServer;
    use crate::storage::sqlite::log::Durability;

    /// A CA, and a server certificate it signs for `names`.
    fn pki(names: &[&str]) -> (String, String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name.push(rcgen::DnType::CommonName, "vadyl test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        (ca_cert.pem(), cert.pem(), key.serialize_pem())
    }

    struct Fixture {
        server: PgServer,
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn start(names: &[&str]) -> Self {
            let (ca, cert, key) = pki(names);
            let (other_ca, _, _) = pki(names);
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
            std::fs::write(dir.path().join("other-ca.pem"), other_ca).unwrap();
            Self { server: PgServer::start_with_tls(&cert, &key).unwrap(), dir }
        }

        fn url(&self, query: &str) -> String {
            let query = query.replace("{dir}", &self.dir.path().display().to_string());
            format!("{}?{query}", self.server.url("postgres"))
        }

        /// Connects with `query` and says whether the session is encrypted.
        fn encrypted(&self, query: &str) -> Result<bool, String> {
            let mut c = crate::storage::postgres::connect(&self.url(query))
                .map_err(|e| crate::report::ErrorChain(&e).to_string())?;
            let row = c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).unwrap();
            Ok(row.get(0))
        }
    }

    #[test]
    fn sslmode_is_followed_as_libpq_users_expect() {
        let f = Fixture::start(&["127.0.0.1", "localhost"]);
        // The server refuses connections in the clear.
        let clear = f.encrypted("sslmode=disable").unwrap_err();
        assert!(clear.contains("no encryption"), "{clear}");
        for query in [
            "",
            "sslmode=prefer",
            "sslmode=require",
            "sslmode=require&sslrootcert={dir}/ca.pem",
            "sslmode=verify-ca&sslrootcert={dir}/ca.pem",
            "sslmode=verify-full&sslrootcert={dir}/ca.pem",
            "sslmode=verify-full&sslrootcert={dir}/ca.pem&application_name=vadyl-test",
        ] {
            assert_eq!(f.encrypted(query), Ok(true), "{query}");
        }
        // A root that did not sign the server's certificate is refused, and so is `require` with
        // it (libpq checks the chain when a root is given).
        for query in [
            "sslmode=verify-full&sslrootcert={dir}/other-ca.pem",
            "sslmode=verify-ca&sslrootcert={dir}/other-ca.pem",
            "sslmode=require&sslrootcert={dir}/other-ca.pem",
        ] {
            let e = f.encrypted(query).unwrap_err();
            assert!(e.contains("certificate"), "{query}: {e}");
        }
        let e = f.encrypted("sslmode=verify-full&sslrootcert={dir}/missing.pem").unwrap_err();
        assert!(e.contains("cannot read sslrootcert") && e.contains("missing.pem"), "{e}");
        let e = f.encrypted("sslmode=verify-everything").unwrap_err();
        assert!(e.contains("sslmode=verify-everything is not one of"), "{e}");
        let e = f.encrypted("sslmode=require&sslcrl={dir}/crl.pem").unwrap_err();
        assert!(e.contains("sslcrl"), "an option not supported is refused, never ignored: {e}");
        let e = f.encrypted("sslmode=require&sslcert={dir}/ca.pem").unwrap_err();
        assert!(e.contains("sslcert and sslkey go together"), "{e}");
    }

    #[test]
    fn verify_ca_checks_the_chain_and_verify_full_the_name_too() {
        let f = Fixture::start(&["db.example"]);
        assert_eq!(f.encrypted("sslmode=verify-ca&sslrootcert={dir}/ca.pem"), Ok(true));
        let e = f.encrypted("sslmode=verify-full&sslrootcert={dir}/ca.pem").unwrap_err();
        assert!(e.contains("certificate") && e.contains("name"), "{e}");
    }

    #[test]
    fn the_log_its_writer_and_its_listener_run_over_tls() {
        let f = Fixture::start(&["127.0.0.1"]);
        f.server.database("tls_log").unwrap();
        let url = f.url("sslmode=verify-full&sslrootcert={dir}/ca.pem").replace("/postgres?", "/tls_log?");
        let (a, b) = (
            PostgresStore::open(&url, Durability::Full).unwrap(),
            PostgresStore::open(&url, Durability::Full).unwrap(),
        );
        let mut changes = b.subscribe_changes().unwrap();
        let first = crate::storage::log_semantics::append(&a, "s", ExpectedVersion::NoStream, &["e1"]).unwrap();
        crate::storage::log_semantics::append(&b, "s", ExpectedVersion::Exact(1), &["e2"]).unwrap();
        assert_eq!(a.head_position().unwrap(), 2);
        assert_eq!(b.event_by_id("e1").unwrap().map(|e| e.hash), Some(first.events[0].hash));
        // B's listener hears of appends over its own TLS connection.
        let seen = *changes.borrow_and_update();
        crate::storage::log_semantics::append(&a, "s", ExpectedVersion::Exact(2), &["e3"]).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while *changes.borrow() == seen && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_ne!(*changes.borrow(), seen, "no change notice reached the other store");
    }
}
