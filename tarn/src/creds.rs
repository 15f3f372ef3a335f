//! Credentials of client commands and daemons: which certificate a command presents, the
//! cluster PKI that `tarn init` and `tarn up` lay out, and `tarn admin issue-cert`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tarn_client::{NamenodeClient, Transport};
use tarn_security::{Ca, Identity, Role, SecurityConfig, TlsPaths};

use crate::config::{default_data_dir, TarnConfig};
use crate::out::outln;

/// How a client command reaches the cluster and who it is.
#[derive(clap::Args, Clone)]
pub struct ClientOpts {
    /// Namenode addresses (comma-separated host:port); any member will do. Default: the
    /// configuration's `client.namenodes`.
    #[arg(long, env = "TARN_NAMENODE", global = true)]
    pub namenode: Option<String>,
    /// Resource manager addresses (comma-separated host:port). Default: the
    /// configuration's `client.resource_managers`.
    #[arg(long, env = "TARN_RESOURCE_MANAGER", global = true)]
    pub resource_manager: Option<String>,
    /// Configuration naming this client's certificate (`[security]`) and the namenodes
    /// (`[client]`). Default: ./tarn-data/tarn.toml when it exists (the appliance's admin).
    #[arg(long, env = "TARN_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Development only: plaintext, unauthenticated gRPC (for `tarn up --insecure-dev`).
    #[arg(long, env = "TARN_INSECURE_DEV", global = true)]
    pub insecure_dev: bool,
}

impl ClientOpts {
    fn config(&self) -> anyhow::Result<TarnConfig> {
        match &self.config {
            Some(p) => TarnConfig::load(p),
            None => {
                let p = default_data_dir().join("tarn.toml");
                if p.exists() {
                    TarnConfig::load(&p)
                } else {
                    Ok(TarnConfig::default())
                }
            }
        }
    }

    pub fn transport(&self) -> anyhow::Result<Transport> {
        let cfg = self.config()?;
        let mut sec = cfg.security.clone();
        if self.insecure_dev {
            sec = SecurityConfig { tls: None, insecure_dev: true, ..SecurityConfig::default() };
        }
        sec.transport().context("client credentials")
    }

    pub fn namenodes(&self) -> anyhow::Result<Vec<String>> {
        Ok(match &self.namenode {
            Some(n) => vec![n.clone()],
            None => self.config()?.client.namenodes,
        })
    }

    /// Whether resource managers are named (by flag or in the configuration).
    pub fn resource_managers_configured(&self) -> bool {
        self.resource_manager.is_some() || self.config().is_ok_and(|c| !c.client.resource_managers.is_empty())
    }

    /// A client of the resource managers with this command's certificate.
    pub fn connect_rm(&self) -> anyhow::Result<tarn_client::rm::RmClient> {
        let transport = self.transport()?;
        let addrs = match &self.resource_manager {
            Some(a) => vec![a.clone()],
            None => self.config()?.client.resource_managers,
        };
        Ok(tarn_client::rm::RmClient::new(&addrs, &transport)?.with_retry(crate::cli_retry())?)
    }

    /// A client of the cluster with this command's certificate.
    pub fn connect(&self) -> anyhow::Result<NamenodeClient> {
        let transport = self.transport()?;
        let mut c = NamenodeClient::new(&self.namenodes()?, &transport)?.with_retry(crate::cli_retry());
        if !transport.is_tls() {
            // Dev mode: no certificate names the user, so the command says whom it acts as.
            let user = std::env::var("TARN_USER").or_else(|_| std::env::var("USER"));
            c = c.with_user(user.unwrap_or_else(|_| tarn_client::DEV_USER.into()));
        }
        // On a datanode's host: the datanode beside this command (writes, short-circuit reads).
        Ok(c.with_local_datanode(std::env::var("TARN_DATANODE_UUID").unwrap_or_default()))
    }
}

/// Certificate files of `stem` under `tls_dir` (with the CA there).
pub fn paths(tls_dir: &Path, stem: &str) -> TlsPaths {
    TlsPaths {
        ca: tls_dir.join(tarn_security::pki::CA_CERT_FILE),
        cert: tls_dir.join(format!("{stem}.pem")),
        key: tls_dir.join(format!("{stem}-key.pem")),
        container_ca: Some(tls_dir.join(tarn_security::container_ca::CONTAINER_CA_CERT_FILE)).filter(|p| p.exists()),
    }
}

/// The certificate of `id` under `tls_dir`, issued from the CA there if missing.
pub fn ensure_cert(ca: &Ca, tls_dir: &Path, stem: &str, id: &Identity, hosts: &[String]) -> anyhow::Result<TlsPaths> {
    let p = paths(tls_dir, stem);
    if p.cert.exists() && p.key.exists() {
        return Ok(p);
    }
    Ok(ca.issue(id, hosts, tls_dir, stem)?)
}

/// The stems of the appliance's certificates, one per role it runs.
pub const UP_ROLES: [(Role, &str); 6] = [
    (Role::Namenode, "namenode"),
    (Role::Datanode, "datanode"),
    (Role::Gateway, "gateway"),
    (Role::ResourceManager, "resource-manager"),
    (Role::Worker, "worker"),
    (Role::Admin, "admin"),
];

/// `tarn admin issue-cert`: a certificate for a new node or user from the CA in `ca_dir`.
#[derive(clap::Args)]
pub struct IssueCertArgs {
    /// namenode, datanode, gateway, resource-manager, worker, user or admin.
    #[arg(long)]
    role: String,
    /// The node id or user name the certificate proves.
    #[arg(long)]
    name: String,
    /// Host names and addresses the holder serves as (repeat); clients check them.
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// Where the CA is (ca.pem, ca-key.pem).
    #[arg(long, default_value_os_t = default_data_dir().join("tls"))]
    ca_dir: PathBuf,
    /// Where to write NAME.pem and NAME-key.pem (default: the CA directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn issue_cert(a: IssueCertArgs) -> anyhow::Result<u8> {
    let role: Role = a.role.parse()?;
    let id = Identity::new(role, &a.name)?;
    let ca = Ca::load(&a.ca_dir).with_context(|| format!("load the CA from {}", a.ca_dir.display()))?;
    let out = a.out.unwrap_or_else(|| a.ca_dir.clone());
    let stem = format!("{}-{}", role, a.name);
    let p = ca.issue(&id, &a.hosts, &out, &stem)?;
    outln!("issued a certificate for {id}")?;
    outln!("  certificate: {}", p.cert.display())?;
    outln!("  key:         {}", p.key.display())?;
    outln!("  CA:          {}", p.ca.display())?;
    outln!("use it with a [security] table: tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}", p.ca, p.cert, p.key)?;
    Ok(0)
}
