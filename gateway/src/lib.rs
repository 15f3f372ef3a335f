//! The S3 gateway: a stateless S3 endpoint over the cluster (`tarn gateway`, and part of
//! `tarn up`). Several may run behind a load balancer: all state lives in the namespace.
//!
//! The protocol (routing, SigV4 and presigned URLs, aws-chunked bodies, XML) is `s3s`;
//! [`s3::TarnS3`] maps operations onto the namespace and blocks, and this module serves
//! it over HTTP/1.1 and HTTP/2, with TLS (rustls) unless the operator explicitly asks
//! for plaintext.

#[cfg(test)]
mod golden_tests;
pub mod keys;
pub mod names;
pub mod s3;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SecretKey;
use s3s::{S3Error, S3Result};
use serde::{Deserialize, Serialize};
use tarn_client::{NamenodeClient, Transport};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::s3::{AccessClass, ApiError};

/// Staged uploads of a gateway that died mid-upload are removed this long after they
/// started: closed ones (lease recovered), and ones still open (a very slow client's
/// 5 GiB upload may take hours).
const STAGED_CLOSED_AGE: Duration = Duration::from_secs(3600);
const STAGED_OPEN_AGE: Duration = Duration::from_secs(24 * 3600);
const SWEEP_INTERVAL: Duration = Duration::from_secs(600);
/// A TLS handshake or the request head must arrive within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Request headers larger than this are refused (HTTP/1 read buffer).
const HEADER_BYTES_MAX: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("bind {addr}")]
    Bind { addr: String, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("namenode client: {0}")]
    Client(#[from] tarn_client::ClientError),
}

/// An access key and its secret. The secret never appears in logs or `Debug` output.
#[derive(Clone, Serialize, Deserialize)]
pub struct AccessKey {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey").field("access_key", &self.access_key).field("secret_key", &"<redacted>").finish()
    }
}

impl AccessKey {
    /// A new random key pair (20 and 40 characters, as AWS's).
    pub fn generate() -> AccessKey {
        use rand::Rng;
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const ANY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut rng = rand::rng();
        let pick = |set: &[u8], n: usize, rng: &mut rand::rngs::ThreadRng| {
            (0..n).map(|_| set[rng.random_range(0..set.len())] as char).collect::<String>()
        };
        AccessKey { access_key: format!("TK{}", pick(UPPER, 18, &mut rng)), secret_key: pick(ANY, 40, &mut rng) }
    }
}

/// Certificate and key files (PEM) for HTTPS.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[gateway]` of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub listen: String,
    pub namenodes: Vec<String>,
    /// HTTPS with these files. Without them the gateway refuses to start unless
    /// `insecure_dev` is set.
    pub tls: Option<TlsFiles>,
    /// Serve plaintext HTTP (development only; a warning is logged).
    pub insecure_dev: bool,
    pub access_keys: Vec<AccessKey>,
    /// Domains for virtual-host-style addressing (`bucket.DOMAIN`), with and without the
    /// port clients use. Path-style always works.
    pub domains: Vec<String>,
    /// The cluster master key (opens the secrets of keys made by `tarn s3 keys create`);
    /// `master_key_hex` takes precedence.
    pub master_key_file: Option<PathBuf>,
    /// The master key given outside the file (the binary fills it from `TARN_MASTER_KEY`);
    /// never written to a configuration file.
    #[serde(skip)]
    pub master_key_hex: Option<String>,
    /// Keys a listing request reads from the namespace at most (ListObjects, V2, versions);
    /// past it the page ends early, truncated, and the client's next request resumes
    /// where it stopped (as S3 may end pages). 1 or more.
    pub list_scan_keys_max: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: "127.0.0.1:9000".into(),
            namenodes: vec!["127.0.0.1:8020".into()],
            tls: None,
            insecure_dev: false,
            access_keys: Vec::new(),
            domains: Vec::new(),
            master_key_file: None,
            master_key_hex: None,
            list_scan_keys_max: s3::LIST_SCAN_KEYS_MAX,
        }
    }
}

/// Virtual-host-style addressing for `bucket.DOMAIN[:port]` under the configured domains;
/// any other host (an IP address, another name, any port) is path-style. (s3s's
/// `MultiDomain` reads an unknown host as a bucket name, which breaks path-style requests
/// to `https://127.0.0.1:PORT`.)
struct Domains(Vec<String>);

impl Domains {
    fn new(domains: &[String]) -> Result<Domains, GatewayError> {
        let mut out = Vec::new();
        for d in domains {
            let name = host_name(d).to_ascii_lowercase();
            if name.is_empty() || name.contains('/') {
                return Err(GatewayError::Config(format!("gateway.domains: {d:?} is not a host name")));
            }
            if !out.contains(&name) {
                out.push(name);
            }
        }
        Ok(Domains(out))
    }
}

/// `host` without its port (IPv6 literals keep their brackets).
fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port)) if !h.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

impl s3s::host::S3Host for Domains {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        let name = host_name(host).to_ascii_lowercase();
        for d in &self.0 {
            if let Some(bucket) = name.strip_suffix(d.as_str()).and_then(|p| p.strip_suffix('.')) {
                if !bucket.is_empty() {
                    return Ok(s3s::host::VirtualHost::new(host).with_bucket(bucket.to_string()));
                }
            }
        }
        Ok(s3s::host::VirtualHost::new(host))
    }
}

/// A running gateway.
pub struct GatewayHandle {
    pub addr: SocketAddr,
    pub https: bool,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl GatewayHandle {
    /// The endpoint URL clients use.
    pub fn endpoint(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

struct Auth(Arc<keys::KeyStore>);

#[async_trait::async_trait]
impl s3s::auth::S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.identity(access_key).await {
            Ok(Some(id)) => Ok(SecretKey::from(id.secret)),
            Ok(None) => Err(ApiError::InvalidAccessKeyId("the access key does not exist".into()).into()),
            Err(e) => {
                // The client is answered (500: S3 clients retry it) and the namenodes come
                // back by themselves: no person needs to look.
                tracing::warn!(error = %e, "access key lookup failed");
                Err(ApiError::internal("access key lookup failed", e).into())
            }
        }
    }
}

/// Compares without an early exit, so the time taken does not tell where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses what Tarn does not accept: SigV2 header signatures (no clock check, so they can
/// be replayed), presigned URLs valid for more than 7 days (AWS's limit), anonymous
/// requests. SigV2 presigned URLs (boto3's default for `generate_presigned_url`) carry
/// their expiry and are accepted.
struct Access(Arc<keys::KeyStore>);

impl Access {
    /// May the caller read `bucket`? (copy sources)
    async fn check_read(&self, ak: Option<&str>, bucket: &str) -> Result<(), ApiError> {
        let access = self.0.bucket(bucket).await.map_err(|e| ApiError::internal(&format!("grants of {bucket}"), e))?;
        let Some(access) = access else { return Err(ApiError::NoSuchBucket(bucket.to_string())) };
        let Some(ak) = ak else {
            return Err(ApiError::AccessDenied("anonymous requests may not copy".into()));
        };
        let id = self.0.identity(ak).await.map_err(|e| ApiError::Internal(e.to_string()))?;
        if id.is_some_and(|i| i.admin) || access.can_read(ak) {
            Ok(())
        } else {
            Err(ApiError::AccessDenied(format!("access key {ak} may not read bucket {bucket:?}")))
        }
    }

    /// May the caller call operation `op` (of access class `class`) on `bucket`?
    async fn check_op(
        &self,
        op: &str,
        class: AccessClass,
        bucket: Option<String>,
        ak: Option<String>,
    ) -> Result<(), ApiError> {
        let unimplemented = || ApiError::NotImplemented(format!("Tarn does not implement {op}"));
        if class == AccessClass::Unimplemented {
            return Err(unimplemented());
        }
        let id = match &ak {
            Some(ak) => self.0.identity(ak).await.map_err(|e| ApiError::Internal(e.to_string()))?,
            None => None,
        };
        if id.as_ref().is_some_and(|i| i.admin) {
            return Ok(());
        }
        let (read, anonymous_read_suffices) = match class {
            AccessClass::Unimplemented => return Err(unimplemented()),
            AccessClass::Signed { verb } => {
                return match ak {
                    Some(_) => Ok(()),
                    None => Err(ApiError::AccessDenied(format!("anonymous requests may not {verb}"))),
                };
            }
            AccessClass::Read { anonymous_read } => (true, anonymous_read),
            AccessClass::Write => (false, false),
        };
        // Reads and writes are of a bucket (s3s routes them only with one); fail closed.
        let Some(bucket) = bucket else {
            return Err(ApiError::AccessDenied(format!("{op} names no bucket")));
        };
        let access = self.0.bucket(&bucket).await.map_err(|e| ApiError::internal(&format!("grants of {bucket}"), e))?;
        // A missing bucket: let the operation say NoSuchBucket.
        let Some(access) = access else { return Ok(()) };
        let allowed = match &ak {
            // A bucket anyone may read, a signed caller may read too.
            Some(ak) if read => access.can_read(ak) || (anonymous_read_suffices && access.anonymous_read),
            Some(ak) => access.can_write(ak),
            None => read && anonymous_read_suffices && access.anonymous_read,
        };
        match (allowed, ak) {
            (true, _) => Ok(()),
            (false, Some(ak)) => Err(ApiError::AccessDenied(format!(
                "access key {ak} may not {} bucket {bucket:?}",
                if read { "read" } else { "write to" }
            ))),
            (false, None) => {
                Err(ApiError::AccessDenied(format!("anonymous access to bucket {bucket:?} is not allowed")))
            }
        }
    }
}

#[async_trait::async_trait]
impl s3s::access::S3Access for Access {
    async fn copy_object(&self, req: &mut s3s::S3Request<s3s::dto::CopyObjectInput>) -> S3Result<()> {
        if let s3s::dto::CopySource::Bucket { bucket, .. } = &req.input.copy_source {
            let ak = req.credentials.as_ref().map(|c| c.access_key.clone());
            self.check_read(ak.as_deref(), bucket).await?;
        }
        Ok(())
    }

    async fn upload_part_copy(&self, req: &mut s3s::S3Request<s3s::dto::UploadPartCopyInput>) -> S3Result<()> {
        if let s3s::dto::CopySource::Bucket { bucket, .. } = &req.input.copy_source {
            let ak = req.credentials.as_ref().map(|c| c.access_key.clone());
            self.check_read(ak.as_deref(), bucket).await?;
        }
        Ok(())
    }

    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> S3Result<()> {
        if let Some(auth) = cx.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            if auth.starts_with("AWS ") {
                let e = ApiError::AccessDenied("Signature Version 2 is not accepted; sign with SigV4".into());
                return Err(e.into());
            }
        }
        let query = cx.uri().query().unwrap_or("");
        for kv in query.split('&') {
            if let Some(v) = kv.strip_prefix("X-Amz-Expires=") {
                if v.parse::<u64>().map_or(true, |s| s > 604_800) {
                    return Err(ApiError::AuthorizationQuery("X-Amz-Expires must be at most 604800".into()).into());
                }
            }
            if let Some(v) = kv.strip_prefix("Expires=") {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                if v.parse::<u64>().map_or(true, |e| e > now + 604_800) {
                    return Err(ApiError::AccessDenied("a presigned URL may be valid for at most 7 days".into()).into());
                }
            }
        }
        // Each operation declares who may call it, next to it (`s3::access_class`).
        let op = cx.s3_op().name().to_string();
        let bucket = cx.s3_path().get_bucket_name().map(str::to_string);
        let ak = cx.credentials().map(|c| c.access_key.clone());
        self.check_op(&op, s3::access_class(&op), bucket, ak).await.map_err(S3Error::from)
    }
}

fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, GatewayError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| GatewayError::Tls(format!("read certificates from {}: {e}", files.cert.display())))?;
    if certs.is_empty() {
        return Err(GatewayError::Tls(format!("{} holds no certificate", files.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| GatewayError::Tls(format!("read private key from {}: {e}", files.key.display())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(tarn_security::transport::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| GatewayError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| GatewayError::Tls(format!("certificate and key: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The gateway's order of suites (AES-128-GCM first), not the client's: bulk objects
    // cost a third less to encrypt.
    cfg.ignore_client_order = true;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Starts a gateway on `cfg.listen` (port 0 picks one); `transport` is how it reaches the
/// namenodes and datanodes (its gateway certificate; it acts for each S3 key's user).
pub async fn start(cfg: GatewayConfig, transport: Transport) -> Result<GatewayHandle, GatewayError> {
    let listener =
        TcpListener::bind(&cfg.listen).await.map_err(|e| GatewayError::Bind { addr: cfg.listen.clone(), source: e })?;
    start_on(listener, cfg, transport).await
}

pub async fn start_on(
    listener: TcpListener,
    cfg: GatewayConfig,
    transport: Transport,
) -> Result<GatewayHandle, GatewayError> {
    let tls = match (&cfg.tls, cfg.insecure_dev) {
        (Some(files), _) => Some(tls_acceptor(files)?),
        (None, true) => {
            tracing::warn!("the S3 gateway serves plaintext HTTP (insecure dev mode): credentials and data cross the network unencrypted");
            None
        }
        (None, false) => {
            return Err(GatewayError::Config(
                "gateway.tls (cert and key) is required; plaintext needs the explicit insecure dev flag".into(),
            ))
        }
    };
    let master = keys::MasterKey::from_hex_or_file(cfg.master_key_hex.as_deref(), cfg.master_key_file.as_deref())
        .map_err(|e| GatewayError::Config(e.to_string()))?;
    if cfg.access_keys.is_empty() && master.is_none() {
        return Err(GatewayError::Config(
            "no access key could be used: gateway.access_keys is empty and there is no master key to open stored keys"
                .into(),
        ));
    }
    if master.is_none() {
        tracing::warn!("no master key: only the keys of gateway.access_keys work (not those of `tarn s3 keys create`)");
    }
    if cfg.list_scan_keys_max == 0 {
        return Err(GatewayError::Config("gateway.list_scan_keys_max must be at least 1".into()));
    }
    let nn = Arc::new(NamenodeClient::new(&cfg.namenodes, &transport)?);
    let store = Arc::new(keys::KeyStore::new(nn.clone(), master, cfg.access_keys.clone()));
    let service = {
        let mut b =
            s3s::service::S3ServiceBuilder::new(s3::TarnS3::new(nn.clone(), store.clone(), cfg.list_scan_keys_max));
        b.set_auth(Auth(store.clone()));
        b.set_access(Access(store));
        if !cfg.domains.is_empty() {
            b.set_host(Domains::new(&cfg.domains)?);
        }
        b.build()
    };
    let cors = Arc::new(Cors { nn: nn.clone(), domains: Domains::new(&cfg.domains)? });
    let addr = listener.local_addr().map_err(|e| GatewayError::Bind { addr: cfg.listen.clone(), source: e })?;
    let shutdown = CancellationToken::new();
    let https = tls.is_some();
    let task = tokio::spawn(serve(listener, service, cors, tls, shutdown.clone()));
    tokio::spawn(janitor(nn, shutdown.clone()));
    tracing::info!(%addr, https, "S3 gateway serving");
    Ok(GatewayHandle { addr, https, shutdown, task })
}

async fn janitor(nn: Arc<NamenodeClient>, shutdown: CancellationToken) {
    // First of all, the gateway's directory is made private (until the namenode answers).
    while let Err(e) = s3::make_system_dir_private(&nn).await {
        tracing::warn!(error = %e, "could not make {} private; trying again", names::SYSTEM_DIR);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    loop {
        if let Err(e) = s3::make_system_dir_private(&nn).await {
            tracing::warn!(error = %e, "could not make {} private", names::SYSTEM_DIR);
        }
        let n = s3::sweep_staged(&nn, STAGED_CLOSED_AGE, STAGED_OPEN_AGE).await;
        if n > 0 {
            tracing::info!(removed = n, "removed abandoned staged uploads");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
    }
}

async fn serve(
    listener: TcpListener,
    service: s3s::service::S3Service,
    cors: Arc<Cors>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let mut http = ConnBuilder::new(TokioExecutor::new());
    http.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(HEADER_BYTES_MAX.max(8192));
    http.http2().max_header_list_size(HEADER_BYTES_MAX as u32);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let svc = with_request_id(service.clone(), cors.clone());
        let http = http.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = http.serve_connection(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                None => {
                    let conn = http.serve_connection(TokioIo::new(tcp), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
}

/// What browsers' cross-origin requests need of the HTTP layer: which bucket a request
/// names, and that bucket's CORS rules (`s3/cors.rs`).
struct Cors {
    nn: Arc<NamenodeClient>,
    domains: Domains,
}

impl Cors {
    /// The bucket a request names: `bucket.DOMAIN` under a configured domain, else the
    /// path's first segment.
    fn bucket_of<B>(&self, req: &http::Request<B>) -> Option<String> {
        use s3s::host::S3Host as _;
        let host = req.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()).or(req.uri().host());
        if let Some(b) =
            host.and_then(|h| self.domains.parse_host_header(h).ok()).and_then(|v| v.bucket().map(str::to_string))
        {
            return Some(b);
        }
        let first = req.uri().path().trim_start_matches('/').split('/').next().unwrap_or("");
        (!first.is_empty()).then(|| first.to_string())
    }

    /// The answer to a preflight request (`OPTIONS`): 200 with the CORS headers of the
    /// rule that allows it, else the error S3 gives.
    async fn preflight<B>(&self, req: &http::Request<B>) -> Result<Vec<(&'static str, String)>, ApiError> {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let Some(origin) = header("origin") else {
            return Err(ApiError::BadRequest("Insufficient information. Origin request header needed.".into()));
        };
        let Some(method) = header("access-control-request-method") else {
            return Err(ApiError::BadRequest(
                "Insufficient information. Access-Control-Request-Method request header needed.".into(),
            ));
        };
        let asked: Vec<String> = header("access-control-request-headers")
            .unwrap_or_default()
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let refused = || {
            ApiError::CorsForbidden(
                "CORSResponse: This CORS request is not allowed: no CORS rule of the bucket allows this origin, \
                 method (Access-Control-Request-Method) and headers (Access-Control-Request-Headers)"
                    .into(),
            )
        };
        let bucket = self.bucket_of(req).ok_or_else(refused)?;
        let rules = s3::cors_rules_of(&self.nn, &bucket).await?;
        s3::cors_preflight(&rules, &origin, &method, &asked).ok_or_else(refused)
    }

    /// The CORS headers an actual request from `origin` gets (none if no rule allows it,
    /// or the rules cannot be read: the browser then withholds the answer).
    async fn actual<B>(&self, req: &http::Request<B>, origin: &str) -> Vec<(&'static str, String)> {
        let Some(bucket) = self.bucket_of(req) else { return Vec::new() };
        match s3::cors_rules_of(&self.nn, &bucket).await {
            Ok(rules) => s3::cors_actual(&rules, origin, req.method().as_str()),
            Err(e) => {
                tracing::warn!(%bucket, error = %e, "CORS rules could not be read");
                Vec::new()
            }
        }
    }
}

/// Adds `x-amz-request-id` to every response and `<RequestId>` to error documents;
/// answers CORS preflights and adds CORS headers to browsers' requests.
fn with_request_id(
    service: s3s::service::S3Service,
    cors: Arc<Cors>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = s3s::HttpResponse,
    Error = s3s::HttpError,
    Future = impl Future<Output = Result<s3s::HttpResponse, s3s::HttpError>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let service = service.clone();
        let cors = cors.clone();
        async move {
            let id = format!("{:016X}", rand::random::<u64>());
            // Browser form uploads (POST multipart/form-data) are not supported: refuse
            // them before s3s buffers the file part, which it does before checking access.
            let form = req.method() == http::Method::POST
                && req
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
            let origin = req.headers().get(http::header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_string);
            let refuse = |e: ApiError| {
                let mut e = S3Error::from(e);
                e.set_request_id(id.clone());
                e.to_http_response().map_err(|e| s3s::HttpError::new(Box::new(e)))
            };
            let mut resp = if req.method() == http::Method::OPTIONS {
                // A browser's preflight: unauthenticated, answered from the bucket's rules.
                match cors.preflight(&req).await {
                    Ok(headers) => {
                        let mut r = http::Response::new(s3s::Body::empty());
                        add_headers(&mut r, headers);
                        r
                    }
                    Err(e) => refuse(e)?,
                }
            } else if form {
                refuse(ApiError::NotImplemented("browser form uploads (POST Object) are not supported".into()))?
            } else {
                let allow = match &origin {
                    Some(o) => cors.actual(&req, o).await,
                    None => Vec::new(),
                };
                let mut r = service.call(req.map(s3s::Body::from)).await?;
                add_headers(&mut r, allow);
                r
            };
            if resp.status().is_client_error() || resp.status().is_server_error() {
                if let Some(bytes) = resp.body().bytes() {
                    if let Ok(text) = std::str::from_utf8(&bytes) {
                        if text.contains("</Error>") && !text.contains("<RequestId>") {
                            let text = text.replacen("</Error>", &format!("<RequestId>{id}</RequestId></Error>"), 1);
                            let len = text.len();
                            *resp.body_mut() = s3s::Body::from(text);
                            resp.headers_mut().insert(http::header::CONTENT_LENGTH, len.into());
                        }
                    }
                }
            }
            if let Ok(v) = http::HeaderValue::from_str(&id) {
                resp.headers_mut().insert("x-amz-request-id", v);
            }
            Ok(resp)
        }
    })
}

/// Sets `headers` on a response (values that are not valid header text are left out).
fn add_headers(resp: &mut s3s::HttpResponse, headers: Vec<(&'static str, String)>) {
    for (k, v) in headers {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use s3s::host::S3Host as _;

    use super::*;

    #[test]
    fn virtual_hosts_only_under_configured_domains() {
        let d = Domains::new(&["localhost:9000".into(), "s3.example.com".into()]).unwrap();
        let bucket = |h: &str| d.parse_host_header(h).unwrap().bucket().map(str::to_string);
        assert_eq!(bucket("my-bucket.localhost:9000").as_deref(), Some("my-bucket"));
        assert_eq!(bucket("my-bucket.localhost:41234").as_deref(), Some("my-bucket"));
        assert_eq!(bucket("Data.S3.Example.com").as_deref(), Some("data"));
        for path_style in ["localhost:9000", "127.0.0.1:41234", "[::1]:9000", "s3.example.com", "other.host:80"] {
            assert_eq!(bucket(path_style), None, "{path_style}");
        }
    }
}
