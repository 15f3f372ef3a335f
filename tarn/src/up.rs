//! `tarn up`: the embedded appliance, every role in one process, data under one directory.
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
}

pub async fn run(a: UpArgs) -> anyhow::Result<u8> {
    let cfg_path = a.data_dir.join("tarn.toml");
    let cfg = if cfg_path.exists() {
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
    println!("Tarn is up (single-process appliance).");
    println!("  namenode (gRPC):  {}", node.addr);
    println!("  data directory:   {}", a.data_dir.display());
    println!("  configuration:    {}", cfg_path.display());
    println!("  try:              tarn fs mkdir -p /demo && tarn fs ls /");
    println!("Stop with Ctrl-C.");
    wait_for_signal(node.cancelled()).await;
    println!("stopping");
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
