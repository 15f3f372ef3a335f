//! The cluster's public-key infrastructure: one CA per cluster (made by `tarn init` or the
//! first `tarn up`), and a certificate per daemon and per user issued from it.
//!
//! A certificate says *who* its holder is with one URI subject alternative name,
//! `tarn://<role>/<name>` (`tarn://datanode/dn-3`, `tarn://user/alice`): the role decides
//! which services the holder may call (see [`Role`]), the name is the node id or the user
//! name. Its DNS / IP names are the hosts it may serve as, checked by clients as usual.
//!
//! Files, all PEM: `ca.pem` (public, handed to every node and client), `ca-key.pem` (0600,
//! kept where certificates are issued), `<stem>.pem` and `<stem>-key.pem` (0600) per holder.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use serde::{Deserialize, Serialize};

use crate::SecurityError;

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// A CA lasts ten years; the certificates it issues one (re-issue and the daemons reload).
const CA_DAYS: i64 = 3650;
const CERT_DAYS: i64 = 365;

/// What a certificate holder is, and so which services it may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Namenode,
    Datanode,
    Gateway,
    ResourceManager,
    Worker,
    /// A person or an application: acts as its own name only.
    User,
    /// A user who may also call the administrative services (the cluster's superuser).
    Admin,
}

impl Role {
    pub const ALL: [Role; 7] =
        [Role::Namenode, Role::Datanode, Role::Gateway, Role::ResourceManager, Role::Worker, Role::User, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Namenode => "namenode",
            Role::Datanode => "datanode",
            Role::Gateway => "gateway",
            Role::ResourceManager => "resource-manager",
            Role::Worker => "worker",
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    /// Roles held by people rather than daemons: they act as the name in their certificate.
    pub fn is_person(self) -> bool {
        matches!(self, Role::User | Role::Admin)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = SecurityError;
    fn from_str(s: &str) -> Result<Role, SecurityError> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            let all: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
            SecurityError::Invalid(format!("unknown role {s:?} (one of {})", all.join(", ")))
        })
    }
}

/// Who a certificate belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

const URI_PREFIX: &str = "tarn://";

impl Identity {
    pub fn new(role: Role, name: impl Into<String>) -> Result<Identity, SecurityError> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(SecurityError::Invalid(format!(
                "name {name:?}: 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-'"
            )));
        }
        Ok(Identity { role, name })
    }

    pub fn uri(&self) -> String {
        format!("{URI_PREFIX}{}/{}", self.role, self.name)
    }

    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(URI_PREFIX)?;
        let (role, name) = rest.split_once('/')?;
        Identity::new(role.parse().ok()?, name).ok()
    }

    /// The identity in a certificate (its one `tarn://` URI name).
    pub fn of_cert(der: &[u8]) -> Result<Identity, SecurityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| SecurityError::Invalid(format!("certificate does not parse: {e}")))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| SecurityError::Invalid(format!("certificate names: {e}")))?
            .ok_or_else(|| SecurityError::Invalid("certificate has no subject alternative names".into()))?;
        san.value
            .general_names
            .iter()
            .find_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Identity::from_uri(u),
                _ => None,
            })
            .ok_or_else(|| SecurityError::Invalid("certificate names no tarn:// identity".into()))
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

/// Where a holder's trust anchor, certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The cluster CA certificate: servers must present certificates it signed, and so
    /// must clients (but see `container_ca`).
    pub ca: PathBuf,
    /// This holder's certificate (PEM; reloaded when the file changes).
    pub cert: PathBuf,
    /// Its private key (PEM, mode 0600).
    pub key: PathBuf,
    /// The container CA certificate (see [`crate::container_ca`]): clients may also present
    /// certificates it signed, each naming a user and a container. Never trusted for a
    /// server. `None`: containers' certificates are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_ca: Option<PathBuf>,
}

/// The cluster CA, able to issue certificates.
pub struct Ca {
    dir: PathBuf,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> SecurityError {
    let (what, path) = (what.to_string(), path.to_path_buf());
    move |e| SecurityError::Io { what, path, source: e }
}

fn rcgen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> SecurityError {
    move |e| SecurityError::Invalid(format!("{what}: {e}"))
}

/// Writes `text` to a new file with `mode`, through a temporary name (never half a file).
pub fn write_private(path: &Path, text: &str, mode: u32) -> Result<(), SecurityError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io_err("create directory", d))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("write", &tmp))?;
    f.write_all(text.as_bytes()).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("sync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename into", path))
}

/// Refuses a private key file that others may read.
pub fn check_private(path: &Path) -> Result<(), SecurityError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(io_err("read", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecurityError::Invalid(format!(
            "{} is readable by others (mode {mode:o}); chmod 600 it",
            path.display()
        )));
    }
    Ok(())
}

impl Ca {
    /// Makes a new CA in `dir`; refuses to replace an existing one.
    pub fn create(dir: &Path, cluster: &str) -> Result<Ca, SecurityError> {
        let cert_path = dir.join(CA_CERT_FILE);
        if cert_path.exists() {
            return Err(SecurityError::Invalid(format!(
                "{} exists: the cluster already has a CA",
                cert_path.display()
            )));
        }
        make_ca(format!("tarn cluster CA ({cluster})"), &cert_path, &dir.join(CA_KEY_FILE))?;
        Ca::load(dir)
    }

    /// The CA in `dir` (both files).
    pub fn load(dir: &Path) -> Result<Ca, SecurityError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io_err("read the CA certificate", &cert_path))?;
        check_private(&key_path)?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io_err("read the CA key", &key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(rcgen_err("CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(rcgen_err("CA certificate"))?;
        Ok(Ca { dir: dir.to_path_buf(), cert_pem, issuer })
    }

    pub fn load_or_create(dir: &Path, cluster: &str) -> Result<Ca, SecurityError> {
        if dir.join(CA_CERT_FILE).exists() {
            Ca::load(dir)
        } else {
            Ca::create(dir, cluster)
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CA_CERT_FILE)
    }

    /// Issues a certificate for `id`, valid for `hosts` (DNS names or IP addresses), and
    /// writes it as `<out>/<stem>.pem` + `<stem>-key.pem` (replacing older ones: daemons
    /// pick the new files up without a restart).
    /// A person's certificate (user, admin) is for clients only: no host names and no
    /// server use, so it cannot pose as a namenode or datanode.
    pub fn issue(&self, id: &Identity, hosts: &[String], out: &Path, stem: &str) -> Result<TlsPaths, SecurityError> {
        let hosts = if id.role.is_person() { Vec::new() } else { hosts.to_vec() };
        let mut p = CertificateParams::new(hosts).map_err(rcgen_err("certificate host names"))?;
        p.distinguished_name.push(DnType::CommonName, id.to_string());
        p.distinguished_name.push(DnType::OrganizationName, "tarn");
        let uri = rcgen::string::Ia5String::try_from(id.uri()).map_err(rcgen_err("identity URI"))?;
        p.subject_alt_names.push(SanType::URI(uri));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = if id.role.is_person() {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]
        };
        p.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(CERT_DAYS);
        p.serial_number = Some(random_serial()?);
        let key = KeyPair::generate().map_err(rcgen_err("key"))?;
        let cert = p.signed_by(&key, &self.issuer).map_err(rcgen_err("certificate"))?;
        // Daemons of a cluster with a container CA accept its containers as clients.
        let container_ca = self.dir.join(crate::container_ca::CONTAINER_CA_CERT_FILE);
        let paths = TlsPaths {
            ca: self.cert_path(),
            cert: out.join(format!("{stem}.pem")),
            key: out.join(format!("{stem}-key.pem")),
            container_ca: container_ca.exists().then_some(container_ca),
        };
        // Key first: a reloading daemon that sees the new certificate finds its key.
        write_private(&paths.key, &key.serialize_pem(), 0o600)?;
        write_private(&paths.cert, &cert.pem(), 0o644)?;
        Ok(paths)
    }
}

/// Makes a self-signed CA named `cn` (ten years), its certificate at `cert` (0644) and its
/// key at `key` (0600).
pub(crate) fn make_ca(cn: String, cert: &Path, key: &Path) -> Result<(), SecurityError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err("CA parameters"))?;
    p.distinguished_name.push(DnType::CommonName, cn);
    p.distinguished_name.push(DnType::OrganizationName, "tarn");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(CA_DAYS);
    let k = KeyPair::generate().map_err(rcgen_err("CA key"))?;
    let c = p.self_signed(&k).map_err(rcgen_err("CA certificate"))?;
    write_private(key, &k.serialize_pem(), 0o600)?;
    write_private(cert, &c.pem(), 0o644)
}

/// A random positive 128-bit certificate serial number.
pub(crate) fn random_serial() -> Result<rcgen::SerialNumber, SecurityError> {
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| SecurityError::Invalid("no system randomness".into()))?;
    serial[0] &= 0x7f;
    Ok(rcgen::SerialNumber::from_slice(&serial))
}

/// Host names a certificate for this machine should carry: loopback, the host name.
pub fn local_hosts() -> Vec<String> {
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() && !hosts.iter().any(|x| x == h) {
            hosts.push(h.to_string());
        }
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_their_identity() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(dir.path(), "test").unwrap();
        assert!(Ca::create(dir.path(), "test").is_err(), "a second CA must not replace the first");
        let id = Identity::new(Role::Datanode, "dn-3").unwrap();
        let paths = ca.issue(&id, &local_hosts(), dir.path(), "dn-3").unwrap();
        let pem = std::fs::read(&paths.cert).unwrap();
        let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem).next().unwrap().unwrap();
        assert_eq!(Identity::of_cert(&der).unwrap(), id);
        check_private(&paths.key).unwrap();
        // The CA reloads from its files and still issues.
        let again = Ca::load(dir.path()).unwrap();
        again.issue(&Identity::new(Role::User, "alice").unwrap(), &[], dir.path(), "alice").unwrap();
    }

    #[test]
    fn identities_are_checked() {
        assert!(Identity::new(Role::User, "").is_err());
        assert!(Identity::new(Role::User, "a/b").is_err());
        assert_eq!(Identity::from_uri("tarn://worker/w1").unwrap().role, Role::Worker);
        assert!(Identity::from_uri("tarn://wizard/w1").is_none());
        assert!(Identity::from_uri("spiffe://worker/w1").is_none());
    }

    use rustls::pki_types::pem::PemObject as _;
}
