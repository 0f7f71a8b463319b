//! TLS settings for `rediss://` targets: which CAs to trust (`--tls-ca`, or the system's
//! roots), whether to check the server's certificate at all (`--tls-insecure`), and an
//! optional client certificate (`--tls-cert`, `--tls-key`). Built once per run into a rustls
//! `ClientConfig` (the `ring` provider) that every connection shares.
//!
//! Also here: turning rustls errors into messages that say what to do (which flag to give).
//! Printing the `--tls-insecure` warning is the front end's job: this module prints nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};

use crate::error::{Error, Result};

/// The `--tls-*` flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM bundle of the CAs to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// Do not check the server's certificate (the connection is encrypted, not authenticated).
    pub insecure: bool,
    /// PEM client certificate chain, for servers that ask for one.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

impl TlsOptions {
    /// Whether any flag was given.
    pub fn is_set(&self) -> bool {
        *self != TlsOptions::default()
    }
}

/// A rustls client configuration built from [`TlsOptions`], cheap to clone. Two configs are
/// equal when they were built from the same options.
#[derive(Clone)]
pub struct TlsConfig {
    options: TlsOptions,
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.options.fmt(f)
    }
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        self.options == other.options
    }
}

impl Eq for TlsConfig {}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn usage(flag: &str, path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Usage(format!("{flag} {}: {msg}", path.display()))
}

fn read_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| usage(flag, path, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| usage(flag, path, e))?;
    if certs.is_empty() {
        return Err(usage(flag, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

impl TlsConfig {
    /// Read the files the options name (or the system's roots) and build the configuration.
    /// Errors name the flag and the file.
    pub fn new(options: &TlsOptions) -> Result<TlsConfig> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Usage(format!("TLS: {e}")))?;
        let builder = if options.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerifier(
                    provider.signature_verification_algorithms,
                )))
        } else {
            let mut roots = RootCertStore::empty();
            match &options.ca {
                Some(path) => {
                    for cert in read_certs("--tls-ca", path)? {
                        roots
                            .add(cert)
                            .map_err(|e| usage("--tls-ca", path, format!("bad CA: {e}")))?;
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    let (added, _) = roots.add_parsable_certificates(found.certs);
                    if added == 0 {
                        let why = found
                            .errors
                            .first()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default();
                        return Err(Error::Usage(format!(
                            "TLS: no CA certificate found on this system{why}; give the \
                             server's CA with --tls-ca FILE"
                        )));
                    }
                }
            }
            builder.with_root_certificates(roots)
        };
        let config = match (&options.cert, &options.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs("--tls-cert", cert)?;
                let key_der =
                    PrivateKeyDer::from_pem_file(key).map_err(|e| usage("--tls-key", key, e))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| usage("--tls-cert", cert, e))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(Error::Usage("--tls-cert and --tls-key go together".into()));
            }
        };
        Ok(TlsConfig {
            options: options.clone(),
            config: Arc::new(config),
        })
    }

    /// The options it was built from.
    pub fn options(&self) -> &TlsOptions {
        &self.options
    }

    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// `--tls-insecure`: accepts any certificate, but still checks that the server holds the key
/// of the certificate it sent (the handshake signatures), as rustls requires of a verifier.
#[derive(Debug)]
struct NoVerifier(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// A rustls error, with what to do about it.
pub fn describe(e: &rustls::Error) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "{e}: the server's certificate is not signed by a trusted CA; give its CA with \
             --tls-ca FILE, or skip the check with --tls-insecure"
        ),
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "{e}: the server's certificate does not name this host; connect by a name or \
             address it lists, or skip the check with --tls-insecure"
        ),
        E::InvalidCertificate(_) => {
            format!("{e} (the server's certificate; --tls-insecure skips the check)")
        }
        E::AlertReceived(
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure,
        ) => {
            format!(
                "{e} (the server may require a client certificate: --tls-cert FILE --tls-key FILE)"
            )
        }
        E::InvalidMessage(_) => {
            format!("{e} (the server does not seem to speak TLS on this port: try redis://)")
        }
        _ => e.to_string(),
    }
}

/// An I/O error of the handshake, with what to do about it.
pub fn describe_io(e: &std::io::Error, timeout: Duration) -> String {
    use std::io::ErrorKind as K;
    if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return describe(t);
    }
    match e.kind() {
        K::WouldBlock | K::TimedOut => format!(
            "no answer within {} s (the server does not seem to speak TLS on this port: try redis://)",
            timeout.as_secs()
        ),
        K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
            format!("the server closed the connection ({e})")
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(o: &TlsOptions) -> String {
        TlsConfig::new(o).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_name_the_flag_and_the_file() {
        let dir = std::env::temp_dir().join(format!("rdbferry-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = err(&TlsOptions {
            ca: Some(missing.clone()),
            ..Default::default()
        });
        assert!(
            e.starts_with("--tls-ca ") && e.contains("missing.pem"),
            "{e}"
        );

        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let e = err(&TlsOptions {
            ca: Some(empty.clone()),
            ..Default::default()
        });
        assert!(e.contains("no PEM certificate"), "{e}");

        let e = err(&TlsOptions {
            insecure: true,
            cert: Some(empty.clone()),
            ..Default::default()
        });
        assert!(e.contains("--tls-cert and --tls-key go together"), "{e}");
        let e = err(&TlsOptions {
            insecure: true,
            cert: Some(empty.clone()),
            key: Some(missing),
            ca: None,
        });
        assert!(e.starts_with("--tls-cert "), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn insecure_needs_no_files_and_configs_compare_by_options() {
        let o = TlsOptions {
            insecure: true,
            ..Default::default()
        };
        assert!(o.is_set() && !TlsOptions::default().is_set());
        let a = TlsConfig::new(&o).unwrap();
        let b = TlsConfig::new(&o).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.options(), &o);
    }

    #[test]
    fn messages_say_what_to_do() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(describe(&unknown).contains("--tls-ca FILE"));
        let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(describe(&alert).contains("--tls-cert"));
        let timeout = std::io::Error::from(std::io::ErrorKind::WouldBlock);
        assert!(describe_io(&timeout, Duration::from_secs(10)).contains("within 10 s"));
    }
}
