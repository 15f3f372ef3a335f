//! Distributed Arrow jobs: Apache DataFusion Ballista inside Tarn's containers.
//!
//! A job is a Tarn application. Its master ([`master`], `tarn job master` in a container)
//! embeds a Ballista scheduler and asks the resource manager for executor containers;
//! each runs [`executor`] (`tarn job executor`), a Ballista executor that pulls tasks from
//! that scheduler. Tarn supplies what Ballista lacks:
//! - the store: `tarn://path` and `s3://bucket/key` read and write the cluster's own file
//!   system as the job's user ([`stores`]);
//! - mutual TLS on every Ballista link, with an application's own CA that only its user
//!   can read ([`tls`]);
//! - containers, queues and restarts (the resource manager), and the job's record under
//!   [`JOBS_DIR`] (its spec and result), which outlives the application.
//!
//! What a job runs is a [`JobSpec`]: DataFusion SQL statements, run in order in one
//! session; the last statement's rows are the job's result. A session application
//! ([`session`]) instead keeps its master and warm executors and runs the jobs its user
//! sends it, streaming their rows back.

pub mod catalog;
pub mod commit;
pub mod executor;
pub mod functions;
pub mod master;
pub mod result;
pub mod session;
pub mod spec;
pub mod stores;
pub mod tls;

pub use spec::JobSpec;

/// Where jobs keep their records: `JOBS_DIR/<user>/<application>/` (made by the
/// namenode, mode 1777; each user's directory is the user's own, 0700).
pub const JOBS_DIR: &str = "/.tarn/jobs";

/// Makes `dir` (in a 1777 directory) `user`'s own, mode 0700, in one step; one that is
/// already there must be theirs and private (anyone could have made it first).
pub async fn own_private_dir(nn: &tarn_client::NamenodeClient, dir: &str, user: &str) -> Result<()> {
    use tarn_client::ErrorKind;
    // The parent is the namenode's to make (made with the others, 1777, within a second
    // of its leader's start): made here, it would be this user's.
    let parent = dir.rsplit_once('/').map(|(p, _)| p.to_string()).filter(|p| !p.is_empty());
    let private = tarn_client::MkdirOptions { mode: 0o700, require_dir: parent.clone(), ..Default::default() };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut wait = std::time::Duration::from_millis(50);
    let made = loop {
        match nn.mkdir_exclusive(dir, &private).await {
            Err(e) if e.kind() == ErrorKind::NotFound && std::time::Instant::now() < deadline => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(1));
            }
            other => break other,
        }
    };
    match made {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind(), ErrorKind::AlreadyOwned | ErrorKind::AlreadyExists) => {
            let st = nn.get_file_info(dir, false).await.map_err(JobError::cluster(format!("look up {dir}")))?;
            match st {
                Some(st) if st.owner == user && st.is_dir() && st.mode & 0o077 == 0 => Ok(()),
                Some(st) => Err(JobError::Invalid(format!(
                    "{dir} belongs to {} with mode {:o}: it must be {user}'s own, 0700 (an administrator can remove it)",
                    st.owner,
                    st.mode & 0o7777
                ))),
                None => Err(JobError::Invalid(format!("{dir} vanished"))),
            }
        }
        Err(e) => Err(JobError::Cluster { what: format!("make {dir}"), source: e }),
    }
}

/// The record directory of application `app_id` of `user`.
pub fn job_dir(user: &str, app_id: &str) -> String {
    format!("{JOBS_DIR}/{user}/{app_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job's SQL does not parse or plan, or names something that is not there.
    #[error("{0}")]
    Plan(String),
    /// The job's spec or arguments are not usable.
    #[error("{0}")]
    Invalid(String),
    /// A call to the cluster failed.
    #[error("{what}: {source}")]
    Cluster { what: String, source: tarn_client::ClientError },
    /// A session could not take the job (it is stopping, or did not answer): nothing of
    /// it ran, so it may be sent again, to another session.
    #[error("{0}")]
    Gone(String),
    /// Ballista or DataFusion failed while running the job.
    #[error("{0}")]
    Run(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl JobError {
    pub(crate) fn cluster(what: impl Into<String>) -> impl FnOnce(tarn_client::ClientError) -> JobError {
        let what = what.into();
        move |source| JobError::Cluster { what, source }
    }
}

impl From<datafusion::error::DataFusionError> for JobError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        JobError::Run(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, JobError>;
