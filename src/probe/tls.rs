//! TLS for https probes: rustls over ring with the system's CA certificates, the crates the
//! mailer's lettre already builds, and certificate verdicts in words an operator can act on.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::net::io_text;
use super::target::{Host, HostPort};

/// Whose certificates a probe trusts.
pub(crate) enum Trust {
    /// The system's CA certificates, read once per process on first use.
    System,
    /// The probe's own tests trust their private CA.
    #[cfg(test)]
    Roots(Verifier),
}

#[derive(Clone)]
pub(crate) struct Verifier {
    config: Arc<ClientConfig>,
    /// How many CA certificates were loaded: none makes every certificate untrusted.
    roots: usize,
}

/// Built once: a root store of the system's ~150 CAs is parsed once per process rather than
/// per probe, and shared by every https probe.
static SYSTEM: OnceCell<Result<Verifier, String>> = OnceCell::const_new();

impl Trust {
    async fn verifier(&self) -> Result<Verifier, String> {
        match self {
            Trust::System => SYSTEM
                .get_or_init(|| async {
                    // Reading the CA bundle is file I/O: off the watch loop's thread.
                    tokio::task::spawn_blocking(system_verifier)
                        .await
                        .unwrap_or_else(|_| Err("cannot load the system's CA certificates".into()))
                })
                .await
                .clone(),
            #[cfg(test)]
            Trust::Roots(v) => Ok(v.clone()),
        }
    }

    /// Trusts the CA certificates of a PEM bundle, for the tests' private CA.
    #[cfg(test)]
    pub(crate) fn roots(pem: &[u8]) -> Trust {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut store = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            store.add(cert.expect("a PEM certificate")).expect("a CA");
        }
        Trust::Roots(verifier(store).expect("a TLS client config"))
    }
}

fn system_verifier() -> Result<Verifier, String> {
    let mut store = RootCertStore::empty();
    // Unreadable or unparsable entries are skipped as lettre skips them; a store left empty
    // shows in the verdict of the first certificate it cannot vouch for.
    let found = rustls_native_certs::load_native_certs();
    store.add_parsable_certificates(found.certs);
    verifier(store)
}

fn verifier(store: RootCertStore) -> Result<Verifier, String> {
    let roots = store.len();
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot set up TLS: {e}"))?
            .with_root_certificates(store)
            .with_no_client_auth();
    Ok(Verifier {
        config: Arc::new(config),
        roots,
    })
}

/// The TLS handshake over `tcp`, verifying the certificate for the host (SNI for a name).
pub(super) async fn handshake(
    tcp: TcpStream,
    to: &HostPort,
    trust: &Trust,
) -> Result<TlsStream<TcpStream>, String> {
    let v = trust.verifier().await?;
    let host = &to.host;
    let name = match host {
        Host::Name(n) => ServerName::try_from(n.clone())
            .map_err(|_| format!("{n:?} is not a name a TLS certificate can hold"))?,
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
    };
    TlsConnector::from(v.config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
            match rustls_error {
                Some(rustls::Error::InvalidCertificate(c)) => certificate_text(c, host, v.roots),
                Some(rustls::Error::AlertReceived(a)) => {
                    format!("TLS handshake with {to}: the server refused it ({a:?} alert)")
                }
                Some(rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)) => {
                    format!(
                        "TLS handshake with {to}: the server does not speak TLS (plain HTTP on \
                         an https:// URL?)"
                    )
                }
                Some(other) => format!("TLS handshake with {to}: {other}"),
                None => format!("TLS handshake with {to}: {}", io_text(&e)),
            }
        })
}

/// rustls's verdict on a certificate, in words an operator can act on.
fn certificate_text(c: &CertificateError, host: &Host, roots: usize) -> String {
    match c {
        CertificateError::UnknownIssuer if roots == 0 => {
            "certificate not trusted (unknown issuer): no CA certificates were found on this \
             system"
                .into()
        }
        CertificateError::UnknownIssuer => {
            "certificate not trusted (unknown issuer): no CA among the system's signed it".into()
        }
        CertificateError::NotValidForName => format!("certificate is not valid for {host}"),
        CertificateError::NotValidForNameContext { presented, .. } if !presented.is_empty() => {
            let names: Vec<&str> = presented.iter().map(|n| dns_name(n)).collect();
            format!(
                "certificate is not valid for {host} (it names {})",
                names.join(", ")
            )
        }
        CertificateError::NotValidForNameContext { .. } => {
            format!("certificate is not valid for {host}")
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "certificate has expired".into()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate is not valid yet".into()
        }
        CertificateError::Revoked => "certificate has been revoked".into(),
        // webpki's own error, reachable only through its text.
        CertificateError::Other(o) if o.to_string().contains("CaUsedAsEndEntity") => {
            "certificate not trusted: the server presents a CA certificate as its own (a \
             typical self-signed one)"
                .into()
        }
        other => format!("certificate not accepted: {other}"),
    }
}

/// `localhost` out of webpki's `DnsName("localhost")`; any other form as it is.
fn dns_name(presented: &str) -> &str {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .unwrap_or(presented)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_verdicts_say_what_is_wrong() {
        let host = Host::Name("app.internal".into());
        let text = |c: CertificateError, roots| certificate_text(&c, &host, roots);
        assert_eq!(
            text(CertificateError::UnknownIssuer, 140),
            "certificate not trusted (unknown issuer): no CA among the system's signed it"
        );
        assert!(text(CertificateError::UnknownIssuer, 0).contains("no CA certificates were found"));
        assert_eq!(
            text(
                CertificateError::NotValidForNameContext {
                    expected: ServerName::try_from("app.internal").unwrap(),
                    presented: vec!["DnsName(\"localhost\")".into()],
                },
                1
            ),
            "certificate is not valid for app.internal (it names localhost)"
        );
        assert_eq!(
            text(CertificateError::Expired, 1),
            "certificate has expired"
        );
        assert!(text(CertificateError::BadSignature, 1).starts_with("certificate not accepted"));
    }
}
