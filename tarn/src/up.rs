//! `tarn up`: the embedded appliance, every role in one process, data under one directory:
//! a single-node namenode group and one or more datanodes (`--datanodes N`).
//! Each layer of the system adds its role here (block storage: datanodes; S3: the
//! gateway; compute: the resource manager and a worker), running the same code as a
//! multi-node cluster.

use std::path::PathBuf;

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
    println!("Tarn is up (single-process appliance).");
    println!("  namenode (gRPC):  {}", node.addr);
    for (i, dn) in datanodes.iter().enumerate() {
        println!("  datanode {}:       {} ({})", i + 1, dn.addr, dn.uuid);
    }
    println!("  data directory:   {}", a.data_dir.display());
    println!("  configuration:    {}", cfg_path.display());
    println!("  try:              tarn fs put README.md /demo/ && tarn fs cat /demo/README.md");
    println!("Stop with Ctrl-C.");
    wait_for_signal(node.cancelled()).await;
    println!("stopping");
    for dn in datanodes {
        dn.stop().await;
    }
    node.shutdown().await;
    Ok(0)
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
