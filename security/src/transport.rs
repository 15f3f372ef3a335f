//! The one way Tarn processes talk gRPC: mutual TLS 1.3 (rustls, ring) with certificates
//! from the cluster CA, or, only when the operator asked for it, plaintext.
//!
//! A [`Transport`] makes client channels ([`Transport::channel`]) and turns a listener into
//! the stream of connections a tonic server takes ([`Transport::incoming`]). Every accepted
//! connection carries its [`Peer`] (the identity in the client's certificate) into each
//! request's extensions, where [`RequireRole`] and [`acting_user`] read it.
//!
//! **Rotation.** The certificate, key and CA files are checked for changes at most once a
//! second when a connection is made or accepted; new files are loaded and used for new
//! connections (existing ones keep theirs). A bad new file is logged and the old material
//! kept.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::codegen::http::{Extensions, Uri};
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::pki::{check_private, Identity, Role, TlsPaths};
use crate::SecurityError;

/// A TLS handshake that takes longer is dropped (a slow or silent client holds nothing).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 pings on every client connection: a peer that went away without closing (its
/// host killed, its network cut) is noticed within interval + timeout, and the channel
/// connects anew (by name, so to a new address too). Without them a cached channel keeps
/// sending into the dead connection, and each request waits out its own timeout, forever.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Certificate files are checked for changes at most this often.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The crypto every TLS endpoint of Tarn uses (ring), with its preferred suites first.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    // AES-128-GCM first (ring puts AES-256 first): a TLS 1.3 suite every client has, as
    // strong as these links need, and about a third cheaper per byte on block traffic.
    p.cipher_suites.sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

/// What the process talks with: TLS material (or none, in dev mode) and the channels made.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    tls: Option<Arc<TlsState>>,
    channels: Mutex<HashMap<String, Channel>>,
    /// The local address outgoing connections are made from (`None`: the system's choice).
    source_ip: Option<IpAddr>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner.tls {
            None => f.write_str("Transport(plaintext)"),
            Some(t) => write!(f, "Transport(mTLS as {})", t.current().identity),
        }
    }
}

struct TlsState {
    paths: TlsPaths,
    current: Mutex<(Arc<Material>, Instant)>,
}

struct Material {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    identity: Identity,
    stamps: Stamps,
    /// The container CA's subject, when containers' certificates are accepted: a client
    /// certificate it issued must name a user, and names its container.
    /// (Every certificate of the file: old and new during a rotation.)
    container_issuers: Vec<Vec<u8>>,
}

/// What tells a changed file: modification time, length and inode (files are replaced
/// by renaming a new one over them, so the inode changes even within one clock tick).
type Stamps = Vec<Option<(SystemTime, u64, u64)>>;

fn stamps(p: &TlsPaths) -> Stamps {
    use std::os::unix::fs::MetadataExt as _;
    [Some(&p.ca), Some(&p.cert), Some(&p.key), p.container_ca.as_ref()]
        .iter()
        .flatten()
        .map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len(), m.ino()))))
        .collect()
}

fn tls_err(what: &str) -> impl FnOnce(rustls::Error) -> SecurityError + '_ {
    move |e| SecurityError::Tls(format!("{what}: {e}"))
}

fn read_certs(path: &std::path::Path, what: &str) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| SecurityError::Tls(format!("{what} {}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| SecurityError::Tls(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(SecurityError::Tls(format!("{what} {}: no certificate in the file", path.display())));
    }
    Ok(certs)
}

fn load(paths: &TlsPaths) -> Result<Material, SecurityError> {
    let stamps = stamps(paths);
    check_private(&paths.key)?;
    let ca = read_certs(&paths.ca, "CA certificate")?;
    let chain = read_certs(&paths.cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(&paths.key)
        .map_err(|e| SecurityError::Tls(format!("private key {}: {e}", paths.key.display())))?;
    let identity = Identity::of_cert(&chain[0])
        .map_err(|e| SecurityError::Tls(format!("certificate {}: {e}", paths.cert.display())))?;
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots.add(c).map_err(tls_err("CA certificate"))?;
    }
    let roots = Arc::new(roots);
    // Clients may also be containers (their certificates from the container CA); servers
    // never: the client side trusts the cluster CA alone.
    let mut client_roots = (*roots).clone();
    let mut container_issuers = Vec::new();
    if let Some(path) = &paths.container_ca {
        for c in read_certs(path, "container CA certificate")? {
            container_issuers.extend(crate::container_ca::subject_of(&c));
            client_roots.add(c).map_err(tls_err("container CA certificate"))?;
        }
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider())
        .build()
        .map_err(|e| SecurityError::Tls(format!("client verifier: {e}")))?;
    let mut server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err("server config"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(tls_err("certificate and key"))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut client = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err("client config"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(tls_err("certificate and key"))?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Material { server: Arc::new(server), client: Arc::new(client), identity, stamps, container_issuers })
}

impl TlsState {
    fn current(&self) -> Arc<Material> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if cur.1.elapsed() >= RELOAD_CHECK {
            cur.1 = Instant::now();
            if stamps(&self.paths) != cur.0.stamps {
                match load(&self.paths) {
                    Ok(m) => {
                        tracing::info!(identity = %m.identity, cert = %self.paths.cert.display(), "reloaded TLS certificate");
                        cur.0 = Arc::new(m);
                    }
                    // Mid-rotation (key written, certificate not yet) or a bad file: keep
                    // serving with what works; the next check tries again.
                    Err(e) => tracing::warn!(error = %e, "TLS files changed but do not load; keeping the old ones"),
                }
            }
        }
        cur.0.clone()
    }
}

impl Transport {
    /// Mutual TLS with the files in `paths`.
    pub fn tls(paths: &TlsPaths) -> Result<Transport, SecurityError> {
        let m = load(paths)?;
        let tls = TlsState { paths: paths.clone(), current: Mutex::new((Arc::new(m), Instant::now())) };
        Ok(Transport {
            inner: Arc::new(Inner { tls: Some(Arc::new(tls)), channels: Mutex::default(), source_ip: None }),
        })
    }

    /// Plaintext, no authentication: development only (callers print the warning).
    pub fn plaintext_dev() -> Transport {
        Transport { inner: Arc::new(Inner { tls: None, channels: Mutex::default(), source_ip: None }) }
    }

    /// The same identity, with every outgoing connection made from local address `ip` (a
    /// host with several addresses, or a test cluster whose nodes each have a loopback
    /// address of their own, so that a proxy can tell them apart). Channels are not shared
    /// with `self`.
    pub fn with_source_ip(&self, ip: IpAddr) -> Transport {
        Transport {
            inner: Arc::new(Inner { tls: self.inner.tls.clone(), channels: Mutex::default(), source_ip: Some(ip) }),
        }
    }

    /// See [`Transport::with_source_ip`].
    pub fn source_ip(&self) -> Option<IpAddr> {
        self.inner.source_ip
    }

    /// The certificate files this transport loads (`None` in dev mode).
    pub fn tls_paths(&self) -> Option<&TlsPaths> {
        self.inner.tls.as_ref().map(|t| &t.paths)
    }

    pub fn is_tls(&self) -> bool {
        self.inner.tls.is_some()
    }

    /// Who this process is to its peers (none in dev mode).
    pub fn identity(&self) -> Option<Identity> {
        self.inner.tls.as_ref().map(|t| t.current().identity.clone())
    }

    /// An endpoint for `addr` (`host:port`) to tune before [`Transport::channel`].
    pub fn endpoint(addr: &str) -> Result<Endpoint, SecurityError> {
        Endpoint::from_shared(format!("http://{addr}"))
            .map(|e| {
                e.http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true)
            })
            .map_err(|e| SecurityError::Invalid(format!("address {addr:?}: {e}")))
    }

    /// Checks that the server at `addr` (`host:port`) accepts this transport's certificate:
    /// a TLS handshake, then an HTTP/2 preface, answered by the server's settings. In TLS
    /// 1.3 a server judges the client's certificate after the handshake, so a refusal
    /// arrives as the alert it sends instead of settings, and is returned as the error
    /// (e.g. "received fatal alert: UnknownCA").
    pub async fn probe(&self, addr: &str) -> Result<(), SecurityError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tls = self.inner.tls.as_ref().ok_or_else(|| SecurityError::Tls("not a TLS transport".into()))?;
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_start_matches('[').trim_end_matches(']'), p.parse::<u16>().ok()?)))
            .ok_or_else(|| SecurityError::Invalid(format!("address {addr:?}: host:port expected")))?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| SecurityError::Invalid(format!("server name {host:?}: {e}")))?;
        let failed = |e: io::Error| SecurityError::Tls(format!("{addr}: {e}"));
        let exchange = async {
            let tcp = TcpStream::connect((host, port)).await?;
            let connector = tokio_rustls::TlsConnector::from(tls.current().client.clone());
            let mut stream = connector.connect(name, tcp).await?;
            // The client preface and an empty SETTINGS frame.
            stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await?;
            stream.flush().await?;
            let mut first = [0u8; 9];
            stream.read_exact(&mut first).await?;
            // A frame header: length (3), type (4 = SETTINGS), flags, stream id.
            if first[3] != 4 {
                return Err(io::Error::other(format!("the server answered with frame type {}", first[3])));
            }
            Ok(())
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
            .await
            .map_err(|_| SecurityError::Tls(format!("{addr}: no answer within {HANDSHAKE_TIMEOUT:?}")))?
            .map_err(failed)
    }

    /// A lazily connecting channel over this transport.
    pub fn channel(&self, endpoint: Endpoint) -> Channel {
        match &self.inner.tls {
            None => endpoint.local_address(self.inner.source_ip).connect_lazy(),
            Some(_) => endpoint.connect_with_connector_lazy(Connector { transport: self.clone() }),
        }
    }

    /// One channel per `key` for the life of this transport (connections and their
    /// HTTP/2 windows are reused across calls).
    pub fn cached_channel<E>(&self, key: &str, make: impl FnOnce() -> Result<Endpoint, E>) -> Result<Channel, E> {
        let mut map = self.inner.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(key) {
            return Ok(c.clone());
        }
        let c = self.channel(make()?);
        map.insert(key.to_string(), c.clone());
        Ok(c)
    }

    /// The connections accepted on `listener`, handshaken, until `shutdown`.
    pub fn incoming(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let t = self.clone();
        tokio::spawn(async move {
            while let Some((tcp, addr)) = accept_next(&listener, &shutdown, &tx).await {
                let Some(tls) = &t.inner.tls else {
                    let conn = Conn {
                        io: ConnIo::Plain(tcp),
                        peer: Peer { addr, identity: None, container: None, public: false },
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        break;
                    }
                    continue;
                };
                let material = tls.current();
                let acceptor = tokio_rustls::TlsAcceptor::from(material.server.clone());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::info!(peer = %addr, error = %e, "refused a connection: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(peer = %addr, "refused a connection: TLS handshake timed out");
                            return;
                        }
                    };
                    let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first().cloned());
                    let cert_der = cert.clone().unwrap_or_else(|| CertificateDer::from(Vec::new()));
                    let identity = match cert.map(|c| Identity::of_cert(&c)) {
                        Some(Ok(id)) => id,
                        Some(Err(e)) => {
                            tracing::info!(peer = %addr, error = %e, "refused a connection: no tarn identity");
                            return;
                        }
                        None => {
                            tracing::info!(peer = %addr, "refused a connection: no client certificate");
                            return;
                        }
                    };
                    let container = match container_peer(&material, &cert_der, &identity) {
                        Ok(c) => c,
                        Err(why) => {
                            tracing::info!(peer = %addr, %why, "refused a connection");
                            return;
                        }
                    };
                    let peer = Peer { addr, identity: Some(identity), container, public: false };
                    let conn = Conn { io: ConnIo::Tls(Box::new(stream)), peer };
                    let _ = tx.send(Ok(conn)).await;
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// The next connection on `listener` (no Nagle delay), or `None` once `shutdown` is
/// cancelled or nobody takes connections from `tx` any more.
async fn accept_next<T>(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    tx: &tokio::sync::mpsc::Sender<T>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tx.closed() => return None,
            r = listener.accept() => match r {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    return Some((tcp, addr));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// TLS for a service whose clients authenticate with a token, not a certificate (Spark
/// Connect): this server's certificate chain and key (PEM files), ALPN `h2`.
pub fn public_server_config(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<ServerConfig>, SecurityError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| SecurityError::Tls(format!("read certificates from {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(SecurityError::Tls(format!("{} holds no certificate", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| SecurityError::Tls(format!("read private key from {}: {e}", key.display())))?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SecurityError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| SecurityError::Tls(format!("certificate and key: {e}")))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// The connections accepted on `listener` for a token-authenticated service: TLS with
/// `server` (no client certificate asked), or plaintext when `None` (dev mode). Their
/// [`Peer`] is `public`: nothing in them is a Tarn identity.
pub fn public_incoming(
    listener: TcpListener,
    server: Option<Arc<ServerConfig>>,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some((tcp, addr)) = accept_next(&listener, &shutdown, &tx).await {
            let peer = Peer { addr, identity: None, container: None, public: true };
            let Some(server) = &server else {
                if tx.send(Ok(Conn { io: ConnIo::Plain(tcp), peer })).await.is_err() {
                    break;
                }
                continue;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(server.clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(Conn { io: ConnIo::Tls(Box::new(s)), peer })).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(peer = %addr, error = %e, "refused a connection: TLS handshake failed")
                    }
                    Err(_) => tracing::info!(peer = %addr, "refused a connection: TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Dials `host:port` and runs the TLS handshake, checking the server's certificate
/// against the cluster CA and the host name.
#[derive(Clone)]
struct Connector {
    transport: Transport,
}

/// A connection to `host:port` from local address `ip` (the first of the host's addresses
/// of the same family that answers).
async fn connect_from(ip: IpAddr, host: &str, port: u16) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address of the family of {ip}"));
    for addr in tokio::net::lookup_host((host, port)).await?.filter(|a| a.is_ipv4() == ip.is_ipv4()) {
        let socket = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.bind(SocketAddr::new(ip, 0))?;
        match socket.connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = e,
        }
    }
    Err(last)
}

type TlsIo = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower_service::Service<Uri> for Connector {
    type Response = TlsIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let transport = self.transport.clone();
        Box::pin(async move {
            let bad = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
            let host = uri.host().ok_or_else(|| bad(format!("{uri}: no host")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().ok_or_else(|| bad(format!("{uri}: no port")))?;
            let tcp = match transport.inner.source_ip {
                None => TcpStream::connect((host.as_str(), port)).await?,
                Some(ip) => connect_from(ip, &host, port).await?,
            };
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host.clone()).map_err(|e| bad(format!("server name {host:?}: {e}")))?;
            let tls = transport.inner.tls.as_ref().ok_or_else(|| bad("not a TLS transport".into()))?;
            let connector = tokio_rustls::TlsConnector::from(tls.current().client.clone());
            let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, format!("TLS handshake with {host}:{port} timed out"))
                })?
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake with {host}:{port}: {e}")))?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// The container a client certificate speaks for: `Some` only for certificates of the
/// container CA, which must name a user and a container; `Err(why)` refuses the peer.
fn container_peer(m: &Material, cert: &[u8], id: &Identity) -> Result<Option<String>, String> {
    let Some(issuer) = crate::container_ca::issuer_of(cert) else { return Ok(None) };
    if !m.container_issuers.contains(&issuer) {
        return Ok(None);
    }
    if id.role != Role::User {
        return Err(format!("a container's certificate names {id}: it may only name a user"));
    }
    crate::container_ca::container_of_cert(cert)
        .map(Some)
        .ok_or_else(|| format!("the container certificate of {id} names no container"))
}

/// Who is on the other end of an accepted connection; in every request's extensions.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The identity its certificate proved; `None` on a plaintext (dev mode) connection.
    pub identity: Option<Identity>,
    /// The container it runs as, when its certificate came from the container CA (a user's
    /// application, holding a delegation credential).
    pub container: Option<String>,
    /// Accepted by [`public_incoming`]: the client proved nothing at the connection (it
    /// sends a token with each call), so [`caller`] refuses it.
    pub public: bool,
}

/// The container a request came from (see [`Peer::container`]).
pub fn caller_container(ext: &Extensions) -> Option<&str> {
    ext.get::<Peer>().and_then(|p| p.container.as_deref())
}

/// An accepted connection (plaintext in dev mode, else TLS).
pub struct Conn {
    io: ConnIo,
    peer: Peer,
}

enum ConnIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Conn {
    /// Who is on the other end.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            ConnIo::Plain(s) => s.is_write_vectored(),
            ConnIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ConnIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ConnIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Who made a request: `Ok(None)` on a dev-mode plaintext connection (everything is
/// allowed there), the certificate's identity otherwise.
pub fn caller(ext: &Extensions) -> Result<Option<&Identity>, Status> {
    match ext.get::<Peer>() {
        Some(p) if p.public => Err(Status::permission_denied("a token-authenticated connection has no Tarn identity")),
        Some(p) => Ok(p.identity.as_ref()),
        None => Err(Status::permission_denied("the connection carries no peer identity")),
    }
}

/// An interceptor letting only some roles call a service (a worker may not call the
/// namenode's admin service, only namenodes may send Raft messages).
#[derive(Clone, Copy)]
pub struct RequireRole {
    pub service: &'static str,
    pub roles: &'static [Role],
}

impl RequireRole {
    pub fn check(&self, ext: &Extensions) -> Result<(), Status> {
        match caller(ext)? {
            None => Ok(()),
            Some(id) if self.roles.contains(&id.role) => Ok(()),
            Some(id) => {
                let allowed: Vec<&str> = self.roles.iter().map(|r| r.as_str()).collect();
                Err(Status::permission_denied(format!(
                    "{} may not call {} (only {})",
                    id,
                    self.service,
                    allowed.join(", ")
                )))
            }
        }
    }
}

impl tonic::service::Interceptor for RequireRole {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        self.check(req.extensions())?;
        Ok(req)
    }
}

/// The user a request acts as. People (user and admin certificates) act as the name in
/// their certificate and may not claim another; daemons act for the user they name
/// (the gateway for an S3 key's user, a worker for a job's submitter), or as themselves.
/// In dev mode the claim is trusted.
pub fn acting_user(ext: &Extensions, claimed: Option<&str>) -> Result<String, Status> {
    if let Some(c) = claimed {
        // A claim must be a valid name: a client that could not encode its user sends an
        // invalid one rather than none (which would act as the daemon itself).
        Identity::new(Role::User, c)
            .map_err(|e| Status::permission_denied(format!("x-tarn-user {c:?} is not a user name: {e}")))?;
    }
    match caller(ext)? {
        None => Ok(claimed.unwrap_or("tarn").to_string()),
        Some(id) if id.role.is_person() => match claimed {
            Some(c) if c != id.name => {
                Err(Status::permission_denied(format!("the certificate of {id} cannot act as user {c:?}")))
            }
            _ => Ok(id.name.clone()),
        },
        Some(id) => match claimed {
            None => Ok(id.role.as_str().to_string()),
            Some(c) if may_act_for_users(id.role) => Ok(c.to_string()),
            Some(c) => Err(Status::permission_denied(format!("{id} may not act for user {c:?}"))),
        },
    }
}

/// Daemons that serve users and act for them: the S3 gateway (for a key's user), the
/// resource manager and workers (for a job's submitter).
fn may_act_for_users(role: Role) -> bool {
    matches!(role, Role::Gateway | Role::ResourceManager | Role::Worker)
}

/// Whether the caller is the cluster's superuser: dev mode, an admin certificate, or a
/// namenode or gateway acting as itself (`claimed` is the `x-tarn-user` it sent). Other
/// daemons (datanodes, workers) are not: a leaked worker key must not own the namespace.
pub fn is_superuser(ext: &Extensions, claimed: Option<&str>) -> bool {
    match caller(ext) {
        Ok(None) => true,
        Ok(Some(id)) => {
            id.role == Role::Admin || (claimed.is_none() && matches!(id.role, Role::Namenode | Role::Gateway))
        }
        Err(_) => false,
    }
}
