//! TLS settings for `rediss://` targets: which CAs to trust (`--tls-ca`, or the system's
//! roots), whether to check the server's certificate at all (`--tls-insecure`), and an
//! optional client certificate (`--tls-cert`, `--tls-key`). Built once per run into a rustls
//! `ClientConfig` (the `ring` provider) that every connection shares.
//!
//! A self-signed server certificate given with `--tls-ca` is trusted the way `redis-cli --tls
//! --cacert` trusts it: when the server presents exactly that certificate (the same DER bytes
//! as one in the bundle), whatever its CA flag. webpki refuses such a certificate
//! (`CaUsedAsEndEntity`: `openssl req -x509` marks it `CA:TRUE`), so `Verifier` accepts
//! that one refusal for a pinned certificate, after webpki has checked its validity period,
//! and then checks the host name itself. Every other certificate gets webpki's verification
//! unchanged; only the message for a self-signed certificate that is not trusted says so
//! (webpki's, `CaUsedAsEndEntity`, would send the user after the wrong problem).
//!
//! Also here: turning rustls errors into messages that say what to do (which flag to give).
//! Printing the `--tls-insecure` warning is the front end's job: this module prints nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};

use crate::error::{Error, Result};

/// The `--tls-*` flags (or `--from-tls-*`: [`TlsOptions::flags`] says which, for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM bundle of the CAs to trust instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// Do not check the server's certificate (the connection is encrypted, not authenticated).
    pub insecure: bool,
    /// PEM client certificate chain, for servers that ask for one.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// How the user named these options, for messages: `--tls` (the target's) or
    /// `--from-tls` (a live source's). The library names no flag of its own.
    pub flags: &'static str,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            ca: None,
            insecure: false,
            cert: None,
            key: None,
            flags: "--tls",
        }
    }
}

impl TlsOptions {
    /// Whether any flag was given.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.insecure || self.cert.is_some() || self.key.is_some()
    }

    /// The name of option `name` (`ca`, `insecure`, `cert`, `key`) as the user gives it.
    pub fn flag(&self, name: &str) -> String {
        format!("{}-{name}", self.flags)
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
        let verifier = match (&options.ca, options.insecure) {
            (_, true) => Verifier::insecure(&provider),
            (Some(path), false) => Verifier::ca_file(path, provider.clone(), options)?,
            (None, false) => Verifier::system(provider.clone(), options)?,
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Usage(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&options.cert, &options.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(&options.flag("cert"), cert)?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| usage(&options.flag("key"), key, e))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| usage(&options.flag("cert"), cert, e))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(Error::Usage(format!(
                    "{} and {} go together",
                    options.flag("cert"),
                    options.flag("key")
                )));
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

/// The check of the server's certificate: webpki's verification against trusted roots (the
/// `--tls-ca` bundle, or the system's), except that a server presenting exactly one of the
/// bundle's certificates is trusted even though it is marked as a CA (a self-signed
/// certificate, as `redis-cli --cacert` trusts it); its validity period (checked by webpki
/// before the CA flag) and its names still count. See the module doc.
///
/// `--tls-insecure` (no `webpki`) accepts any certificate. Either way the handshake
/// signatures are checked (the server holds the key of the certificate it sent), as rustls
/// requires of a verifier.
#[derive(Debug)]
struct Verifier {
    /// `None` for `--tls-insecure`.
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// The `--tls-ca` bundle's certificates, DER (none for the system's roots).
    pinned: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Verifier {
    /// `--tls-insecure`.
    fn insecure(provider: &CryptoProvider) -> Arc<Verifier> {
        Arc::new(Verifier {
            webpki: None,
            pinned: Vec::new(),
            algorithms: provider.signature_verification_algorithms,
        })
    }

    /// No `--tls-ca`: the system's roots.
    fn system(provider: Arc<CryptoProvider>, options: &TlsOptions) -> Result<Arc<Verifier>> {
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            return Err(Error::Usage(format!(
                "TLS: no CA certificate found on this system{why}; give the server's CA with \
                 {} FILE",
                options.flag("ca")
            )));
        }
        let algorithms = provider.signature_verification_algorithms;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| Error::Usage(format!("TLS: {e}")))?;
        Ok(Arc::new(Verifier {
            webpki: Some(webpki),
            pinned: Vec::new(),
            algorithms,
        }))
    }

    /// `--tls-ca FILE`: the certificates of the PEM bundle at `path`.
    fn ca_file(
        path: &Path,
        provider: Arc<CryptoProvider>,
        options: &TlsOptions,
    ) -> Result<Arc<Verifier>> {
        let flag = options.flag("ca");
        let pinned = read_certs(&flag, path)?;
        let mut roots = RootCertStore::empty();
        for cert in &pinned {
            roots
                .add(cert.clone())
                .map_err(|e| usage(&flag, path, format!("bad CA: {e}")))?;
        }
        let algorithms = provider.signature_verification_algorithms;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| usage(&flag, path, e))?;
        Ok(Arc::new(Verifier {
            webpki: Some(webpki),
            pinned,
            algorithms,
        }))
    }
}

/// Whether webpki refused a certificate for being a CA (`basicConstraints CA:TRUE`).
fn is_ca_used_as_end_entity(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(CertificateError::Other(other))
            if other.0.downcast_ref::<webpki::Error>() == Some(&webpki::Error::CaUsedAsEndEntity)
    )
}

fn parse<'a>(
    cert: &'a CertificateDer<'_>,
) -> std::result::Result<webpki::EndEntityCert<'a>, rustls::Error> {
    webpki::EndEntityCert::try_from(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
}

/// webpki's name check on `cert`, with rustls's error for a name it does not list.
fn verify_name(
    cert: &CertificateDer<'_>,
    name: &ServerName<'_>,
) -> std::result::Result<(), rustls::Error> {
    parse(cert)?
        .verify_is_valid_for_subject_name(name)
        .map_err(|e| {
            rustls::Error::InvalidCertificate(match e {
                webpki::Error::CertNotValidForName(cx) => {
                    CertificateError::NotValidForNameContext {
                        expected: cx.expected,
                        presented: cx.presented,
                    }
                }
                _ => CertificateError::NotValidForName,
            })
        })
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        let e = match webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if !is_ca_used_as_end_entity(&e) {
            return Err(e);
        }
        if self
            .pinned
            .iter()
            .any(|c| c.as_ref() == end_entity.as_ref())
        {
            verify_name(end_entity, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        // Self-signed and not trusted: say that, rather than that it is a CA.
        let cert = parse(end_entity)?;
        if cert.issuer() == cert.subject() {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        }
        Err(e)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A rustls error, with what to do about it (naming the options as `flags`, `--tls` or
/// `--from-tls`).
pub fn describe(e: &rustls::Error, flags: &str) -> String {
    use rustls::Error as E;
    match e {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "{e}: the server's certificate is not signed by a trusted CA; give its CA with \
             {flags}-ca FILE, or skip the check with {flags}-insecure"
        ),
        E::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "{e}: the server's certificate does not name this host; connect by a name or \
             address it lists, or skip the check with {flags}-insecure"
        ),
        E::InvalidCertificate(_) => {
            format!("{e} (the server's certificate; {flags}-insecure skips the check)")
        }
        E::AlertReceived(
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure,
        ) => {
            format!(
                "{e} (the server may require a client certificate: {flags}-cert FILE {flags}-key FILE)"
            )
        }
        E::InvalidMessage(_) => {
            format!("{e} (the server does not seem to speak TLS on this port: try redis://)")
        }
        _ => e.to_string(),
    }
}

/// An I/O error of the handshake, with what to do about it.
pub fn describe_io(e: &std::io::Error, timeout: Duration, flags: &str) -> String {
    use std::io::ErrorKind as K;
    if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return describe(t, flags);
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
            flags: "--tls",
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

    /// Made by `openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -addext
    /// subjectAltName=IP:127.0.0.1,DNS:localhost -days 36500`: CA:TRUE, valid from 2026-12-03
    /// to 2126-11-09.
    const SELF_SIGNED: &str = "\
-----BEGIN CERTIFICATE-----
MIIDJzCCAg+gAwIBAgIUblS/wHu//ay/r7vvgGx5nn2r/tIwDQYJKoZIhvcNAQEL
BQAwFDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwMzA4MjEzMVoYDzIxMjYx
MTA5MDgyMTMxWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwggEiMA0GCSqGSIb3DQEB
AQUAA4IBDwAwggEKAoIBAQC/+MfN/EJWUrjvC84ODlN1um422EjhppjAPdAVDzG8
P6odJz5fiaMsCAiZBSSmuh212ifQMBN59fkQyAfgzkRjUOtcaPXlSWKKwo+BQLu+
Iqf924pqMW1MJtM8RO9cjtGTfGqzPQDT7UFQDzY/izx/KhYMbKtqothacd5hGvSH
xcSwmu6E/YqXDu9fFvi06psjzWBmXIkwHSchP81yvf+gi9Y1W/izx0c7uqXIzBQv
qINIVhvc3iKP7ygGUM7HtoTc9wRp7iiOvDkOSF8vij/Wdqg7wkpDW5/WpTeW+EIi
o3JIzpQPycZiy9y3O+TscrlEaCdW8Z79I99QBslmDDAbAgMBAAGjbzBtMB0GA1Ud
DgQWBBRYsue3gE3JKzg3IXVXNjaVMfrPnzAfBgNVHSMEGDAWgBRYsue3gE3JKzg3
IXVXNjaVMfrPnzAPBgNVHRMBAf8EBTADAQH/MBoGA1UdEQQTMBGHBH8AAAGCCWxv
Y2FsaG9zdDANBgkqhkiG9w0BAQsFAAOCAQEAvanPYL5p6kGgJ4W7H6ysoaqqUxz4
cOHuyZ/k3ztTyZgLOY+K3OjQj15v8YE+iYkJU6uyiLxdIphpWNbTaD80nnrZM+F/
cAaT29rc63KTK0MRBs3MVK4lGdc0SMC5Sltd4qcMds6NDw81FhpXdz9eWqUD4eKd
2mqfQDEWdIB2Am6h8GXG8ZAgNFAJrVOzj/HQpkDQvxi/TllMo+dkIbd9r3a4n5rA
A4AEHSR3HQREqkire7EMXjthQ/mJOuxIfXdYujz3ALDKYfp+HqywQZ6owhC2Gr8+
1tQfK1LVejxlceuCfHEMBV6ZHbSzqckgqYR5pA6f533a2CyWd2XaAeq+sg==
-----END CERTIFICATE-----
";

    /// The `--tls-ca` verifier trusting [`SELF_SIGNED`], checking it at `now` (seconds since
    /// 1970) for `name`.
    fn check_self_signed(name: &str, now: u64) -> std::result::Result<(), rustls::Error> {
        let dir = std::env::temp_dir().join(format!("rdbferry-tls-ss-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cert.pem");
        std::fs::write(&path, SELF_SIGNED).unwrap();
        let v = Verifier::ca_file(&path, provider(), &TlsOptions::default()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let der = CertificateDer::from_pem_slice(SELF_SIGNED.as_bytes()).unwrap();
        let name = ServerName::try_from(name).unwrap();
        let now = UnixTime::since_unix_epoch(Duration::from_secs(now));
        v.verify_server_cert(&der, &[], &name, &[], now).map(|_| ())
    }

    /// Issue 8: a self-signed certificate given with --tls-ca is trusted for its own names,
    /// within its validity period, and nowhere else. The period is webpki's check, done before
    /// the CA flag's: this test holds a later webpki to that order.
    #[test]
    fn a_pinned_self_signed_certificate_checks_names_and_validity() {
        const Y2050: u64 = 2_524_608_000;
        assert!(check_self_signed("localhost", Y2050).is_ok());
        assert!(check_self_signed("127.0.0.1", Y2050).is_ok());
        let e = check_self_signed("other.example", Y2050).unwrap_err();
        assert!(
            describe(&e, "--tls").contains("does not name this host"),
            "{e}"
        );
        let e = check_self_signed("localhost", 7_258_118_400).unwrap_err(); // 2200
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. })
            ),
            "{e}"
        );
        let e = check_self_signed("localhost", 946_684_800).unwrap_err(); // 2000
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext { .. })
            ),
            "{e}"
        );
    }

    #[test]
    fn messages_say_what_to_do() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(describe(&unknown, "--tls").contains("--tls-ca FILE"));
        let alert = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(describe(&alert, "--tls").contains("--tls-cert"));
        let timeout = std::io::Error::from(std::io::ErrorKind::WouldBlock);
        assert!(describe_io(&timeout, Duration::from_secs(10), "--tls").contains("within 10 s"));
    }
}
