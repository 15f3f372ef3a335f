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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::TarnConfig;

    /// A value no configuration key takes (none is a datetime): a known key set to it is a
    /// type error.
    const WRONG_VALUE: &str = "1979-05-27T07:32:00Z";

    /// The rows of CONFIGURATION.md's tables, `| `KEY` | `DEFAULT` | MEANING |`, as
    /// (key, default).
    fn documented_rows() -> Vec<(String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../CONFIGURATION.md");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        text.lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').collect();
                let backticked = |i: usize| {
                    let cell = cells.get(i).and_then(|c| c.split('`').nth(1));
                    cell.unwrap_or_else(|| panic!("CONFIGURATION.md: cell {i} is not backticked in {l:?}")).to_string()
                };
                (backticked(1), backticked(2))
            })
            .collect()
    }

    /// The configuration's defaults as TOML.
    fn defaults() -> toml::Table {
        match toml::Value::try_from(TarnConfig::default()).expect("the defaults serialize") {
            toml::Value::Table(t) => t,
            other => panic!("the defaults serialize to {other:?}, not a table"),
        }
    }

    /// The dotted paths of the values under `table` that are not tables (arrays count as
    /// values; an empty table adds none).
    fn leaves(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (name, value) in table {
            let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
            match value {
                toml::Value::Table(t) => leaves(&path, t, out),
                _ => out.push(path),
            }
        }
    }

    /// The value at dotted path `key`, if set.
    fn lookup<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
        match key.split_once('.') {
            None => table.get(key),
            Some((head, rest)) => lookup(table.get(head)?.as_table()?, rest),
        }
    }

    /// A configuration that sets dotted path `key` to [`WRONG_VALUE`].
    fn wrong_type_document(key: &str) -> String {
        match key.rsplit_once('.') {
            Some((table, name)) => format!("[{table}]\n{name} = {WRONG_VALUE}\n"),
            None => format!("{key} = {WRONG_VALUE}\n"),
        }
    }

    /// Why `key` is not a key of the configuration, if it is not. A known key set to a
    /// datetime is an `invalid type` error; an unknown key is an `unknown field`, or, in a
    /// sub-table without `deny_unknown_fields` (`gateway.tls`, `up.user_key`), ignored and
    /// then a `missing field` of that table.
    fn unknown_to_code(key: &str) -> Option<String> {
        match toml::from_str::<TarnConfig>(&wrong_type_document(key)) {
            Ok(_) => Some(format!("{key}: a datetime was accepted")),
            Err(e) if e.message().contains("invalid type") && !e.message().contains("unknown field") => None,
            Err(e) => Some(format!("{key}: {}", e.message())),
        }
    }

    /// A Default cell as TOML; `none` stands for an unset key.
    fn documented_default(cell: &str) -> Option<toml::Value> {
        if cell == "none" {
            return None;
        }
        let doc: toml::Table =
            toml::from_str(&format!("v = {cell}")).unwrap_or_else(|e| panic!("default `{cell}` is not TOML: {e}"));
        doc.get("v").cloned()
    }

    /// Guards CONFIGURATION.md against drifting from the code: every key the defaults
    /// set is documented, every documented key exists (a misspelt, renamed or removed key
    /// fails), and no key is documented twice.
    #[test]
    fn configuration_reference_covers_every_key() {
        let documented: Vec<String> = documented_rows().into_iter().map(|(key, _)| key).collect();
        let mut seen = HashSet::new();
        let twice: Vec<&String> = documented.iter().filter(|k| !seen.insert(k.as_str())).collect();
        assert!(twice.is_empty(), "CONFIGURATION.md documents these keys more than once: {twice:?}");

        let mut keys = Vec::new();
        leaves("", &defaults(), &mut keys);
        let missing: Vec<&String> = keys.iter().filter(|k| !documented.contains(k)).collect();
        assert!(missing.is_empty(), "CONFIGURATION.md does not document these keys: {missing:?}");

        let unknown: Vec<String> = documented.iter().map(String::as_str).filter_map(unknown_to_code).collect();
        assert!(
            unknown.is_empty(),
            "CONFIGURATION.md documents keys the configuration does not have:\n{}",
            unknown.join("\n")
        );
    }

    /// Guards CONFIGURATION.md's Default column: each documented default is the code's.
    #[test]
    fn configuration_reference_defaults_match_code() {
        let defaults = defaults();
        let wrong: Vec<String> = documented_rows()
            .iter()
            .filter_map(|(key, cell)| {
                let code = lookup(&defaults, key);
                let code_text = code.map_or_else(|| "none".to_string(), ToString::to_string);
                (code != documented_default(cell).as_ref())
                    .then(|| format!("{key}: documented `{cell}`, the code's default is `{code_text}`"))
            })
            .collect();
        assert!(wrong.is_empty(), "CONFIGURATION.md's defaults differ from the code's:\n{}", wrong.join("\n"));
    }
}
