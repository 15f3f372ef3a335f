//! The `tarn` configuration file (TOML): one table per role, defaults in the role crates,
//! validated at start-up with messages that name the key.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tarn_datanode::DatanodeConfig;
use tarn_gateway::GatewayConfig;
use tarn_namenode::NamenodeConfig;
use tarn_security::SecurityConfig;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TarnConfig {
    pub namenode: NamenodeConfig,
    pub datanode: DatanodeConfig,
    pub client: ClientConfig,
    pub gateway: GatewayConfig,
    pub resource_manager: tarn_resource_manager::ResourceManagerConfig,
    pub worker: tarn_worker::WorkerConfig,
    /// The Spark Connect endpoint (`tarn up` runs one).
    pub connect: tarn_connect::ConnectConfig,
    pub up: UpConfig,
    /// This process's certificate (mutual TLS with every peer), or the dev flag.
    pub security: SecurityConfig,
}

/// What `tarn up` runs in its one process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpConfig {
    /// Datanodes in the process, each with its own directory `<data_dir>/datanode-N`.
    pub datanodes: usize,
    /// Namenodes in the process, one Raft group: node 1 is `[namenode]`, node N keeps
    /// `<data_dir>/namenode-N` and listens N-1 ports above it.
    pub namenodes: usize,
    /// The S3 key (and Spark Connect token) `tarn up` prints: a key of the person who runs
    /// the appliance (the user its admin certificate names), made on first start, so
    /// what it makes through S3 is theirs and their jobs may write there. The
    /// `[gateway] access_keys` stay the S3 root's.
    pub user_key: Option<tarn_gateway::AccessKey>,
}

impl Default for UpConfig {
    fn default() -> Self {
        UpConfig { datanodes: 1, namenodes: 1, user_key: None }
    }
}

/// Where client commands find the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// Namenode addresses (`host:port`); any of them will do, the leader is found.
    pub namenodes: Vec<String>,
    /// Resource manager addresses (`host:port`).
    pub resource_managers: Vec<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { namenodes: vec!["127.0.0.1:8020".into()], resource_managers: vec!["127.0.0.1:8032".into()] }
    }
}

impl TarnConfig {
    pub fn load(path: &Path) -> anyhow::Result<TarnConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
        let cfg: TarnConfig = toml::from_str(&text).with_context(|| format!("parse config {}", path.display()))?;
        Ok(cfg.with_environment())
    }

    /// What the environment adds to a configuration (this crate alone reads it): the master
    /// key as hex in `TARN_MASTER_KEY` wins over the key files.
    pub fn with_environment(mut self) -> TarnConfig {
        let hex = std::env::var(tarn_security::MASTER_KEY_ENV).ok();
        self.security.master_key_hex = hex.clone();
        self.gateway.master_key_hex = hex.clone();
        self.connect.master_key_hex = hex;
        self
    }

    /// Writes the file readable by its owner only: it may hold S3 secret keys.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let text = toml::to_string_pretty(self).context("serialize config")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let tmp = path.with_extension("toml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("write config {}", tmp.display()))?;
        f.write_all(text.as_bytes()).with_context(|| format!("write config {}", tmp.display()))?;
        f.sync_all().ok();
        std::fs::rename(&tmp, path).with_context(|| format!("write config {}", path.display()))
    }

    /// The configuration of the single-process appliance under `data_dir`.
    pub fn single_node(data_dir: &Path, listen: &str) -> TarnConfig {
        let mut cfg = TarnConfig::default();
        cfg.namenode.node_id = 1;
        cfg.namenode.listen = listen.to_string();
        cfg.namenode.data_dir = data_dir.join("namenode");
        cfg.namenode.initial_members = vec!["1@".into()];
        // New files get min(3, live datanodes) replicas.
        cfg.namenode.files.default_replication = 3;
        cfg.datanode.namenodes = vec![listen.to_string()];
        cfg.datanode.data_dirs = vec![data_dir.join("datanode-1")];
        // The appliance runs on a laptop or a small VM: keep 1 GiB free on the disk.
        cfg.datanode.reserved_bytes = 1 << 30;
        cfg.client.namenodes = vec![listen.to_string()];
        cfg.gateway.namenodes = vec![listen.to_string()];
        cfg.gateway.listen = "127.0.0.1:9000".into();
        cfg.gateway.access_keys = vec![tarn_gateway::AccessKey::generate()];
        cfg.gateway.domains = vec!["localhost:9000".into(), "localhost".into()];
        cfg.connect.listen = format!("127.0.0.1:{}", tarn_connect::DEFAULT_PORT);
        // YARN's port beside the namenode's (a picked one when the namenode's is).
        let host = listen.rsplit_once(':').map(|(h, _)| h).unwrap_or("127.0.0.1");
        let rm_port = if listen.ends_with(":0") { 0 } else { 8032 };
        cfg.resource_manager.listen = format!("{host}:{rm_port}");
        cfg.worker.resource_managers = vec![cfg.resource_manager.listen.clone()];
        cfg.worker.local_dir = data_dir.join("worker");
        cfg.client.resource_managers = vec![cfg.resource_manager.listen.clone()];
        cfg.with_environment()
    }
}

/// `./tarn-data` unless overridden.
pub fn default_data_dir() -> PathBuf {
    PathBuf::from("tarn-data")
}
