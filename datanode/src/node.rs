//! A datanode process: configuration, start-up and shutdown.

use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tarn_client::{NamenodeClient, RetryPolicy, Transport};
use tarn_proto::datanode as pb;
use tarn_proto::datanode::data_transfer_server::DataTransferServer;
use tarn_security::MasterKey;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{DatanodeError, Result};
use crate::link::Link;
use crate::scanner::ScanLimits;
use crate::store::BlockStore;
use crate::transfer::{Shared, TransferService, PACKET_BYTES_MAX};

/// A datanode's configuration (the `[datanode]` table of the TOML config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatanodeConfig {
    /// Directories holding replicas (one per disk).
    pub data_dirs: Vec<PathBuf>,
    /// Address of the block transfer service. Port 0 picks a free port.
    pub listen: String,
    /// Address clients and other datanodes use; defaults to the bound address.
    pub advertise: Option<String>,
    /// The namenodes (`host:port`).
    pub namenodes: Vec<String>,
    /// The rack this node is in (placement puts replicas on more than one rack).
    pub rack: String,
    /// Free space kept on every data directory: below it, the node takes no new replica.
    pub reserved_bytes: u64,
    /// The block scanner verifies at most this many bytes per second...
    pub scan_bytes_per_sec: u64,
    /// ...and pauses this long between passes over every replica.
    pub scan_interval_ms: u64,
}

impl Default for DatanodeConfig {
    fn default() -> Self {
        DatanodeConfig {
            data_dirs: vec![PathBuf::from("tarn-data/datanode")],
            listen: "127.0.0.1:0".into(),
            advertise: None,
            namenodes: vec!["127.0.0.1:8020".into()],
            rack: "/default-rack".into(),
            reserved_bytes: 256 << 20,
            scan_bytes_per_sec: 8 << 20,
            scan_interval_ms: 6 * 3600 * 1000,
        }
    }
}

impl DatanodeConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(DatanodeError::Config(format!("datanode.{key}: {why}")));
        if self.data_dirs.is_empty() {
            return bad("data_dirs", "at least one directory is needed");
        }
        if self.namenodes.is_empty() {
            return bad("namenodes", "at least one namenode address is needed");
        }
        if self.scan_bytes_per_sec == 0 {
            return bad("scan_bytes_per_sec", "must be > 0");
        }
        if !self.rack.starts_with('/') {
            return bad("rack", "must start with '/' (like /dc1/rack7)");
        }
        Ok(())
    }
}

/// A running datanode.
pub struct DatanodeHandle {
    /// The address clients and other datanodes reach it at.
    pub addr: String,
    /// The address it listens on (the same unless `advertise` names another).
    pub listen: std::net::SocketAddr,
    pub uuid: String,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl DatanodeHandle {
    /// Stops serving and talking to the namenodes; replicas being written stay for recovery.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The address to give out for a bound socket: a wildcard bind is named by the host name.
fn advertised(bound: std::net::SocketAddr) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host = if host.is_empty() { "localhost".to_string() } else { host };
    format!("{host}:{}", bound.port())
}

/// Starts a datanode and returns once its transfer service listens; `transport` secures
/// its service and its links to the namenodes and other datanodes; `master` encrypts the
/// replicas it stores (`None`: insecure dev mode, replicas in the clear).
pub async fn start(cfg: DatanodeConfig, transport: Transport, master: Option<MasterKey>) -> Result<DatanodeHandle> {
    cfg.validate()?;
    let dirs = cfg.data_dirs.clone();
    let reserved = cfg.reserved_bytes;
    let store = tokio::task::spawn_blocking(move || BlockStore::open(&dirs, reserved, master))
        .await
        .map_err(|e| DatanodeError::Config(format!("open data directories: {e}")))??;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(DatanodeError::io("listen on", PathBuf::from(&cfg.listen)))?;
    let bound = listener.local_addr().map_err(DatanodeError::io("read bound address", PathBuf::from(&cfg.listen)))?;
    let addr = cfg.advertise.clone().unwrap_or_else(|| advertised(bound));
    let uuid = store.storage_ids()[0].clone();
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        store,
        events: events_tx,
        in_flight: AtomicU32::new(0),
        transport: transport.clone(),
        block_keys: tarn_security::BlockKeys::new(),
        ip: addr.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified()),
    });
    let shutdown = CancellationToken::new();

    let svc = DataTransferServer::new(TransferService::new(shared.clone()))
        .max_decoding_message_size(PACKET_BYTES_MAX + 4096)
        .max_encoding_message_size(PACKET_BYTES_MAX + 4096);
    // Any certificate of the cluster may move blocks (clients, gateways, workers, other
    // datanodes); accepted sockets get Nagle off.
    let incoming = transport.incoming(listener, shutdown.clone());
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        let r = tonic::transport::Server::builder()
            .initial_stream_window_size(crate::transfer::STREAM_WINDOW_BYTES)
            .initial_connection_window_size(crate::transfer::CONNECTION_WINDOW_BYTES)
            .max_frame_size(crate::transfer::FRAME_BYTES)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "datanode transfer service stopped");
        }
    });

    let retry = RetryPolicy { deadline: Duration::from_secs(10), ..Default::default() };
    let nn = NamenodeClient::new(&cfg.namenodes, &transport)
        .map_err(|e| DatanodeError::Config(e.to_string()))?
        .with_retry(retry);
    let me = pb::DatanodeLocation { uuid: uuid.clone(), addr: addr.clone(), rack: cfg.rack.clone() };
    let limits = ScanLimits {
        bytes_per_sec: cfg.scan_bytes_per_sec,
        pass_interval: Duration::from_millis(cfg.scan_interval_ms),
    };
    let scanner = tokio::spawn(crate::scanner::run(shared.clone(), limits, shutdown.clone()));
    let link = Link { shared, nn, me, heartbeat_interval: Duration::from_secs(1), unsent_corrupt: Default::default() };
    let link = tokio::spawn(link.run(events_rx, shutdown.clone()));
    tracing::info!(%addr, %uuid, dirs = ?cfg.data_dirs, "datanode serving");
    Ok(DatanodeHandle { addr, listen: bound, uuid, shutdown, tasks: vec![server, link, scanner] })
}
