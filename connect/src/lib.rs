//! Tarn's Spark Connect endpoint: PySpark's thin client (`pyspark-client`,
//! `SPARK_REMOTE=sc://HOST:15002/;use_ssl=true;token=...`) sends unresolved plans; the
//! endpoint translates them into DataFusion logical plans ([`plan`]) and runs them as jobs
//! on the user's session application ([`apps`]), so they are distributed, placed and
//! retried like any Tarn job, as that user.
//!
//! - The token is one of the cluster's S3 keys, `ACCESS_KEY:SECRET`: the user it belongs
//!   to is whom every plan acts as (their permissions apply to every path).
//! - Connections are TLS with the endpoint's certificate (clients trust the cluster CA:
//!   `GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`); plaintext only in dev mode, which warns.
//! - The server side of the service is generated in this crate's build from the messages
//!   of the `apache-spark-connect-proto` crate.

pub mod apps;
pub mod ddl;
pub mod errors;
pub mod plan;
mod relations;
mod service;
pub mod sessions;
mod show;
mod sql;
mod tables;
pub mod types;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tarn_client::rm::RmClient;
use tarn_client::NamenodeClient;
use tarn_gateway::keys::{KeyStore, MasterKey};
use tarn_gateway::{AccessKey, TlsFiles};
use tarn_security::transport::Transport;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use apps::SessionSize;
pub use errors::SparkError;
pub use service::SPARK_VERSION;

/// The generated server of `spark.connect.SparkConnectService`.
pub mod pb {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/spark.connect.SparkConnectService.rs"));
}

/// Spark Connect's conventional port.
pub const DEFAULT_PORT: u16 = 15002;
/// The largest message the endpoint takes or sends (pyspark-client's own limit).
const MESSAGE_MAX: usize = 128 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("bind {addr}")]
    Bind { addr: String, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(#[from] tarn_security::SecurityError),
    #[error("cluster client: {0}")]
    Client(#[from] tarn_client::ClientError),
}

/// `[connect]` of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectConfig {
    pub listen: String,
    pub namenodes: Vec<String>,
    pub resource_managers: Vec<String>,
    /// The endpoint's certificate and key (PEM). Without them it refuses to start unless
    /// `insecure_dev` is set.
    pub tls: Option<TlsFiles>,
    /// Plaintext, and requests without a token act as `dev_user` (development only; warns).
    pub insecure_dev: bool,
    pub dev_user: String,
    /// Keys whose tokens act as the administrator (as the gateway's configured keys).
    pub access_keys: Vec<AccessKey>,
    /// The cluster master key (opens the secrets of keys made by `tarn s3 keys create`).
    pub master_key_file: Option<PathBuf>,
    #[serde(skip)]
    pub master_key_hex: Option<String>,
    /// The `tarn` program the session applications' containers run.
    pub tarn_bin: String,
    /// The size of each user's session application.
    pub session: SessionSize,
    /// An operation no client follows for this long is interrupted (its job cancelled)
    /// and forgotten: a client that went away releases its job (Spark's
    /// `spark.connect.execute.manager.detachedTimeout`, 60 s).
    pub detached_operation_timeout_s: u64,
    /// A session without a request for this long is released (Spark's
    /// `spark.connect.session.manager.defaultSessionTimeout`, 60 minutes).
    pub session_timeout_s: u64,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            // Loopback unless told: a master serving other hosts names its address.
            listen: format!("127.0.0.1:{DEFAULT_PORT}"),
            namenodes: vec!["127.0.0.1:8020".into()],
            resource_managers: vec!["127.0.0.1:8032".into()],
            tls: None,
            insecure_dev: false,
            dev_user: "tarn".into(),
            access_keys: Vec::new(),
            master_key_file: None,
            master_key_hex: None,
            tarn_bin: "tarn".into(),
            session: SessionSize::default(),
            detached_operation_timeout_s: 60,
            session_timeout_s: 3600,
        }
    }
}

/// A running endpoint.
pub struct ConnectHandle {
    pub addr: SocketAddr,
    pub tls: bool,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    endpoint: Arc<service::Endpoint>,
}

impl ConnectHandle {
    /// Operations the endpoint holds (running, or finished and not yet released).
    pub fn operations(&self) -> usize {
        self.endpoint.operations()
    }

    /// The `SPARK_REMOTE` for `token` (`ACCESS_KEY:SECRET`), with `host` as clients reach it.
    pub fn remote(&self, host: &str, token: &str) -> String {
        remote_url(host, self.addr.port(), token, self.tls)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// `sc://HOST:PORT/;use_ssl=true;token=...`, the token percent-encoded (the client
/// splits parameters on `;` and `=` and decodes `%XX`).
pub fn remote_url(host: &str, port: u16, token: &str, tls: bool) -> String {
    let enc: String = token
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    if tls {
        format!("sc://{host}:{port}/;use_ssl=true;token={enc}")
    } else {
        format!("sc://{host}:{port}")
    }
}

/// Starts an endpoint on `cfg.listen` (port 0 picks one); `transport` is how it reaches
/// the cluster (a certificate that may act for users: the gateway's).
pub async fn start(cfg: ConnectConfig, transport: Transport) -> Result<ConnectHandle, ConnectError> {
    let listener =
        TcpListener::bind(&cfg.listen).await.map_err(|e| ConnectError::Bind { addr: cfg.listen.clone(), source: e })?;
    start_on(listener, cfg, transport).await
}

pub async fn start_on(
    listener: TcpListener,
    cfg: ConnectConfig,
    transport: Transport,
) -> Result<ConnectHandle, ConnectError> {
    let server_tls = match (&cfg.tls, cfg.insecure_dev) {
        (Some(f), _) => Some(tarn_security::transport::public_server_config(&f.cert, &f.key)?),
        (None, true) => {
            tracing::warn!(
                "Spark Connect is served over plaintext (insecure dev mode): requests without a token act as {:?}",
                cfg.dev_user
            );
            None
        }
        (None, false) => {
            return Err(ConnectError::Config(
                "connect.tls (cert and key) is required; plaintext needs the explicit insecure dev flag".into(),
            ))
        }
    };
    let master = MasterKey::from_hex_or_file(cfg.master_key_hex.as_deref(), cfg.master_key_file.as_deref())
        .map_err(|e| ConnectError::Config(e.to_string()))?;
    let nn = Arc::new(NamenodeClient::new(&cfg.namenodes, &transport)?);
    let rm = RmClient::new(&cfg.resource_managers, &transport)?;
    let keys = Arc::new(KeyStore::new(nn.clone(), master, cfg.access_keys.clone()));
    let apps = apps::Apps::new(rm, nn.clone(), cfg.session.clone(), cfg.tarn_bin.clone());
    let dev_user = cfg.insecure_dev.then(|| cfg.dev_user.clone());
    let expiry = service::Expiry {
        detached_operation: Duration::from_secs(cfg.detached_operation_timeout_s),
        session: Duration::from_secs(cfg.session_timeout_s),
    };
    let endpoint = Arc::new(service::Endpoint::new(keys, nn, apps, dev_user, expiry));
    let svc = pb::spark_connect_service_server::SparkConnectServiceServer::new(endpoint.clone())
        .max_decoding_message_size(MESSAGE_MAX)
        .max_encoding_message_size(MESSAGE_MAX);
    let addr = listener.local_addr().map_err(|e| ConnectError::Bind { addr: cfg.listen.clone(), source: e })?;
    let shutdown = CancellationToken::new();
    let tls = server_tls.is_some();
    let incoming = tarn_security::transport::public_incoming(listener, server_tls, shutdown.clone());
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let r = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "the Spark Connect endpoint stopped");
        }
    });
    // What clients left behind is looked at a few times per timeout.
    let every = Duration::from_secs(cfg.detached_operation_timeout_s.min(cfg.session_timeout_s).clamp(1, 20) / 4)
        .max(Duration::from_millis(250));
    let (janitor, stop) = (endpoint.clone(), shutdown.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => janitor.expire(),
            }
        }
    });
    tracing::info!(%addr, tls, "Spark Connect endpoint serving");
    Ok(ConnectHandle { addr, tls, shutdown, task, endpoint })
}
