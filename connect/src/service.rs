//! The `SparkConnectService` RPC edge: who the caller is (a bearer token), their Spark
//! sessions (configuration, temp views, operations), and each RPC.
//!
//! An operation's responses are kept until the client releases them (`ReleaseExecute`),
//! so a client whose stream broke reattaches (`ReattachExecute`) and continues after the
//! last response it saw. The stream of a reattachable operation ends with
//! `ResultComplete`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::{LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::SessionContext;
use futures::Stream;
use sc::execute_plan_response::ResponseType;
use spark_connect_proto::spark::connect as sc;
use tarn_client::NamenodeClient;
use tarn_gateway::keys::KeyStore;
use tarn_jobs::stores::TarnStores;
use tarn_proto::jobs::RunProgress;
use tokio::sync::Notify;
use tonic::{Request, Response, Status, Streaming};

use crate::apps::Apps;
use crate::errors::SparkError;
use crate::pb::spark_connect_service_server::SparkConnectService;
use crate::plan::{self, Planner};
use crate::sessions::{self, SessionRecord, StoredView};
use crate::types;

/// The Spark version the endpoint answers (`spark.version`): the protocol it speaks.
pub const SPARK_VERSION: &str = "4.2.0";
/// Rows of one `ArrowBatch` at most, and about its bytes at most.
const BATCH_ROWS: usize = 65_536;
const BATCH_BYTES: usize = 4 << 20;
/// Operations a session keeps (finished and not released) at most; the oldest finished
/// ones go first.
const OPS_MAX: usize = 256;

pub(crate) struct Endpoint {
    pub keys: Arc<KeyStore>,
    pub nn: Arc<NamenodeClient>,
    pub apps: Apps,
    /// Dev mode: a request without a token acts as this user.
    pub dev_user: Option<String>,
    sessions: Mutex<HashMap<(String, String), Arc<Session>>>,
    expiry: Expiry,
}

/// When the endpoint forgets what its clients left behind.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expiry {
    /// An operation no client follows (no ExecutePlan or ReattachExecute stream) for
    /// this long is interrupted, if it still runs, and forgotten (Spark's
    /// `spark.connect.execute.manager.detachedTimeout`).
    pub detached_operation: Duration,
    /// A session without a request for this long is released (Spark's
    /// `spark.connect.session.manager.defaultSessionTimeout`).
    pub session: Duration,
}

impl Endpoint {
    pub fn new(
        keys: Arc<KeyStore>,
        nn: Arc<NamenodeClient>,
        apps: Apps,
        dev_user: Option<String>,
        expiry: Expiry,
    ) -> Endpoint {
        Endpoint { keys, nn, apps, dev_user, sessions: Mutex::default(), expiry }
    }

    /// Operations the endpoint holds, over all sessions.
    pub fn operations(&self) -> usize {
        let sessions: Vec<Arc<Session>> = self.sessions.lock().expect("sessions").values().cloned().collect();
        sessions.iter().map(|s| s.ops.lock().expect("ops").len()).sum()
    }

    /// Interrupts and forgets operations left without a follower past their time, and
    /// releases sessions idle past theirs. Called every few seconds by the endpoint.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut gone = Vec::new();
        {
            let mut all = self.sessions.lock().expect("sessions");
            all.retain(|_, s| {
                let idle = now.duration_since(*s.last_used.lock().expect("last used"));
                // A session whose operation runs or is being read is in use.
                let busy = s.ops.lock().expect("ops").values().any(|o| !o.ended() || o.detached_since().is_none());
                let keep = busy || idle < self.expiry.session;
                if !keep {
                    gone.push(s.clone());
                }
                keep
            });
        }
        for s in &gone {
            tracing::info!(user = %s.user, session = %s.id, "released an idle Spark Connect session");
            for (_, op) in s.ops.lock().expect("ops").drain() {
                op.interrupt();
            }
            // Its record goes too (a client back after this starts over).
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (nn, user, id) = (s.nn.clone(), s.user.clone(), s.id.clone());
                rt.spawn(async move {
                    if let Err(e) = sessions::remove(&nn, &user, &id).await {
                        tracing::warn!(%user, session = %id, error = %e, "could not remove an expired session's record");
                    }
                });
            }
        }
        let sessions: Vec<Arc<Session>> = self.sessions.lock().expect("sessions").values().cloned().collect();
        for s in sessions {
            let mut ops = s.ops.lock().expect("ops");
            ops.retain(|id, op| {
                let Some(since) = op.detached_since() else { return true };
                if now.duration_since(since) < self.expiry.detached_operation {
                    return true;
                }
                if !op.ended() {
                    tracing::info!(user = %s.user, operation = %id, "interrupted an operation its client left");
                    op.interrupt();
                }
                false
            });
        }
    }
}

/// One client session (`session_id`) of one user.
pub(crate) struct Session {
    id: String,
    server_id: String,
    pub(crate) user: String,
    conf: Mutex<BTreeMap<String, String>>,
    pub(crate) views: Mutex<HashMap<String, LogicalPlan>>,
    /// Each view's relation as the client sent it (protobuf) and the database current
    /// then, numbered in the order the views were made: what the record keeps of them.
    view_defs: Mutex<HashMap<String, ViewDef>>,
    ops: Mutex<HashMap<String, Arc<Op>>>,
    /// The cluster as the user.
    pub(crate) nn: Arc<NamenodeClient>,
    stores: Arc<TarnStores>,
    /// The table catalog as the user.
    pub(crate) catalog: tarn_jobs::catalog::Catalog,
    /// The current database (`USE db`).
    pub(crate) database: Mutex<String>,
    /// When a request last named the session.
    last_used: Mutex<Instant>,
}

/// What a session's record keeps of a temp view.
struct ViewDef {
    /// Its place in the order the views were made.
    n: u64,
    relation: Vec<u8>,
    database: String,
}

impl Session {
    fn new(id: &str, user: &str, nn: Arc<NamenodeClient>, record: &SessionRecord) -> Session {
        Session {
            id: id.to_string(),
            server_id: record.server_id.clone(),
            user: user.to_string(),
            conf: Mutex::new(record.conf.clone()),
            views: Mutex::default(),
            view_defs: Mutex::default(),
            ops: Mutex::default(),
            nn: nn.clone(),
            catalog: tarn_jobs::catalog::Catalog::new(nn.clone()),
            database: Mutex::new(record.database.clone()),
            stores: TarnStores::new(nn),
            last_used: Mutex::new(Instant::now()),
        }
    }

    /// Makes or replaces the temp view `name` (names ignore case), `plan` planned from
    /// `relation`.
    pub(crate) fn set_view(&self, name: &str, plan: LogicalPlan, relation: &sc::Relation) {
        use prost::Message;
        let key = name.to_lowercase();
        self.views.lock().expect("views").insert(key.clone(), plan);
        let db = self.database.lock().expect("database").clone();
        let mut defs = self.view_defs.lock().expect("view defs");
        let n = defs.values().map(|d| d.n).max().unwrap_or(0) + 1;
        defs.insert(key, ViewDef { n, relation: relation.encode_to_vec(), database: db });
    }

    /// Drops the temp view `name`; whether there was one.
    pub(crate) fn drop_view(&self, name: &str) -> bool {
        let key = name.to_lowercase();
        self.view_defs.lock().expect("view defs").remove(&key);
        self.views.lock().expect("views").remove(&key).is_some()
    }

    /// What is kept of the session beyond the endpoint's memory.
    fn record(&self) -> SessionRecord {
        let mut views: Vec<(u64, StoredView)> = self
            .view_defs
            .lock()
            .expect("view defs")
            .iter()
            .map(|(name, d)| (d.n, StoredView::new(name, &d.relation, &d.database)))
            .collect();
        views.sort_by_key(|(n, _)| *n);
        SessionRecord {
            format: SessionRecord::FORMAT,
            server_id: self.server_id.clone(),
            conf: self.conf.lock().expect("conf").clone(),
            database: self.database.lock().expect("database").clone(),
            views: views.into_iter().map(|(_, v)| v).collect(),
        }
    }
}

/// An operation's responses, from the first not yet released.
#[derive(Default)]
struct OpBuf {
    kept: VecDeque<sc::ExecutePlanResponse>,
    /// Index of `kept[0]` among all the operation's responses.
    first: usize,
    /// The index of every response sent (released ones too: a client reattaches after
    /// the last response it saw, which it may have released already).
    index: HashMap<String, usize>,
    /// Set when the operation ended: `Ok` after its last response, or its error.
    end: Option<Result<(), Status>>,
}

struct Op {
    buf: Mutex<OpBuf>,
    changed: Notify,
    tags: Vec<String>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
    /// Streams following the operation, and since when none has.
    followers: Mutex<(usize, Option<Instant>)>,
}

impl Op {
    fn new(tags: Vec<String>) -> Op {
        Op {
            buf: Mutex::default(),
            changed: Notify::new(),
            tags,
            task: Mutex::new(None),
            followers: Mutex::new((0, Some(Instant::now()))),
        }
    }

    /// Since when no stream follows the operation (`None` while one does).
    fn detached_since(&self) -> Option<Instant> {
        self.followers.lock().expect("followers").1
    }

    fn push(&self, r: sc::ExecutePlanResponse) {
        let mut b = self.buf.lock().expect("op");
        let i = b.first + b.kept.len();
        b.index.insert(r.response_id.clone(), i);
        b.kept.push_back(r);
        drop(b);
        self.changed.notify_waiters();
    }

    fn finish(&self, end: Result<(), Status>) {
        self.buf.lock().expect("op").end.get_or_insert(end);
        self.changed.notify_waiters();
    }

    fn ended(&self) -> bool {
        self.buf.lock().expect("op").end.is_some()
    }

    fn interrupt(&self) {
        if let Some(t) = self.task.lock().expect("op task").take() {
            t.abort();
        }
        self.finish(Err(SparkError::analysis("OPERATION_CANCELED", "the operation was interrupted").to_status()));
    }
}

type RespStream = Pin<Box<dyn Stream<Item = Result<sc::ExecutePlanResponse, Status>> + Send>>;

/// The responses of `op` from index `from` on, as they come.
fn follow(op: Arc<Op>, from: usize) -> RespStream {
    Box::pin(async_stream(Arc::new(Follower::new(op)), from))
}

/// A stream's hold on its operation: counted while the stream lives.
struct Follower(Arc<Op>);

impl Follower {
    fn new(op: Arc<Op>) -> Follower {
        let mut f = op.followers.lock().expect("followers");
        f.0 += 1;
        f.1 = None;
        drop(f);
        Follower(op)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let mut f = self.0.followers.lock().expect("followers");
        f.0 -= 1;
        if f.0 == 0 {
            f.1 = Some(Instant::now());
        }
    }
}

impl std::ops::Deref for Follower {
    type Target = Op;
    fn deref(&self) -> &Op {
        &self.0
    }
}

fn async_stream(op: Arc<Follower>, at: usize) -> impl Stream<Item = Result<sc::ExecutePlanResponse, Status>> + Send {
    futures::stream::unfold((op, at, false), move |(op, at, done)| async move {
        if done {
            return None;
        }
        loop {
            let waiting = op.changed.notified();
            {
                let b = op.buf.lock().expect("op");
                if at < b.first {
                    let e = SparkError::analysis(
                        "INVALID_CURSOR.POSITION_NOT_AVAILABLE",
                        "the position was released by the client",
                    );
                    return Some((Err(e.to_status()), (op.clone(), at, true)));
                }
                if let Some(r) = b.kept.get(at - b.first) {
                    return Some((Ok(r.clone()), (op.clone(), at + 1, false)));
                }
                match &b.end {
                    Some(Ok(())) => return None,
                    Some(Err(s)) => return Some((Err(s.clone()), (op.clone(), at, true))),
                    None => {}
                }
            }
            waiting.await;
        }
    })
}

fn new_id() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Settings whose other values would change results: Tarn computes with these only.
const FIXED_CONF: &[(&str, &str)] =
    &[("spark.sql.session.timeZone", "UTC"), ("spark.sql.ansi.enabled", "false"), ("spark.sql.caseSensitive", "false")];

/// The configuration PySpark reads, with Spark's defaults.
fn default_conf() -> BTreeMap<String, String> {
    [
        ("spark.sql.session.timeZone", "UTC"),
        ("spark.sql.connect.compression.codec", "none"),
        ("spark.connect.session.planCompression.threshold", "-1"),
        ("spark.sql.execution.arrow.pyspark.enabled", "true"),
        ("spark.sql.execution.arrow.pyspark.fallback.enabled", "false"),
        ("spark.sql.execution.arrow.maxRecordsPerBatch", "10000"),
        ("spark.sql.execution.pandas.convertToArrowArraySafely", "false"),
        ("spark.sql.execution.pythonUDF.arrow.enabled", "false"),
        ("spark.sql.pyspark.inferNestedDictAsStruct.enabled", "false"),
        ("spark.sql.pyspark.legacy.inferArrayTypeFromFirstElement.enabled", "false"),
        ("spark.sql.pyspark.jvmStacktrace.enabled", "false"),
        ("spark.sql.connect.serverStacktrace.enabled", "false"),
        ("spark.python.sql.dataFrameDebugging.enabled", "false"),
        // Integer arithmetic wraps and division by zero is NULL, as Spark without ANSI.
        ("spark.sql.ansi.enabled", "false"),
        ("spark.sql.caseSensitive", "false"),
        ("spark.sql.repl.eagerEval.enabled", "false"),
        ("spark.sql.repl.eagerEval.maxNumRows", "20"),
        ("spark.sql.repl.eagerEval.truncate", "20"),
        ("spark.sql.timestampType", "TIMESTAMP_LTZ"),
        ("spark.sql.shuffle.partitions", "200"),
        ("spark.connect.session.planCompression.defaultAlgorithm", "NONE"),
        ("spark.sql.execution.pandas.structHandlingMode", "legacy"),
        ("spark.sql.execution.arrow.pyspark.selfDestruct.enabled", "false"),
        ("spark.sql.execution.pyspark.binaryAsBytes", "true"),
        ("spark.sql.session.localRelationCacheThreshold", "67108864"),
        ("spark.sql.session.localRelationSizeLimit", "2147483647"),
        ("spark.sql.pyspark.legacy.inferMapTypeFromFirstPair.enabled", "false"),
        ("spark.sql.session.localRelationChunkSizeRows", "10000"),
        ("spark.sql.session.localRelationChunkSizeBytes", "16777216"),
        ("spark.sql.session.localRelationBatchOfChunksSizeBytes", "134217728"),
        ("spark.sql.execution.arrow.useLargeVarTypes", "false"),
        ("spark.sql.execution.pandas.inferPandasDictAsMap", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

impl Endpoint {
    /// The user a request acts as: its bearer token (`ACCESS_KEY:SECRET`, an S3 key of
    /// Tarn's), or the dev user without TLS.
    async fn user<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let Some(token) = token else {
            return match &self.dev_user {
                Some(u) => Ok(u.clone()),
                None => Err(Status::unauthenticated(
                    "a token is required: connect with sc://HOST:PORT/;use_ssl=true;token=ACCESS_KEY:SECRET",
                )),
            };
        };
        let (ak, secret) = token
            .split_once(':')
            .ok_or_else(|| Status::unauthenticated("the token is not ACCESS_KEY:SECRET (an S3 key of the cluster)"))?;
        let id = match self.keys.identity(ak).await {
            Ok(Some(id)) => id,
            Ok(None) => return Err(Status::unauthenticated("the token does not match a key of the cluster")),
            Err(e) => {
                tracing::warn!(error = %e, "access key lookup failed");
                return Err(Status::unavailable(format!("the token could not be checked: {e}")));
            }
        };
        if !tarn_gateway::ct_eq(id.secret.as_bytes(), secret.as_bytes()) {
            return Err(Status::unauthenticated("the token does not match a key of the cluster"));
        }
        Ok(id.user)
    }

    /// The caller's session `session_id`: in this endpoint's memory, else continued from
    /// its record (kept in the cluster: the endpoint restarted, or the client came from
    /// another master's), else made (and its record kept) if `create`. A client that saw
    /// another server-side session than the one kept is told its session changed.
    ///
    /// Requests that only follow operations (reattach, release, interrupt, error details)
    /// do not make a session: the client's asynchronous ReleaseExecute after its
    /// ReleaseSession would otherwise bring the session back.
    async fn session(
        &self,
        user: &str,
        session_id: &str,
        observed: Option<&str>,
        create: bool,
    ) -> Result<Arc<Session>, Status> {
        if session_id.is_empty() {
            return Err(SparkError::invalid("a request without a session_id").to_status());
        }
        let changed = |o: &str| {
            SparkError::analysis(
                "INVALID_HANDLE.SESSION_CHANGED",
                format!("The existing Spark server driver instance has restarted (session {o} is gone); reconnect."),
            )
            .to_status()
        };
        let observed = observed.filter(|o| !o.is_empty());
        let key = (user.to_string(), session_id.to_string());
        if let Some(s) = self.sessions.lock().expect("sessions").get(&key) {
            *s.last_used.lock().expect("last used") = Instant::now();
            if let Some(o) = observed.filter(|o| *o != s.server_id) {
                return Err(changed(o));
            }
            return Ok(s.clone());
        }
        let nn = Arc::new(self.nn.for_user(user));
        let kept = sessions::load(&nn, user, session_id).await.map_err(|e| e.to_status())?;
        let (s, made) = match kept {
            Some(r) => {
                if let Some(o) = observed.filter(|o| *o != r.server_id) {
                    return Err(changed(o));
                }
                let s = Arc::new(Session::new(session_id, user, nn, &r));
                self.restore_views(&s, &r).await.map_err(|e| e.to_status())?;
                tracing::info!(%user, session = %session_id, views = r.views.len(), "continued a kept Spark Connect session");
                (s, false)
            }
            None => {
                if let Some(o) = observed {
                    return Err(changed(o));
                }
                if !create {
                    return Err(SparkError::analysis(
                        "INVALID_HANDLE.SESSION_NOT_FOUND",
                        format!("Session {session_id} was not found."),
                    )
                    .to_status());
                }
                let r = SessionRecord {
                    format: SessionRecord::FORMAT,
                    server_id: new_id(),
                    conf: default_conf(),
                    database: tarn_jobs::catalog::DEFAULT_DATABASE.into(),
                    views: Vec::new(),
                };
                (Arc::new(Session::new(session_id, user, nn, &r)), true)
            }
        };
        // Two first requests may race: the first one in stays, and is what is kept.
        let winner = self.sessions.lock().expect("sessions").entry(key).or_insert_with(|| s.clone()).clone();
        if made || !Arc::ptr_eq(&winner, &s) {
            self.persist(&winner).await.map_err(|e| e.to_status())?;
        }
        Ok(winner)
    }

    /// Plans a kept session's temp views again, in the order they were made, each in the
    /// database current when it was made (a view that names a later one waits for it). A
    /// view that no longer plans (its source is gone) is dropped, with a warning, rather
    /// than the session.
    async fn restore_views(&self, s: &Session, r: &SessionRecord) -> Result<(), SparkError> {
        use prost::Message;
        let mut pending: Vec<&StoredView> = r.views.iter().collect();
        while !pending.is_empty() {
            let mut left = Vec::new();
            let mut last_err = None;
            for v in &pending {
                let rel = sc::Relation::decode(v.relation()?.as_slice())
                    .map_err(|e| SparkError::internal(format!("the kept view {}: {e}", v.name)))?;
                // The session is not shared yet: its database may change for a moment.
                *s.database.lock().expect("database") = v.database.clone().unwrap_or_else(|| r.database.clone());
                let ctx = self.context(s)?;
                let home = home(&s.user);
                match (Planner { ctx: &ctx, home: &home, nn: &s.nn }).relation(&rel).await {
                    Ok(plan) => s.set_view(&v.name, plan, &rel),
                    Err(e) => {
                        left.push(*v);
                        last_err = Some(e);
                    }
                }
            }
            if left.len() == pending.len() {
                let names: Vec<&str> = left.iter().map(|v| v.name.as_str()).collect();
                let why = last_err.map(|e| e.message).unwrap_or_default();
                tracing::warn!(user = %s.user, session = %s.id, views = %names.join(", "), error = %why,
                    "temp views of a kept session no longer plan: dropped");
                break;
            }
            pending = left;
        }
        *s.database.lock().expect("database") = r.database.clone();
        Ok(())
    }

    /// Keeps the session's state (after a change) for a restarted or another endpoint.
    pub(crate) async fn persist(&self, s: &Session) -> Result<(), SparkError> {
        sessions::save(&s.nn, &s.user, &s.id, &s.record()).await
    }

    /// A DataFusion context with the session's stores, catalog and views, for planning.
    pub(crate) fn context(&self, s: &Session) -> Result<SessionContext, SparkError> {
        let mut config = tarn_jobs::spec::session_config(None);
        // Spark's order in SQL too: nulls first in ascending sorts.
        config.options_mut().sql_parser.default_null_ordering = "nulls_min".into();
        let state = tarn_jobs::spec::session_state(s.stores.clone(), config).map_err(SparkError::from_datafusion)?;
        let ctx = SessionContext::new_with_state(plan::with_spark_names(state)?);
        let db = s.database.lock().expect("database").clone();
        tarn_jobs::catalog::register(&ctx, s.nn.clone(), &db).map_err(SparkError::from_datafusion)?;
        plan::register_views(&ctx, &s.views.lock().expect("views"))?;
        Ok(ctx)
    }
}

pub(crate) fn home(user: &str) -> String {
    format!("/user/{user}")
}

/// Arrow IPC stream bytes of `batch` (schema first).
fn ipc(schema: &SchemaRef, batch: Option<&RecordBatch>) -> Result<Bytes, SparkError> {
    // (Always called with a batch; `None` writes a bare schema.)
    let err = |e: datafusion::arrow::error::ArrowError| SparkError::internal(format!("encode results: {e}"));
    let mut w = StreamWriter::try_new(Vec::new(), schema).map_err(err)?;
    if let Some(b) = batch {
        w.write(b).map_err(err)?;
    }
    w.finish().map_err(err)?;
    Ok(Bytes::from(w.into_inner().map_err(err)?))
}

/// Builds responses of one operation.
pub(crate) struct Responder<'a> {
    pub(crate) s: &'a Session,
    op_id: String,
    op: Arc<Op>,
}

impl Responder<'_> {
    fn send(&self, t: ResponseType, schema: Option<sc::DataType>) {
        self.op.push(sc::ExecutePlanResponse {
            session_id: self.s.id.clone(),
            server_side_session_id: self.s.server_id.clone(),
            operation_id: self.op_id.clone(),
            response_id: new_id(),
            response_type: Some(t),
            schema,
            ..Default::default()
        });
    }

    /// How far the job got, as Spark's ExecutionProgress: its stages with their tasks
    /// and the bytes their scans read.
    fn progress(&self, p: &RunProgress) {
        use sc::execute_plan_response::execution_progress::StageInfo;
        let stages = p
            .stage_list
            .iter()
            .map(|s| StageInfo {
                stage_id: s.stage as i64,
                num_tasks: s.tasks as i64,
                num_completed_tasks: s.tasks_done as i64,
                input_bytes_read: s.bytes_read as i64,
                done: s.done,
            })
            .collect();
        let num_inflight_tasks = p.stage_list.iter().map(|s| s.tasks_running as i64).sum();
        self.send(
            ResponseType::ExecutionProgress(sc::execute_plan_response::ExecutionProgress {
                stages,
                num_inflight_tasks,
            }),
            None,
        );
    }

    /// Rows as `ArrowBatch`es (an empty one when there are none, for the schema).
    fn rows(&self, schema: &Schema, batches: &[RecordBatch]) -> Result<(), SparkError> {
        let out_schema = types::spark_schema(schema);
        let spark = types::schema_to_spark(&out_schema)?;
        let mut first = Some(spark);
        let mut offset = 0i64;
        for b in batches {
            let b = types::for_spark(b, &out_schema)?;
            // About BATCH_BYTES a message (the client takes 128 MiB at most).
            let per_row = b.get_array_memory_size() / b.num_rows().max(1);
            let rows = (BATCH_BYTES / per_row.max(1)).clamp(1, BATCH_ROWS);
            let mut at = 0;
            while at < b.num_rows() {
                let n = rows.min(b.num_rows() - at);
                let piece = b.slice(at, n);
                let data = ipc(&out_schema, Some(&piece))?;
                self.send(
                    ResponseType::ArrowBatch(sc::execute_plan_response::ArrowBatch {
                        row_count: n as i64,
                        data,
                        start_offset: Some(offset),
                        ..Default::default()
                    }),
                    first.take(),
                );
                offset += n as i64;
                at += n;
            }
        }
        if offset == 0 {
            // A batch of no rows, not a bare schema: the client needs one batch.
            let data = ipc(&out_schema, Some(&RecordBatch::new_empty(out_schema.clone())))?;
            self.send(
                ResponseType::ArrowBatch(sc::execute_plan_response::ArrowBatch {
                    row_count: 0,
                    data,
                    start_offset: Some(0),
                    ..Default::default()
                }),
                first.take(),
            );
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl SparkConnectService for Arc<Endpoint> {
    type ExecutePlanStream = RespStream;
    type ReattachExecuteStream = RespStream;

    async fn execute_plan(
        &self,
        req: Request<sc::ExecutePlanRequest>,
    ) -> Result<Response<Self::ExecutePlanStream>, Status> {
        let user = self.user(&req).await?;
        let req = req.into_inner();
        let s =
            self.session(&user, &req.session_id, req.client_observed_server_side_session_id.as_deref(), true).await?;
        let op_id = req.operation_id.clone().filter(|o| !o.is_empty()).unwrap_or_else(new_id);
        let op = Arc::new(Op::new(req.tags.clone()));
        {
            let mut ops = s.ops.lock().expect("ops");
            if ops.contains_key(&op_id) {
                return Err(SparkError::analysis(
                    "INVALID_HANDLE.OPERATION_ALREADY_EXISTS",
                    format!("Operation {op_id} already exists."),
                )
                .to_status());
            }
            if ops.len() >= OPS_MAX {
                // Forget finished operations the client never released.
                let done: Vec<String> = ops.iter().filter(|(_, o)| o.ended()).map(|(k, _)| k.clone()).collect();
                for k in done {
                    ops.remove(&k);
                }
            }
            ops.insert(op_id.clone(), op.clone());
        }
        let plan = req.plan.unwrap_or_default();
        let reattachable = req.request_options.iter().any(|o| {
            matches!(&o.request_option, Some(sc::execute_plan_request::request_option::RequestOption::ReattachOptions(r)) if r.reattachable)
        });
        let endpoint = self.clone();
        let (s2, op2, id2) = (s.clone(), op.clone(), op_id.clone());
        let task = tokio::spawn(async move {
            let r = Responder { s: &s2, op_id: id2, op: op2.clone() };
            let result = endpoint.execute(&r, plan).await;
            match result {
                Ok(()) => {
                    r.send(ResponseType::ResultComplete(Default::default()), None);
                    op2.finish(Ok(()));
                }
                Err(e) => {
                    tracing::info!(user = %s2.user, error = %e, "a Spark Connect operation failed");
                    op2.finish(Err(e.to_status()));
                }
            }
        });
        *op.task.lock().expect("op task") = Some(task.abort_handle());
        // A task that panicked still ends its operation (the client would wait forever).
        let (s3, op3, id3) = (s.clone(), op.clone(), op_id.clone());
        tokio::spawn(async move {
            if let Err(e) = task.await {
                if e.is_panic() {
                    tracing::error!(user = %s3.user, operation = %id3, "a Spark Connect operation panicked");
                    op3.finish(Err(SparkError::internal("the operation failed inside the endpoint").to_status()));
                }
            }
            // Nobody reattaches to an operation that is not reattachable: once its
            // stream is read it is forgotten.
            if !reattachable {
                s3.ops.lock().expect("ops").remove(&id3);
            }
        });
        Ok(Response::new(follow(op, 0)))
    }

    async fn analyze_plan(
        &self,
        req: Request<sc::AnalyzePlanRequest>,
    ) -> Result<Response<sc::AnalyzePlanResponse>, Status> {
        use sc::analyze_plan_request::Analyze;
        use sc::analyze_plan_response as ar;
        let user = self.user(&req).await?;
        let req = req.into_inner();
        let s =
            self.session(&user, &req.session_id, req.client_observed_server_side_session_id.as_deref(), true).await?;
        let Some(a) = req.analyze else {
            return Err(SparkError::invalid("an analyze request without a question").into());
        };
        let result = match a {
            Analyze::SparkVersion(_) => ar::Result::SparkVersion(ar::SparkVersion { version: SPARK_VERSION.into() }),
            Analyze::Schema(p) => {
                let plan = self.logical(&s, p.plan.as_ref()).await?;
                let out = types::spark_schema(plan.schema().as_arrow());
                ar::Result::Schema(ar::Schema { schema: Some(types::schema_to_spark(&out)?) })
            }
            Analyze::TreeString(p) => {
                let plan = self.logical(&s, p.plan.as_ref()).await?;
                ar::Result::TreeString(ar::TreeString { tree_string: tree_string(plan.schema().as_arrow()) })
            }
            Analyze::Explain(p) => {
                let plan = self.logical(&s, p.plan.as_ref()).await?;
                let ctx = self.context(&s)?;
                let optimized = ctx.state().optimize(&plan).map_err(SparkError::from_datafusion)?;
                ar::Result::Explain(ar::Explain {
                    explain_string: format!(
                        "== Logical Plan ==\n{}\n== Optimized Logical Plan ==\n{}\n",
                        plan.display_indent(),
                        optimized.display_indent()
                    ),
                })
            }
            Analyze::IsLocal(_) => ar::Result::IsLocal(ar::IsLocal { is_local: false }),
            Analyze::IsStreaming(_) => ar::Result::IsStreaming(ar::IsStreaming { is_streaming: false }),
            Analyze::InputFiles(p) => {
                let plan = self.logical(&s, p.plan.as_ref()).await?;
                ar::Result::InputFiles(ar::InputFiles { files: input_files(&plan) })
            }
            Analyze::DdlParse(d) => {
                let schema = plan::ddl_schema(&d.ddl_string)?;
                ar::Result::DdlParse(ar::DdlParse { parsed: Some(types::schema_to_spark(&schema)?) })
            }
            Analyze::SameSemantics(p) => {
                let a = self.logical(&s, p.target_plan.as_ref()).await?;
                let b = self.logical(&s, p.other_plan.as_ref()).await?;
                ar::Result::SameSemantics(ar::SameSemantics { result: a == b })
            }
            Analyze::SemanticHash(p) => {
                use std::hash::{Hash, Hasher};
                let plan = self.logical(&s, p.plan.as_ref()).await?;
                let mut h = std::collections::hash_map::DefaultHasher::new();
                plan.hash(&mut h);
                ar::Result::SemanticHash(ar::SemanticHash { result: h.finish() as i32 })
            }
            // Nothing is cached: persisting is accepted and changes nothing.
            Analyze::Persist(_) => ar::Result::Persist(ar::Persist {}),
            Analyze::Unpersist(_) => ar::Result::Unpersist(ar::Unpersist {}),
            Analyze::GetStorageLevel(_) => ar::Result::GetStorageLevel(ar::GetStorageLevel {
                storage_level: Some(sc::StorageLevel {
                    use_disk: false,
                    use_memory: false,
                    use_off_heap: false,
                    deserialized: false,
                    replication: 1,
                }),
            }),
            Analyze::JsonToDdl(_) => return Err(SparkError::unsupported("JSON schema strings").into()),
        };
        Ok(Response::new(sc::AnalyzePlanResponse {
            session_id: s.id.clone(),
            server_side_session_id: s.server_id.clone(),
            result: Some(result),
        }))
    }

    async fn config(&self, req: Request<sc::ConfigRequest>) -> Result<Response<sc::ConfigResponse>, Status> {
        use sc::config_request::operation::OpType;
        let user = self.user(&req).await?;
        let req = req.into_inner();
        let s =
            self.session(&user, &req.session_id, req.client_observed_server_side_session_id.as_deref(), true).await?;
        let op = req
            .operation
            .and_then(|o| o.op_type)
            .ok_or_else(|| SparkError::invalid("a config request without an operation"))?;
        let kv = |k: &str, v: Option<String>| sc::KeyValue { key: k.to_string(), value: v };
        let mut warnings = Vec::new();
        let mut changed = false;
        let pairs = {
            let mut conf = s.conf.lock().expect("conf");
            match op {
                OpType::Set(set) => {
                    for p in &set.pairs {
                        if let (Some(fixed), Some(v)) = (FIXED_CONF.iter().find(|(k, _)| *k == p.key), &p.value) {
                            if !v.eq_ignore_ascii_case(fixed.1) {
                                return Err(SparkError::unsupported(format!(
                                    "{} = {v} (Tarn runs with {})",
                                    p.key, fixed.1
                                ))
                                .into());
                            }
                        }
                    }
                    for p in set.pairs {
                        match p.value {
                            Some(v) => conf.insert(p.key, v),
                            None => conf.remove(&p.key),
                        };
                    }
                    changed = true;
                    Vec::new()
                }
                // Every key asked for gets a pair (the client indexes the answer by key); an
                // unknown one without a value.
                OpType::Get(g) => g.keys.iter().map(|k| kv(k, conf.get(k).cloned())).collect(),
                OpType::GetWithDefault(g) => g
                    .pairs
                    .into_iter()
                    .map(|p| {
                        let v = conf.get(&p.key).cloned().or(p.value);
                        kv(&p.key, v)
                    })
                    .collect(),
                OpType::GetOption(g) => g.keys.iter().map(|k| kv(k, conf.get(k).cloned())).collect(),
                OpType::GetAll(g) => {
                    let prefix = g.prefix.unwrap_or_default();
                    conf.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(k, v)| kv(k, Some(v.clone()))).collect()
                }
                OpType::Unset(u) => {
                    for k in u.keys {
                        conf.remove(&k);
                    }
                    changed = true;
                    Vec::new()
                }
                OpType::IsModifiable(m) => m
                    .keys
                    .iter()
                    .map(|k| {
                        let modifiable = k.starts_with("spark.sql.");
                        if !modifiable {
                            warnings.push(format!("{k} is a static setting"));
                        }
                        kv(k, Some(modifiable.to_string()))
                    })
                    .collect(),
            }
        };
        if changed {
            self.persist(&s).await.map_err(|e| e.to_status())?;
        }
        Ok(Response::new(sc::ConfigResponse {
            session_id: s.id.clone(),
            server_side_session_id: s.server_id.clone(),
            pairs,
            warnings,
        }))
    }

    async fn add_artifacts(
        &self,
        req: Request<Streaming<sc::AddArtifactsRequest>>,
    ) -> Result<Response<sc::AddArtifactsResponse>, Status> {
        self.user(&req).await?;
        let mut stream = req.into_inner();
        let mut names = Vec::new();
        while let Some(m) = stream.message().await? {
            match m.payload {
                Some(sc::add_artifacts_request::Payload::Batch(b)) => {
                    names.extend(b.artifacts.into_iter().map(|a| a.name))
                }
                Some(sc::add_artifacts_request::Payload::BeginChunk(b)) => names.push(b.name),
                _ => {}
            }
        }
        Err(SparkError::not_supported_op(format!(
            "Tarn runs no JVM or Python code shipped by clients (artifacts {}): use DataFrame operations and SQL",
            names.join(", ")
        ))
        .into())
    }

    async fn artifact_status(
        &self,
        req: Request<sc::ArtifactStatusesRequest>,
    ) -> Result<Response<sc::ArtifactStatusesResponse>, Status> {
        let user = self.user(&req).await?;
        let req = req.into_inner();
        let s =
            self.session(&user, &req.session_id, req.client_observed_server_side_session_id.as_deref(), true).await?;
        let statuses = req
            .names
            .into_iter()
            .map(|n| (n, sc::artifact_statuses_response::ArtifactStatus { exists: false }))
            .collect();
        Ok(Response::new(sc::ArtifactStatusesResponse {
            session_id: s.id.clone(),
            server_side_session_id: s.server_id.clone(),
            statuses,
        }))
    }

    async fn interrupt(&self, req: Request<sc::InterruptRequest>) -> Result<Response<sc::InterruptResponse>, Status> {
        use sc::interrupt_request::{Interrupt, InterruptType};
        let user = self.user(&req).await?;
        let req = req.into_inner();
        let s =
            self.session(&user, &req.session_id, req.client_observed_server_side_session_id.as_deref(), false).await?;
        let kind = InterruptType::try_from(req.interrupt_type).unwrap_or(InterruptType::Unspecified);
        let ops: Vec<(String, Arc<Op>)> =
            s.ops.lock().expect("ops").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut interrupted = Vec::new();
        for (id, op) in ops {
            let hit = match (kind, &req.interrupt) {
                (InterruptType::All, _) => true,
                (InterruptType::Tag, Some(Interrupt::OperationTag(t))) => op.tags.contains(t),
                (InterruptType::OperationId, Some(Interrupt::OperationId(o))) => &id == o,
                _ => false,
            };
            if hit && !op.ended() {
                op.interrupt();
                interrupted.push(id);
            }
        }
        Ok(Response::new(sc::InterruptResponse {
            session_id: s.id.clone(),
            server_side_session_id: s.server_id.clone(),
            interrupted_ids: interrupted,
        }))
    }

    async fn reattach_execute(
        &self,
        req: Request<sc::ReattachExecuteRequest>,
    ) -> Result<Response<Self::ReattachExecuteStream>, Status> {
        let user = self.user(&req).await?;
        let req = req.into_inner();
        let s =
            self.session(&user, &req.session_id, req.client_observed_server_side_session_id.as_deref(), false).await?;
        let op = s.ops.lock().expect("ops").get(&req.operation_id).cloned().ok_or_else(|| {
            SparkError::analysis(
                "INVALID_HANDLE.OPERATION_NOT_FOUND",
                format!("Operation {} is not known (released, or the endpoint restarted).", req.operation_id),
            )
            .to_status()
        })?;
        let from = {
            let b = op.buf.lock().expect("op");
            match req.last_response_id.as_deref().filter(|r| !r.is_empty()) {
                None => b.first,
                Some(last) => match b.index.get(last) {
                    Some(&i) if i + 1 >= b.first => i + 1,
                    _ => {
                        return Err(SparkError::analysis(
                            "INVALID_CURSOR.POSITION_NOT_AVAILABLE",
                            format!("Response {last} of operation {} is no longer kept.", req.operation_id),
                        )
                        .to_status())
                    }
                },
            }
        };
        Ok(Response::new(follow(op, from)))
    }

    async fn release_execute(
        &self,
        req: Request<sc::ReleaseExecuteRequest>,
    ) -> Result<Response<sc::ReleaseExecuteResponse>, Status> {
        use sc::release_execute_request::Release;
        let user = self.user(&req).await?;
        let req = req.into_inner();
        let s =
            self.session(&user, &req.session_id, req.client_observed_server_side_session_id.as_deref(), false).await?;
        let op = s.ops.lock().expect("ops").get(&req.operation_id).cloned();
        if let Some(op) = op {
            match req.release {
                Some(Release::ReleaseUntil(u)) => {
                    let mut b = op.buf.lock().expect("op");
                    if let Some(&i) = b.index.get(&u.response_id) {
                        let n = (i + 1).saturating_sub(b.first).min(b.kept.len());
                        b.kept.drain(..n);
                        b.first += n;
                    }
                }
                _ => {
                    if !op.ended() {
                        op.interrupt();
                    }
                    s.ops.lock().expect("ops").remove(&req.operation_id);
                }
            }
        }
        Ok(Response::new(sc::ReleaseExecuteResponse {
            session_id: s.id.clone(),
            server_side_session_id: s.server_id.clone(),
            operation_id: Some(req.operation_id),
        }))
    }

    async fn release_session(
        &self,
        req: Request<sc::ReleaseSessionRequest>,
    ) -> Result<Response<sc::ReleaseSessionResponse>, Status> {
        let user = self.user(&req).await?;
        let req = req.into_inner();
        let gone = self.sessions.lock().expect("sessions").remove(&(user.clone(), req.session_id.clone()));
        // Forgotten by every endpoint: its record goes too.
        let nn = self.nn.for_user(&user);
        if let Err(e) = sessions::remove(&nn, &user, &req.session_id).await {
            tracing::warn!(%user, session = %req.session_id, error = %e, "could not remove a released session's record");
        }
        let server_id = match gone {
            Some(s) => {
                for op in s.ops.lock().expect("ops").values() {
                    if !op.ended() {
                        op.interrupt();
                    }
                }
                s.server_id.clone()
            }
            None => String::new(),
        };
        Ok(Response::new(sc::ReleaseSessionResponse { session_id: req.session_id, server_side_session_id: server_id }))
    }

    async fn fetch_error_details(
        &self,
        req: Request<sc::FetchErrorDetailsRequest>,
    ) -> Result<Response<sc::FetchErrorDetailsResponse>, Status> {
        let user = self.user(&req).await?;
        let req = req.into_inner();
        let s =
            self.session(&user, &req.session_id, req.client_observed_server_side_session_id.as_deref(), false).await?;
        // Errors carry everything in their ErrorInfo; none is kept to fetch.
        Ok(Response::new(sc::FetchErrorDetailsResponse {
            session_id: s.id.clone(),
            server_side_session_id: s.server_id.clone(),
            root_error_idx: None,
            errors: Vec::new(),
        }))
    }
}

impl Endpoint {
    async fn logical(&self, s: &Session, plan: Option<&sc::Plan>) -> Result<LogicalPlan, SparkError> {
        let Some(sc::plan::OpType::Root(rel)) = plan.and_then(|p| p.op_type.as_ref()) else {
            return Err(SparkError::invalid("a plan without a relation"));
        };
        let ctx = self.context(s)?;
        let home = home(&s.user);
        Planner { ctx: &ctx, home: &home, nn: &s.nn }.relation(rel).await
    }

    /// Runs one ExecutePlan request's plan, sending its responses.
    async fn execute(&self, r: &Responder<'_>, plan: sc::Plan) -> Result<(), SparkError> {
        use sc::command::CommandType;
        use sc::plan::OpType;
        let s = r.s;
        match plan.op_type {
            Some(OpType::Root(rel)) => {
                if let Some(sc::relation::RelType::ShowString(show)) = &rel.rel_type {
                    return self.show(r, show).await;
                }
                if let Some(sc::relation::RelType::Catalog(c)) = &rel.rel_type {
                    let b = self.catalog_call(s, c).await?;
                    return r.rows(&b.schema(), &[b]);
                }
                let ctx = self.context(s)?;
                let home = home(&s.user);
                let plan = Planner { ctx: &ctx, home: &home, nn: &s.nn }.relation(&rel).await?;
                let res = self.apps.run(&s.user, &plan, &HashMap::new(), &mut |p| r.progress(p)).await?;
                let schema = res.schema.clone().unwrap_or_else(|| Arc::new(plan.schema().as_arrow().clone()));
                r.rows(&schema, &res.batches)
            }
            Some(OpType::Command(cmd)) => match cmd.command_type {
                Some(CommandType::WriteOperation(w)) => self.write(r, &w).await,
                Some(CommandType::CreateDataframeView(v)) => {
                    let input = v.input.ok_or_else(|| SparkError::invalid("a view without a relation"))?;
                    let ctx = self.context(s)?;
                    let home = home(&s.user);
                    let plan = Planner { ctx: &ctx, home: &home, nn: &s.nn }.relation(&input).await?;
                    if !v.replace && s.views.lock().expect("views").contains_key(&v.name.to_lowercase()) {
                        return Err(SparkError::analysis_with(
                            "TEMP_TABLE_OR_VIEW_ALREADY_EXISTS",
                            format!("Cannot create the temporary view `{}` because it already exists.", v.name),
                            "42P07",
                            &[("relationName", format!("`{}`", v.name))],
                        ));
                    }
                    // Names are case-insensitive, as Spark's (and DataFusion's SQL) are.
                    s.set_view(&v.name, plan, &input);
                    self.persist(s).await
                }
                Some(CommandType::SqlCommand(c)) => {
                    #[allow(deprecated)]
                    let text = match c.input.as_ref().and_then(|i| i.rel_type.as_ref()) {
                        Some(sc::relation::RelType::Sql(q)) => Some(q.query.clone()),
                        None if !c.sql.is_empty() => Some(c.sql.clone()),
                        _ => None,
                    };
                    // A catalog statement runs now; its rows (SHOW, DESCRIBE) come back
                    // as a local relation, as Spark's do.
                    if let Some(stmt) = text.as_deref().map(crate::ddl::parse).transpose()?.flatten() {
                        let b = self.catalog_statement(r, stmt).await?;
                        let data = ipc(&b.schema(), Some(&b))?;
                        r.send(
                            ResponseType::SqlCommandResult(sc::execute_plan_response::SqlCommandResult {
                                relation: Some(sc::Relation {
                                    common: None,
                                    rel_type: Some(sc::relation::RelType::LocalRelation(sc::LocalRelation {
                                        data: Some(data),
                                        schema: None,
                                    })),
                                }),
                            }),
                            None,
                        );
                        return Ok(());
                    }
                    let input = match c.input {
                        Some(i) => i,
                        #[allow(deprecated)]
                        None => sc::Relation {
                            common: None,
                            rel_type: Some(sc::relation::RelType::Sql(sc::Sql { query: c.sql, ..Default::default() })),
                        },
                    };
                    // A query is answered with its relation, which the client then runs
                    // (or analyzes) like any DataFrame; it must plan now.
                    let ctx = self.context(s)?;
                    let home = home(&s.user);
                    Planner { ctx: &ctx, home: &home, nn: &s.nn }.relation(&input).await?;
                    r.send(
                        ResponseType::SqlCommandResult(sc::execute_plan_response::SqlCommandResult {
                            relation: Some(input),
                        }),
                        None,
                    );
                    Ok(())
                }
                Some(CommandType::MlCommand(m)) => match m.command {
                    // The client's exit hook: there is no model cache to clean.
                    Some(sc::ml_command::Command::CleanCache(_)) => {
                        r.send(
                            ResponseType::MlCommandResult(sc::MlCommandResult {
                                result_type: Some(sc::ml_command_result::ResultType::Summary(String::new())),
                            }),
                            None,
                        );
                        Ok(())
                    }
                    _ => Err(SparkError::unsupported("Spark ML")),
                },
                Some(other) => Err(SparkError::unsupported(format!("the command {}", command_name(&other)))),
                None => Err(SparkError::invalid("a command without a type")),
            },
            Some(OpType::CompressedOperation(_)) => Err(SparkError::unsupported(
                "compressed plans (set spark.connect.session.planCompression.threshold to -1)",
            )),
            None => Err(SparkError::invalid("a plan without a relation or command")),
        }
    }

    /// `df.show()`: the first rows as Spark's ASCII table, one string.
    async fn show(&self, r: &Responder<'_>, show: &sc::ShowString) -> Result<(), SparkError> {
        let s = r.s;
        let input = show.input.as_deref().ok_or_else(|| SparkError::invalid("show() without a relation"))?;
        let ctx = self.context(s)?;
        let home = home(&s.user);
        let plan = Planner { ctx: &ctx, home: &home, nn: &s.nn }.relation(input).await?;
        let n = show.num_rows.max(0) as usize;
        let limited = LogicalPlanBuilder::from(plan.clone())
            .limit(0, Some(n + 1))
            .and_then(|b| b.build())
            .map_err(SparkError::from_datafusion)?;
        let res = self.apps.run(&s.user, &limited, &HashMap::new(), &mut |p| r.progress(p)).await?;
        let schema = res.schema.clone().unwrap_or_else(|| Arc::new(plan.schema().as_arrow().clone()));
        let text = crate::show::render(&schema, &res.batches, n, show.truncate.max(0) as usize, show.vertical)?;
        let out = Arc::new(Schema::new(vec![Field::new("show_string", DataType::Utf8, false)]));
        let b = RecordBatch::try_new(out.clone(), vec![Arc::new(StringArray::from(vec![text]))])
            .map_err(|e| SparkError::internal(e.to_string()))?;
        r.rows(&out, &[b])
    }

    /// `df.write...save(path)` or `saveAsTable(name)`.
    async fn write(&self, r: &Responder<'_>, w: &sc::WriteOperation) -> Result<(), SparkError> {
        use sc::write_operation::SaveType;
        match &w.save_type {
            Some(SaveType::Path(p)) => self.write_path(r, w, p).await.map(|_| ()),
            Some(SaveType::Table(t)) => self.save_as_table(r, w, t).await,
            None => Err(SparkError::invalid("a write without a path")),
        }
    }

    /// `df.write...save(path)`: a COPY job committed like any job's output; the schema
    /// of the rows written.
    pub(crate) async fn write_path(
        &self,
        r: &Responder<'_>,
        w: &sc::WriteOperation,
        path: &str,
    ) -> Result<Schema, SparkError> {
        use sc::write_operation::SaveMode;
        let s = r.s;
        let path = path.to_string();
        if !w.sort_column_names.is_empty() || w.bucket_by.is_some() || !w.clustering_columns.is_empty() {
            return Err(SparkError::unsupported("bucketBy / sortBy / clusterBy in writes"));
        }
        let input = w.input.as_ref().ok_or_else(|| SparkError::invalid("a write without a relation"))?;
        let format = plan::write_format(w.source.as_deref())?;
        let mut format_options = Vec::new();
        if format == "csv" {
            // Spark writes no header line unless asked.
            format_options.push(("has_header".to_string(), "false".to_string()));
        }
        for (k, v) in &w.options {
            match (format, k.to_ascii_lowercase().as_str()) {
                ("parquet", "compression") => format_options.push(("compression".into(), v.to_ascii_lowercase())),
                ("csv", "header") => format_options.push(("has_header".into(), v.to_ascii_lowercase())),
                ("csv", "sep" | "delimiter") => format_options.push(("delimiter".into(), v.clone())),
                ("parquet" | "csv" | "json", "path") => {}
                _ => return Err(SparkError::unsupported(format!("the {format} write option {k:?}"))),
            };
        }
        let file_type = plan::file_type(format, &format_options)?;
        let mut settings = HashMap::new();
        let mut url = plan::resolve_path(&path, &home(&s.user))?;
        if !url.ends_with('/') {
            url.push('/');
        }
        let Some((target, _)) = tarn_jobs::commit::cluster_path(&url) else {
            return Err(SparkError::unsupported(format!("writing outside the cluster ({path})")));
        };
        let nn = &s.nn;
        let exists = match nn.get_file_info(&target, false).await {
            Ok(st) => st.is_some(),
            Err(e) => return Err(SparkError::internal(format!("look up {target}: {e}"))),
        };
        let mode = SaveMode::try_from(w.mode).unwrap_or(SaveMode::Unspecified);
        if exists {
            match mode {
                SaveMode::Unspecified | SaveMode::ErrorIfExists => {
                    return Err(SparkError::analysis_with(
                        "PATH_ALREADY_EXISTS",
                        format!(
                            "Path {path} already exists. Set mode as \"overwrite\" to overwrite the existing path."
                        ),
                        "42K04",
                        &[("outputPath", path.clone())],
                    ))
                }
                SaveMode::Ignore => return Ok(Schema::empty()),
                // The files go into the directory (see `jobs/commit.rs`).
                SaveMode::Append => {
                    settings.insert(tarn_jobs::commit::APPEND_OPTION.to_string(), "true".to_string());
                }
                SaveMode::Overwrite => {}
            }
        }
        let ctx = self.context(s)?;
        let home = home(&s.user);
        let plan = Planner { ctx: &ctx, home: &home, nn: &s.nn }.relation(input).await?;
        // Rows in the order of a sort stay in order across files only if one writer fills
        // the files one after another.
        if exists && mode == SaveMode::Overwrite {
            let target_url = format!("{}/", target.trim_end_matches('/'));
            let reads_target = input_files(&plan).iter().any(|f| {
                tarn_jobs::commit::cluster_path(f).is_some_and(|(p, _)| {
                    p == target || p.starts_with(&target_url) || target.starts_with(&format!("{p}/"))
                })
            });
            if reads_target {
                return Err(SparkError::analysis_with(
                    "UNSUPPORTED_OVERWRITE.PATH",
                    format!("The target path {path} cannot be overwritten: the query also reads from it."),
                    "42902",
                    &[("path", path.clone())],
                ));
            }
        }
        if ends_in_sort(&plan) {
            settings.insert("datafusion.execution.minimum_parallel_output_files".to_string(), "1".to_string());
        }
        let written = plan.schema().as_arrow().clone();
        let copy = LogicalPlanBuilder::copy_to(plan, url, file_type, HashMap::new(), w.partitioning_columns.clone())
            .and_then(|b| b.build())
            .map_err(SparkError::from_datafusion)?;
        if exists && mode == SaveMode::Overwrite {
            // The new output replaces the old one once it is complete (see `jobs/commit.rs`).
            settings.insert(tarn_jobs::commit::REPLACE_OPTION.to_string(), "true".to_string());
        }
        self.apps.run(&s.user, &copy, &settings, &mut |p| r.progress(p)).await?;
        Ok(written)
    }
}

/// Whether `plan`'s rows come out of a sort (through projections and limits).
fn ends_in_sort(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Sort(_) => true,
        LogicalPlan::Projection(p) => ends_in_sort(&p.input),
        LogicalPlan::Limit(l) => ends_in_sort(&l.input),
        LogicalPlan::SubqueryAlias(a) => ends_in_sort(&a.input),
        _ => false,
    }
}

/// The files (or directories) the scans of `plan` read.
pub(crate) fn input_files(plan: &LogicalPlan) -> Vec<String> {
    let mut out = Vec::new();
    let _ = plan.apply(|p| {
        if let LogicalPlan::TableScan(t) = p {
            if let Ok(provider) = datafusion::datasource::source_as_provider(&t.source) {
                if let Some(l) = provider.downcast_ref::<datafusion::datasource::listing::ListingTable>() {
                    out.extend(l.table_paths().iter().map(|u| u.to_string()));
                }
                if let Some(v) = provider.downcast_ref::<datafusion::catalog::view::ViewTable>() {
                    out.extend(input_files(v.logical_plan()));
                }
            }
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    });
    out
}

/// Spark's `printSchema()` text.
fn tree_string(schema: &Schema) -> String {
    let mut s = String::from("root\n");
    for f in schema.fields() {
        let t =
            types::to_spark(f.data_type()).map(|t| spark_simple_name(&t)).unwrap_or_else(|| f.data_type().to_string());
        s.push_str(&format!(" |-- {}: {} (nullable = {})\n", f.name(), t, f.is_nullable()));
    }
    s
}

fn spark_simple_name(t: &sc::DataType) -> String {
    use sc::data_type::Kind;
    match &t.kind {
        Some(Kind::Boolean(_)) => "boolean".into(),
        Some(Kind::Byte(_)) => "byte".into(),
        Some(Kind::Short(_)) => "short".into(),
        Some(Kind::Integer(_)) => "integer".into(),
        Some(Kind::Long(_)) => "long".into(),
        Some(Kind::Float(_)) => "float".into(),
        Some(Kind::Double(_)) => "double".into(),
        Some(Kind::Decimal(d)) => format!("decimal({},{})", d.precision.unwrap_or(10), d.scale.unwrap_or(0)),
        Some(Kind::String(_)) => "string".into(),
        Some(Kind::Binary(_)) => "binary".into(),
        Some(Kind::Date(_)) => "date".into(),
        Some(Kind::Timestamp(_)) => "timestamp".into(),
        Some(Kind::TimestampNtz(_)) => "timestamp_ntz".into(),
        Some(Kind::Array(_)) => "array".into(),
        Some(Kind::Struct(_)) => "struct".into(),
        Some(Kind::Map(_)) => "map".into(),
        _ => "void".into(),
    }
}

fn command_name(c: &sc::command::CommandType) -> String {
    let d = format!("{c:?}");
    d.split('(').next().unwrap_or("?").to_string()
}
