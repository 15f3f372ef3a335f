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
