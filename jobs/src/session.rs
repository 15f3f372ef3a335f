//! Session applications: a master that stays, with warm executors, and runs the jobs its
//! user sends it (Spark's long-lived driver; the Spark Connect endpoint runs plans on
//! one). It serves [`JobSession`] beside its Ballista scheduler, on the application's own
//! mutual TLS: only holders of the job's key (in the user's 0700 job directory, so the
//! user, and administrators) can send it jobs. Its address is the extended attribute
//! [`SESSION_XATTR`] of the job's directory, written once it serves.
//!
//! Each job runs in a fresh DataFusion session through the same path as a batch job's
//! statements (staged COPY outputs published at the end, statements run again after a
//! lost executor); its rows stream back as Arrow IPC. The executors grow while tasks wait
//! and shrink to the session's least after an idle timeout ([`crate::master::Demand`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use futures::Stream;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use tarn_client::rm::{AppReport, AppState, RmClient};
use tarn_client::store::TarnStore;
use tarn_client::{NamenodeClient, SetAttributes};
use tarn_proto::jobs::job_session_client::JobSessionClient;
use tarn_proto::jobs::job_session_server::{JobSession, JobSessionServer};
use tarn_proto::jobs::{run_event, RunDone, RunEvent, RunProgress, RunRequest, StageProgress, StopReply, StopRequest};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::master::{Demand, Engine, JobProgress, Stmt, STAGING};
use crate::tls::{JobTls, CA_FILE, CERT_FILE, KEY_FILE};
use crate::{job_dir, JobError, JobSpec, Result};

/// What the name of a session's application starts with (then the session's name).
pub const SESSION_PREFIX: &str = "session: ";
/// The extended attribute of a session's job directory naming where it serves.
pub const SESSION_XATTR: &str = "tarn.job.session";
/// The largest message either end takes (result rows come in pieces of about
/// [`PIECE_BYTES`]).
const MESSAGE_MAX: usize = 64 << 20;
/// Rows are sent in Arrow IPC pieces of about this many bytes.
const PIECE_BYTES: usize = 2 << 20;
/// The most a job's rows may take in the master's memory; larger outputs belong in files
/// (`COPY ... TO`).
const RESULT_BYTES_MAX: usize = 512 << 20;
/// How often a running job's progress is sent (when it changed).
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// Where a session serves (the value of [`SESSION_XATTR`], JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    pub format: u32,
    /// `host:port` of the session's master.
    pub address: String,
    /// The application attempt serving there.
    pub attempt: u32,
}

/// Records that the session of job directory `dir` serves at `address`.
pub(crate) async fn advertise(nn: &NamenodeClient, dir: &str, address: &str, attempt: u32) -> Result<()> {
    let advert = Advert { format: 1, address: address.to_string(), attempt };
    let json = serde_json::to_vec(&advert).expect("an advert serializes");
    let attrs = SetAttributes {
        set_xattrs: std::collections::BTreeMap::from([(SESSION_XATTR.to_string(), json)]),
        ..Default::default()
    };
    nn.set_attributes(dir, attrs).await.map_err(JobError::cluster(format!("record the session's address on {dir}")))?;
    Ok(())
}

/// The session service of a master.
pub(crate) struct SessionService {
    engine: Engine,
    demand: Arc<Demand>,
    stopped: CancellationToken,
    runs: AtomicU64,
}

impl SessionService {
    pub(crate) fn new(engine: Engine, demand: Arc<Demand>, stopped: CancellationToken) -> SessionService {
        SessionService { engine, demand, stopped, runs: AtomicU64::new(0) }
    }
}

pub(crate) fn server(s: SessionService) -> JobSessionServer<SessionService> {
    JobSessionServer::new(s).max_decoding_message_size(MESSAGE_MAX).max_encoding_message_size(MESSAGE_MAX)
}

fn status(e: JobError) -> Status {
    match &e {
        JobError::Plan(_) | JobError::Invalid(_) => Status::invalid_argument(e.to_string()),
        JobError::Cluster { source, .. } if source.kind() == tarn_client::ErrorKind::PermissionDenied => {
            Status::permission_denied(e.to_string())
        }
        // Not a code clients retry on their own: the job may have written in place.
        _ => Status::internal(e.to_string()),
    }
}

/// The statements a request asks for.
fn statements(req: &RunRequest, ctx: &datafusion::prelude::SessionContext) -> Result<Vec<Stmt>> {
    match (req.sql.trim().is_empty(), req.logical_plan.is_empty()) {
        (false, true) => Ok(JobSpec::new(req.sql.clone()).statements()?.into_iter().map(Stmt::Sql).collect()),
        (true, false) => {
            let codec = ballista_core::serde::BallistaLogicalExtensionCodec::default();
            let plan = datafusion_proto::bytes::logical_plan_from_bytes_with_extension_codec(
                &req.logical_plan,
                &ctx.task_ctx(),
                &codec,
            )
            .map_err(|e| JobError::Plan(format!("the logical plan does not decode: {e}")))?;
            Ok(vec![Stmt::Plan(plan)])
        }
        (false, false) => Err(JobError::Invalid("a job is SQL or a logical plan, not both".into())),
        (true, true) => Err(JobError::Invalid("the job holds no SQL and no logical plan".into())),
    }
}

/// `b` with its view columns holding only the strings they show: a slice of a view
/// array keeps its whole buffers, and Arrow IPC would send them all with every piece.
fn compact(b: RecordBatch) -> Result<RecordBatch> {
    use datafusion::arrow::array::{ArrayRef, AsArray};
    use datafusion::arrow::datatypes::DataType;
    if !b.columns().iter().any(|c| matches!(c.data_type(), DataType::Utf8View | DataType::BinaryView)) {
        return Ok(b);
    }
    let cols: Vec<ArrayRef> = b
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Utf8View => Arc::new(c.as_string_view().gc()) as ArrayRef,
            DataType::BinaryView => Arc::new(c.as_binary_view().gc()) as ArrayRef,
            _ => c.clone(),
        })
        .collect();
    RecordBatch::try_new(b.schema(), cols).map_err(|e| JobError::Run(format!("encode the result: {e}")))
}

/// `batches` as Arrow IPC streams of about [`PIECE_BYTES`] each (at least one: the
/// schema).
fn arrow_pieces(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<Bytes>> {
    let err = |e: datafusion::arrow::error::ArrowError| JobError::Run(format!("encode the result: {e}"));
    let encode = |b: Option<&RecordBatch>| -> Result<Bytes> {
        let mut w = StreamWriter::try_new(Vec::new(), schema).map_err(err)?;
        if let Some(b) = b {
            w.write(b).map_err(err)?;
        }
        w.finish().map_err(err)?;
        Ok(Bytes::from(w.into_inner().map_err(err)?))
    };
    let mut out = Vec::new();
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        let size = b.get_array_memory_size().max(1);
        let rows = (b.num_rows() * PIECE_BYTES / size).clamp(1, b.num_rows());
        let mut at = 0;
        while at < b.num_rows() {
            let n = rows.min(b.num_rows() - at);
            out.push(encode(Some(&compact(b.slice(at, n))?))?);
            at += n;
        }
    }
    if out.is_empty() {
        out.push(encode(None)?);
    }
    Ok(out)
}

type EventStream = Pin<Box<dyn Stream<Item = std::result::Result<RunEvent, Status>> + Send + 'static>>;

fn event(e: run_event::Event) -> std::result::Result<RunEvent, Status> {
    Ok(RunEvent { event: Some(e) })
}

#[tonic::async_trait]
impl JobSession for SessionService {
    type RunStream = EventStream;

    async fn run(&self, req: Request<RunRequest>) -> std::result::Result<Response<EventStream>, Status> {
        let req = req.into_inner();
        // Counted before the check: an idle stop decided after it waits for this job.
        let guard = self.demand.begin();
        if self.stopped.is_cancelled() {
            return Err(Status::unavailable("the session is stopping: it takes no new job"));
        }
        let n = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        let engine = self.engine.clone();
        // The attempt too: a new attempt's run 1 is not the last attempt's (its outputs
        // carry this label).
        let label = format!("{}/a{}/r{n}", engine.job.app_id, engine.job.attempt);
        let ctx = engine.context(&label).map_err(status)?;
        // A plan's COPY options do not survive its encoding: whether its output is
        // appended to or replaces its target comes as a setting of the run.
        let mut copy_options = Vec::new();
        for (k, v) in &req.settings {
            if crate::commit::OPTIONS.contains(&k.as_str()) {
                copy_options.push((k.clone(), v.clone()));
                continue;
            }
            if !k.starts_with("datafusion.execution.") && !k.starts_with("datafusion.sql_parser.") {
                return Err(Status::invalid_argument(format!(
                    "setting {k}: only datafusion.execution.* and datafusion.sql_parser.* may be set per job"
                )));
            }
            let state = ctx.state_ref();
            let mut state = state.write();
            state
                .config_mut()
                .options_mut()
                .set(k, v)
                .map_err(|e| Status::invalid_argument(format!("setting {k}: {e}")))?;
        }
        let mut stmts = statements(&req, &ctx).map_err(status)?;
        for s in &mut stmts {
            if let Stmt::Plan(datafusion::logical_expr::LogicalPlan::Copy(copy)) = s {
                copy.options.extend(copy_options.iter().cloned());
            }
        }
        // A query whose client leaves is cancelled; a write runs to its end, as a write
        // stopped midway would leave what it wrote in place, or an overwritten output gone.
        let cancellable = stmts.iter().all(Stmt::is_query);
        let staging = format!("{}/{STAGING}/a{}/r{n}", engine.job.dir, engine.job.attempt);
        tracing::info!(job = %label, name = %req.name, statements = stmts.len(), "job started");
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            // A client that leaves cancels its query: its Ballista jobs stop (tasks already
            // running finish; new ones do not start).
            let _running = guard;
            let started = Instant::now();
            let progress = Mutex::new(JobProgress { statements: stmts.len(), ..Default::default() });
            let cancelled = CancellationToken::new();
            let run = engine.run_statements(&ctx, stmts, &label, &staging, &progress, &cancelled);
            tokio::pin!(run);
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            let mut sent = RunProgress::default();
            let look = |sent: &mut RunProgress, stage_list: Vec<StageProgress>| {
                let p = {
                    let p = progress.lock().unwrap_or_else(|p| p.into_inner());
                    RunProgress {
                        statement: p.statement as u32,
                        statements: p.statements as u32,
                        stages_done: stage_list.iter().filter(|s| s.done).count() as u32,
                        stages: stage_list.len() as u32,
                        executors: engine.shared.lock().unwrap_or_else(|p| p.into_inner()).executors as u32,
                        elapsed_ms: 0,
                        statement_reruns: p.statement_reruns as u32,
                        stage_list,
                    }
                };
                if p == *sent {
                    return None;
                }
                *sent = p.clone();
                Some(RunProgress { elapsed_ms: started.elapsed().as_millis() as u64, ..p })
            };
            let out = loop {
                tokio::select! {
                    r = &mut run => break r,
                    _ = tx.closed(), if cancellable && !cancelled.is_cancelled() => {
                        tracing::info!(job = %label, "the query's client left: cancelling it");
                        cancelled.cancel();
                        engine.cancel(&label).await;
                    }
                    _ = tick.tick() => {
                        if cancelled.is_cancelled() {
                            // A Ballista job submitted since the last look.
                            engine.cancel(&label).await;
                            continue;
                        }
                        let stages = engine.stage_progress(&label).await;
                        if let Some(p) = look(&mut sent, stages) {
                            // A slow client misses progress, it does not hold the job up;
                            // what it missed goes again with the next change or at the end.
                            if tx.try_send(event(run_event::Event::Progress(p))).is_err() {
                                sent = RunProgress::default();
                            }
                        }
                    }
                }
            };
            // What this job staged and did not publish.
            let _ = engine.nn.delete(&staging, true, None).await;
            if tx.is_closed() {
                tracing::info!(job = %label, ok = out.is_ok(), "the job ended after its client left");
                return;
            }
            // The last counts, before the rows.
            if let Some(p) = look(&mut sent, engine.stage_progress(&label).await) {
                let _ = tx.send(event(run_event::Event::Progress(p))).await;
            }
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let (schema, batches) = match out {
                Ok(ran) => match ran.last {
                    Some(last) => last,
                    None => {
                        let done = RunDone { message: "done (no query)".into(), rows: 0, elapsed_ms };
                        let _ = tx.send(event(run_event::Event::Done(done))).await;
                        return;
                    }
                },
                Err(e) => {
                    tracing::info!(job = %label, error = %e, "job failed");
                    let _ = tx.send(Err(status(e))).await;
                    return;
                }
            };
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
            tracing::info!(job = %label, rows, elapsed_ms, "job done");
            if bytes > RESULT_BYTES_MAX {
                let e = JobError::Run(format!(
                    "the result is {} MiB ({rows} rows), more than a session sends back ({} MiB): \
                     write it to files with COPY ... TO",
                    bytes >> 20,
                    RESULT_BYTES_MAX >> 20
                ));
                let _ = tx.send(Err(status(e))).await;
                return;
            }
            match arrow_pieces(&schema, &batches) {
                Ok(pieces) => {
                    for p in pieces {
                        if tx.send(event(run_event::Event::Arrow(p))).await.is_err() {
                            return;
                        }
                    }
                    let done = RunDone { message: format!("{rows} rows"), rows: rows as u64, elapsed_ms };
                    let _ = tx.send(event(run_event::Event::Done(done))).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(status(e))).await;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn stop(&self, _req: Request<StopRequest>) -> std::result::Result<Response<StopReply>, Status> {
        tracing::info!(app = %self.engine.job.app_id, "the session was asked to stop");
        self.stopped.cancel();
        Ok(Response::new(StopReply {}))
    }
}

/// A finished job's rows, from a session.
#[derive(Debug, Clone)]
pub struct SessionResult {
    pub schema: Option<SchemaRef>,
    pub batches: Vec<RecordBatch>,
    /// What the session said of it ("3 rows").
    pub message: String,
    /// How long it ran in the session.
    pub elapsed_ms: u64,
}

/// The submission of application `app_name` (a job or a session) running `spec` with
/// the `tarn` program `tarn_bin` in its containers.
pub fn submission(
    app_name: String,
    queue: String,
    master_memory_mib: u64,
    tarn_bin: &str,
    spec: &JobSpec,
) -> tarn_client::rm::AppSubmission {
    use tarn_client::rm::{AppSubmission, ContainerSpec, Resources};
    let command = vec![
        tarn_bin.to_string(),
        "job".into(),
        "master".into(),
        "--tarn-bin".into(),
        tarn_bin.to_string(),
        spec.to_arg(),
    ];
    AppSubmission {
        name: app_name,
        queue,
        am_resources: Resources::new(1, master_memory_mib),
        am_spec: ContainerSpec { command, env: Default::default(), files: Vec::new() },
        max_attempts: 0,
        submission_id: String::new(),
    }
}

/// Waits (at most `bound`) until session application `app_id` serves and connects to it;
/// `tick` sees each report while it starts.
pub async fn wait_open(
    rm: &RmClient,
    nn: Arc<NamenodeClient>,
    app_id: &str,
    bound: Duration,
    mut tick: impl FnMut(&AppReport),
) -> Result<SessionClient> {
    let deadline = tokio::time::Instant::now() + bound;
    let mut every = tokio::time::interval(Duration::from_millis(200));
    loop {
        every.tick().await;
        let r = rm.application(app_id).await.map_err(JobError::cluster(format!("follow {app_id}")))?;
        tick(&r);
        if r.state.is_final() {
            return Err(JobError::Run(format!("{app_id}: {} before it served: {}", r.state.as_str(), r.diagnostics)));
        }
        if r.state == AppState::Running {
            if let Some(c) = SessionClient::connect_app(nn.clone(), &r).await? {
                return Ok(c);
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(JobError::Run(format!(
                "{app_id}: not serving after {} s (it is {})",
                bound.as_secs(),
                r.state.as_str()
            )));
        }
    }
}

/// A client of one user's session.
#[derive(Debug, Clone)]
pub struct SessionClient {
    inner: JobSessionClient<Channel>,
    pub app_id: String,
    pub address: String,
}

/// The running session `name` of the client's user, if any.
pub async fn find(rm: &RmClient, name: &str) -> Result<Option<AppReport>> {
    let want = format!("{SESSION_PREFIX}{name}");
    let apps = rm.applications(false).await.map_err(JobError::cluster("list your applications"))?;
    Ok(apps.into_iter().find(|a| a.name == want && !a.state.is_final()))
}

fn from_status(s: Status) -> JobError {
    match s.code() {
        tonic::Code::InvalidArgument => JobError::Plan(s.message().to_string()),
        tonic::Code::PermissionDenied => JobError::Plan(format!("permission denied: {}", s.message())),
        tonic::Code::Unavailable => JobError::Gone(format!("the session: {}", s.message())),
        _ => JobError::Run(format!("the session: {}", s.message())),
    }
}

impl SessionClient {
    /// Connects to the running session `name` of the client's user.
    pub async fn connect(rm: &RmClient, nn: Arc<NamenodeClient>, name: &str) -> Result<SessionClient> {
        let Some(app) = find(rm, name).await? else {
            return Err(JobError::Invalid(format!(
                "no session {name:?} of yours is running: start one with `tarn job session start {name}`"
            )));
        };
        if app.state != AppState::Running {
            return Err(JobError::Invalid(format!("session {name:?} ({}) is {}", app.app_id, app.state.as_str())));
        }
        Self::connect_app(nn, &app).await?.ok_or_else(|| {
            JobError::Invalid(format!("session {name:?} ({}) has not opened yet: try again shortly", app.app_id))
        })
    }

    /// Connects to session application `app`; `None` if its latest attempt has not
    /// opened yet (it serves nowhere on record, or the address on record is an earlier
    /// attempt's).
    pub async fn connect_app(nn: Arc<NamenodeClient>, app: &AppReport) -> Result<Option<SessionClient>> {
        let app_id = app.app_id.as_str();
        let dir = job_dir(&app.user, app_id);
        let st = nn.get_file_info(&dir, true).await.map_err(JobError::cluster(format!("look up {dir}")))?;
        let Some(raw) = st.and_then(|st| st.xattrs.get(SESSION_XATTR).cloned()) else { return Ok(None) };
        let advert: Advert = serde_json::from_slice(&raw)
            .map_err(|e| JobError::Invalid(format!("{dir}: the session's address does not read: {e}")))?;
        if app.attempts.iter().any(|a| a.attempt > advert.attempt) {
            return Ok(None);
        }
        let store = TarnStore::new(nn);
        let read = |name: &'static str| {
            let path = format!("{dir}/tls/{name}");
            let store = &store;
            async move {
                let loc =
                    Path::parse(path.trim_start_matches('/')).map_err(|e| JobError::Invalid(format!("{path}: {e}")))?;
                let got = store.get(&loc).await.map_err(|e| JobError::Run(format!("read {path}: {e}")))?;
                let bytes = got.bytes().await.map_err(|e| JobError::Run(format!("read {path}: {e}")))?;
                String::from_utf8(bytes.to_vec()).map_err(|_| JobError::Invalid(format!("{path}: not PEM text")))
            }
        };
        let (ca_pem, cert_pem, key_pem) = futures::try_join!(read(CA_FILE), read(CERT_FILE), read(KEY_FILE))?;
        let tls = JobTls { ca_pem, cert_pem, key_pem };
        let channel = tls.channel(&advert.address)?;
        let inner = JobSessionClient::new(channel)
            .max_decoding_message_size(MESSAGE_MAX)
            .max_encoding_message_size(MESSAGE_MAX);
        Ok(Some(SessionClient { inner, app_id: app_id.to_string(), address: advert.address }))
    }

    /// Sends a job; its events stream back.
    pub async fn run(&mut self, req: RunRequest) -> Result<tonic::Streaming<RunEvent>> {
        Ok(self.inner.run(req).await.map_err(from_status)?.into_inner())
    }

    /// Runs SQL and collects its rows; `on_progress` sees the job's progress.
    pub async fn run_sql(&mut self, sql: &str, on_progress: impl FnMut(&RunProgress)) -> Result<SessionResult> {
        self.run_collect(RunRequest { sql: sql.to_string(), ..Default::default() }, on_progress).await
    }

    /// Runs a DataFusion logical plan (made in a session whose paths resolve as the
    /// job's do: [`crate::spec::session_state`]) and collects its rows.
    pub async fn run_plan(
        &mut self,
        plan: &datafusion::logical_expr::LogicalPlan,
        on_progress: impl FnMut(&RunProgress),
    ) -> Result<SessionResult> {
        self.run_plan_with(plan, Default::default(), on_progress).await
    }

    /// [`SessionClient::run_plan`] with DataFusion `settings` for this job (keys under
    /// `datafusion.execution.` or `datafusion.sql_parser.`).
    pub async fn run_plan_with(
        &mut self,
        plan: &datafusion::logical_expr::LogicalPlan,
        settings: std::collections::HashMap<String, String>,
        on_progress: impl FnMut(&RunProgress),
    ) -> Result<SessionResult> {
        let codec = ballista_core::serde::BallistaLogicalExtensionCodec::default();
        let bytes = datafusion_proto::bytes::logical_plan_to_bytes_with_extension_codec(plan, &codec)
            .map_err(|e| JobError::Plan(format!("the logical plan does not encode: {e}")))?;
        self.run_collect(RunRequest { logical_plan: bytes, settings, ..Default::default() }, on_progress).await
    }

    /// Runs a job and collects its rows.
    pub async fn run_collect(
        &mut self,
        req: RunRequest,
        mut on_progress: impl FnMut(&RunProgress),
    ) -> Result<SessionResult> {
        let mut events = self.run(req).await?;
        let mut out = SessionResult { schema: None, batches: Vec::new(), message: String::new(), elapsed_ms: 0 };
        // Once the job was taken, a broken stream is no refusal: the job may have run.
        let broken = |s: Status| match from_status(s) {
            JobError::Gone(m) => JobError::Run(m),
            e => e,
        };
        while let Some(ev) = events.message().await.map_err(broken)? {
            match ev.event {
                Some(run_event::Event::Progress(p)) => on_progress(&p),
                Some(run_event::Event::Arrow(bytes)) => {
                    let r = StreamReader::try_new(std::io::Cursor::new(bytes), None)
                        .map_err(|e| JobError::Run(format!("the session's rows: {e}")))?;
                    out.schema = Some(r.schema());
                    for b in r {
                        out.batches.push(b.map_err(|e| JobError::Run(format!("the session's rows: {e}")))?);
                    }
                }
                Some(run_event::Event::Done(d)) => {
                    out.message = d.message;
                    out.elapsed_ms = d.elapsed_ms;
                    return Ok(out);
                }
                None => {}
            }
        }
        Err(JobError::Run("the session's stream ended before the job did".into()))
    }

    /// Ends the session.
    pub async fn stop(&mut self) -> Result<()> {
        self.inner.stop(StopRequest {}).await.map_err(from_status)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn rows_go_in_pieces_and_no_rows_still_carry_the_schema() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let none = arrow_pieces(&schema, &[]).unwrap();
        assert_eq!(none.len(), 1);
        let r = StreamReader::try_new(std::io::Cursor::new(none[0].clone()), None).unwrap();
        assert_eq!(r.schema(), schema);
        assert_eq!(r.count(), 0);

        // 1M rows of 8 bytes: about 4 pieces of 2 MiB, every row once and in order.
        let big =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from_iter_values(0..1_000_000))]).unwrap();
        let pieces = arrow_pieces(&schema, &[big]).unwrap();
        assert!((3..=6).contains(&pieces.len()), "{} pieces", pieces.len());
        let mut next = 0i64;
        for p in pieces {
            assert!(p.len() <= PIECE_BYTES + 4096, "a piece of {} bytes", p.len());
            for b in StreamReader::try_new(std::io::Cursor::new(p), None).unwrap() {
                let b = b.unwrap();
                let col = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                for v in col.values() {
                    assert_eq!(*v, next);
                    next += 1;
                }
            }
        }
        assert_eq!(next, 1_000_000);
    }

    #[test]
    fn pieces_of_a_string_view_batch_carry_only_their_own_strings() {
        use datafusion::arrow::array::{Array, StringViewArray};
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8View, false)]));
        // 200k strings of 40 bytes (not inlined in the views): about 8 MiB of data.
        let strings: StringViewArray = (0..200_000).map(|i| Some(format!("{i:0>40}"))).collect();
        let b = RecordBatch::try_new(schema.clone(), vec![Arc::new(strings)]).unwrap();
        let pieces = arrow_pieces(&schema, &[b]).unwrap();
        assert!(pieces.len() > 2, "{} pieces", pieces.len());
        let mut rows = 0;
        for p in &pieces {
            assert!(p.len() <= PIECE_BYTES + 4096, "a piece of {} bytes", p.len());
            for b in StreamReader::try_new(std::io::Cursor::new(p.clone()), None).unwrap() {
                let b = b.unwrap();
                let col = b.column(0).as_any().downcast_ref::<StringViewArray>().unwrap();
                assert_eq!(col.value(0), format!("{rows:0>40}"));
                rows += col.len();
            }
        }
        assert_eq!(rows, 200_000);
    }
}
