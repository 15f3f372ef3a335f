//! `tarn up`: the embedded appliance, every role in one process, data under one directory:
//! a single-node namenode group and one or more datanodes (`--datanodes N`).
//! Each layer of the system adds its role here (block storage: datanodes; S3: the
//! gateway; compute: the resource manager and a worker), running the same code as a
//! multi-node cluster.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tarn_namenode::node::CancellationToken;

use crate::config::{default_data_dir, TarnConfig};

#[derive(clap::Args)]
pub struct UpArgs {
    /// Where everything is kept (created on first start, with a tarn.toml to edit).
    #[arg(long, default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    /// Namenode address for clients (gRPC).
    #[arg(long, default_value = "127.0.0.1:8020")]
    listen: String,
    /// Datanodes to run in the process (overrides `up.datanodes` in tarn.toml).
    #[arg(long)]
    datanodes: Option<usize>,
    /// S3 endpoint address (overrides `gateway.listen`; port 0 picks one).
    #[arg(long)]
    s3_listen: Option<String>,
    /// Development only: serve S3 over plaintext HTTP (prints a warning).
    #[arg(long)]
    insecure_dev: bool,
}

/// A self-signed certificate for the S3 endpoint on this host (until `tarn init` issues
/// certificates from a cluster CA), its key readable by the owner only.
pub fn ensure_gateway_tls(dir: &Path) -> anyhow::Result<tarn_gateway::TlsFiles> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let files = tarn_gateway::TlsFiles { cert: dir.join("gateway.pem"), key: dir.join("gateway-key.pem") };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    let ck = rcgen::generate_simple_self_signed(names).context("generate the gateway certificate")?;
    let mut key = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&files.key)
        .with_context(|| format!("write {}", files.key.display()))?;
    key.write_all(ck.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&files.cert, ck.cert.pem()).with_context(|| format!("write {}", files.cert.display()))?;
    Ok(files)
}

pub async fn run(a: UpArgs) -> anyhow::Result<u8> {
    let cfg_path = a.data_dir.join("tarn.toml");
    let mut cfg = if cfg_path.exists() {
        TarnConfig::load(&cfg_path)?
    } else {
        let cfg = TarnConfig::single_node(&a.data_dir, &a.listen);
        cfg.save(&cfg_path)?;
        cfg
    };
    let node = tarn_namenode::start(cfg.namenode.clone())
        .await
        .with_context(|| format!("start the namenode (config {})", cfg_path.display()))?;
    // Wait until the single-node group has elected itself, so the printed address works.
    node.raft
        .wait(Some(std::time::Duration::from_secs(30)))
        .metrics(|m| m.current_leader.is_some(), "leader elected")
        .await
        .context("namenode did not become leader")?;
    if let Some(n) = a.datanodes {
        cfg.up.datanodes = n;
    }
    // Earlier configurations have no gateway table: give them keys and a certificate.
    let mut changed = false;
    if cfg.gateway.access_keys.is_empty() {
        cfg.gateway.access_keys = vec![tarn_gateway::AccessKey::generate()];
        changed = true;
    }
    if cfg.gateway.master_key_file.is_none() {
        // The cluster master key seals stored secrets (S3 keys; later block data keys).
        let path = a.data_dir.join("keys/master.key");
        if !path.exists() {
            tarn_gateway::keys::MasterKey::create(&path)?;
        }
        cfg.gateway.master_key_file = Some(path);
        changed = true;
    }
    if cfg.gateway.tls.is_none() && !a.insecure_dev {
        cfg.gateway.tls = Some(ensure_gateway_tls(&a.data_dir.join("tls"))?);
        changed = true;
    }
    if changed {
        cfg.save(&cfg_path)?;
    }
    let mut datanodes = Vec::new();
    for i in 1..=cfg.up.datanodes {
        let mut d = cfg.datanode.clone();
        d.namenodes = vec![node.addr.clone()];
        // Each datanode of the appliance has its own directory.
        if i > 1 || d.data_dirs.is_empty() {
            d.data_dirs = vec![a.data_dir.join(format!("datanode-{i}"))];
        }
        let dn = tarn_datanode::start(d).await.with_context(|| format!("start datanode {i}"))?;
        datanodes.push(dn);
    }
    let mut gw = cfg.gateway.clone();
    gw.namenodes = vec![node.addr.clone()];
    if let Some(l) = a.s3_listen {
        gw.listen = l;
    }
    if a.insecure_dev {
        insecure_dev(&mut gw);
    }
    let gateway = tarn_gateway::start(gw.clone()).await.context("start the S3 gateway")?;
    println!("Tarn is up (single-process appliance).");
    println!("  namenode (gRPC):  {}", node.addr);
    for (i, dn) in datanodes.iter().enumerate() {
        println!("  datanode {}:       {} ({})", i + 1, dn.addr, dn.uuid);
    }
    let key = &gw.access_keys[0];
    println!("  S3 endpoint:      {}", gateway.endpoint());
    println!("  S3 access key:    {}", key.access_key);
    println!("  S3 secret key:    {}", key.secret_key);
    let ca = gw.tls.as_ref().map(|t| format!(" --ca-bundle {}", t.cert.display())).unwrap_or_default();
    println!(
        "  aws cli:          AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} aws --endpoint-url {}{ca} s3 ls",
        key.access_key,
        key.secret_key,
        gateway.endpoint()
    );
    println!("  data directory:   {}", a.data_dir.display());
    println!("  configuration:    {}", cfg_path.display());
    println!("  try:              tarn fs put README.md /demo/ && tarn fs cat /demo/README.md");
    println!("Stop with Ctrl-C.");
    wait_for_signal(node.cancelled()).await;
    println!("stopping");
    gateway.stop().await;
    for dn in datanodes {
        dn.stop().await;
    }
    node.shutdown().await;
    Ok(0)
}

/// `--insecure-dev`: plaintext S3, said loudly.
pub fn insecure_dev(gw: &mut tarn_gateway::GatewayConfig) {
    eprintln!("WARNING: --insecure-dev: S3 is served over plaintext HTTP; keys and data cross the network unencrypted");
    gw.tls = None;
    gw.insecure_dev = true;
}

/// Resolves on Ctrl-C, SIGTERM, or when `stop` is cancelled.
pub async fn wait_for_signal(stop: CancellationToken) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
        _ = stop.cancelled() => {}
    }
}
