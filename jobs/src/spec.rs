//! What a job runs ([`JobSpec`]) and the DataFusion sessions it runs in.

use std::sync::Arc;

use ballista_core::extension::SessionConfigExt;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement};
use serde::{Deserialize, Serialize};

use crate::stores::TarnStores;
use crate::tls::JobTls;
use crate::{JobError, Result};
use tarn_client::NamenodeClient;

/// A job: SQL statements, run in order in one session (`CREATE EXTERNAL TABLE`, queries,
/// `COPY ... TO`); the last one's rows are the job's result. Passed to the master as its
/// argument, so the resource manager's record of the application holds it, and a new
/// attempt runs the same job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// [`JobSpec::FORMAT`]: a master refuses a spec newer than it knows.
    pub format: u32,
    pub sql: String,
    /// Executor containers.
    pub executors: u32,
    /// Cores of each executor (the tasks it runs at once).
    pub vcores: u32,
    /// Memory of each executor's container (MiB); its DataFusion pool is this less
    /// `overhead_mib`.
    pub memory_mib: u64,
    /// What each executor keeps outside DataFusion's memory pool (MiB; Spark's
    /// `spark.executor.memoryOverhead`): the process, its buffers, gRPC.
    #[serde(default = "default_overhead")]
    pub overhead_mib: u64,
    /// Set for a session application: no statements of its own; it runs the jobs its user
    /// sends ([`crate::session`]) on executors it grows and shrinks with demand
    /// (`executors` is then their most).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionOpts>,
}

/// What makes an application a session (see [`JobSpec::session`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpts {
    /// The session's name (`tarn job submit --session NAME`); one running per user and name.
    pub name: String,
    /// Executors kept warm while no job runs.
    pub min_executors: u32,
    /// Executors above the least are released after this long without a job (seconds).
    pub idle_timeout_s: u64,
    /// The whole session ends (succeeded) after this long without a job (seconds; 0:
    /// never), giving its master's container back.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stop_after_idle_s: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn default_overhead() -> u64 {
    crate::executor::OVERHEAD_MIB
}

impl JobSpec {
    pub const FORMAT: u32 = 1;

    pub fn new(sql: impl Into<String>) -> JobSpec {
        JobSpec {
            format: Self::FORMAT,
            sql: sql.into(),
            executors: 2,
            vcores: 1,
            memory_mib: 1024,
            overhead_mib: crate::executor::OVERHEAD_MIB,
            session: None,
        }
    }

    /// A session application's spec: up to `max_executors` executors, `min` kept warm.
    pub fn session(name: impl Into<String>, min: u32, max_executors: u32, idle_timeout_s: u64) -> JobSpec {
        JobSpec {
            executors: max_executors,
            session: Some(SessionOpts { name: name.into(), min_executors: min, idle_timeout_s, stop_after_idle_s: 0 }),
            ..JobSpec::new("")
        }
    }

    pub fn to_arg(&self) -> String {
        serde_json::to_string(self).expect("a spec serializes")
    }

    pub fn from_arg(s: &str) -> Result<JobSpec> {
        let spec: JobSpec = serde_json::from_str(s).map_err(|e| JobError::Invalid(format!("job spec: {e}")))?;
        if spec.format > Self::FORMAT {
            return Err(JobError::Invalid(format!(
                "job spec format {} is newer than this binary's ({})",
                spec.format,
                Self::FORMAT
            )));
        }
        Ok(spec)
    }

    /// Why the spec cannot run, if it cannot (before anything is submitted).
    pub fn check_shape(&self) -> Result<()> {
        if self.executors == 0 {
            return Err(JobError::Invalid("a job needs at least one executor".into()));
        }
        if self.vcores == 0 {
            return Err(JobError::Invalid("an executor needs at least one core".into()));
        }
        if let Some(s) = &self.session {
            if s.min_executors > self.executors {
                return Err(JobError::Invalid(format!(
                    "a session keeps at least {} executors warm but may have only {}",
                    s.min_executors, self.executors
                )));
            }
            if s.name.is_empty()
                || s.name.len() > 64
                || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(JobError::Invalid(format!(
                    "session name {:?}: 1 to 64 letters, digits, '-', '_' or '.'",
                    s.name
                )));
            }
        }
        if self.memory_mib < self.overhead_mib + 16 {
            return Err(JobError::Invalid(format!(
                "an executor needs at least 16 MiB of memory besides its overhead of {} MiB ({} MiB asked)",
                self.overhead_mib, self.memory_mib
            )));
        }
        Ok(())
    }

    /// Partitions of the job's scans and shuffles: its executors' cores (Spark's default
    /// parallelism). Ballista's default is 16 whatever the executors, and in pull mode each
    /// task costs an executor poll of about 50 ms: on one executor of one core, TPC-H q1 at
    /// SF 0.1 took 1.9 s as 16 + 16 + 1 tasks of 1-3 ms, and 0.35 s as 1 + 1 + 1 (debug).
    pub fn partitions(&self) -> usize {
        (self.executors as usize * self.vcores as usize).max(1)
    }

    /// The statements of its SQL.
    pub fn statements(&self) -> Result<Vec<Statement>> {
        let stmts =
            DFParser::parse_sql(&self.sql).map_err(|e| JobError::Plan(format!("the SQL does not parse: {e}")))?;
        if stmts.is_empty() {
            return Err(JobError::Plan("the SQL holds no statement".into()));
        }
        Ok(stmts.into_iter().collect())
    }
}

/// Ballista's settings every session of a job shares, with the job's TLS on every link.
pub fn session_config(tls: Option<&JobTls>) -> SessionConfig {
    let mut c = SessionConfig::new_with_ballista();
    if let Some(tls) = tls {
        c = c.with_ballista_use_tls(true).with_ballista_override_create_grpc_client_endpoint(tls.endpoint_override());
    }
    // The adaptive planner does not recompute a lost executor's map output (Ballista
    // issue 1986): a job must survive the loss of a node.
    c.with_ballista_adaptive_query_planner(false)
}

/// A session whose paths resolve to the cluster ([`TarnStores`]), with Ballista's
/// functions and rules, and Spark's functions as `spark_<name>` ([`crate::functions`]).
pub fn session_state(stores: Arc<TarnStores>, config: SessionConfig) -> datafusion::error::Result<SessionState> {
    let base = ballista_core::utils::default_session_builder(config)?;
    let runtime =
        RuntimeEnvBuilder::from_runtime_env(base.runtime_env()).with_object_store_registry(stores).build_arc()?;
    let mut state = SessionStateBuilder::new_from_existing(base).with_runtime_env(runtime).build();
    crate::functions::register(&mut state)?;
    Ok(state)
}

/// Plans every statement of `spec` in a local session over the cluster's store, as the
/// submitting user: SQL that does not parse or plan, a table whose files are not there or
/// not readable, or a `COPY` onto an existing output, is refused before anything runs.
/// Runs nothing but DDL (which only reads schemas).
pub async fn check(spec: &JobSpec, nn: Arc<NamenodeClient>) -> Result<()> {
    spec.check_shape()?;
    let ctx = SessionContext::new_with_state(
        session_state(TarnStores::new(nn.clone()), SessionConfig::new())
            .map_err(|e| JobError::Invalid(e.to_string()))?,
    )
    .enable_url_table();
    crate::catalog::register(&ctx, nn.clone(), crate::catalog::DEFAULT_DATABASE)
        .map_err(|e| JobError::Invalid(e.to_string()))?;
    let stmts = spec.statements()?;
    let n = stmts.len();
    for (i, stmt) in stmts.into_iter().enumerate() {
        let which = if n == 1 { String::new() } else { format!("statement {} of {n}: ", i + 1) };
        let plan = ctx.state().statement_to_plan(stmt).await.map_err(|e| JobError::Plan(format!("{which}{e}")))?;
        if let LogicalPlan::Copy(copy) = &plan {
            let append = crate::commit::OPTIONS
                .iter()
                .any(|o| copy.options.get(*o).is_some_and(|v| v.eq_ignore_ascii_case("true")));
            if let Some((target, _)) = crate::commit::cluster_path(&copy.output_url).filter(|_| !append) {
                crate::commit::check_place(&target, &copy.output_url)
                    .map_err(|e| JobError::Plan(format!("{which}{e}")))?;
                crate::commit::check_target(&nn, &target, None)
                    .await
                    .map_err(|e| JobError::Plan(format!("{which}{e}")))?;
            }
        }
        if matches!(plan, LogicalPlan::Ddl(_)) {
            ctx.execute_logical_plan(plan).await.map_err(|e| JobError::Plan(format!("{which}{e}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_and_refuses_newer_formats() {
        let s = JobSpec::new("select 1");
        assert_eq!(JobSpec::from_arg(&s.to_arg()).unwrap(), s);
        let newer = JobSpec { format: JobSpec::FORMAT + 1, ..s };
        let e = JobSpec::from_arg(&newer.to_arg()).unwrap_err().to_string();
        assert!(e.contains("newer"), "{e}");
    }

    #[test]
    fn a_spec_without_an_overhead_gets_the_default_and_a_pool_must_remain() {
        // As written before `overhead_mib` existed (format 1).
        let old = r#"{"format":1,"sql":"select 1","executors":2,"vcores":1,"memory_mib":1024}"#;
        let s = JobSpec::from_arg(old).unwrap();
        assert_eq!(s.overhead_mib, crate::executor::OVERHEAD_MIB);
        let tight = JobSpec { memory_mib: 256, overhead_mib: 250, ..s };
        let e = tight.check_shape().unwrap_err().to_string();
        assert!(e.contains("16 MiB") && e.contains("250"), "{e}");
    }

    #[test]
    fn statements_split_and_bad_sql_is_refused() {
        let s = JobSpec::new("create external table t stored as parquet location 's3://b/t/'; select count(*) from t");
        assert_eq!(s.statements().unwrap().len(), 2);
        let e = JobSpec::new("selec 1").statements().unwrap_err().to_string();
        assert!(e.contains("does not parse"), "{e}");
        assert!(JobSpec::new("  ").statements().is_err());
    }
}
