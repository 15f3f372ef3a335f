//! The leader-following connection: one piece for every replicated Tarn service.
//!
//! A [`LeaderConn`] knows the addresses of a service's nodes (the namenode group today, the
//! resource managers next). It sends each call to the node it believes leads; a node that
//! does not lead answers `Unavailable` with the leader's address in `x-tarn-leader`, and the
//! connection follows it. Unreachable nodes, elections and broken connections are retried
//! with backoff until the call's deadline. It carries the caller's user claim and per-attempt
//! timeout on every request. It knows nothing of the service's messages: callers pass a
//! closure that makes one attempt on a channel.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tarn_proto::LEADER_HEADER;
use tarn_security::Transport;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::{ClientError, Result};

/// How long calls keep retrying.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Give up after this long.
    pub deadline: Duration,
    /// One attempt's timeout.
    pub attempt_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            deadline: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
        }
    }
}

/// The endpoint of a node at `addr` (`host:port`); channels to it are made by a
/// [`Transport`] (mutual TLS unless in dev mode).
pub fn endpoint(addr: &str) -> Result<Endpoint> {
    let e = Transport::endpoint(addr)
        .map_err(|e| ClientError::BadAddress { addr: addr.to_string(), reason: e.to_string() })?;
    Ok(e.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true))
}

/// Whether a failed attempt may be retried: the node is not the leader, unreachable, timed
/// out, or the connection broke mid-call. Retrying mutations is safe where they carry
/// request ids (every mutating namenode call does).
fn retryable(s: &Status) -> bool {
    use std::error::Error;
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => true,
        tonic::Code::Unknown => s.source().is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some()),
        _ => false,
    }
}

/// The pauses of one call's retries: exponential backoff between attempts, except that the
/// first leader redirect is followed at once. Every later redirect waits like any failure,
/// so nodes that name each other as leader (during an election, or a stale view) are not
/// asked again and again without pause.
#[derive(Debug)]
pub(crate) struct RetryState {
    policy: RetryPolicy,
    backoff: Duration,
    redirects: u32,
}

impl RetryState {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        RetryState { policy, backoff: policy.backoff_min, redirects: 0 }
    }

    /// The pause before trying the leader a node named.
    pub(crate) fn after_redirect(&mut self) -> Duration {
        self.redirects += 1;
        if self.redirects == 1 {
            Duration::ZERO
        } else {
            self.after_failure()
        }
    }

    /// The pause before the next attempt after a failure.
    pub(crate) fn after_failure(&mut self) -> Duration {
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(self.policy.backoff_max);
        pause
    }
}

struct Target {
    addr: String,
    channel: Channel,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Connections to a replicated service's nodes and the call loop that follows its leader.
pub struct LeaderConn {
    /// What the nodes are, for error messages ("namenode", "resource manager").
    service: &'static str,
    addrs: Vec<String>,
    /// Shared by the connections made with [`LeaderConn::as_user`].
    current: Arc<Mutex<Target>>,
    channels: Arc<Mutex<BTreeMap<String, Channel>>>,
    user: String,
    retry: RetryPolicy,
    transport: Transport,
}

impl LeaderConn {
    /// Connections to the `service` nodes at `addrs` (`host:port`), acting as `user` (empty:
    /// the name in the transport's certificate).
    pub fn new(
        service: &'static str,
        addrs: Vec<String>,
        user: String,
        retry: RetryPolicy,
        transport: Transport,
    ) -> Result<LeaderConn> {
        let first = addrs.first().ok_or_else(|| ClientError::BadAddress {
            addr: String::new(),
            reason: format!("no {service} address given"),
        })?;
        let channel = transport.channel(endpoint(first)?);
        Ok(LeaderConn {
            service,
            current: Arc::new(Mutex::new(Target { addr: first.clone(), channel: channel.clone() })),
            channels: Arc::new(Mutex::new(BTreeMap::from([(first.clone(), channel)]))),
            addrs,
            user,
            retry,
            transport,
        })
    }

    /// The same connections, acting as `user`.
    pub fn as_user(&self, user: String) -> LeaderConn {
        LeaderConn {
            service: self.service,
            addrs: self.addrs.clone(),
            current: self.current.clone(),
            channels: self.channels.clone(),
            user,
            retry: self.retry,
            transport: self.transport.clone(),
        }
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Whom requests claim to act for ("" for the certificate's name).
    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// A channel to the node at `addr`, whether or not it leads (kept for reuse).
    pub fn channel_for(&self, addr: &str) -> Result<Channel> {
        let mut chans = lock(&self.channels);
        if let Some(c) = chans.get(addr) {
            return Ok(c.clone());
        }
        let c = self.transport.channel(endpoint(addr)?);
        chans.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn switch_to(&self, addr: &str) -> Result<()> {
        let channel = self.channel_for(addr)?;
        *lock(&self.current) = Target { addr: addr.to_string(), channel };
        Ok(())
    }

    /// Moves on to the next known address after `failed`.
    fn rotate(&self, failed: &str) -> Result<()> {
        let i = self.addrs.iter().position(|a| a == failed).map(|i| i + 1).unwrap_or(0);
        let next = self.addrs[i % self.addrs.len()].clone();
        self.switch_to(&next)
    }

    /// A request with this connection's attempt timeout and user claim.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        r.set_timeout(self.retry.attempt_timeout);
        if !self.user.is_empty() {
            // A name that cannot be sent is sent as an invalid one, which the server
            // refuses: leaving it out would make a daemon act as itself.
            let v = self.user.parse().unwrap_or_else(|_| tonic::metadata::MetadataValue::from_static("?"));
            r.metadata_mut().insert("x-tarn-user", v);
        }
        r
    }

    /// Runs `f` (one attempt on a channel) against the current leader, following redirects
    /// and retrying until the deadline. A refusal that is not about availability is
    /// returned at once as [`ClientError::Refused`].
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let start = Instant::now();
        let mut retry = RetryState::new(self.retry);
        loop {
            let (addr, channel) = {
                let t = lock(&self.current);
                (t.addr.clone(), t.channel.clone())
            };
            let status = match f(channel).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => s,
            };
            if !retryable(&status) {
                return Err(ClientError::from_status(&status));
            }
            // Move on before giving up too: the next call must not start at a node that
            // just failed (a call whose deadline is shorter than one attempt at a dead
            // node would otherwise never try another).
            let leader = status.metadata().get(LEADER_HEADER).and_then(|v| v.to_str().ok());
            let pause = match leader.filter(|l| *l != addr) {
                Some(l) => {
                    tracing::debug!(service = self.service, from = %addr, to = %l, "following the leader");
                    self.switch_to(l)?;
                    retry.after_redirect()
                }
                None => {
                    tracing::debug!(service = self.service, %addr, error = %status.message(), "unavailable; retrying");
                    self.rotate(&addr)?;
                    retry.after_failure()
                }
            };
            if start.elapsed() >= self.retry.deadline {
                return Err(ClientError::Unavailable {
                    service: self.service,
                    waited: start.elapsed(),
                    addrs: self.addrs.join(","),
                    last: format!("{}: {}", addr, status.message()),
                });
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
    }
}
