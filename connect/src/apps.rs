//! Where Spark Connect's plans run: one session application per user (started on the
//! user's first query, as that user), reached with [`SessionClient`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::logical_expr::LogicalPlan;
use serde::{Deserialize, Serialize};
use tarn_client::rm::RmClient;
use tarn_client::NamenodeClient;
use tarn_jobs::session::{self, SessionClient, SessionResult};
use tarn_jobs::{JobError, JobSpec};
use tarn_proto::jobs::RunProgress;

use crate::errors::SparkError;

/// The name of the session application each user's Spark Connect plans run on.
pub const SESSION_NAME: &str = "spark-connect";
/// How long a user's first query waits for their session application to serve.
const OPEN_WAIT: Duration = Duration::from_secs(180);
/// How long a job waits for a session that refused it (stopping) to end.
const GONE_WAIT: Duration = Duration::from_secs(60);

/// The size of the users' session applications (`[connect.session]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSize {
    /// Executors kept while no query runs (0: every executor is released after the idle
    /// timeout; the next query waits for one to start).
    pub min_executors: u32,
    pub max_executors: u32,
    pub idle_timeout_s: u64,
    /// The session application ends after this long without a query (seconds; 0:
    /// never), giving its master's container back; the next query starts another.
    pub stop_after_idle_s: u64,
    pub vcores: u32,
    pub memory_mib: u64,
    pub master_memory_mib: u64,
    /// The leaf queue ("" = default).
    pub queue: String,
}

impl Default for SessionSize {
    fn default() -> Self {
        SessionSize {
            min_executors: 0,
            max_executors: 4,
            idle_timeout_s: 60,
            stop_after_idle_s: 600,
            vcores: 1,
            memory_mib: 1024,
            master_memory_mib: 1024,
            queue: String::new(),
        }
    }
}

/// The users' session applications.
pub struct Apps {
    rm: RmClient,
    nn: Arc<NamenodeClient>,
    size: SessionSize,
    tarn_bin: String,
    clients: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<SessionClient>>>>>,
}

impl Apps {
    pub fn new(rm: RmClient, nn: Arc<NamenodeClient>, size: SessionSize, tarn_bin: String) -> Apps {
        Apps { rm, nn, size, tarn_bin, clients: Mutex::default() }
    }

    fn slot(&self, user: &str) -> Arc<tokio::sync::Mutex<Option<SessionClient>>> {
        self.clients.lock().expect("session clients").entry(user.to_string()).or_default().clone()
    }

    /// The client of `user`'s session application, started if it does not run.
    async fn client(&self, user: &str) -> Result<SessionClient, SparkError> {
        let slot = self.slot(user);
        let mut held = slot.lock().await;
        if let Some(c) = held.as_ref() {
            return Ok(c.clone());
        }
        let rm = self.rm.for_user(user);
        let nn = Arc::new(self.nn.for_user(user));
        let fail = |e: JobError| SparkError::internal(format!("the session application of {user}: {e}"));
        let app_id = match session::find(&rm, SESSION_NAME).await.map_err(fail)? {
            Some(app) => app.app_id,
            None => {
                let s = &self.size;
                let mut spec = JobSpec {
                    vcores: s.vcores,
                    memory_mib: s.memory_mib,
                    ..JobSpec::session(SESSION_NAME, s.min_executors, s.max_executors, s.idle_timeout_s)
                };
                if let Some(o) = spec.session.as_mut() {
                    o.stop_after_idle_s = s.stop_after_idle_s;
                }
                spec.check_shape().map_err(fail)?;
                let name = format!("{}{SESSION_NAME}", session::SESSION_PREFIX);
                let sub = session::submission(name, s.queue.clone(), s.master_memory_mib, &self.tarn_bin, &spec);
                let id = rm.submit(&sub).await.map_err(|e| fail(JobError::Run(e.to_string())))?;
                tracing::info!(%user, app = %id, "started the user's Spark Connect session application");
                id
            }
        };
        let c = session::wait_open(&rm, nn, &app_id, OPEN_WAIT, |_| {}).await.map_err(fail)?;
        *held = Some(c.clone());
        Ok(c)
    }

    /// Forgets `user`'s client if it is still `app_id`'s (its application ended).
    async fn forget(&self, user: &str, app_id: &str) {
        let slot = self.slot(user);
        let mut held = slot.lock().await;
        if held.as_ref().is_some_and(|c| c.app_id == app_id) {
            *held = None;
        }
    }

    /// Runs `plan` as `user` and collects its rows; `on_progress` hears how far it got. A
    /// session application that ended (stopped, or failed) is replaced once.
    pub async fn run(
        &self,
        user: &str,
        plan: &LogicalPlan,
        settings: &HashMap<String, String>,
        on_progress: &mut (dyn FnMut(&RunProgress) + Send),
    ) -> Result<SessionResult, SparkError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut c = self.client(user).await?;
            match c.run_plan_with(plan, settings.clone(), &mut *on_progress).await {
                Ok(r) => return Ok(r),
                Err(JobError::Plan(m)) => return Err(plan_error(m)),
                // The session ends (idle, or stopped): once it has, another takes the job.
                Err(JobError::Gone(m)) if tries < 3 => {
                    tracing::info!(%user, app = %c.app_id, reason = %m, "the user's session application cannot take the job");
                    let rm = self.rm.for_user(user);
                    let deadline = tokio::time::Instant::now() + GONE_WAIT;
                    while tokio::time::Instant::now() < deadline {
                        match rm.application(&c.app_id).await {
                            Ok(r) if !r.state.is_final() => tokio::time::sleep(Duration::from_millis(200)).await,
                            _ => break,
                        }
                    }
                    self.forget(user, &c.app_id).await;
                }
                Err(e) => {
                    let gone = match self.rm.for_user(user).application(&c.app_id).await {
                        Ok(r) => r.state.is_final(),
                        Err(_) => false,
                    };
                    if gone && tries < 2 {
                        tracing::info!(%user, app = %c.app_id, "the user's session application ended: starting another");
                        self.forget(user, &c.app_id).await;
                        continue;
                    }
                    return Err(SparkError::run(e.to_string()));
                }
            }
        }
    }
}

/// A plan the session refused: a taken output is Spark's PATH_ALREADY_EXISTS.
fn plan_error(m: String) -> SparkError {
    if let Some(rest) = m.split("the output ").nth(1) {
        if let Some(path) = rest.split(" exists").next().filter(|_| rest.contains(" exists")) {
            return SparkError::analysis_with(
                "PATH_ALREADY_EXISTS",
                format!("Path {path} already exists. Set mode as \"overwrite\" to overwrite the existing path."),
                "42K04",
                &[("outputPath", path.to_string())],
            );
        }
    }
    SparkError::analysis("ANALYSIS_ERROR", m)
}
