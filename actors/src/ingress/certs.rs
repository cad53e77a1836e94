//! Certificates: checking a custom certificate and key before they reach Caddy, and reading
//! the issuer and expiry of whatever certificate a domain has.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What the API shows of a domain's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub issuer: String,
    /// Expiry, in milliseconds since the epoch.
    pub not_after_ms: i64,
    /// The DNS names it covers.
    pub names: Vec<String>,
}

/// Why a custom certificate cannot be used; each maps to its own API error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{0}")]
    Unreadable(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    KeyMismatch(String),
    #[error("{0}")]
    HostnameMismatch(String),
}

impl CertError {
    pub fn code(&self) -> &'static str {
        match self {
            CertError::Unreadable(_) => "cert_unreadable",
            CertError::Invalid(_) => "cert_invalid",
            CertError::KeyMismatch(_) => "cert_key_mismatch",
            CertError::HostnameMismatch(_) => "cert_hostname_mismatch",
        }
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|e| {
        CertError::Unreadable(format!(
            "the {what} file {} cannot be read by the server: {e}",
            path.display()
        ))
    })
}

/// The first certificate of a PEM file.
fn leaf(pem: &[u8], path: &Path) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::pem_slice_iter(pem)
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| {
            CertError::Invalid(format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ))
        })
}

fn info(der: &CertificateDer<'_>, path: &Path) -> Result<(CertInfo, Vec<u8>), CertError> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| {
        CertError::Invalid(format!(
            "{} is not a valid X.509 certificate: {e}",
            path.display()
        ))
    })?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        // Old certificates name their host only in the subject's common name.
        for cn in cert.subject().iter_common_name() {
            if let Ok(n) = cn.as_str() {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok().map(str::to_string))
        .unwrap_or_else(|| cert.issuer().to_string());
    let info = CertInfo {
        issuer,
        not_after_ms: cert.validity().not_after.timestamp() * 1000,
        names,
    };
    Ok((info, cert.public_key().raw.to_vec()))
}

/// Reads the certificate at `path`.
pub fn read_info(path: &Path) -> Result<CertInfo, CertError> {
    let pem = read(path, "certificate")?;
    Ok(info(&leaf(&pem, path)?, path)?.0)
}

/// Whether a certificate name (`*.example.com` or `a.example.com`) covers `host`.
pub fn covers(name: &str, host: &str) -> bool {
    if name.eq_ignore_ascii_case(host) {
        return true;
    }
    match (name.strip_prefix("*."), host.split_once('.')) {
        // A wildcard covers exactly one label, and a wildcard host only by the same wildcard.
        (Some(suffix), Some((first, rest))) => first != "*" && rest.eq_ignore_ascii_case(suffix),
        _ => false,
    }
}

/// Checks that a custom certificate and key can serve `host`: both readable, the key is the
/// certificate's, the certificate names the host, and it has not expired.
pub fn check_pair(
    cert_path: &Path,
    key_path: &Path,
    host: &str,
    now_ms: i64,
) -> Result<CertInfo, CertError> {
    let cert_pem = read(cert_path, "certificate")?;
    let key_pem = read(key_path, "key")?;
    let der = leaf(&cert_pem, cert_path)?;
    let (info, spki) = info(&der, cert_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        CertError::Invalid(format!(
            "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
            key_path.display()
        ))
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        CertError::Invalid(format!(
            "the key in {} is not a supported RSA, ECDSA or Ed25519 key: {e}",
            key_path.display()
        ))
    })?;
    let Some(public) = signing.public_key() else {
        return Err(CertError::Invalid(format!(
            "the public half of the key in {} cannot be derived",
            key_path.display()
        )));
    };
    if public.as_ref() != spki.as_slice() {
        return Err(CertError::KeyMismatch(format!(
            "the key in {} does not belong to the certificate in {}",
            key_path.display(),
            cert_path.display()
        )));
    }
    if !info.names.iter().any(|n| covers(n, host)) {
        return Err(CertError::HostnameMismatch(format!(
            "the certificate in {} is for {} and does not cover {host}",
            cert_path.display(),
            if info.names.is_empty() {
                "no DNS name".to_string()
            } else {
                info.names.join(", ")
            }
        )));
    }
    if info.not_after_ms < now_ms {
        return Err(CertError::Invalid(format!(
            "the certificate in {} has expired",
            cert_path.display()
        )));
    }
    Ok(info)
}

/// Where Caddy keeps the certificate it obtained for `host` under its storage root, whichever
/// issuer made it (`certificates/<issuer>/<host>/<host>.crt`; `*.` becomes `wildcard_.`).
pub fn stored_cert(storage_root: &Path, host: &str) -> Option<PathBuf> {
    let name = host.replacen("*.", "wildcard_.", 1);
    let issuers = std::fs::read_dir(storage_root.join("certificates")).ok()?;
    let mut found: Vec<PathBuf> = issuers
        .flatten()
        .map(|issuer| issuer.path().join(&name).join(format!("{name}.crt")))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(covers("a.example.com", "A.example.com"));
        assert!(covers("*.example.com", "a.example.com"));
        assert!(!covers("*.example.com", "b.a.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(covers("*.example.com", "*.example.com"));
        assert!(!covers("a.example.com", "*.example.com"));
    }
}
