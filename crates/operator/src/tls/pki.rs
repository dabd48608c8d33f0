//! The operator's own CA and the serving certificates it issues (rcgen, pure Rust).

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

use super::TlsError;

/// How long the CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a serving certificate is valid; it is re-issued after a third of that.
pub const SERVING_VALIDITY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A CA: certificate and key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Ca {
    /// `ca.crt`.
    pub cert_pem: String,
    /// `ca.key` (never logged).
    pub key_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("cert_pem", &self.cert_pem).field("key_pem", &"<redacted>").finish()
    }
}

fn err(e: impl std::fmt::Display) -> TlsError {
    TlsError::Issue(e.to_string())
}

/// The CA's parameters: the same every time, so that an issuer rebuilt from them and the stored
/// key names exactly the subject of the stored CA certificate.
fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, "llmroute operator CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

/// A new CA valid from `now` for [`CA_VALIDITY`].
pub fn new_ca(now: OffsetDateTime) -> Result<Ca, TlsError> {
    let mut params = ca_params()?;
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + CA_VALIDITY;
    let key = KeyPair::generate().map_err(err)?;
    let ca = CertifiedIssuer::self_signed(params, key).map_err(err)?;
    Ok(Ca { cert_pem: ca.pem(), key_pem: ca.key().serialize_pem() })
}

/// A serving certificate for `names` signed by `ca`, valid from `now` for `validity`:
/// (certificate chain PEM, key PEM).
pub fn issue(ca: &Ca, names: &[String], now: OffsetDateTime, validity: Duration) -> Result<(String, String), TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(err)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut params = CertificateParams::new(names.to_vec()).map_err(err)?;
    params.distinguished_name.push(DnType::CommonName, names.first().map_or("llmroute-operator", String::as_str));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + validity;
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &issuer).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The names a sidecar may use for the operator's Service.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_certificate_is_served_and_the_ca_key_is_never_in_debug_output() {
        let now = OffsetDateTime::now_utc();
        let ca = new_ca(now).unwrap();
        let (cert, key) = issue(&ca, &service_names("llmroute-operator", "llmroute"), now, SERVING_VALIDITY).unwrap();
        super::super::certified_key(cert.as_bytes(), key.as_bytes()).unwrap();
        let debug = format!("{ca:?}");
        assert!(!debug.contains(&ca.key_pem) && debug.contains("<redacted>"));
        assert!(
            issue(&Ca { cert_pem: ca.cert_pem.clone(), key_pem: "garbage".into() }, &[], now, SERVING_VALIDITY)
                .is_err()
        );
    }
}
