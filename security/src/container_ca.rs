//! The container CA: Tarn's delegation credential. A container (an application's master or
//! one of its tasks) holds no key of its node; the resource manager gives it a short-lived
//! client certificate for the application's user, issued by a second root that only
//! resource managers hold. With it the container speaks mutual TLS to the namenodes,
//! datanodes and resource managers like any client of that user, and can never act as
//! another user, the superuser or a daemon.
//!
//! Rules the transport enforces (see [`crate::transport`]): a certificate of the container
//! CA is accepted from clients only (no daemon trusts it for a server), must name a user
//! (`tarn://user/<name>`, never admin or a daemon role), and names its container with a
//! second URI, `tarn-container://<container id>`, which the peer's identity carries.
//!
//! Files, next to the cluster CA's: `container-ca.pem` (public, in every daemon's
//! `security.tls.container_ca`), `container-ca-key.pem` (0600, resource managers only).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose, SanType};

use crate::pki::{check_private, make_ca, random_serial, Identity, Role};
use crate::SecurityError;

pub const CONTAINER_CA_CERT_FILE: &str = "container-ca.pem";
pub const CONTAINER_CA_KEY_FILE: &str = "container-ca-key.pem";
const CONTAINER_URI_PREFIX: &str = "tarn-container://";

/// A container's credential: its certificate and private key (PEM) and when it expires.
#[derive(Clone)]
pub struct ContainerCredential {
    pub cert_pem: String,
    pub key_pem: String,
    /// Milliseconds since the Unix epoch.
    pub not_after_ms: u64,
}

impl std::fmt::Debug for ContainerCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerCredential").field("not_after_ms", &self.not_after_ms).finish_non_exhaustive()
    }
}

/// The container CA, able to issue containers' certificates.
pub struct ContainerCa {
    cert_path: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

fn rcgen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> SecurityError {
    move |e| SecurityError::Invalid(format!("{what}: {e}"))
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SecurityError {
    let path = path.to_path_buf();
    move |e| SecurityError::Io { what: what.into(), path, source: e }
}

/// Whether `id` may name a container: 1 to 128 of A-Z, a-z, 0-9, '_', '-'.
pub fn valid_container_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

impl ContainerCa {
    /// The container CA in `dir` (the cluster CA's directory), made if it is not there.
    pub fn load_or_create(dir: &Path, cluster: &str) -> Result<ContainerCa, SecurityError> {
        let (cert, key) = (dir.join(CONTAINER_CA_CERT_FILE), dir.join(CONTAINER_CA_KEY_FILE));
        if cert.exists() {
            return ContainerCa::load(&cert, &key);
        }
        // Another subject than the cluster CA's: a peer's issuer tells which root vouched.
        make_ca(format!("tarn container CA ({cluster})"), &cert, &key)?;
        ContainerCa::load(&cert, &key)
    }

    /// The container CA of these files.
    pub fn load(cert: &Path, key: &Path) -> Result<ContainerCa, SecurityError> {
        let cert_pem = std::fs::read_to_string(cert).map_err(io_err("read the container CA certificate", cert))?;
        check_private(key)?;
        let key_pem = std::fs::read_to_string(key).map_err(io_err("read the container CA key", key))?;
        let k = KeyPair::from_pem(&key_pem).map_err(rcgen_err("container CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, k).map_err(rcgen_err("container CA certificate"))?;
        Ok(ContainerCa { cert_path: cert.to_path_buf(), issuer })
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// A client certificate for container `container_id` of `user`, valid for `valid_for`.
    pub fn issue(
        &self,
        user: &str,
        container_id: &str,
        valid_for: Duration,
    ) -> Result<ContainerCredential, SecurityError> {
        let id = Identity::new(Role::User, user)?;
        if !valid_container_id(container_id) {
            return Err(SecurityError::Invalid(format!(
                "container id {container_id:?}: 1 to 128 characters of A-Z, a-z, 0-9, '_', '-'"
            )));
        }
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err("certificate parameters"))?;
        p.distinguished_name.push(DnType::CommonName, format!("{id} (container {container_id})"));
        p.distinguished_name.push(DnType::OrganizationName, "tarn");
        for uri in [id.uri(), format!("{CONTAINER_URI_PREFIX}{container_id}")] {
            p.subject_alt_names.push(SanType::URI(rcgen::string::Ia5String::try_from(uri).map_err(rcgen_err("URI"))?));
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // A client only: no daemon accepts it as a server.
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        let valid = time::Duration::try_from(valid_for).map_err(|_| SecurityError::Invalid("lifetime".into()))?;
        p.not_before = now - time::Duration::minutes(5);
        p.not_after = now + valid;
        p.serial_number = Some(random_serial()?);
        let key = KeyPair::generate().map_err(rcgen_err("key"))?;
        let cert = p.signed_by(&key, &self.issuer).map_err(rcgen_err("certificate"))?;
        let not_after_ms = (p.not_after.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
        Ok(ContainerCredential { cert_pem: cert.pem(), key_pem: key.serialize_pem(), not_after_ms })
    }
}

/// The container a certificate names (its `tarn-container://` URI), if any. Only the
/// container CA's certificates are believed (the transport checks the issuer).
pub fn container_of_cert(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => {
            u.strip_prefix(CONTAINER_URI_PREFIX).filter(|c| valid_container_id(c)).map(str::to_string)
        }
        _ => None,
    })
}

/// The identity and the container (if any) a PEM certificate names.
pub fn names_of_pem(pem: &str) -> Result<(Identity, Option<String>), SecurityError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let der = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| SecurityError::Invalid(format!("certificate PEM: {e}")))?;
    Ok((Identity::of_cert(&der)?, container_of_cert(&der)))
}

/// The raw subject of a certificate (what certificates it issued name as issuer).
pub(crate) fn subject_of(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.subject().as_raw().to_vec())
}

/// The raw issuer of a certificate.
pub(crate) fn issuer_of(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.issuer().as_raw().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{pem::PemObject, CertificateDer};

    #[test]
    fn a_container_certificate_names_its_user_and_container_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ContainerCa::load_or_create(dir.path(), "t").unwrap();
        let c = ca.issue("alice", "app-1-0001_01_000002", Duration::from_secs(3600)).unwrap();
        let der = CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap();
        assert_eq!(Identity::of_cert(&der).unwrap(), Identity::new(Role::User, "alice").unwrap());
        assert_eq!(container_of_cert(&der).as_deref(), Some("app-1-0001_01_000002"));
        let ca_der = CertificateDer::from_pem_file(ca.cert_path()).unwrap();
        assert_eq!(issuer_of(&der), subject_of(&ca_der));
        let now_ms = crate::block_token::now_ms();
        assert!(c.not_after_ms > now_ms + 3_500_000 && c.not_after_ms < now_ms + 3_700_000, "{c:?}");
        // Loaded again, the same CA (not a new one).
        let again = ContainerCa::load_or_create(dir.path(), "t").unwrap();
        let d2 = CertificateDer::from_pem_slice(
            again.issue("bob", "c2", Duration::from_secs(60)).unwrap().cert_pem.as_bytes(),
        )
        .unwrap();
        assert_eq!(issuer_of(&d2), subject_of(&ca_der));
        assert!(ca.issue("no/such", "c", Duration::from_secs(1)).is_err());
        assert!(ca.issue("alice", "../c", Duration::from_secs(1)).is_err());
    }
}
