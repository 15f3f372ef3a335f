//! An application's own mutual TLS: Ballista's links (executor to scheduler, the client in
//! the master to the scheduler, shuffle fetches between executors, result fetches) carry
//! no authentication of their own, so each job makes a CA of its own at start, and one
//! certificate that both ends of every link present. The master writes them (the key
//! 0600) into the job's directory, which only its user can read; executors get them as
//! localized files. A process without them cannot connect to any of the job's ports, and
//! the job's certificate opens no other job's ports and no daemon's.
//!
//! Every name in the certificate is [`JOB_TLS_NAME`]: clients check the server against the
//! job's CA and that name, whatever address they dialed (executors move between hosts).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::EndpointOverrideFn;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::JobError;

/// The one host name in a job's certificate.
pub const JOB_TLS_NAME: &str = "tarn-job";
/// File names in the job's directory and in each executor's container directory.
pub const CA_FILE: &str = "job-ca.pem";
pub const CERT_FILE: &str = "job.pem";
pub const KEY_FILE: &str = "job-key.pem";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A job's CA certificate and the certificate (with its key) every process of it presents.
#[derive(Clone)]
pub struct JobTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for JobTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobTls")
    }
}

fn rcgen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> JobError {
    move |e| JobError::Tls(format!("{what}: {e}"))
}

impl JobTls {
    /// A new CA for application `app_id` and a certificate it signs (both valid for 30
    /// days: an application that runs longer restarts its master, which makes new ones).
    pub fn generate(app_id: &str) -> Result<JobTls, JobError> {
        let now = time::OffsetDateTime::now_utc();
        let not_before = now - time::Duration::hours(1);
        let not_after = now + time::Duration::days(30);

        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_err("CA parameters"))?;
        ca.distinguished_name.push(DnType::CommonName, format!("tarn job CA ({app_id})"));
        ca.distinguished_name.push(DnType::OrganizationName, "tarn");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        ca.not_before = not_before;
        ca.not_after = not_after;
        let ca_key = KeyPair::generate().map_err(rcgen_err("CA key"))?;
        let ca_cert = ca.self_signed(&ca_key).map_err(rcgen_err("CA certificate"))?;
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(ca, ca_key);

        let mut p = CertificateParams::new(vec![JOB_TLS_NAME.to_string()]).map_err(rcgen_err("job certificate"))?;
        p.distinguished_name.push(DnType::CommonName, format!("tarn job {app_id}"));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = not_before;
        p.not_after = not_after;
        let key = KeyPair::generate().map_err(rcgen_err("job key"))?;
        let cert = p.signed_by(&key, &issuer).map_err(rcgen_err("job certificate"))?;
        Ok(JobTls { ca_pem, cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// The files an executor finds in its container directory.
    pub fn load(dir: &Path) -> Result<JobTls, JobError> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| JobError::Io { what: format!("read {}", dir.join(name).display()), source: e })
        };
        Ok(JobTls { ca_pem: read(CA_FILE)?, cert_pem: read(CERT_FILE)?, key_pem: read(KEY_FILE)? })
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// For clients: the job's CA is the only root, the server must be named
    /// [`JOB_TLS_NAME`], and the client presents the job's certificate.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
            .domain_name(JOB_TLS_NAME)
    }

    /// For servers: the job's certificate, and a client certificate of the job's CA
    /// required of every connection.
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new().identity(self.identity()).client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// Ballista's hook for every gRPC client it makes: whatever scheme Ballista wrote
    /// (some of its addresses are `http://`), the connection is TLS with this job's
    /// certificate. Nothing Ballista dials through this hook goes out in plaintext.
    pub fn endpoint_override(&self) -> EndpointOverrideFn {
        let tls = self.client_config();
        Arc::new(move |ep: Endpoint| {
            let uri = ep.uri();
            let ep = if uri.scheme_str() == Some("https") {
                ep
            } else {
                let authority = uri.authority().ok_or_else(|| format!("{uri}: no host and port"))?;
                Endpoint::from_shared(format!("https://{authority}"))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                    .keep_alive_while_idle(true)
            };
            Ok(ep.tls_config(tls.clone())?)
        })
    }

    /// A channel to `addr` (`host:port`) over this job's TLS.
    pub fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, JobError> {
        let ep = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| JobError::Invalid(format!("address {addr:?}: {e}")))?;
        let ep = (self.endpoint_override())(ep).map_err(|e| JobError::Tls(e.to_string()))?;
        Ok(ep.connect_lazy())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arrow_flight::flight_service_client::FlightServiceClient;
    use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
    use ballista_core::serde::protobuf::GetJobStatusParams;
    use tokio_util::sync::CancellationToken;
    use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

    use super::*;

    /// How a client connects in each case.
    enum Dial<'a> {
        Plaintext,
        /// TLS that trusts the job's CA but presents no certificate.
        NoCertificate(&'a JobTls),
        /// TLS with another job's certificate (and trusting this job's CA).
        OtherJob(&'a JobTls, &'a JobTls),
        Job(&'a JobTls),
    }

    fn channel(port: u16, dial: &Dial<'_>) -> Channel {
        let http = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        let https = Endpoint::from_shared(format!("https://127.0.0.1:{port}")).unwrap();
        let ep = match dial {
            Dial::Plaintext => http,
            Dial::NoCertificate(t) => https
                .tls_config(
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&t.ca_pem)).domain_name(JOB_TLS_NAME),
                )
                .unwrap(),
            Dial::OtherJob(job, other) => https
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(&job.ca_pem))
                        .identity(other.identity())
                        .domain_name(JOB_TLS_NAME),
                )
                .unwrap(),
            Dial::Job(t) => https.tls_config(t.client_config()).unwrap(),
        };
        ep.connect_timeout(Duration::from_secs(5)).timeout(Duration::from_secs(5)).connect_lazy()
    }

    /// Whether a call over `dial` reached the service (any answer of its own, even a
    /// refusal of the request, rather than a failed connection).
    async fn reaches(port: u16, dial: Dial<'_>, scheduler: bool) -> bool {
        let ch = channel(port, &dial);
        let r = tokio::time::timeout(Duration::from_secs(10), async move {
            if scheduler {
                let req = GetJobStatusParams { job_id: "nope".into() };
                SchedulerGrpcClient::new(ch).get_job_status(req).await.map(|_| ())
            } else {
                FlightServiceClient::new(ch).list_actions(arrow_flight::Empty {}).await.map(|_| ())
            }
        })
        .await
        .expect("an answer or a refusal within 10 s");
        match r {
            Ok(()) => true,
            // A connection that failed carries the transport's error (a refused handshake;
            // plaintext sent to a TLS port reads the TLS alert as a broken HTTP/2 frame); an
            // answer of the service's own carries none.
            Err(s) => {
                let transport = std::error::Error::source(&s).is_some_and(|e| e.is::<tonic::transport::Error>());
                !(transport || s.code() == tonic::Code::Unavailable)
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_job_port_refuses_plaintext_strangers_and_other_jobs() {
        let job = JobTls::generate("app-1").unwrap();
        let other = JobTls::generate("app-2").unwrap();
        let nn = tarn_client::NamenodeClient::new(&["127.0.0.1:1".into()], &tarn_client::Transport::plaintext_dev())
            .unwrap();
        let stores = crate::stores::TarnStores::new(std::sync::Arc::new(nn));
        let cancel = CancellationToken::new();
        let sched = crate::master::start_scheduler(&job, stores, "app-1", "127.0.0.1").await.unwrap();
        let addr = sched.addr;
        crate::master::serve(sched, &job, None, cancel.clone()).unwrap();
        let work = tempfile::tempdir().unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shuffle = l.local_addr().unwrap().port();
        let (job_s, stop) = (job.clone(), cancel.clone());
        let dir = work.path().to_string_lossy().into_owned();
        tokio::spawn(async move { crate::executor::serve_shuffle(l, &job_s, dir, stop.cancelled_owned()).await });

        for (port, scheduler) in [(addr.port(), true), (shuffle, false)] {
            let what = if scheduler { "the scheduler" } else { "the shuffle service" };
            assert!(!reaches(port, Dial::Plaintext, scheduler).await, "{what} answered plaintext");
            assert!(
                !reaches(port, Dial::NoCertificate(&job), scheduler).await,
                "{what} answered a client without a certificate"
            );
            assert!(!reaches(port, Dial::OtherJob(&job, &other), scheduler).await, "{what} answered another job");
            assert!(reaches(port, Dial::Job(&job), scheduler).await, "{what} refused the job itself");
        }
        cancel.cancel();
    }
}
