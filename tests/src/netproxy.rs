//! A TCP proxy in front of one node, which the harness uses to cut the network between
//! two nodes.
//!
//! Every node of a partitionable cluster connects out from a loopback address of its own
//! (`127.0.1.N` for namenode N, `127.0.2.N` for datanode N; see
//! `tarn_security::Transport::with_source_ip`) and advertises its proxy's address instead
//! of its own. A proxy tells its callers apart by their source address. Blocking a source
//! makes the link behave like a cut cable, not like a refusal: bytes stop flowing both ways
//! on its open connections (they are neither closed nor reset, so keepalives and timeouts
//! have to notice), and new connections from it are accepted but go nowhere. Unblocked,
//! open connections carry on where they stopped, as TCP does after a partition heals;
//! connections made during the cut are closed.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The loopback address namenode `id` connects from.
pub fn namenode_ip(id: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, id as u8))
}

/// The loopback address datanode `i` (1-based) connects from.
pub fn datanode_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 2, i as u8))
}

#[derive(Default)]
struct Rules {
    blocked: HashSet<IpAddr>,
    /// Where the node listens (`None` until it has started; a restart points it anew).
    target: Option<SocketAddr>,
}

/// A proxy in front of one node.
pub struct NodeProxy {
    addr: SocketAddr,
    rules: watch::Sender<Rules>,
    task: JoinHandle<()>,
}

impl NodeProxy {
    /// A proxy on a free loopback port; it forwards once [`NodeProxy::set_target`] is called.
    pub async fn start() -> NodeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (rules, _) = watch::channel(Rules::default());
        let rx = rules.subscribe();
        let task = tokio::spawn(accept_loop(listener, rx));
        NodeProxy { addr, rules, task }
    }

    /// The address callers use (the node advertises it).
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Where the node listens (after a start or restart).
    pub fn set_target(&self, target: &str) {
        let t: SocketAddr = target.parse().expect("a node listens on ip:port");
        self.rules.send_modify(|r| r.target = Some(t));
    }

    /// Stops traffic from `ip` (both directions of its connections).
    pub fn block(&self, ip: IpAddr) {
        self.rules.send_modify(|r| {
            r.blocked.insert(ip);
        });
    }

    pub fn unblock(&self, ip: IpAddr) {
        self.rules.send_modify(|r| {
            r.blocked.remove(&ip);
        });
    }
}

impl Drop for NodeProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, rules: watch::Receiver<Rules>) {
    let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
    let _abort_all = AbortOnDrop(conns.clone());
    loop {
        let (inbound, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors, say: the test sees its calls fail.
                tracing::warn!(error = %e, "proxy accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let rules = rules.clone();
        let task = tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            let ip = peer.ip();
            // A connection made during a cut goes nowhere, and ends when the cut heals.
            if rules.borrow().blocked.contains(&ip) {
                let mut r = rules.clone();
                let _ = r.wait_for(|r| !r.blocked.contains(&ip)).await;
                return;
            }
            let mut r = rules.clone();
            let Ok(target) = r.wait_for(|r| r.target.is_some()).await.map(|r| r.target.expect("waited for")) else {
                return;
            };
            let Ok(outbound) = TcpStream::connect(target).await else { return };
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            // Both directions end with the connection task (aborted with the proxy).
            let up = AbortOnDrop(Arc::new(Mutex::new(vec![tokio::spawn(pump(ir, ow, rules.clone(), ip))])));
            pump(or, iw, rules, ip).await;
            drop(up);
        });
        let mut c = conns.lock().unwrap_or_else(|p| p.into_inner());
        c.retain(|t| !t.is_finished());
        c.push(task);
    }
}

struct AbortOnDrop(Arc<Mutex<Vec<JoinHandle<()>>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in self.0.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            t.abort();
        }
    }
}

/// Copies `from` to `to` while `ip` is not blocked; while it is, holds what it read and
/// reads no more.
async fn pump<R, W>(mut from: R, mut to: W, mut rules: watch::Receiver<Rules>, ip: IpAddr)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if rules.wait_for(|r| !r.blocked.contains(&ip)).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if rules.wait_for(|r| !r.blocked.contains(&ip)).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_blocked_source_gets_no_bytes_through_until_the_cut_heals() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap().to_string();
        let echo = tokio::spawn(async move {
            loop {
                let (mut s, _) = server.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    while s.read_exact(&mut b).await.is_ok() {
                        if s.write_all(&b).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let p = NodeProxy::start().await;
        p.set_target(&target);
        let me: IpAddr = "127.0.3.1".parse().unwrap();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(me, 0)).unwrap();
        let mut c = sock.connect(p.addr.to_string().parse().unwrap()).await.unwrap();
        let mut b = [0u8; 1];
        c.write_all(b"a").await.unwrap();
        c.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"a");
        p.block(me);
        c.write_all(b"b").await.unwrap();
        let cut = tokio::time::timeout(Duration::from_millis(300), c.read_exact(&mut b)).await;
        assert!(cut.is_err(), "a byte went through the cut");
        // Another source is not cut.
        let mut other = TcpStream::connect(p.addr).await.unwrap();
        other.write_all(b"c").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), other.read_exact(&mut b)).await.unwrap().unwrap();
        assert_eq!(&b, b"c");
        p.unblock(me);
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut b)).await.expect("healed").unwrap();
        assert_eq!(&b, b"b");
        echo.abort();
    }
}
