//! What the resource manager knows of the cluster's compute, and the rules that change it:
//! workers and their liveness, applications and their attempts, containers and where
//! they run. No I/O and no clock of its own (the caller passes `now`), so every rule is
//! unit-tested.
//!
//! An application's master runs in a container on a core worker with room (task nodes may
//! vanish). The master container ending with exit code 0 finishes the application; ending
//! any other way (an exit code, a kill over its memory grant, its worker lost, a failed
//! launch) fails the attempt, and a new attempt starts until `max_attempts` have failed.
//!
//! A master may register and then drive its application (YARN's ApplicationMasterProtocol):
//! it asks for containers of kinds it names (resources, count, hosts, racks, relax
//! locality, label), gets allocations placed node-local, then rack-local, then (if it
//! allows) anywhere, has them started with its commands, releases them, hears of their
//! ends, and finishes the application with its verdict. Only the master container of
//! the latest attempt is heard (fencing); when an attempt ends, the containers it had are
//! stopped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use tarn_client::rm::{
    AllocateCall, AllocateReply, Allocated, AppReport, AppState, AppSubmission, AttemptReport, ContainerAsk,
    ContainerStatus, ExitReason, FinalStatus, MasterRegistration, NodeLabel, Resources, StartContainer, WorkerReport,
    WorkerState,
};
use tarn_proto::ErrorKind;

use crate::error::Refusal;
use crate::queues::{minus, plus, share, Queues};

/// What a worker says of itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Its certificate's name.
    pub id: String,
    pub host: String,
    pub rack: String,
    pub label: NodeLabel,
    pub capacity: Resources,
}

#[derive(Debug)]
struct WorkerRec {
    info: WorkerInfo,
    state: WorkerState,
    last_seen: Instant,
    used: Resources,
    /// Commands for its next heartbeat answer.
    start: Vec<StartContainer>,
    kill: Vec<(String, ExitReason, String)>,
    forget: Vec<String>,
    /// Being drained: no new container; what runs is stopped at this deadline (and the
    /// same deadline by the wall clock, ms since the epoch, for the record).
    drain_until: Option<Instant>,
    drain_until_ms: Option<u64>,
    /// Known only from the records of a resource manager this one took over from (a
    /// master runs there): waiting for it to register with what it runs.
    placeholder: bool,
}

impl WorkerRec {
    /// A worker named by a recovered attempt, not heard from yet: it offers nothing until
    /// it registers, and is lost if it does not within the expiry.
    fn placeholder(id: &str, now: Instant) -> Self {
        let info = WorkerInfo {
            id: id.to_string(),
            host: String::new(),
            rack: String::new(),
            label: NodeLabel::Core,
            capacity: Resources::default(),
        };
        WorkerRec { placeholder: true, ..WorkerRec::new(info, now, None, None) }
    }

    /// A worker just registered: running, heard from `now`, nothing on it yet.
    fn new(info: WorkerInfo, now: Instant, drain_until: Option<Instant>, drain_until_ms: Option<u64>) -> Self {
        WorkerRec {
            info,
            state: WorkerState::Running,
            last_seen: now,
            used: Resources::default(),
            start: Vec::new(),
            kill: Vec::new(),
            forget: Vec::new(),
            drain_until,
            drain_until_ms,
            placeholder: false,
        }
    }

    fn take(&mut self, r: Resources) {
        self.used.vcores += r.vcores;
        self.used.memory_mib += r.memory_mib;
    }

    fn free(&self) -> Resources {
        Resources {
            vcores: self.info.capacity.vcores.saturating_sub(self.used.vcores),
            memory_mib: self.info.capacity.memory_mib.saturating_sub(self.used.memory_mib),
        }
    }
}

/// What a worker is told in a heartbeat answer.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WorkerCommands {
    pub start: Vec<StartContainer>,
    pub kill: Vec<(String, ExitReason, String)>,
    pub forget: Vec<String>,
    /// Applications (id, user) that ended with nothing left running on the worker: it
    /// keeps their logs in the file system and removes their directories.
    pub finished: Vec<(String, String)>,
}

#[derive(Debug)]
struct ContainerRec {
    app: String,
    attempt: u32,
    worker: String,
    resources: Resources,
    /// The attempt's master (else a container its master asked for).
    master: bool,
    /// Started on its worker (an allocation is not, until its master launches it).
    launched: bool,
    /// Told to stop (why): the kill is sent again while the worker reports it running.
    stopping: Option<(ExitReason, String)>,
}

impl ContainerRec {
    /// A container of application `app`'s attempt on `worker`: its master or not,
    /// started on its worker or (an allocation) not yet.
    fn new(app: &str, attempt: u32, worker: &str, resources: Resources, master: bool, launched: bool) -> Self {
        ContainerRec {
            app: app.to_string(),
            attempt,
            worker: worker.to_string(),
            resources,
            master,
            launched,
            stopping: None,
        }
    }
}

#[derive(Debug)]
struct AttemptRec {
    n: u32,
    container: String,
    worker: String,
    status: ContainerStatus,
    /// What its master said and was told (empty until it registers).
    registered: bool,
    tracking_url: String,
    asks: BTreeMap<u64, ContainerAsk>,
    /// Allocated since the last answer.
    new_allocated: Vec<Allocated>,
    /// Its containers that ended since the last answer.
    completed: Vec<ContainerStatus>,
    /// The last answer, sent again for a repeated request.
    last: Option<AllocateReply>,
    /// The next container's number (the master is 1).
    next_container: u32,
    progress: f32,
    /// Its master registered with this resource manager (a recovered attempt's master,
    /// registered with the one before, must register again).
    synced: bool,
    /// Taken over from the records of the resource manager before.
    recovered: bool,
    /// Its containers to be preempted, not yet told to its master.
    preempt_notice: Vec<String>,
    /// Per ask, the placement opportunities it let pass waiting for a local node (delay
    /// scheduling); back to 0 when it gets a container.
    missed: BTreeMap<u64, u32>,
}

impl AttemptRec {
    fn new(n: u32, container: String, worker: String) -> Self {
        AttemptRec {
            n,
            status: ContainerStatus::running(&container),
            container,
            worker,
            registered: false,
            tracking_url: String::new(),
            asks: BTreeMap::new(),
            new_allocated: Vec::new(),
            completed: Vec::new(),
            last: None,
            next_container: 2,
            progress: 0.0,
            synced: false,
            recovered: false,
            preempt_notice: Vec::new(),
            missed: BTreeMap::new(),
        }
    }
}

/// Most containers one ask may want at once.
const ASK_COUNT_MAX: u32 = 10_000;
/// Most hosts or racks one ask may name.
const ASK_PLACES_MAX: usize = 1_000;

#[derive(Debug)]
struct AppRec {
    id: String,
    user: String,
    sub: AppSubmission,
    state: AppState,
    diagnostics: String,
    attempts: Vec<AttemptRec>,
    /// Workers that ran a container of it and have not yet been told it ended.
    touched: BTreeSet<String>,
    /// When its master finished it (the master must then exit, or is stopped).
    finished_at: Option<Instant>,
}

/// Limits of what applications may ask.
#[derive(Debug, Clone, Copy)]
pub struct AppLimits {
    pub default_max_attempts: u32,
    pub max_attempts: u32,
    /// The largest container granted.
    pub max_container: Resources,
    /// How long a master may run on after finishing its application before it is stopped.
    pub master_exit_grace: Duration,
    /// Preemption: a container taken back for a queue under its guarantee is stopped this
    /// long after its master is told (`None`: no preemption).
    pub preemption_wait: Option<Duration>,
    /// Delay scheduling: placement opportunities an ask naming hosts lets pass before it
    /// takes a rack-local node, and as many more before any node (`None`: as many as
    /// there are workers, one round of heartbeats; YARN's node-locality-delay).
    pub locality_delay: Option<u32>,
    /// Ended applications kept (their records too); the oldest beyond are forgotten
    /// (YARN's max-completed-applications).
    pub max_completed_apps: usize,
}

impl Default for AppLimits {
    fn default() -> Self {
        AppLimits {
            default_max_attempts: 2,
            max_attempts: 4,
            max_container: Resources::new(32, 256 * 1024),
            master_exit_grace: Duration::from_secs(10),
            preemption_wait: Some(Duration::from_secs(15)),
            locality_delay: None,
            max_completed_apps: 10_000,
        }
    }
}

/// How far from what it names an ask may be placed now (delay scheduling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tier {
    Node,
    Rack,
    Any,
}

/// What is kept durable of an application (`ha.rs` writes it): enough for a resource
/// manager that takes over to know it, its attempts and where its master runs. Containers
/// are not kept: their workers report them when they register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    pub id: String,
    pub user: String,
    pub sub: AppSubmission,
    pub state: AppState,
    pub diagnostics: String,
    pub attempts: Vec<AttemptRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub n: u32,
    pub container: String,
    pub worker: String,
    pub status: ContainerStatus,
    pub registered: bool,
    pub tracking_url: String,
}

/// What changed since it was last taken (see [`ClusterState::take_dirty`]).
#[derive(Debug, Default)]
pub struct Dirty {
    pub gen: u64,
    pub records: Vec<AppRecord>,
    pub workers: Option<Vec<(String, Option<u64>)>>,
    /// The queues' TOML, if they changed.
    pub queues: Option<String>,
    /// Applications forgotten: their records go.
    pub removed: Vec<String>,
}

/// A container a worker reports when it registers, with whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportedContainer {
    pub status: ContainerStatus,
    pub app_id: String,
    pub attempt: u32,
    pub user: String,
    pub resources: Resources,
}

/// The cluster's workers, applications and containers.
#[derive(Debug)]
pub struct ClusterState {
    workers: BTreeMap<String, WorkerRec>,
    apps: BTreeMap<String, AppRec>,
    containers: HashMap<String, ContainerRec>,
    /// A worker silent this long is lost.
    expiry: Duration,
    limits: AppLimits,
    /// Names this resource manager's applications (YARN's cluster timestamp).
    cluster_ts: u64,
    next_app: u32,
    /// Changes are kept durable (by the caller, see [`Self::take_dirty`]): a master starts
    /// only once the record of its attempt is written.
    persist: bool,
    /// Counts changes to records; `dirty` are the applications changed since they were
    /// last taken.
    gen: u64,
    dirty: BTreeSet<String>,
    /// Masters' starts (change, worker, start) waiting for their record to be durable.
    held: Vec<(u64, String, StartContainer)>,
    /// In the ids of containers allocated here ("" or `eN_` after the Nth takeover), so
    /// that none repeats one an earlier resource manager allocated and this one never saw.
    tag: String,
    /// Took over from another: until then (and until every recovered worker registered),
    /// masters wait to register again.
    recovering: Option<Instant>,
    /// Names this core (one per start or takeover): a change's number means something
    /// only with it.
    id: u64,
    /// Every change up to this one is on record.
    durable_gen: u64,
    /// Masters' containers whose end is not on record yet (by change): their workers are
    /// not told to forget them until it is, so a takeover still hears of the end.
    settling: HashMap<String, u64>,
    /// The set of workers changed since it was last taken (see [`Self::take_dirty`]).
    workers_dirty: bool,
    /// The queues, and what each leaf, each user in a leaf and each leaf's masters use.
    queues: Queues,
    used_leaf: Vec<Resources>,
    am_leaf: Vec<Resources>,
    used_user: Vec<HashMap<String, Resources>>,
    /// Of that, what each user's masters hold.
    am_user: Vec<HashMap<String, Resources>>,
    /// The queues changed since they were last taken.
    queues_dirty: bool,
    /// Containers being preempted: when their notice ends, and for which queue.
    preempting: HashMap<String, (Instant, String)>,
    /// What the running workers offer, and how many they are (see [`Self::recount`]).
    capacity: (Resources, u32),
    /// Workers by host name (asks name hosts).
    by_host: HashMap<String, BTreeSet<String>>,
    /// Applications by (user, submission id): a submission sent again is the same one.
    submissions: HashMap<(String, String), String>,
    /// Applications forgotten whose records are still to go.
    removed: Vec<String>,
}

impl ClusterState {
    pub fn new(expiry: Duration) -> Self {
        Self::with_limits(expiry, AppLimits::default(), 0)
    }

    /// `cluster_ts`: unique per resource manager start (its start time, in ms).
    pub fn with_limits(expiry: Duration, limits: AppLimits, cluster_ts: u64) -> Self {
        ClusterState {
            workers: BTreeMap::new(),
            apps: BTreeMap::new(),
            containers: HashMap::new(),
            expiry,
            limits,
            cluster_ts,
            next_app: 1,
            persist: false,
            gen: 0,
            dirty: BTreeSet::new(),
            held: Vec::new(),
            tag: String::new(),
            recovering: None,
            id: rand::random(),
            durable_gen: 0,
            settling: HashMap::new(),
            workers_dirty: false,
            queues: Queues::default(),
            used_leaf: vec![Resources::default()],
            am_leaf: vec![Resources::default()],
            used_user: vec![HashMap::new()],
            am_user: vec![HashMap::new()],
            queues_dirty: false,
            preempting: HashMap::new(),
            capacity: (Resources::default(), 0),
            by_host: HashMap::new(),
            submissions: HashMap::new(),
            removed: Vec::new(),
        }
    }

    /// Takes queues from the record (a takeover): no check, nothing to record.
    pub fn load_queues(&mut self, q: Queues) {
        self.queues = q;
        self.recharge();
    }

    /// Replaces the queues (an admin's refresh); refused if an application not ended is in
    /// a queue the new tree lacks. Returns the change's number.
    pub fn set_queues(&mut self, q: Queues) -> Result<u64, Refusal> {
        let mut orphans: BTreeMap<&str, usize> = BTreeMap::new();
        for a in self.apps.values().filter(|a| !a.state.is_final()) {
            if !q.leaves.iter().any(|l| l.path == a.sub.queue) {
                *orphans.entry(a.sub.queue.as_str()).or_default() += 1;
            }
        }
        if let Some((queue, n)) = orphans.into_iter().next() {
            return Err(Refusal::new(
                ErrorKind::ConditionFailed,
                format!(
                    "queue {queue:?} has {n} application(s) waiting or running and the new queues have no leaf \
                     of that path: keep it until they end"
                ),
            ));
        }
        self.queues = q;
        self.recharge();
        self.queues_dirty = true;
        self.gen += 1;
        tracing::info!(leaves = self.queues.leaves.len(), "queues refreshed");
        self.schedule();
        Ok(self.gen)
    }

    /// The queues' source (TOML; empty for the default queue).
    pub fn queues_source(&self) -> &str {
        &self.queues.source
    }

    /// Every leaf queue, its settings and use.
    pub fn queue_reports(&self) -> Vec<tarn_client::rm::QueueReport> {
        let total = self.total();
        self.queues
            .leaves
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mine = self.apps.values().filter(|a| self.queues.index(&a.sub.queue) == i);
                let (mut pending, mut running) = (0, 0);
                for a in mine {
                    match a.state {
                        AppState::Accepted => pending += 1,
                        AppState::Running => running += 1,
                        _ => {}
                    }
                }
                tarn_client::rm::QueueReport {
                    path: l.path.clone(),
                    guarantee: l.guarantee,
                    max: l.max,
                    used: share(self.used_leaf[i], total),
                    used_resources: self.used_leaf[i],
                    pending_apps: pending,
                    running_apps: running,
                    user_limit_factor: l.user_limit_factor,
                    max_am_share: l.max_am_share,
                    submit_users: l.users.iter().flatten().cloned().collect(),
                    labels: l.labels.iter().flatten().map(|l| l.as_str().to_string()).collect(),
                }
            })
            .collect()
    }

    /// Counts again what each queue, user and queue's masters use (after the queues
    /// changed).
    fn recharge(&mut self) {
        let n = self.queues.leaves.len();
        self.used_leaf = vec![Resources::default(); n];
        self.am_leaf = vec![Resources::default(); n];
        self.used_user = vec![HashMap::new(); n];
        self.am_user = vec![HashMap::new(); n];
        let all: Vec<(String, Resources, bool)> =
            self.containers.values().map(|c| (c.app.clone(), c.resources, c.master)).collect();
        for (app, r, master) in all {
            self.charge(&app, r, master, true);
        }
    }

    /// Counts (or, `add` false, stops counting) `r` against application `app`'s queue and
    /// user.
    fn charge(&mut self, app: &str, r: Resources, master: bool, add: bool) {
        let Some(a) = self.apps.get(app) else { return };
        let leaf = self.queues.index(&a.sub.queue);
        let f = if add { plus } else { minus };
        self.used_leaf[leaf] = f(self.used_leaf[leaf], r);
        if master {
            self.am_leaf[leaf] = f(self.am_leaf[leaf], r);
            let u = self.am_user[leaf].entry(a.user.clone()).or_default();
            *u = f(*u, r);
        }
        match self.used_user[leaf].get_mut(&a.user) {
            Some(u) => *u = f(*u, r),
            None => {
                self.used_user[leaf].insert(a.user.clone(), f(Resources::default(), r));
            }
        }
    }

    /// Places a container: known, counted on its worker's and its queue's books.
    fn add_container(&mut self, cid: String, rec: ContainerRec) {
        if let Some(w) = self.workers.get_mut(&rec.worker) {
            w.take(rec.resources);
        }
        self.charge(&rec.app, rec.resources, rec.master, true);
        self.containers.insert(cid, rec);
    }

    /// What the workers offer (running ones, known beyond the records).
    fn total(&self) -> Resources {
        self.capacity.0
    }

    /// Counts again what the workers offer and how many run (after one joined or left).
    fn recount(&mut self) {
        let live = self.workers.values().filter(|w| w.state == WorkerState::Running && !w.placeholder);
        self.capacity = live.fold((Resources::default(), 0), |(t, n), w| (plus(t, w.info.capacity), n + 1));
    }

    /// Names this core: changes are numbered per core.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Keeps records durable from now on (see [`Self::take_dirty`]); the takeover `epoch`
    /// (1 for the first active resource manager) tags the ids of containers it allocates.
    pub fn persist(&mut self, epoch: u64) {
        self.persist = true;
        self.tag = if epoch > 1 { format!("e{epoch}_") } else { String::new() };
    }

    /// Application `app` changed in what its record keeps; returns the change's number.
    fn touch(&mut self, app: &str) -> u64 {
        self.gen += 1;
        if self.persist {
            self.dirty.insert(app.to_string());
        }
        self.gen
    }

    /// The number of the latest change (durable once [`Self::durable`] reaches it).
    pub fn generation(&self) -> u64 {
        self.gen
    }

    /// What changed since the last call: the change it is current to, the applications'
    /// records, and the set of workers if it changed (the workers a resource manager
    /// taking over waits for).
    pub fn take_dirty(&mut self) -> Dirty {
        let ids = std::mem::take(&mut self.dirty);
        let records = ids.iter().filter_map(|id| self.apps.get(id)).map(record_of).collect();
        let workers = std::mem::take(&mut self.workers_dirty).then(|| self.recorded_workers());
        let queues = std::mem::take(&mut self.queues_dirty).then(|| self.queues.source.clone());
        let removed = std::mem::take(&mut self.removed);
        Dirty { gen: self.gen, records, workers, queues, removed }
    }

    /// The workers a takeover waits for: every one not lost.
    fn recorded_workers(&self) -> Vec<(String, Option<u64>)> {
        let running = self.workers.values().filter(|w| w.state == WorkerState::Running);
        running.map(|w| (w.info.id.clone(), w.drain_until.and(w.drain_until_ms))).collect()
    }

    /// Notes worker `id`'s drain deadline by the wall clock (ms since the epoch), for the
    /// record: a resource manager taking over drains it on.
    pub fn note_drain_ms(&mut self, id: &str, until_ms: Option<u64>) {
        if let Some(w) = self.workers.get_mut(id) {
            w.drain_until_ms = until_ms;
            self.workers_dirty = true;
        }
    }

    /// Drains on record (worker, deadline in ms since the epoch) go on after a takeover;
    /// `now_ms` is `now` by the wall clock.
    pub fn restore_drains(&mut self, drains: Vec<(String, u64)>, now: Instant, now_ms: u64) {
        for (id, until_ms) in drains {
            let w = self.workers.entry(id.clone()).or_insert_with(|| WorkerRec::placeholder(&id, now));
            w.drain_until = Some(now + Duration::from_millis(until_ms.saturating_sub(now_ms)));
            w.drain_until_ms = Some(until_ms);
            tracing::info!(worker = %id, "drain taken over");
        }
    }

    /// What could not be written: taken again next time.
    pub fn redo(&mut self, ids: impl IntoIterator<Item = String>, workers: bool, queues: bool) {
        for id in ids {
            // A record to write again, or (forgotten meanwhile) to delete again.
            match self.apps.contains_key(&id) {
                true => self.dirty.insert(id),
                false => {
                    self.removed.push(id);
                    true
                }
            };
        }
        self.workers_dirty |= workers;
        self.queues_dirty |= queues;
    }

    /// Every change up to `gen` is durable: masters held for it are started.
    pub fn durable(&mut self, gen: u64) {
        self.durable_gen = self.durable_gen.max(gen);
        self.settling.retain(|_, g| *g > gen);
        let (ready, held): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held).into_iter().partition(|h| h.0 <= gen);
        self.held = held;
        for (_, worker, start) in ready {
            let known = self.containers.get(&start.container_id).is_some_and(|c| c.worker == worker);
            if let Some(w) = self.workers.get_mut(&worker).filter(|_| known) {
                w.start.push(start);
            }
        }
    }

    /// Whether masters are waiting for workers to report after a takeover.
    pub fn recovering(&self) -> bool {
        self.recovering.is_some()
    }

    /// Takes over `records` (this resource manager became active). Ended applications are
    /// known as they ended; a running one's master is expected on its worker, which must
    /// register with what it runs within the expiry or is lost (and the attempt with it).
    /// Masters registering again wait until `settle` has passed and every such worker has
    /// registered (or is lost), so that they learn every container they still have.
    /// Workers get `grace` on top of the expiry to find the new active one (their calls
    /// to the one before must time out first).
    pub fn recover(
        &mut self,
        records: Vec<AppRecord>,
        workers: Vec<String>,
        now: Instant,
        settle: Duration,
        grace: Duration,
    ) {
        let n = records.len();
        // Every worker the one before knew is waited for (it reports what it runs).
        for w in workers {
            self.workers.entry(w.clone()).or_insert_with(|| WorkerRec::placeholder(&w, now + grace));
        }
        for r in records {
            let master = match (r.state, r.attempts.last()) {
                (AppState::Running, Some(t)) => Some((t.n, t.container.clone(), t.worker.clone())),
                _ => None,
            };
            let attempts = r
                .attempts
                .into_iter()
                .map(|t| AttemptRec {
                    registered: t.registered,
                    tracking_url: t.tracking_url,
                    status: t.status,
                    recovered: true,
                    ..AttemptRec::new(t.n, t.container, t.worker)
                })
                .collect();
            if !r.sub.submission_id.is_empty() {
                self.submissions.insert((r.user.clone(), r.sub.submission_id.clone()), r.id.clone());
            }
            let mut app = AppRec {
                id: r.id.clone(),
                user: r.user,
                sub: r.sub,
                state: r.state,
                diagnostics: r.diagnostics,
                attempts,
                touched: BTreeSet::new(),
                finished_at: None,
            };
            if let Some((n, cid, worker)) = master {
                let need = app.sub.am_resources;
                self.workers.entry(worker.clone()).or_insert_with(|| WorkerRec::placeholder(&worker, now + grace));
                let rec = ContainerRec::new(&r.id, n, &worker, need, true, true);
                app.touched.insert(worker);
                self.apps.insert(r.id.clone(), app);
                self.add_container(cid, rec);
                continue;
            }
            self.apps.insert(r.id, app);
        }
        self.recovering = Some(now + settle);
        tracing::info!(applications = n, workers = self.workers.len(), "took over the applications' records");
    }

    /// A worker (re)registers: known from now on, running, with what it offers. A worker
    /// this resource manager did not know (it took over from another) brings what it
    /// runs: containers of the applications' current attempts are adopted, so a failover
    /// restarts none.
    pub fn register(&mut self, info: WorkerInfo, has: Vec<ReportedContainer>, now: Instant) -> Result<(), Refusal> {
        if info.id.is_empty() {
            return Err(Refusal::new(ErrorKind::InvalidArgument, "worker_id is empty"));
        }
        if info.capacity.vcores == 0 || info.capacity.memory_mib == 0 {
            return Err(Refusal::new(
                ErrorKind::InvalidArgument,
                format!("worker {}: capacity needs at least 1 vcore and 1 MiB", info.id),
            ));
        }
        let id = info.id.clone();
        // A lost worker's containers were given up; any other keeps what it reports (one
        // this resource manager took over, or a registration sent again).
        let adopting = self.workers.get(&id).is_none_or(|w| w.placeholder || w.state == WorkerState::Running);
        if self.workers.get(&id).is_none_or(|w| w.state == WorkerState::Lost) {
            self.workers_dirty = true;
        }
        // What it ran before this registration and does not report is given up (it
        // restarted); after it was lost, all of it is (anything still running is killed
        // when it reports it).
        let reported: BTreeSet<&str> = has.iter().map(|c| c.status.container_id.as_str()).collect();
        let before: Vec<String> = self
            .containers
            .iter()
            .filter(|(cid, c)| c.worker == id && !(adopting && reported.contains(cid.as_str())))
            .map(|(cid, _)| cid.clone())
            .collect();
        for cid in before {
            let why = match adopting {
                true => format!("not on worker {id} when it registered again"),
                false => format!("worker {id} registered again after it was lost"),
            };
            self.complete(&cid, ContainerStatus::ended(&cid, ExitReason::WorkerLost, -1, why));
        }
        match self.workers.get(&id) {
            Some(w) if w.state == WorkerState::Lost => tracing::info!(worker = %id, "lost worker registered again"),
            Some(_) => tracing::info!(worker = %id, "worker registered again"),
            None => tracing::info!(
                worker = %id,
                host = %info.host,
                label = info.label.as_str(),
                vcores = info.capacity.vcores,
                memory_mib = info.capacity.memory_mib,
                "worker registered"
            ),
        }
        // A drain outlives a re-registration (the admin's decision, not the worker's).
        let drain_until = self.workers.get(&id).and_then(|w| w.drain_until);
        if let Some(old) = self.workers.get(&id).map(|w| w.info.host.clone()) {
            if let Some(set) = self.by_host.get_mut(&old) {
                set.remove(&id);
            }
        }
        self.by_host.entry(info.host.clone()).or_default().insert(id.clone());
        let drain_until_ms = self.workers.get(&id).and_then(|w| w.drain_until_ms);
        self.workers.insert(id.clone(), WorkerRec::new(info, now, drain_until, drain_until_ms));
        if adopting {
            let kept: Vec<Resources> =
                self.containers.values().filter(|c| c.worker == id).map(|c| c.resources).collect();
            let w = self.workers.get_mut(&id).expect("inserted above");
            for r in kept {
                w.take(r);
            }
            for c in has {
                self.adopt(&id, c);
            }
        }
        self.recount();
        self.schedule();
        Ok(())
    }

    /// A container worker `worker` reports at its first registration here: one of an
    /// application's current attempt (not its master, which the records name) is taken
    /// into account if it runs, and its master hears of it if it ended.
    fn adopt(&mut self, worker: &str, c: ReportedContainer) {
        let cid = c.status.container_id.clone();
        if self.containers.contains_key(&cid) {
            return;
        }
        let Some(app) = self.apps.get_mut(&c.app_id) else { return };
        let current = c.attempt > 0 && c.attempt as usize == app.attempts.len();
        // Only while the attempt runs (an attempt that ended meanwhile has its containers
        // stopped: the worker's next heartbeat reports them, and they are killed).
        if app.state != AppState::Running || !current || app.user != c.user {
            return;
        }
        let t = app.attempts.last_mut().expect("current above");
        if cid == t.container {
            return;
        }
        if c.status.ended.is_some() {
            if !t.completed.iter().any(|s| s.container_id == cid) {
                t.completed.push(c.status);
            }
            return;
        }
        app.touched.insert(worker.to_string());
        tracing::info!(container = %cid, app = %c.app_id, %worker, "container adopted after the takeover");
        let rec = ContainerRec::new(&c.app_id, c.attempt, worker, c.resources, false, true);
        self.add_container(cid, rec);
    }

    /// A heartbeat from worker `id` with its containers' statuses: what it must do, or
    /// `None` if it must register again (unknown here, or declared lost: what it ran has
    /// been given up).
    pub fn heartbeat(&mut self, id: &str, statuses: Vec<ContainerStatus>, now: Instant) -> Option<WorkerCommands> {
        match self.workers.get_mut(id) {
            Some(w) if w.state == WorkerState::Running => w.last_seen = now,
            _ => return None,
        }
        for st in statuses {
            let ours = self.containers.get(&st.container_id).is_some_and(|c| c.worker == id);
            let w = self.workers.get_mut(id).expect("checked above");
            match (ours, st.ended.is_some()) {
                (true, true) => {
                    let cid = st.container_id.clone();
                    let master = self.containers.get(&cid).is_some_and(|c| c.master);
                    self.complete(&cid, st);
                    // A master's end is forgotten by its worker only once it is on record
                    // (its verdict must survive a takeover); it reports it until then.
                    if master && self.persist && self.gen > self.durable_gen {
                        self.settling.insert(cid, self.gen);
                    } else {
                        self.workers.get_mut(id).expect("checked above").forget.push(cid);
                    }
                }
                (true, false) => {
                    // A kill the worker has not acted on (lost with an answer): again.
                    let stopping = self.containers.get(&st.container_id).and_then(|c| c.stopping.clone());
                    if let Some((reason, why)) = stopping.filter(|_| !w.kill.iter().any(|k| k.0 == st.container_id)) {
                        w.kill.push((st.container_id.clone(), reason, why));
                    }
                    self.note_running(st)
                }
                // Ended, and already settled here (a repeat, or one given up): acknowledge,
                // once on record.
                (false, true) => {
                    if !self.settling.contains_key(&st.container_id) {
                        w.forget.push(st.container_id)
                    }
                }
                // Running, but not placed here (given up when the worker was lost): stop it.
                (false, false) => w.kill.push((
                    st.container_id,
                    ExitReason::KilledByResourceManager,
                    "the resource manager does not know this container".into(),
                )),
            }
        }
        // Room that freed up here goes to what is asked (node-driven, like YARN's: each
        // heartbeat looks at one worker, not the whole cluster).
        self.schedule_on(Some(id));
        let finished = self.finished_on(id);
        let w = self.workers.get_mut(id).expect("checked above");
        Some(WorkerCommands {
            start: std::mem::take(&mut w.start),
            kill: std::mem::take(&mut w.kill),
            forget: std::mem::take(&mut w.forget),
            finished,
        })
    }

    /// The user of container `cid` when it runs on worker `worker` and is not being
    /// stopped: whose credential it may have renewed.
    pub fn renewable(&self, worker: &str, cid: &str) -> Option<String> {
        let c = self.containers.get(cid).filter(|c| c.worker == worker && c.launched && c.stopping.is_none())?;
        self.apps.get(&c.app).filter(|a| !a.state.is_final() || c.master).map(|a| a.user.clone())
    }

    /// Applications that ended with nothing of theirs left on worker `id` (told once).
    fn finished_on(&mut self, id: &str) -> Vec<(String, String)> {
        // Ended applications a worker has not been told of are few; the scan is of those
        // that still name a worker.
        let ended: Vec<String> =
            self.apps.values().filter(|a| a.state.is_final() && a.touched.contains(id)).map(|a| a.id.clone()).collect();
        let mut out = Vec::new();
        for app in ended {
            if self.containers.values().any(|c| c.app == app && c.worker == id) {
                continue;
            }
            let a = self.apps.get_mut(&app).expect("listed above");
            a.touched.remove(id);
            out.push((app, a.user.clone()));
        }
        out
    }

    fn note_running(&mut self, st: ContainerStatus) {
        let Some(c) = self.containers.get(&st.container_id).filter(|c| c.master) else { return };
        if let Some(a) = self.apps.get_mut(&c.app).and_then(|a| a.attempts.get_mut(c.attempt as usize - 1)) {
            a.status = st;
        }
    }

    /// A container ended: its resources are free, and its application moves on.
    fn complete(&mut self, cid: &str, status: ContainerStatus) {
        let Some(c) = self.containers.remove(cid) else { return };
        self.charge(&c.app, c.resources, c.master, false);
        if c.master {
            self.touch(&c.app);
        }
        if let Some(w) = self.workers.get_mut(&c.worker) {
            w.used.vcores = w.used.vcores.saturating_sub(c.resources.vcores);
            w.used.memory_mib = w.used.memory_mib.saturating_sub(c.resources.memory_mib);
        }
        let Some(app) = self.apps.get_mut(&c.app) else { return };
        let max = app.sub.max_attempts;
        let current = c.attempt as usize == app.attempts.len();
        let Some(attempt) = app.attempts.get_mut(c.attempt as usize - 1) else { return };
        if !c.master {
            // Its master hears of it (unless the attempt or the application is over).
            if current && !app.state.is_final() {
                attempt.completed.push(status);
            }
            return;
        }
        attempt.status = status.clone();
        if app.state.is_final() || !current {
            return;
        }
        let reason = status.ended.unwrap_or(ExitReason::Exited);
        // A master that registered must finish the application; one that never did is a
        // plain command, done when it exits with 0.
        if reason == ExitReason::Exited && status.exit_code == 0 && !attempt.registered {
            app.state = AppState::Finished;
            app.diagnostics = String::new();
            tracing::info!(app = %app.id, "application finished");
            return;
        }
        let mut why = describe(&status);
        if reason == ExitReason::Exited && status.exit_code == 0 {
            why.push_str(" without finishing the application");
        }
        let app_id = app.id.clone();
        self.stop_attempt(&app_id, c.attempt, &format!("attempt {} of {app_id} ended", c.attempt));
        let app = self.apps.get_mut(&app_id).expect("looked up above");
        // Attempts the resource manager ended itself (a drained worker, say) are not the
        // application's failures (YARN's KILLED_BY_RESOURCEMANAGER).
        let failed =
            app.attempts.iter().filter(|t| t.status.ended != Some(ExitReason::KilledByResourceManager)).count() as u32;
        if failed < max {
            app.state = AppState::Accepted;
            app.diagnostics = format!("attempt {} failed: {why}; starting attempt {}", c.attempt, c.attempt + 1);
        } else {
            app.state = AppState::Failed;
            app.diagnostics = format!("{max} of {max} attempts failed; the last: {why}");
        }
        tracing::warn!(app = %app.id, attempt = c.attempt, %why, "application master ended");
    }

    /// Stops the containers of `app`'s attempt `n` other than its master: started ones are
    /// killed on their workers, allocations not started are given up at once.
    fn stop_attempt(&mut self, app: &str, n: u32, why: &str) {
        let theirs: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, c)| c.app == app && c.attempt == n && !c.master)
            .map(|(cid, _)| cid.clone())
            .collect();
        for cid in theirs {
            self.stop_container(&cid, ExitReason::AttemptEnded, why);
        }
    }

    /// Stops container `cid`: one not started on its worker yet (never launched, or its
    /// start not yet delivered) ends at once; a started one is killed by its worker, the
    /// kill sent again while it is reported running.
    fn stop_container(&mut self, cid: &str, reason: ExitReason, why: &str) {
        let Some(c) = self.containers.get_mut(cid) else { return };
        let held = self.held.len();
        self.held.retain(|h| h.2.container_id != cid);
        let undelivered = c.launched
            && (self.held.len() < held
                || self.workers.get_mut(&c.worker).is_some_and(|w| {
                    let before = w.start.len();
                    w.start.retain(|s| s.container_id != cid);
                    w.start.len() < before
                }));
        if !c.launched || undelivered {
            self.complete(cid, ContainerStatus::ended(cid, reason, -1, why));
            return;
        }
        c.stopping = Some((reason, why.to_string()));
        if let Some(w) = self.workers.get_mut(&c.worker) {
            w.kill.push((cid.to_string(), reason, why.to_string()));
        }
    }
    /// Places what is waiting (see [`Self::assign`]) anywhere.
    fn schedule(&mut self) {
        self.schedule_on(None)
    }

    /// [`Self::schedule`]; masters' asks only on worker `only` when given (masters
    /// anywhere).
    fn schedule_on(&mut self, only: Option<&str>) {
        self.assign(only, None);
    }

    /// Places containers one at a time: each for the leaf queue furthest below its
    /// guarantee (used / guarantee, dominant shares), within it for the application whose
    /// user uses the least, then the oldest; a master for an application waiting for one,
    /// else one of what a registered master asks. Queues, their parents, users and
    /// masters stay within their limits (see `queues.rs`). With `app`, that application's
    /// only, and only while its queue is first in line or within its guarantee (else
    /// heartbeats place in order).
    fn assign(&mut self, only: Option<&str>, app: Option<&str>) {
        let total = self.total();
        if total.vcores == 0 || total.memory_mib == 0 {
            for a in self.apps.values_mut().filter(|a| a.state == AppState::Accepted && a.attempts.is_empty()) {
                let need = a.sub.am_resources;
                a.diagnostics =
                    format!("waiting for a core worker with {} vcores and {} MiB free", need.vcores, need.memory_mib);
            }
            return;
        }
        let wants = |a: &AppRec| match a.state {
            AppState::Accepted => true,
            AppState::Running => a.attempts.last().is_some_and(|t| t.synced && t.asks.values().any(|k| k.count > 0)),
            _ => false,
        };
        // A heartbeat of a full worker places only masters (anywhere), if any wait.
        let full = |w: &WorkerRec| w.free().vcores == 0 || w.free().memory_mib == 0;
        if only.is_some_and(|w| self.workers.get(w).is_none_or(full))
            && !self.apps.values().any(|a| a.state == AppState::Accepted)
        {
            return;
        }
        let mut waiting: Vec<String> = self.apps.values().filter(|a| wants(a)).map(|a| a.id.clone()).collect();
        // Asks that let this opportunity pass (counted once however often they are tried).
        let mut counted: BTreeSet<(String, u64)> = BTreeSet::new();
        // Delay scheduling waits up to a round of heartbeats, at most 40 (YARN's default).
        let delay = self.limits.locality_delay.unwrap_or(self.capacity.1.min(40)).max(1);
        loop {
            waiting.retain(|id| self.apps.get(id).is_some_and(wants));
            if waiting.is_empty() {
                return;
            }
            let mut by_leaf: BTreeMap<usize, Vec<String>> = BTreeMap::new();
            for id in &waiting {
                by_leaf.entry(self.queues.index(&self.apps[id].sub.queue)).or_default().push(id.clone());
            }
            let mut leaves: Vec<usize> = by_leaf.keys().copied().collect();
            leaves.sort_by(|a, b| self.leaf_ratio(*a, total).total_cmp(&self.leaf_ratio(*b, total)).then(a.cmp(b)));
            // How far the leaf placing may go before another's turn (see below).
            let mut bound: Option<f64> = None;
            if let Some(id) = app {
                let Some(&l) = by_leaf.iter().find(|(_, v)| v.iter().any(|x| x == id)).map(|(l, _)| l) else {
                    return;
                };
                if leaves[0] != l && self.leaf_ratio(l, total) >= 1.0 {
                    return;
                }
                // First in line: until the next leaf's turn; else within its guarantee.
                bound = Some(match leaves[0] == l {
                    true => leaves.get(1).map(|n| self.leaf_ratio(*n, total)).unwrap_or(f64::MAX),
                    false => 1.0,
                });
                leaves = vec![l];
                by_leaf.insert(l, vec![id.to_string()]);
            }
            let mut placed = false;
            for (k, &l) in leaves.iter().enumerate() {
                // The next leaf's ratio: this one keeps placing while it stays below.
                let next_leaf =
                    bound.unwrap_or_else(|| leaves.get(k + 1).map(|n| self.leaf_ratio(*n, total)).unwrap_or(f64::MAX));
                let apps = by_leaf.remove(&l).unwrap_or_default();
                let mut keyed: Vec<(f64, String)> = apps
                    .into_iter()
                    .map(|id| {
                        let u = self.used_user[l].get(&self.apps[&id].user).copied();
                        (share(u.unwrap_or_default(), total), id)
                    })
                    .collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                for (j, (_, id)) in keyed.iter().enumerate() {
                    if !self.place_one(id, l, only, total, delay, &mut counted) {
                        waiting.retain(|x| x != id);
                        continue;
                    }
                    placed = true;
                    // Placing on for the same application while its queue and its user
                    // stay first in line: the order cannot have changed otherwise.
                    let user = self.apps[id].user.clone();
                    let next_user = keyed[j + 1..]
                        .iter()
                        .find(|(_, other)| self.apps[other].user != user)
                        .map(|(sh, _)| *sh)
                        .unwrap_or(f64::MAX);
                    loop {
                        let mine = share(self.used_user[l].get(&user).copied().unwrap_or_default(), total);
                        if self.leaf_ratio(l, total) > next_leaf
                            || mine > next_user
                            || !self.place_one(id, l, only, total, delay, &mut counted)
                        {
                            break;
                        }
                    }
                    break;
                }
                if placed {
                    break;
                }
            }
            if !placed {
                return;
            }
        }
    }

    /// How far leaf `l` is toward its guarantee (used / guarantee; a queue guaranteed
    /// nothing comes last).
    fn leaf_ratio(&self, l: usize, total: Resources) -> f64 {
        let g = self.queues.leaves[l].guarantee;
        if g <= 0.0 {
            f64::MAX
        } else {
            share(self.used_leaf[l], total) / g
        }
    }

    /// Why `need` more for `user` in leaf `l` (a master's, with `master`) would break a
    /// limit, if it would.
    fn over_limit(&self, l: usize, user: &str, need: Resources, master: bool, total: Resources) -> Option<String> {
        const EPS: f64 = 1e-9;
        let leaf = &self.queues.leaves[l];
        if share(plus(self.used_leaf[l], need), total) > leaf.max + EPS {
            return Some(format!("queue {} is at its maximum ({:.0}% of the cluster)", leaf.path, leaf.max * 100.0));
        }
        for (p, pmax) in &leaf.parents {
            let prefix = format!("{p}.");
            let used = (0..self.queues.leaves.len())
                .filter(|i| self.queues.leaves[*i].path.starts_with(&prefix))
                .fold(Resources::default(), |t, i| plus(t, self.used_leaf[i]));
            if share(plus(used, need), total) > pmax + EPS {
                return Some(format!("queue {p} is at its maximum ({:.0}% of the cluster)", pmax * 100.0));
            }
        }
        let mine = self.used_user[l].get(user).copied().unwrap_or_default();
        // (Of a queue guaranteed nothing, of what it may use at most.)
        let user_max = leaf.user_limit_factor * if leaf.guarantee > 0.0 { leaf.guarantee } else { leaf.max };
        // A user may always run a master, and one container besides its masters: a small
        // queue on a small cluster is slow, never stuck.
        let masters = self.am_user[l].get(user).copied().unwrap_or_default();
        let first = if master { mine == Resources::default() } else { minus(mine, masters) == Resources::default() };
        if !first && share(plus(mine, need), total) > user_max + EPS {
            return Some(format!(
                "{user} uses {:.0}% of the cluster in queue {}, its user limit ({} x its guarantee)",
                share(mine, total) * 100.0,
                leaf.path,
                leaf.user_limit_factor
            ));
        }
        let am = self.am_leaf[l];
        if master
            && am != Resources::default()
            && share(plus(am, need), total) > leaf.max_am_share * leaf.guarantee + EPS
        {
            return Some(format!(
                "the masters of queue {} hold their share of it ({:.0}% of its guarantee)",
                leaf.path,
                leaf.max_am_share * 100.0
            ));
        }
        None
    }

    /// Places one container of application `id` (of leaf `l`): its master if it waits for
    /// one (on a core worker with room, the most free memory first, away from the worker
    /// of the attempt before if another has room), else one of its master's asks (on
    /// worker `only` when given). `false` if nothing of it can be placed now.
    fn place_one(
        &mut self,
        id: &str,
        l: usize,
        only: Option<&str>,
        total: Resources,
        delay: u32,
        counted: &mut BTreeSet<(String, u64)>,
    ) -> bool {
        let app = &self.apps[id];
        let labels = self.queues.leaves[l].labels.clone();
        if app.state == AppState::Accepted {
            let need = app.sub.am_resources;
            let first = app.attempts.is_empty();
            if let Some(why) = self.over_limit(l, &app.user, need, true, total) {
                if first {
                    self.apps.get_mut(id).expect("listed").diagnostics = format!("waiting: {why}");
                }
                return false;
            }
            let avoid = app.attempts.last().map(|a| a.worker.clone());
            let core_ok = labels.as_ref().is_none_or(|ls| ls.contains(&NodeLabel::Core));
            let fits = |w: &&WorkerRec| {
                core_ok
                    && w.state == WorkerState::Running
                    && w.drain_until.is_none()
                    && w.info.label == NodeLabel::Core
                    && w.free().fits(&need)
            };
            let best = |prefer_other: bool| {
                self.workers
                    .values()
                    .filter(fits)
                    .filter(|w| !prefer_other || Some(&w.info.id) != avoid.as_ref())
                    .max_by_key(|w| (w.free().memory_mib, std::cmp::Reverse(w.info.id.clone())))
                    .map(|w| w.info.id.clone())
            };
            let Some(worker) = best(true).or_else(|| best(false)) else {
                if first {
                    self.apps.get_mut(id).expect("listed").diagnostics = format!(
                        "waiting for a core worker with {} vcores and {} MiB free",
                        need.vcores, need.memory_mib
                    );
                }
                return false;
            };
            let app = self.apps.get_mut(id).expect("listed");
            let n = app.attempts.len() as u32 + 1;
            let cid = format!("{id}_{n:02}_000001");
            app.attempts.push(AttemptRec::new(n, cid.clone(), worker.clone()));
            app.state = AppState::Running;
            if first {
                app.diagnostics = String::new();
            }
            app.touched.insert(worker.clone());
            let start = StartContainer {
                container_id: cid.clone(),
                app_id: id.to_string(),
                attempt: n,
                user: app.user.clone(),
                resources: need,
                spec: app.sub.am_spec.clone(),
                credential: None,
            };
            let gen = self.touch(id);
            match self.persist {
                // Started once its attempt is on record: a resource manager taking over
                // then knows it, and never starts a second master for the same attempt.
                true => self.held.push((gen, worker.clone(), start)),
                false => self.workers.get_mut(&worker).expect("picked above").start.push(start),
            }
            let rec = ContainerRec::new(id, n, &worker, need, true, true);
            self.add_container(cid.clone(), rec);
            tracing::info!(app = %id, attempt = n, container = %cid, %worker, "application master placed");
            return true;
        }
        let t = app.attempts.last().expect("a running application has an attempt");
        let user = app.user.clone();
        let asks: Vec<(u64, u32)> = t
            .asks
            .iter()
            .filter(|(_, k)| k.count > 0)
            .map(|(i, _)| (*i, t.missed.get(i).copied().unwrap_or(0)))
            .collect();
        for (ask_id, missed) in asks {
            let ask = &self.apps[id].attempts.last().expect("checked above").asks[&ask_id];
            let need = ask.resources;
            if self.over_limit(l, &user, need, false, total).is_some() {
                continue;
            }
            // Delay scheduling: an ask naming hosts waits a round of opportunities for one
            // of them, then a round more for its racks, before it takes any node (if it
            // allows that at all).
            let tier = match (ask.hosts.is_empty(), ask.racks.is_empty()) {
                (true, true) => Tier::Any,
                _ if !ask.relax_locality => Tier::Rack,
                (true, false) if missed >= delay => Tier::Any,
                (true, false) => Tier::Rack,
                _ if missed >= 2 * delay => Tier::Any,
                _ if missed >= delay => Tier::Rack,
                _ => Tier::Node,
            };
            let Some(worker) = self.place(ask, only, labels.as_deref(), tier) else {
                // An opportunity let pass: a node had room but is not where it wants.
                let room = |w: &WorkerRec| {
                    w.state == WorkerState::Running
                        && w.drain_until.is_none()
                        && ask.label.is_none_or(|x| x == w.info.label)
                        && labels.as_ref().is_none_or(|ls| ls.contains(&w.info.label))
                        && w.free().fits(&need)
                };
                let passed = only.is_some_and(|w| self.workers.get(w).is_some_and(room));
                if passed && tier != Tier::Any && counted.insert((id.to_string(), ask_id)) {
                    let t = self.apps.get_mut(id).expect("listed").attempts.last_mut().expect("checked above");
                    *t.missed.entry(ask_id).or_default() += 1;
                }
                continue;
            };
            let local = self
                .workers
                .get(&worker)
                .is_some_and(|w| ask.hosts.iter().any(|h| *h == w.info.host || *h == w.info.id));
            let app = self.apps.get_mut(id).expect("listed");
            let t = app.attempts.last_mut().expect("checked above");
            // Waiting starts over after a node-local container (YARN's reset).
            if local {
                t.missed.remove(&ask_id);
            }
            let cid = format!("{id}_{:02}_{}{:06}", t.n, self.tag, t.next_container);
            t.next_container += 1;
            t.asks.get_mut(&ask_id).expect("listed above").count -= 1;
            let w = &self.workers[&worker];
            t.new_allocated.push(Allocated {
                container_id: cid.clone(),
                worker_id: worker.clone(),
                host: w.info.host.clone(),
                rack: w.info.rack.clone(),
                resources: need,
                ask_id,
            });
            let rec = ContainerRec::new(id, t.n, &worker, need, false, false);
            self.add_container(cid, rec);
            return true;
        }
        false
    }

    /// The worker for one container of `ask`: a running one of its label with room, on
    /// one of its hosts, else on one of its racks, else (if it allows, or names no place)
    /// anywhere; the most free memory first. Only worker `only` when given.
    fn place(
        &self,
        ask: &ContainerAsk,
        only: Option<&str>,
        labels: Option<&[NodeLabel]>,
        tier: Tier,
    ) -> Option<String> {
        let fits = |w: &&WorkerRec| {
            w.state == WorkerState::Running
                && w.drain_until.is_none()
                && ask.label.is_none_or(|l| l == w.info.label)
                && labels.is_none_or(|ls| ls.contains(&w.info.label))
                && w.free().fits(&ask.resources)
        };
        let candidates: Vec<&WorkerRec> = match only {
            Some(id) => self.workers.get(id).into_iter().collect(),
            None => self.workers.values().collect(),
        };
        let best = |tier: &dyn Fn(&WorkerRec) -> bool| {
            candidates
                .iter()
                .copied()
                .filter(fits)
                .filter(|w| tier(w))
                .max_by_key(|w| (w.free().memory_mib, std::cmp::Reverse(w.info.id.clone())))
                .map(|w| w.info.id.clone())
        };
        let anywhere = ask.relax_locality || (ask.hosts.is_empty() && ask.racks.is_empty());
        let on_host = |w: &WorkerRec| ask.hosts.iter().any(|h| *h == w.info.host || *h == w.info.id);
        // Node-local: the workers of the hosts it names, looked up (not searched).
        let local = ask
            .hosts
            .iter()
            .flat_map(|h| self.by_host.get(h).into_iter().flatten().chain(std::iter::once(h)))
            .filter_map(|id| self.workers.get(id))
            .filter(|w| only.is_none_or(|o| o == w.info.id))
            .filter(fits)
            .max_by_key(|w| (w.free().memory_mib, std::cmp::Reverse(w.info.id.clone())))
            .map(|w| w.info.id.clone());
        local
            .or_else(|| {
                if tier < Tier::Rack {
                    return None;
                }
                // Rack-local: on a rack it names, or (relaxed) on the rack of a host it names.
                let host_racks: BTreeSet<&str> = match ask.hosts.is_empty() || !ask.relax_locality {
                    true => BTreeSet::new(),
                    false => self.workers.values().filter(|w| on_host(w)).map(|w| w.info.rack.as_str()).collect(),
                };
                best(&|w| ask.racks.contains(&w.info.rack) || host_racks.contains(w.info.rack.as_str()))
            })
            .or_else(|| if anywhere && tier >= Tier::Any { best(&|_| true) } else { None })
    }

    /// The application and attempt whose current master is container `cid` of `user`.
    fn master_of(&self, cid: &str, user: &str) -> Result<(String, u32), Refusal> {
        let denied = |why: String| Err(Refusal::new(ErrorKind::PermissionDenied, why));
        let Some(c) = self.containers.get(cid).filter(|c| c.master) else {
            return denied(format!("container {cid} is not a running application master"));
        };
        let app = &self.apps[&c.app];
        if app.user != user {
            return denied(format!("container {cid} is {}'s application's; {user} may not speak for it", app.user));
        }
        if c.attempt as usize != app.attempts.len() {
            return denied(format!(
                "{cid} was the master of attempt {}; attempt {} is current",
                c.attempt,
                app.attempts.len()
            ));
        }
        if app.state.is_final() {
            return Err(Refusal::new(
                ErrorKind::ConditionFailed,
                format!("application {} has ended ({})", app.id, app.state.as_str()),
            ));
        }
        Ok((c.app.clone(), c.attempt))
    }

    /// The master in container `cid` registers.
    pub fn register_master(
        &mut self,
        cid: &str,
        user: &str,
        tracking_url: &str,
    ) -> Result<MasterRegistration, Refusal> {
        let (id, n) = self.master_of(cid, user)?;
        if self.recovering.is_some() {
            return Err(Refusal::new(
                ErrorKind::Unavailable,
                "this resource manager has just taken over and waits for workers to report what they run; \
                 registering again in a moment",
            ));
        }
        let t = &mut self.apps.get_mut(&id).expect("checked").attempts[n as usize - 1];
        let first = !t.registered;
        match (t.registered, t.synced) {
            (false, _) => tracing::info!(app = %id, attempt = n, container = %cid, "application master registered"),
            (true, false) => {
                tracing::info!(app = %id, attempt = n, container = %cid, "application master registered again");
                // It starts over: its asks come again in full, answers count from 0.
                t.last = None;
                t.asks.clear();
            }
            (true, true) => {}
        }
        t.registered = true;
        t.synced = true;
        t.tracking_url = tracking_url.chars().take(1024).collect();
        if first {
            self.touch(&id);
        }
        // Its containers known here: running, and ended but not yet told (it hears of
        // those in its next allocate answer).
        let mut containers: Vec<String> = self
            .containers
            .iter()
            .filter(|(_, c)| c.app == id && c.attempt == n && !c.master)
            .map(|(cid, _)| cid.clone())
            .collect();
        containers.extend(self.apps[&id].attempts[n as usize - 1].completed.iter().map(|s| s.container_id.clone()));
        containers.sort();
        Ok(MasterRegistration { app_id: id, attempt: n, max_container: self.limits.max_container, containers })
    }

    /// One allocate call of the master in container `cid` (see [`AllocateCall`]).
    pub fn allocate(&mut self, cid: &str, user: &str, call: AllocateCall) -> Result<AllocateReply, Refusal> {
        let bad = |why: String| Err(Refusal::new(ErrorKind::InvalidArgument, why));
        let (id, n) = self.master_of(cid, user)?;
        let max = self.limits.max_container;
        {
            let t = &self.apps[&id].attempts[n as usize - 1];
            if !t.registered && !t.recovered {
                return Err(Refusal::new(ErrorKind::ConditionFailed, format!("{cid}: register the master first")));
            }
            if !t.synced {
                return Err(Refusal::new(
                    ErrorKind::MasterNotRegistered,
                    format!("{cid}: this resource manager took over from another; register again and send every ask"),
                ));
            }
            let last_id = t.last.as_ref().map(|r| r.response_id).unwrap_or(0);
            if let Some(last) = t.last.as_ref().filter(|_| call.response_id.checked_add(1) == Some(last_id)) {
                return Ok(last.clone());
            }
            if call.response_id != last_id {
                return bad(format!(
                    "response_id {} is not that of the last answer ({last_id}): a master sends the id it last got",
                    call.response_id
                ));
            }
            for a in &call.asks {
                let r = a.resources;
                if a.count > 0 && (r.vcores == 0 || r.memory_mib == 0 || !max.fits(&r)) {
                    return bad(format!(
                        "ask {}: {} vcores and {} MiB; each must be > 0 and at most {} vcores, {} MiB",
                        a.ask_id, r.vcores, r.memory_mib, max.vcores, max.memory_mib
                    ));
                }
                if let Some(why) = (a.count > 0).then(|| self.too_large(&r, a.label)).flatten() {
                    return bad(format!("ask {}: {why}", a.ask_id));
                }
                if a.count > ASK_COUNT_MAX || a.hosts.len() > ASK_PLACES_MAX || a.racks.len() > ASK_PLACES_MAX {
                    return bad(format!(
                        "ask {}: at most {ASK_COUNT_MAX} containers and {ASK_PLACES_MAX} hosts or racks",
                        a.ask_id
                    ));
                }
            }
            for (lcid, spec) in &call.launch {
                if call.release.contains(lcid) {
                    return bad(format!("{lcid}: launched and released in one call"));
                }
                let ours = self.containers.get(lcid).is_some_and(|c| c.app == id && c.attempt == n && !c.master);
                if !ours {
                    return bad(format!("launch {lcid}: not a container allocated to this attempt"));
                }
                if spec.command.first().is_none_or(|c| c.is_empty()) {
                    return bad(format!("launch {lcid}: the command is empty"));
                }
                if spec.env.keys().any(|k| k.starts_with("TARN_")) {
                    return bad(format!("launch {lcid}: TARN_* variables are set by the worker"));
                }
                if let Some(why) = bad_files(spec) {
                    return bad(format!("launch {lcid}: files: {why}"));
                }
            }
        }
        for rcid in &call.release {
            if self.containers.get(rcid).is_some_and(|c| c.app == id && c.attempt == n && !c.master) {
                self.stop_container(rcid, ExitReason::Released, "released by its application master");
            }
        }
        let user = self.apps[&id].user.clone();
        for (lcid, spec) in call.launch {
            let Some(c) = self.containers.get_mut(&lcid) else { continue };
            if c.launched {
                continue;
            }
            c.launched = true;
            let start = StartContainer {
                container_id: lcid.clone(),
                app_id: id.clone(),
                attempt: n,
                user: user.clone(),
                resources: c.resources,
                spec,
                credential: None,
            };
            let worker = c.worker.clone();
            if let Some(w) = self.workers.get_mut(&worker) {
                w.start.push(start);
            }
            self.apps.get_mut(&id).expect("checked").touched.insert(worker);
        }
        {
            let t = &mut self.apps.get_mut(&id).expect("checked").attempts[n as usize - 1];
            t.progress = call.progress.clamp(0.0, 1.0);
            for a in call.asks {
                if a.count == 0 {
                    t.asks.remove(&a.ask_id);
                    t.missed.remove(&a.ask_id);
                } else {
                    t.asks.insert(a.ask_id, a);
                }
            }
        }
        // This master's asks, anywhere (others' are placed as workers heartbeat).
        self.assign(None, Some(&id));
        let t = &mut self.apps.get_mut(&id).expect("checked").attempts[n as usize - 1];
        let reply = AllocateReply {
            response_id: t.last.as_ref().map(|r| r.response_id).unwrap_or(0) + 1,
            allocated: std::mem::take(&mut t.new_allocated),
            completed: std::mem::take(&mut t.completed),
            preempted: std::mem::take(&mut t.preempt_notice),
        };
        t.last = Some(reply.clone());
        Ok(reply)
    }

    /// The master in container `cid` ends its application with `status`; the attempt's
    /// other containers are stopped (the master exits by itself).
    pub fn finish_master(
        &mut self,
        cid: &str,
        user: &str,
        status: FinalStatus,
        diagnostics: &str,
        now: Instant,
    ) -> Result<(), Refusal> {
        let (id, n) = self.master_of(cid, user)?;
        if !self.apps[&id].attempts[n as usize - 1].synced {
            return Err(Refusal::new(
                ErrorKind::MasterNotRegistered,
                format!("{cid}: this resource manager took over from another; register again, then finish"),
            ));
        }
        self.touch(&id);
        self.stop_attempt(&id, n, &format!("application {id} finished"));
        let app = self.apps.get_mut(&id).expect("checked");
        app.finished_at = Some(now);
        app.state = match status {
            FinalStatus::Succeeded => AppState::Finished,
            FinalStatus::Failed => AppState::Failed,
            FinalStatus::Killed => AppState::Killed,
        };
        app.diagnostics = diagnostics.chars().take(4096).collect();
        tracing::info!(app = %id, attempt = n, state = app.state.as_str(), "application master finished the application");
        Ok(())
    }

    /// Accepts an application of `user`; its master is placed as soon as a core worker
    /// has room.
    pub fn submit(&mut self, user: &str, sub: AppSubmission) -> Result<String, Refusal> {
        self.submit_as(user, false, sub)
    }

    /// [`Self::submit`] by `user`, an admin if `superuser` (who may submit to any queue).
    pub fn submit_as(&mut self, user: &str, superuser: bool, mut sub: AppSubmission) -> Result<String, Refusal> {
        if sub.submission_id.len() > 128 {
            return Err(Refusal::new(ErrorKind::InvalidArgument, "submission_id: at most 128 bytes"));
        }
        let key = (user.to_string(), sub.submission_id.clone());
        if let Some(id) = self.submissions.get(&key).filter(|_| !key.1.is_empty()) {
            return Ok(id.clone());
        }
        let bad = |why: String| Err(Refusal::new(ErrorKind::InvalidArgument, why));
        if sub.am_spec.command.first().is_none_or(|c| c.is_empty()) {
            return bad("am_spec.command is empty: name the program the application master runs".into());
        }
        let (r, max) = (sub.am_resources, self.limits.max_container);
        if r.vcores == 0 || r.memory_mib == 0 {
            return bad(format!("am_resources: {} vcores and {} MiB; both must be > 0", r.vcores, r.memory_mib));
        }
        if !max.fits(&r) {
            return bad(format!(
                "am_resources: {} vcores and {} MiB is more than a container may have ({} vcores, {} MiB)",
                r.vcores, r.memory_mib, max.vcores, max.memory_mib
            ));
        }
        if let Some(why) = self.too_large(&r, Some(NodeLabel::Core)) {
            return bad(format!("am_resources: {why}"));
        }
        if sub.max_attempts > self.limits.max_attempts {
            return bad(format!("max_attempts {} is more than {}", sub.max_attempts, self.limits.max_attempts));
        }
        if sub.name.len() > 256 {
            return bad("name: at most 256 bytes".into());
        }
        if sub.am_spec.env.keys().any(|k| k.starts_with("TARN_")) {
            return bad("am_spec.env: TARN_* variables are set by the worker".into());
        }
        if let Some(why) = bad_files(&sub.am_spec) {
            return bad(format!("am_spec.files: {why}"));
        }
        let leaf =
            &self.queues.leaves[self.queues.find(&sub.queue).map_err(|e| Refusal::new(ErrorKind::NotFound, e))?];
        if let Some(users) = leaf.users.as_ref().filter(|u| !superuser && !u.contains(user)) {
            return Err(Refusal::new(
                ErrorKind::PermissionDenied,
                format!(
                    "{user} may not submit to queue {} (its submit_users: {})",
                    leaf.path,
                    users.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        if leaf.labels.as_ref().is_some_and(|ls| !ls.contains(&NodeLabel::Core)) {
            return bad(format!(
                "queue {} may use only task nodes, and an application's master runs on a core node",
                leaf.path
            ));
        }
        sub.queue = leaf.path.clone();
        if sub.max_attempts == 0 {
            sub.max_attempts = self.limits.default_max_attempts;
        }
        let mut id = format!("app-{}-{:04}", self.cluster_ts, self.next_app);
        self.next_app += 1;
        // Ids of the resource manager taken over from are kept (two that started in the
        // same millisecond would name alike).
        while self.apps.contains_key(&id) {
            id = format!("app-{}-{:04}", self.cluster_ts, self.next_app);
            self.next_app += 1;
        }
        tracing::info!(app = %id, %user, name = %sub.name, "application submitted");
        let rec = AppRec {
            id: id.clone(),
            user: user.to_string(),
            sub,
            state: AppState::Accepted,
            diagnostics: String::new(),
            attempts: Vec::new(),
            touched: BTreeSet::new(),
            finished_at: None,
        };
        self.apps.insert(id.clone(), rec);
        if !key.1.is_empty() {
            self.submissions.insert(key, id.clone());
        }
        self.touch(&id);
        self.schedule();
        Ok(id)
    }

    fn app_of(&self, id: &str, user: &str, superuser: bool) -> Result<&AppRec, Refusal> {
        let app = self.apps.get(id).ok_or_else(|| Refusal::new(ErrorKind::NotFound, format!("no application {id}")))?;
        if app.user != user && !superuser {
            return Err(Refusal::new(
                ErrorKind::PermissionDenied,
                format!("application {id} is {}'s: {user} may not see or kill it", app.user),
            ));
        }
        Ok(app)
    }

    /// Kills an application and its containers; `false` if it had already ended.
    pub fn kill_app(&mut self, id: &str, user: &str, superuser: bool) -> Result<bool, Refusal> {
        if self.app_of(id, user, superuser)?.state.is_final() {
            return Ok(false);
        }
        let why = format!("application killed by {user}");
        let theirs: Vec<String> =
            self.containers.iter().filter(|(_, c)| c.app == id).map(|(cid, _)| cid.clone()).collect();
        self.touch(id);
        let app = self.apps.get_mut(id).expect("checked above");
        app.state = AppState::Killed;
        for cid in theirs {
            self.stop_container(&cid, ExitReason::KilledByResourceManager, &why);
        }
        let app = self.apps.get_mut(id).expect("checked above");
        app.state = AppState::Killed;
        app.diagnostics = format!("killed by {user}");
        tracing::info!(app = %id, %user, "application killed");
        Ok(true)
    }

    /// The applications of `user` (with `all`, everyone's: admins only), oldest first.
    pub fn list(&self, user: &str, superuser: bool, all: bool) -> Result<Vec<AppReport>, Refusal> {
        if all && !superuser {
            return Err(Refusal::new(
                ErrorKind::PermissionDenied,
                format!("{user} may list only their own applications"),
            ));
        }
        let mine = self.apps.values().filter(|a| all || a.user == user);
        Ok(mine.map(|a| self.report_of(a)).collect())
    }

    /// An application, as its user (or an admin) sees it.
    pub fn report(&self, id: &str, user: &str, superuser: bool) -> Result<AppReport, Refusal> {
        Ok(self.report_of(self.app_of(id, user, superuser)?))
    }

    fn report_of(&self, a: &AppRec) -> AppReport {
        AppReport {
            app_id: a.id.clone(),
            name: a.sub.name.clone(),
            user: a.user.clone(),
            queue: a.sub.queue.clone(),
            state: a.state,
            diagnostics: a.diagnostics.clone(),
            max_attempts: a.sub.max_attempts,
            attempts: a
                .attempts
                .iter()
                .map(|t| AttemptReport {
                    attempt: t.n,
                    container_id: t.container.clone(),
                    worker_id: t.worker.clone(),
                    status: t.status.clone(),
                })
                .collect(),
        }
    }

    /// Drains worker `id` at its own request (a spot node's interruption notice): as
    /// [`Self::drain`], but a drain already under way keeps its deadline when that is the
    /// earlier one: a worker may hurry its drain, never put it off. `until_ms` is `until`
    /// by the wall clock (for the record).
    pub fn drain_no_later(&mut self, id: &str, until: Instant, until_ms: u64) -> Result<usize, Refusal> {
        let w = self.workers.get(id).ok_or_else(|| Refusal::new(ErrorKind::NotFound, format!("no worker {id}")))?;
        let (until, until_ms) = match (w.drain_until, w.drain_until_ms) {
            (Some(d), Some(d_ms)) if d <= until => (d, d_ms),
            _ => (until, until_ms),
        };
        let left = self.drain(id, Some(until))?;
        self.note_drain_ms(id, Some(until_ms));
        Ok(left)
    }

    /// Drains worker `id` (an admin's call): no new container there from now; what runs
    /// on it is stopped at `until`. `None` takes it back into service. Returns how many
    /// containers it still has.
    pub fn drain(&mut self, id: &str, until: Option<Instant>) -> Result<usize, Refusal> {
        let w = self.workers.get_mut(id).ok_or_else(|| Refusal::new(ErrorKind::NotFound, format!("no worker {id}")))?;
        w.drain_until = until;
        if until.is_some() {
            // Allocations there that their masters have not started yet will not be.
            let unstarted: Vec<String> = self
                .containers
                .iter()
                .filter(|(_, c)| c.worker == id && !c.launched)
                .map(|(cid, _)| cid.clone())
                .collect();
            for cid in unstarted {
                self.stop_container(&cid, ExitReason::KilledByResourceManager, &format!("worker {id} is drained"));
            }
        }
        match until {
            Some(_) => tracing::info!(worker = %id, "worker drained: no new containers"),
            None => tracing::info!(worker = %id, "worker back in service"),
        }
        let left = self.containers.values().filter(|c| c.worker == id).count();
        if until.is_none() {
            self.schedule();
        }
        Ok(left)
    }

    /// `Some(why)` when no running worker (of `label`) could ever hold `r`, though some
    /// run: a request that would wait forever. (With none running yet, it waits.)
    fn too_large(&self, r: &Resources, label: Option<NodeLabel>) -> Option<String> {
        let mut them = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Running && !w.placeholder && label.is_none_or(|l| l == w.info.label));
        let largest = them.clone().map(|w| w.info.capacity).max_by_key(|c| (c.memory_mib, c.vcores))?;
        if them.any(|w| w.info.capacity.fits(r)) {
            return None;
        }
        let kind = label.map(|l| format!("{} ", l.as_str())).unwrap_or_default();
        Some(format!(
            "{} vcores and {} MiB: no {kind}worker has that much (the largest has {} vcores, {} MiB)",
            r.vcores, r.memory_mib, largest.vcores, largest.memory_mib
        ))
    }

    /// Declares lost every running worker silent past the expiry, and its containers
    /// with it; returns them. Stops masters that outstayed their finished application.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        self.preempt(now);
        self.prune();
        let grace = self.limits.master_exit_grace;
        let stale: Vec<String> = self
            .apps
            .values()
            .filter(|a| a.finished_at.is_some_and(|t| now.saturating_duration_since(t) > grace))
            .filter_map(|a| a.attempts.last().map(|t| t.container.clone()))
            .filter(|cid| self.containers.get(cid).is_some_and(|c| c.stopping.is_none()))
            .collect();
        for cid in stale {
            tracing::warn!(container = %cid, "a master did not exit after finishing its application: stopped");
            self.stop_container(
                &cid,
                ExitReason::KilledByResourceManager,
                "did not exit after finishing its application",
            );
        }
        // Drained workers past their deadline: what still runs there is stopped.
        let overdue: Vec<(String, String)> = self
            .containers
            .iter()
            .filter(|(_, c)| c.stopping.is_none())
            .filter(|(_, c)| self.workers.get(&c.worker).and_then(|w| w.drain_until).is_some_and(|d| now >= d))
            .map(|(cid, c)| (cid.clone(), c.worker.clone()))
            .collect();
        for (cid, worker) in overdue {
            let why = format!("worker {worker} was drained and its deadline passed");
            self.stop_container(&cid, ExitReason::KilledByResourceManager, &why);
        }
        let mut lost = Vec::new();
        for (id, w) in &mut self.workers {
            if w.state == WorkerState::Running && now.saturating_duration_since(w.last_seen) > self.expiry {
                w.state = WorkerState::Lost;
                w.placeholder = false;
                self.workers_dirty = true;
                w.start.clear();
                w.kill.clear();
                tracing::warn!(worker = %id, silent = ?now.saturating_duration_since(w.last_seen), "worker lost");
                lost.push(id.clone());
            }
        }
        for id in &lost {
            let gone: Vec<String> =
                self.containers.iter().filter(|(_, c)| &c.worker == id).map(|(cid, _)| cid.clone()).collect();
            for cid in gone {
                let status = ContainerStatus::ended(&cid, ExitReason::WorkerLost, -1, format!("worker {id} was lost"));
                self.complete(&cid, status);
            }
        }
        if !lost.is_empty() {
            self.recount();
            self.schedule();
        }
        if self.recovering.is_some_and(|until| now >= until) && !self.workers.values().any(|w| w.placeholder) {
            self.recovering = None;
            tracing::info!("every worker the records named is back or lost: masters may register again");
        }
        lost
    }

    /// Preemption (YARN's ProportionalCapacityPreemptionPolicy, simply): for each leaf
    /// queue under its guarantee with something waiting that no worker has room for,
    /// containers of queues over their guarantee are chosen, newest application and
    /// container first, never a master, never taking a queue below its guarantee nor
    /// lifting the starved one above its own. A chosen container's master is told (its
    /// next allocate answer); when the notice ends it is stopped, `PREEMPTED`, and what
    /// frees up goes to the starved queue (it is first in line). A choice no longer needed
    /// (the starved queue got room, or its work went) is dropped.
    fn preempt(&mut self, now: Instant) {
        const EPS: f64 = 1e-9;
        let Some(wait) = self.limits.preemption_wait else { return };
        let total = self.total();
        // Not while workers are still reporting after a takeover: the books are not whole.
        if total.vcores == 0 || total.memory_mib == 0 || self.queues.leaves.len() < 2 || self.recovering.is_some() {
            self.preempting.clear();
            return;
        }
        let guarantee = |l: usize| self.queues.leaves[l].guarantee;
        let mut used = self.used_leaf.clone();
        // Kills already sent count as done: the room is on its way to the starved queue.
        for c in self.containers.values() {
            if let Some((ExitReason::Preempted, why)) = &c.stopping {
                let victim = self.leaf_of(&c.app);
                let starved = why.strip_prefix("preempted for queue ").and_then(|r| r.split(',').next());
                if let Some(s) = starved.and_then(|q| self.queues.leaves.iter().position(|l| l.path == q)) {
                    used[victim] = minus(used[victim], c.resources);
                    used[s] = plus(used[s], c.resources);
                }
            }
        }
        // What each leaf waits for, within its limits counted together: masters, then
        // asks (at most 100 containers a leaf), with the labels it may use. An ask bound
        // to its hosts (no relaxed locality) is not worth a preemption.
        struct Need {
            r: Resources,
            master: bool,
            labels: Option<Vec<NodeLabel>>,
        }
        let mut demand: BTreeMap<usize, Vec<Need>> = BTreeMap::new();
        let mut am_add: HashMap<usize, Resources> = HashMap::new();
        let mut user_add: HashMap<(usize, String), Resources> = HashMap::new();
        for a in self.apps.values() {
            let l = self.leaf_of(&a.id);
            let leaf = &self.queues.leaves[l];
            let user_max = leaf.user_limit_factor * if leaf.guarantee > 0.0 { leaf.guarantee } else { leaf.max };
            let mut items: Vec<(Resources, bool, Option<NodeLabel>)> = Vec::new();
            match a.state {
                AppState::Accepted => items.push((a.sub.am_resources, true, Some(NodeLabel::Core))),
                AppState::Running => {
                    let Some(t) = a.attempts.last().filter(|t| t.synced) else { continue };
                    for k in t.asks.values().filter(|k| k.relax_locality || (k.hosts.is_empty() && k.racks.is_empty()))
                    {
                        items.extend(std::iter::repeat_n((k.resources, false, k.label), k.count.min(100) as usize));
                    }
                }
                _ => continue,
            }
            for (r, master, label) in items {
                let mine = self.used_user[l].get(&a.user).copied().unwrap_or_default();
                let added = user_add.entry((l, a.user.clone())).or_default();
                let u = plus(mine, *added);
                if u != Resources::default() && share(plus(u, r), total) > user_max + EPS {
                    break;
                }
                if master {
                    let am = plus(self.am_leaf[l], am_add.get(&l).copied().unwrap_or_default());
                    if am != Resources::default()
                        && share(plus(am, r), total) > leaf.max_am_share * leaf.guarantee + EPS
                    {
                        continue;
                    }
                    *am_add.entry(l).or_default() = plus(am_add.get(&l).copied().unwrap_or_default(), r);
                }
                *added = plus(*added, r);
                let labels = match (&leaf.labels, label) {
                    (Some(ls), Some(one)) => Some(ls.iter().copied().filter(|x| *x == one).collect()),
                    (Some(ls), None) => Some(ls.clone()),
                    (None, Some(one)) => Some(vec![one]),
                    (None, None) => None,
                };
                let d = demand.entry(l).or_default();
                if d.len() < 100 {
                    d.push(Need { r, master, labels });
                }
            }
        }
        let label_of: HashMap<&str, NodeLabel> =
            self.workers.values().map(|w| (w.info.id.as_str(), w.info.label)).collect();
        let mut free: BTreeMap<String, Resources> = self
            .workers
            .values()
            .filter(|w| w.state == WorkerState::Running && !w.placeholder && w.drain_until.is_none())
            .map(|w| (w.info.id.clone(), w.free()))
            .collect();
        // Victims: containers of queues over their guarantee; those already chosen first
        // (their notice runs), then the newest.
        let mut victims: Vec<(usize, String, Resources, String)> = self
            .containers
            .iter()
            .filter(|(_, c)| !c.master && c.stopping.is_none())
            .filter_map(|(cid, c)| {
                let l = self.leaf_of(&c.app);
                (share(used[l], total) > guarantee(l) + EPS).then(|| (l, cid.clone(), c.resources, c.worker.clone()))
            })
            .collect();
        victims.sort_by(|a, b| {
            let (ca, cb) = (self.preempting.contains_key(&a.1), self.preempting.contains_key(&b.1));
            cb.cmp(&ca).then(b.1.cmp(&a.1))
        });
        let mut starved: Vec<usize> =
            demand.keys().copied().filter(|l| share(used[*l], total) + EPS < guarantee(*l)).collect();
        starved.sort_by(|a, b| {
            (share(used[*a], total) / guarantee(*a)).total_cmp(&(share(used[*b], total) / guarantee(*b)))
        });
        let mut chosen: HashMap<String, String> = HashMap::new();
        for s in starved {
            for need in demand.remove(&s).unwrap_or_default() {
                let usable = |w: &String| {
                    let label = label_of.get(w.as_str()).copied();
                    (!need.master || label == Some(NodeLabel::Core))
                        && need.labels.as_ref().is_none_or(|ls| label.is_some_and(|l| ls.contains(&l)))
                };
                if share(plus(used[s], need.r), total) > guarantee(s) + EPS {
                    break;
                }
                // Room somewhere already: the next heartbeat places it.
                if let Some(f) = free.iter_mut().filter(|(w, _)| usable(w)).map(|(_, f)| f).find(|f| f.fits(&need.r)) {
                    *f = minus(*f, need.r);
                    used[s] = plus(used[s], need.r);
                    continue;
                }
                // Else the worker where the fewest victims (in their order) make room.
                let mut best: Option<(String, Vec<usize>)> = None;
                for (w, room) in free.iter().filter(|(w, _)| usable(w)) {
                    let mut room = *room;
                    let mut taken = used.clone();
                    let mut picked = Vec::new();
                    for (i, (l, _, r, on)) in victims.iter().enumerate() {
                        if on != w || *l == s || share(minus(taken[*l], *r), total) + EPS < guarantee(*l) {
                            continue;
                        }
                        taken[*l] = minus(taken[*l], *r);
                        room = plus(room, *r);
                        picked.push(i);
                        if room.fits(&need.r) {
                            break;
                        }
                    }
                    if room.fits(&need.r) && best.as_ref().is_none_or(|(_, p)| picked.len() < p.len()) {
                        best = Some((w.clone(), picked));
                    }
                }
                let Some((w, picked)) = best else { break };
                let mut room = free[&w];
                for i in picked.iter().rev() {
                    let (l, cid, r, _) = victims.remove(*i);
                    used[l] = minus(used[l], r);
                    room = plus(room, r);
                    chosen.insert(cid, self.queues.leaves[s].path.clone());
                }
                free.insert(w, minus(room, need.r));
                used[s] = plus(used[s], need.r);
            }
        }
        // Choices no longer needed are dropped; new ones are told to their masters.
        self.preempting.retain(|cid, _| chosen.contains_key(cid));
        for (cid, queue) in chosen {
            if self.preempting.contains_key(&cid) {
                continue;
            }
            let Some(c) = self.containers.get(&cid) else { continue };
            let (app, n) = (c.app.clone(), c.attempt);
            if let Some(t) = self.apps.get_mut(&app).and_then(|a| a.attempts.get_mut(n as usize - 1)) {
                if !t.preempt_notice.contains(&cid) {
                    t.preempt_notice.push(cid.clone());
                }
            }
            tracing::info!(container = %cid, %app, for_queue = %queue, "container to be preempted");
            self.preempting.insert(cid, (now + wait, queue));
        }
        let due: Vec<(String, String)> = self
            .preempting
            .iter()
            .filter(|(_, (at, _))| now >= *at)
            .map(|(cid, (_, q))| (cid.clone(), q.clone()))
            .collect();
        for (cid, queue) in due {
            self.preempting.remove(&cid);
            let why = format!("preempted for queue {queue}, under its guarantee");
            self.stop_container(&cid, ExitReason::Preempted, &why);
        }
    }

    /// The leaf of application `app` (the first if unknown).
    fn leaf_of(&self, app: &str) -> usize {
        self.apps.get(app).map(|a| self.queues.index(&a.sub.queue)).unwrap_or(0)
    }

    /// Forgets the oldest ended applications beyond `max_completed_apps` (those whose
    /// workers were told they ended; their records go too).
    fn prune(&mut self) {
        let max = self.limits.max_completed_apps;
        if self.apps.len() <= max {
            return;
        }
        let ended: Vec<String> =
            self.apps.values().filter(|a| a.state.is_final() && a.touched.is_empty()).map(|a| a.id.clone()).collect();
        let excess = ended.len().saturating_sub(max);
        for id in ended.into_iter().take(excess) {
            let Some(a) = self.apps.remove(&id) else { continue };
            if !a.sub.submission_id.is_empty() {
                self.submissions.remove(&(a.user, a.sub.submission_id));
            }
            self.dirty.remove(&id);
            if self.persist {
                self.gen += 1;
                self.removed.push(id);
            }
        }
    }

    /// Counts every running worker as heard from now: this resource manager did not serve
    /// for a while (its lease lapsed), so their silence was its own.
    pub fn heard_all(&mut self, now: Instant) {
        for w in self.workers.values_mut().filter(|w| w.state == WorkerState::Running) {
            w.last_seen = w.last_seen.max(now);
        }
    }

    /// Containers placed and not yet ended (masters included).
    pub fn container_count(&self) -> usize {
        self.containers.len()
    }

    /// Every worker, running or lost, by id.
    pub fn workers(&self, now: Instant) -> Vec<WorkerReport> {
        self.workers
            .values()
            .map(|w| WorkerReport {
                worker_id: w.info.id.clone(),
                host: w.info.host.clone(),
                rack: w.info.rack.clone(),
                label: w.info.label,
                state: match (w.state, w.drain_until) {
                    (WorkerState::Running, Some(_)) => WorkerState::Draining,
                    (s, _) => s,
                },
                capacity: w.info.capacity,
                used: w.used,
                since_heartbeat: now.saturating_duration_since(w.last_seen),
            })
            .collect()
    }
}

/// `s`, cut to at most `max` bytes (at a character's boundary).
fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// What is kept of application `a`: its submission (bounded at submit) and texts cut
/// short, so that a record always fits where it is kept (`ha::RECORD_MAX`).
fn record_of(a: &AppRec) -> AppRecord {
    AppRecord {
        id: a.id.clone(),
        user: a.user.clone(),
        sub: a.sub.clone(),
        state: a.state,
        diagnostics: clip(&a.diagnostics, 2048),
        attempts: a
            .attempts
            .iter()
            .map(|t| AttemptRecord {
                n: t.n,
                container: t.container.clone(),
                worker: t.worker.clone(),
                status: ContainerStatus { diagnostics: clip(&t.status.diagnostics, 1024), ..t.status.clone() },
                registered: t.registered,
                tracking_url: clip(&t.tracking_url, 1024),
            })
            .collect(),
    }
}

/// Most files localized into one container.
const LOCAL_FILES_MAX: usize = 100;

/// What is wrong with a spec's files to localize, if anything.
fn bad_files(spec: &tarn_client::rm::ContainerSpec) -> Option<String> {
    if spec.files.len() > LOCAL_FILES_MAX {
        return Some(format!("{} files; at most {LOCAL_FILES_MAX}", spec.files.len()));
    }
    let mut seen = BTreeSet::new();
    for f in &spec.files {
        if let Some(why) = f.bad_name() {
            return Some(why);
        }
        if !f.path.starts_with('/') {
            return Some(format!("{:?}: a path in the file system starts with /", f.path));
        }
        if !seen.insert(f.name.as_str()) {
            return Some(format!("two files named {:?}", f.name));
        }
    }
    None
}

/// Why a container ended, in words.
fn describe(s: &ContainerStatus) -> String {
    let reason = s.ended.unwrap_or(ExitReason::Exited);
    let mut out = match reason {
        ExitReason::Exited => format!("container {} exited with code {}", s.container_id, s.exit_code),
        r => format!("container {} {}", s.container_id, r.as_str()),
    };
    if !s.diagnostics.is_empty() {
        out.push_str(&format!(" ({})", s.diagnostics));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ClusterState {
        fn register_bare(&mut self, info: WorkerInfo, now: Instant) -> Result<(), Refusal> {
            self.register(info, Vec::new(), now)
        }
    }

    fn info(id: &str, label: NodeLabel) -> WorkerInfo {
        WorkerInfo {
            id: id.into(),
            host: format!("{id}.local"),
            rack: "/r1".into(),
            label,
            capacity: Resources::new(4, 8192),
        }
    }

    #[test]
    fn a_silent_worker_is_lost_and_must_register_again() {
        let t0 = Instant::now();
        let mut c = ClusterState::new(Duration::from_secs(10));
        c.register_bare(info("w1", NodeLabel::Core), t0).unwrap();
        c.register_bare(info("w2", NodeLabel::Task), t0).unwrap();
        assert!(c.heartbeat("w1", vec![], t0 + Duration::from_secs(8)).is_some());
        // w2 said nothing for 11 s: lost; w1 heard 3 s ago: running.
        assert_eq!(c.expire(t0 + Duration::from_secs(11)), vec!["w2".to_string()]);
        let states: Vec<(String, WorkerState)> =
            c.workers(t0 + Duration::from_secs(11)).into_iter().map(|w| (w.worker_id, w.state)).collect();
        assert_eq!(states, [("w1".into(), WorkerState::Running), ("w2".into(), WorkerState::Lost)]);
        // Lost once, its heartbeats are answered "register again", and nothing is lost twice.
        assert!(c.heartbeat("w2", vec![], t0 + Duration::from_secs(12)).is_none());
        assert!(c.expire(t0 + Duration::from_secs(12)).is_empty());
        c.register_bare(info("w2", NodeLabel::Task), t0 + Duration::from_secs(12)).unwrap();
        assert!(c.heartbeat("w2", vec![], t0 + Duration::from_secs(13)).is_some());
        assert!(c.heartbeat("stranger", vec![], t0 + Duration::from_secs(13)).is_none());
    }

    #[test]
    fn a_worker_without_capacity_or_name_is_refused() {
        let mut c = ClusterState::new(Duration::from_secs(10));
        let mut none = info("w1", NodeLabel::Core);
        none.capacity = Resources::new(0, 1024);
        assert_eq!(c.register_bare(none, Instant::now()).unwrap_err().kind, ErrorKind::InvalidArgument);
        assert_eq!(
            c.register_bare(info("", NodeLabel::Core), Instant::now()).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        assert!(c.workers(Instant::now()).is_empty());
    }

    fn app(cmd: &str) -> AppSubmission {
        AppSubmission {
            name: "etl".into(),
            am_resources: Resources::new(1, 1024),
            am_spec: tarn_client::rm::ContainerSpec { command: vec![cmd.into()], ..Default::default() },
            ..Default::default()
        }
    }

    fn cluster(workers: &[(&str, NodeLabel)], t: Instant) -> ClusterState {
        let mut c = ClusterState::with_limits(Duration::from_secs(10), AppLimits::default(), 7);
        for (id, l) in workers {
            c.register_bare(info(id, *l), t).unwrap();
        }
        c
    }

    fn state(c: &ClusterState, id: &str) -> AppState {
        c.report(id, "alice", false).unwrap().state
    }

    #[test]
    fn the_master_runs_on_a_core_worker_and_exit_0_finishes_the_application() {
        let t = Instant::now();
        let mut c = cluster(&[("task1", NodeLabel::Task), ("core1", NodeLabel::Core)], t);
        let id = c.submit("alice", app("/bin/true")).unwrap();
        assert_eq!(id, "app-7-0001");
        assert!(c.heartbeat("task1", vec![], t).unwrap().start.is_empty(), "never on a task node");
        let start = c.heartbeat("core1", vec![], t).unwrap().start;
        assert_eq!(start.len(), 1);
        let cid = start[0].container_id.clone();
        assert_eq!((start[0].user.as_str(), start[0].app_id.as_str()), ("alice", id.as_str()));
        assert_eq!(c.workers(t).iter().find(|w| w.worker_id == "core1").unwrap().used, Resources::new(1, 1024));
        c.heartbeat("core1", vec![ContainerStatus::running(&cid)], t).unwrap();
        assert_eq!(state(&c, &id), AppState::Running);
        let done = c.heartbeat("core1", vec![ContainerStatus::ended(&cid, ExitReason::Exited, 0, "")], t).unwrap();
        assert_eq!(done.forget, vec![cid.clone()], "the worker may forget what was reported");
        assert_eq!(state(&c, &id), AppState::Finished);
        assert_eq!(c.workers(t).iter().find(|w| w.worker_id == "core1").unwrap().used, Resources::default());
        // A repeat of the same report is acknowledged and changes nothing.
        let again = c.heartbeat("core1", vec![ContainerStatus::ended(&cid, ExitReason::Exited, 0, "")], t).unwrap();
        assert_eq!(again.forget, vec![cid]);
        assert_eq!(state(&c, &id), AppState::Finished);
    }

    #[test]
    fn a_failed_master_gets_a_second_attempt_elsewhere_then_the_application_fails() {
        let t = Instant::now();
        let mut c = cluster(&[("core1", NodeLabel::Core), ("core2", NodeLabel::Core)], t);
        let id = c.submit("alice", app("/bin/false")).unwrap();
        let first = c.report(&id, "alice", false).unwrap().attempts[0].clone();
        let w1 = first.worker_id.clone();
        let fail = |cid: &str| vec![ContainerStatus::ended(cid, ExitReason::Exited, 3, "")];
        c.heartbeat(&w1, fail(&first.container_id), t).unwrap();
        let r = c.report(&id, "alice", false).unwrap();
        assert_eq!(r.state, AppState::Running, "{r:?}");
        assert_eq!(r.attempts.len(), 2);
        assert_ne!(r.attempts[1].worker_id, w1, "the next attempt goes to another core worker");
        assert!(r.diagnostics.contains("attempt 1 failed") && r.diagnostics.contains("code 3"), "{}", r.diagnostics);
        let second = r.attempts[1].clone();
        c.heartbeat(&second.worker_id, fail(&second.container_id), t).unwrap();
        let r = c.report(&id, "alice", false).unwrap();
        assert_eq!(r.state, AppState::Failed);
        assert!(r.diagnostics.starts_with("2 of 2 attempts failed"), "{}", r.diagnostics);
        assert_eq!(r.attempts.len(), 2);
    }

    #[test]
    fn a_lost_worker_fails_the_attempt_and_its_later_reports_are_refused() {
        let t = Instant::now();
        let mut c = cluster(&[("core1", NodeLabel::Core), ("core2", NodeLabel::Core)], t);
        let id = c.submit("alice", app("sleep")).unwrap();
        let first = c.report(&id, "alice", false).unwrap().attempts[0].clone();
        let other = if first.worker_id == "core1" { "core2" } else { "core1" };
        c.heartbeat(other, vec![], t + Duration::from_secs(9)).unwrap();
        assert_eq!(c.expire(t + Duration::from_secs(11)), vec![first.worker_id.clone()]);
        let r = c.report(&id, "alice", false).unwrap();
        assert_eq!(r.attempts[0].status.ended, Some(ExitReason::WorkerLost));
        assert_eq!((r.attempts.len(), r.attempts[1].worker_id.as_str()), (2, other));
        // Back, it registers again and is told to kill what it still runs.
        assert!(c.heartbeat(&first.worker_id, vec![], t + Duration::from_secs(12)).is_none());
        c.register_bare(info(&first.worker_id, NodeLabel::Core), t + Duration::from_secs(12)).unwrap();
        let k = c.heartbeat(&first.worker_id, vec![ContainerStatus::running(&first.container_id)], t).unwrap();
        assert_eq!(
            k.kill.iter().map(|(cid, r, _)| (cid.as_str(), *r)).collect::<Vec<_>>(),
            [(first.container_id.as_str(), ExitReason::KilledByResourceManager)]
        );
    }

    #[test]
    fn only_its_user_or_an_admin_sees_or_kills_an_application() {
        let t = Instant::now();
        let mut c = cluster(&[("core1", NodeLabel::Core)], t);
        let id = c.submit("alice", app("sleep")).unwrap();
        assert_eq!(c.report(&id, "bob", false).unwrap_err().kind, ErrorKind::PermissionDenied);
        assert_eq!(c.kill_app(&id, "bob", false).unwrap_err().kind, ErrorKind::PermissionDenied);
        assert_eq!(c.report("app-7-9999", "alice", false).unwrap_err().kind, ErrorKind::NotFound);
        let cid = c.heartbeat("core1", vec![], t).unwrap().start[0].container_id.clone();
        assert!(c.kill_app(&id, "root", true).unwrap());
        assert!(!c.kill_app(&id, "alice", false).unwrap(), "already ended");
        let cmds = c.heartbeat("core1", vec![ContainerStatus::running(&cid)], t).unwrap();
        assert_eq!(cmds.kill.len(), 1);
        let ended = ContainerStatus::ended(&cid, ExitReason::KilledByResourceManager, 137, "");
        c.heartbeat("core1", vec![ended], t).unwrap();
        let r = c.report(&id, "alice", false).unwrap();
        assert_eq!((r.state, r.diagnostics.as_str()), (AppState::Killed, "killed by root"));
        assert_eq!(c.workers(t)[0].used, Resources::default(), "its resources are free again");
        c.submit("bob", app("sleep")).unwrap();
        let ids = |v: Vec<AppReport>| v.into_iter().map(|r| r.user).collect::<Vec<_>>();
        assert_eq!(ids(c.list("alice", false, false).unwrap()), ["alice"]);
        assert_eq!(ids(c.list("root", true, true).unwrap()), ["alice", "bob"]);
        assert_eq!(c.list("alice", false, true).unwrap_err().kind, ErrorKind::PermissionDenied);
    }

    #[test]
    fn submissions_name_what_is_wrong() {
        let mut c = cluster(&[], Instant::now());
        let mut s = app("");
        assert!(c.submit("alice", s.clone()).unwrap_err().message.contains("am_spec.command"));
        s = app("x");
        s.am_resources = Resources::new(64, 1024);
        assert!(c.submit("alice", s.clone()).unwrap_err().message.contains("more than a container may have"));
        s = app("x");
        s.max_attempts = 9;
        assert!(c.submit("alice", s.clone()).unwrap_err().message.contains("max_attempts"));
        s = app("x");
        s.queue = "gold".into();
        assert_eq!(c.submit("alice", s).unwrap_err().kind, ErrorKind::NotFound);
        // No core worker: accepted, and it says what it waits for.
        let id = c.submit("alice", app("x")).unwrap();
        let r = c.report(&id, "alice", false).unwrap();
        assert_eq!(r.state, AppState::Accepted);
        assert!(r.diagnostics.contains("waiting for a core worker with 1 vcores and 1024 MiB"), "{}", r.diagnostics);
    }

    /// A cluster with one application whose master (on `core1`) has registered; returns
    /// the application and the master's container.
    fn registered(workers: &[(&str, NodeLabel)], t: Instant) -> (ClusterState, String, String) {
        let mut c = cluster(workers, t);
        let id = c.submit("alice", app("am")).unwrap();
        let am = c.report(&id, "alice", false).unwrap().attempts[0].container_id.clone();
        let reg = c.register_master(&am, "alice", "http://am:1").unwrap();
        assert_eq!((reg.app_id.as_str(), reg.attempt), (id.as_str(), 1));
        // The workers take their commands (the master's start).
        for (w, _) in workers {
            c.heartbeat(w, vec![], t).unwrap();
        }
        (c, id, am)
    }

    fn ask(id: u64, count: u32, hosts: &[&str], relax: bool) -> ContainerAsk {
        ContainerAsk {
            ask_id: id,
            resources: Resources::new(1, 1024),
            count,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            relax_locality: relax,
            ..Default::default()
        }
    }

    fn call(response_id: u64, asks: Vec<ContainerAsk>) -> AllocateCall {
        AllocateCall { response_id, asks, ..Default::default() }
    }

    fn spec(cmd: &str) -> tarn_client::rm::ContainerSpec {
        tarn_client::rm::ContainerSpec { command: vec![cmd.into()], ..Default::default() }
    }

    #[test]
    fn a_master_asks_launches_hears_of_ends_and_finishes() {
        let t = Instant::now();
        let (mut c, id, am) = registered(&[("core1", NodeLabel::Core), ("task1", NodeLabel::Task)], t);
        // Three anywhere: room for 3 on task1 (4 vcores) and 3 on core1 (the master holds one).
        let r = c.allocate(&am, "alice", call(0, vec![ask(1, 3, &[], true)])).unwrap();
        assert_eq!((r.response_id, r.allocated.len()), (1, 3));
        let ids: Vec<String> = r.allocated.iter().map(|a| a.container_id.clone()).collect();
        assert_eq!(ids[0], format!("{id}_01_000002"));
        // Nothing starts before the master launches it; launched, the workers are told.
        assert!(c.heartbeat("task1", vec![], t).unwrap().start.is_empty());
        let mut launch = call(1, vec![]);
        launch.launch = ids.iter().map(|i| (i.clone(), spec("/bin/work"))).collect();
        c.allocate(&am, "alice", launch).unwrap();
        let started: usize = ["core1", "task1"].iter().map(|w| c.heartbeat(w, vec![], t).unwrap().start.len()).sum();
        assert_eq!(started, 3);
        // One ends: its master hears of it once.
        let w0 = r.allocated[0].worker_id.clone();
        c.heartbeat(&w0, vec![ContainerStatus::ended(&ids[0], ExitReason::Exited, 0, "")], t).unwrap();
        let r = c.allocate(&am, "alice", call(2, vec![])).unwrap();
        assert_eq!(r.completed.iter().map(|s| s.container_id.as_str()).collect::<Vec<_>>(), [ids[0].as_str()]);
        assert!(c.allocate(&am, "alice", call(3, vec![])).unwrap().completed.is_empty());
        // Finished by its master: the others are stopped, the application is done.
        c.finish_master(&am, "alice", FinalStatus::Succeeded, "", t).unwrap();
        assert_eq!(state(&c, &id), AppState::Finished);
        let kills: Vec<(String, ExitReason)> = ["core1", "task1"]
            .iter()
            .flat_map(|w| c.heartbeat(w, vec![], t).unwrap().kill)
            .map(|(cid, r, _)| (cid, r))
            .collect();
        assert_eq!(kills.len(), 2, "{kills:?}");
        assert!(kills.iter().all(|(_, r)| *r == ExitReason::AttemptEnded));
        // The master's own exit afterwards changes nothing.
        c.heartbeat("core1", vec![ContainerStatus::ended(&am, ExitReason::Exited, 0, "")], t).unwrap();
        assert_eq!(state(&c, &id), AppState::Finished);
        assert!(c.allocate(&am, "alice", call(4, vec![])).is_err(), "a finished master is not heard");
    }

    #[test]
    fn containers_go_to_the_asked_host_then_elsewhere_only_if_allowed() {
        let t = Instant::now();
        let (mut c, _, am) = registered(&[("core1", NodeLabel::Core), ("core2", NodeLabel::Core)], t);
        let other = if c.containers[&am].worker == "core1" { "core2" } else { "core1" };
        let host = format!("{other}.local");
        // Strict: only on that host (4 vcores: 4 containers), then it waits.
        let r = c.allocate(&am, "alice", call(0, vec![ask(7, 6, &[&host], false)])).unwrap();
        assert_eq!(r.allocated.len(), 4);
        assert!(r.allocated.iter().all(|a| a.worker_id == other && a.host == host && a.ask_id == 7));
        let r = c.allocate(&am, "alice", call(1, vec![])).unwrap();
        assert!(r.allocated.is_empty(), "2 still asked, none placed off the host");
        // Relaxed: not at once (delay scheduling); once the master's node (same rack) let a
        // round of opportunities (2 workers: 2 heartbeats) pass, the rest go there.
        let r = c.allocate(&am, "alice", call(2, vec![ask(7, 2, &[&host], true)])).unwrap();
        assert!(r.allocated.is_empty(), "waits for its host first");
        let mine = c.containers[&am].worker.clone();
        c.heartbeat(&mine, vec![], t).unwrap();
        assert!(c.allocate(&am, "alice", call(3, vec![])).unwrap().allocated.is_empty(), "one opportunity passed");
        for _ in 0..3 {
            c.heartbeat(&mine, vec![], t).unwrap();
        }
        let r = c.allocate(&am, "alice", call(4, vec![])).unwrap();
        assert_eq!(r.allocated.len(), 2);
        assert!(r.allocated.iter().all(|a| a.worker_id != other));
        // A label limits where: no task node here, so nothing.
        let mut on_task = ask(8, 1, &[], true);
        on_task.label = Some(NodeLabel::Task);
        assert!(c.allocate(&am, "alice", call(5, vec![on_task])).unwrap().allocated.is_empty());
    }

    #[test]
    fn a_lost_answer_is_sent_again_and_a_wrong_id_is_refused() {
        let t = Instant::now();
        let (mut c, _, am) = registered(&[("core1", NodeLabel::Core)], t);
        let first = c.allocate(&am, "alice", call(0, vec![ask(1, 2, &[], true)])).unwrap();
        assert_eq!(first.allocated.len(), 2);
        // The same request again (its answer was lost): the same answer, nothing more.
        assert_eq!(c.allocate(&am, "alice", call(0, vec![ask(1, 2, &[], true)])).unwrap(), first);
        assert_eq!(c.workers(t)[0].used, Resources::new(3, 3072));
        let e = c.allocate(&am, "alice", call(5, vec![])).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        // Released before starting: its resources are free at once, and its master hears.
        let mut rel = call(1, vec![]);
        rel.release = vec![first.allocated[0].container_id.clone()];
        let r = c.allocate(&am, "alice", rel).unwrap();
        assert_eq!(c.workers(t)[0].used, Resources::new(2, 2048));
        assert_eq!(r.completed.len(), 1);
        assert_eq!(r.completed[0].ended, Some(ExitReason::Released));
    }

    #[test]
    fn only_the_current_master_of_its_user_is_heard() {
        let t = Instant::now();
        let (mut c, id, am) = registered(&[("core1", NodeLabel::Core), ("core2", NodeLabel::Core)], t);
        assert_eq!(c.register_master(&am, "bob", "").unwrap_err().kind, ErrorKind::PermissionDenied);
        let r = c.allocate(&am, "alice", call(0, vec![ask(1, 1, &[], true)])).unwrap();
        let task = r.allocated[0].clone();
        // A container that is not the master cannot speak for the application.
        assert_eq!(c.register_master(&task.container_id, "alice", "").unwrap_err().kind, ErrorKind::PermissionDenied);
        let mut launch = call(1, vec![]);
        launch.launch = vec![(task.container_id.clone(), spec("/bin/work"))];
        c.allocate(&am, "alice", launch).unwrap();
        assert_eq!(c.heartbeat(&task.worker_id, vec![], t).unwrap().start.len(), 1, "the task started");
        // The master dies: its attempt's containers are stopped, and a new attempt starts
        // clean; the old master is not heard again.
        let w = c.containers[&am].worker.clone();
        c.heartbeat(&w, vec![ContainerStatus::ended(&am, ExitReason::Exited, 137, "")], t).unwrap();
        let kill = c.heartbeat(&task.worker_id, vec![ContainerStatus::running(&task.container_id)], t).unwrap().kill;
        assert_eq!(
            kill.iter().map(|k| (k.0.as_str(), k.1)).collect::<Vec<_>>(),
            [(task.container_id.as_str(), ExitReason::AttemptEnded)]
        );
        assert_eq!(c.allocate(&am, "alice", call(2, vec![])).unwrap_err().kind, ErrorKind::PermissionDenied);
        let r = c.report(&id, "alice", false).unwrap();
        assert_eq!((r.state, r.attempts.len()), (AppState::Running, 2));
        let am2 = r.attempts[1].container_id.clone();
        assert_eq!(c.register_master(&am2, "alice", "").unwrap().attempt, 2);
        assert_eq!(c.allocate(&am2, "alice", call(0, vec![])).unwrap().response_id, 1, "a new attempt starts at 1");
        // A registered master that exits 0 without finishing fails its attempt.
        let w2 = c.containers[&am2].worker.clone();
        c.heartbeat(&w2, vec![ContainerStatus::ended(&am2, ExitReason::Exited, 0, "")], t).unwrap();
        let r = c.report(&id, "alice", false).unwrap();
        assert_eq!(r.state, AppState::Failed);
        assert!(r.diagnostics.contains("without finishing"), "{}", r.diagnostics);
    }

    #[test]
    fn a_killed_application_frees_what_it_was_allocated() {
        let t = Instant::now();
        let (mut c, id, am) = registered(&[("core1", NodeLabel::Core)], t);
        c.allocate(&am, "alice", call(0, vec![ask(1, 2, &[], true)])).unwrap();
        assert_eq!(c.workers(t)[0].used, Resources::new(3, 3072));
        c.kill_app(&id, "alice", false).unwrap();
        // Allocations never started are free at once; the master when its worker says so.
        assert_eq!(c.workers(t)[0].used, Resources::new(1, 1024));
        c.heartbeat("core1", vec![ContainerStatus::ended(&am, ExitReason::KilledByResourceManager, 137, "")], t)
            .unwrap();
        assert_eq!(c.workers(t)[0].used, Resources::default());
    }

    #[test]
    fn odd_master_requests_are_refused_without_harm() {
        let t = Instant::now();
        let (mut c, _, am) = registered(&[("core1", NodeLabel::Core)], t);
        let r = c.allocate(&am, "alice", call(0, vec![ask(1, 1, &[], true)])).unwrap();
        let cid = r.allocated[0].container_id.clone();
        let mut both = call(1, vec![]);
        both.launch = vec![(cid.clone(), spec("/bin/work"))];
        both.release = vec![cid.clone()];
        assert_eq!(c.allocate(&am, "alice", both).unwrap_err().kind, ErrorKind::InvalidArgument);
        assert_eq!(c.allocate(&am, "alice", call(u64::MAX, vec![])).unwrap_err().kind, ErrorKind::InvalidArgument);
        assert_eq!(c.workers(t)[0].used, Resources::new(2, 2048), "nothing changed");
    }

    #[test]
    fn a_stop_reaches_a_container_whose_start_was_not_delivered_or_whose_kill_was_lost() {
        let t = Instant::now();
        let (mut c, _, am) = registered(&[("core1", NodeLabel::Core)], t);
        let r = c.allocate(&am, "alice", call(0, vec![ask(1, 2, &[], true)])).unwrap();
        let (a, b) = (r.allocated[0].container_id.clone(), r.allocated[1].container_id.clone());
        let mut launch = call(1, vec![]);
        launch.launch = vec![(a.clone(), spec("/bin/work")), (b.clone(), spec("/bin/work"))];
        c.allocate(&am, "alice", launch).unwrap();
        // a's start reaches the worker; b's is still queued when the master releases both.
        let cmds = c.heartbeat("core1", vec![], t).unwrap();
        assert_eq!(cmds.start.len(), 2);
        let mut launch_more = call(2, vec![ask(1, 1, &[], true)]);
        launch_more.release = vec![];
        let r = c.allocate(&am, "alice", launch_more).unwrap();
        let d = r.allocated[0].container_id.clone();
        let mut l = call(3, vec![]);
        l.launch = vec![(d.clone(), spec("/bin/work"))];
        c.allocate(&am, "alice", l).unwrap();
        let mut rel = call(4, vec![]);
        rel.release = vec![a.clone(), d.clone()];
        let r = c.allocate(&am, "alice", rel).unwrap();
        // d never left the queue: it ends at once, and no start of it goes out.
        assert_eq!(r.completed.iter().map(|s| s.container_id.as_str()).collect::<Vec<_>>(), [d.as_str()]);
        let cmds = c.heartbeat("core1", vec![ContainerStatus::running(&a)], t).unwrap();
        assert!(cmds.start.is_empty(), "{cmds:?}");
        assert_eq!(cmds.kill.iter().filter(|k| k.0 == a).count(), 1);
        // The answer with the kill was lost: a is reported running again, the kill goes again.
        let cmds = c.heartbeat("core1", vec![ContainerStatus::running(&a)], t).unwrap();
        assert_eq!(
            cmds.kill.iter().map(|k| (k.0.as_str(), k.1)).collect::<Vec<_>>(),
            [(a.as_str(), ExitReason::Released)]
        );
        c.heartbeat("core1", vec![ContainerStatus::ended(&a, ExitReason::Released, 137, "")], t).unwrap();
        assert_eq!(c.workers(t)[0].used, Resources::new(2, 2048), "the master and b");
    }

    #[test]
    fn what_no_worker_could_hold_is_refused_and_a_lingering_master_is_stopped() {
        let t = Instant::now();
        let (mut c, id, am) = registered(&[("core1", NodeLabel::Core), ("task1", NodeLabel::Task)], t);
        // Workers have 4 vcores, 8 GiB.
        let mut big = app("am");
        big.am_resources = Resources::new(8, 1024);
        let e = c.submit("alice", big).unwrap_err();
        assert!(
            e.message.contains("no core worker has that much (the largest has 4 vcores, 8192 MiB)"),
            "{}",
            e.message
        );
        let mut huge = ask(1, 1, &[], true);
        huge.resources = Resources::new(1, 9000);
        let e = c.allocate(&am, "alice", call(0, vec![huge])).unwrap_err();
        assert!(e.message.contains("no worker has that much"), "{}", e.message);
        // Finished by its master, which then does not exit: stopped after the grace.
        c.finish_master(&am, "alice", FinalStatus::Succeeded, "done", t).unwrap();
        c.expire(t + Duration::from_secs(5));
        assert!(c
            .heartbeat("core1", vec![ContainerStatus::running(&am)], t + Duration::from_secs(5))
            .unwrap()
            .kill
            .is_empty());
        c.expire(t + Duration::from_secs(11));
        let kill = c.heartbeat("core1", vec![ContainerStatus::running(&am)], t + Duration::from_secs(11)).unwrap().kill;
        assert_eq!(kill.len(), 1, "{kill:?}");
        assert_eq!(state(&c, &id), AppState::Finished, "it stays finished");
    }

    #[test]
    fn a_drained_worker_gets_nothing_new_and_its_containers_are_stopped_at_the_deadline() {
        let t = Instant::now();
        let mut c = cluster(&[("core1", NodeLabel::Core), ("core2", NodeLabel::Core)], t);
        let id = c.submit("alice", app("sleep")).unwrap();
        let first = c.report(&id, "alice", false).unwrap().attempts[0].clone();
        let (drained, other) = (first.worker_id.clone(), if first.worker_id == "core1" { "core2" } else { "core1" });
        assert_eq!(c.drain(&drained, Some(t + Duration::from_secs(60))).unwrap(), 1);
        assert_eq!(c.drain("nope", None).unwrap_err().kind, ErrorKind::NotFound);
        // It stays drained when it registers again, and reports say so.
        c.register_bare(info(&drained, NodeLabel::Core), t).unwrap();
        let state = |c: &ClusterState, w: &str| c.workers(t).into_iter().find(|r| r.worker_id == w).unwrap().state;
        assert_eq!(state(&c, &drained), WorkerState::Draining);
        // (Its re-registration gave up the first master: the next attempt goes elsewhere.)
        let r = c.report(&id, "alice", false).unwrap();
        assert_eq!(r.attempts[1].worker_id, other, "nothing new on a drained worker");
        // A new application's master too goes to the other worker.
        let id2 = c.submit("alice", app("sleep")).unwrap();
        let a2 = c.report(&id2, "alice", false).unwrap().attempts[0].clone();
        assert_eq!(a2.worker_id, other);
        // Back in service: the drain ends, and nothing is stopped.
        c.drain(&drained, None).unwrap();
        assert_eq!(state(&c, &drained), WorkerState::Running);
        // Drained with a deadline: what runs there is stopped once it passes.
        let id3 = c.submit("alice", app("sleep")).unwrap();
        let a3 = c.report(&id3, "alice", false).unwrap().attempts[0].clone();
        c.heartbeat(&a3.worker_id, vec![], t).unwrap();
        c.drain(&a3.worker_id, Some(t + Duration::from_secs(5))).unwrap();
        c.expire(t + Duration::from_secs(4));
        assert!(c
            .heartbeat(&a3.worker_id, vec![ContainerStatus::running(&a3.container_id)], t + Duration::from_secs(4))
            .unwrap()
            .kill
            .is_empty());
        c.expire(t + Duration::from_secs(6));
        let kill = c
            .heartbeat(&a3.worker_id, vec![ContainerStatus::running(&a3.container_id)], t + Duration::from_secs(6))
            .unwrap()
            .kill;
        assert_eq!(kill.len(), 1);
        assert!(kill[0].2.contains("drained"), "{kill:?}");
    }

    #[test]
    fn a_worker_draining_itself_keeps_an_earlier_deadline() {
        let t = Instant::now();
        let mut c = cluster(&[("core1", NodeLabel::Core), ("core2", NodeLabel::Core)], t);
        let id = c.submit("alice", app("sleep")).unwrap();
        let a = c.report(&id, "alice", false).unwrap().attempts[0].clone();
        c.heartbeat(&a.worker_id, vec![], t).unwrap();
        // An admin's 5 s drain, then the worker's own with 600 s: 5 s it stays.
        c.drain(&a.worker_id, Some(t + Duration::from_secs(5))).unwrap();
        c.note_drain_ms(&a.worker_id, Some(1_005_000));
        c.drain_no_later(&a.worker_id, t + Duration::from_secs(600), 1_600_000).unwrap();
        assert_eq!(c.recorded_workers().into_iter().find(|(w, _)| *w == a.worker_id).unwrap().1, Some(1_005_000));
        c.expire(t + Duration::from_secs(6));
        let running = vec![ContainerStatus::running(&a.container_id)];
        let kill = c.heartbeat(&a.worker_id, running, t + Duration::from_secs(6)).unwrap().kill;
        assert_eq!(kill.len(), 1, "stopped at the admin's deadline: {kill:?}");
        // An earlier deadline of its own does hurry it.
        let other = if a.worker_id == "core1" { "core2" } else { "core1" };
        c.drain(other, Some(t + Duration::from_secs(600))).unwrap();
        c.note_drain_ms(other, Some(1_600_000));
        c.drain_no_later(other, t + Duration::from_secs(5), 1_005_000).unwrap();
        assert_eq!(c.recorded_workers().into_iter().find(|(w, _)| w == other).unwrap().1, Some(1_005_000));
        assert_eq!(c.drain_no_later("nope", t, 0).unwrap_err().kind, ErrorKind::NotFound);
    }

    #[test]
    fn a_master_stopped_by_a_drain_does_not_use_up_an_attempt() {
        let t = Instant::now();
        let mut c = cluster(&[("core1", NodeLabel::Core), ("core2", NodeLabel::Core)], t);
        let mut one = app("sleep");
        one.max_attempts = 1;
        let id = c.submit("alice", one).unwrap();
        let a = c.report(&id, "alice", false).unwrap().attempts[0].clone();
        c.heartbeat(&a.worker_id, vec![], t).unwrap();
        c.drain(&a.worker_id, Some(t)).unwrap();
        c.expire(t + Duration::from_secs(1));
        let ended = ContainerStatus::ended(&a.container_id, ExitReason::KilledByResourceManager, 137, "drained");
        c.heartbeat(&a.worker_id, vec![ended], t + Duration::from_secs(1)).unwrap();
        let r = c.report(&id, "alice", false).unwrap();
        assert_eq!((r.state, r.attempts.len()), (AppState::Running, 2), "{r:?}");
        assert_ne!(r.attempts[1].worker_id, a.worker_id);
    }

    /// What worker `w` runs of application `id`, as it reports it when it registers.
    fn reported(status: ContainerStatus, id: &str, attempt: u32) -> ReportedContainer {
        ReportedContainer {
            status,
            app_id: id.into(),
            attempt,
            user: "alice".into(),
            resources: Resources::new(1, 1024),
        }
    }

    /// Another resource manager takes over from the records: the workers register with
    /// what they run, it is adopted (nothing restarts), and the master, told to register
    /// again, learns which containers it still has and hears of one that ended meanwhile.
    #[test]
    fn a_takeover_adopts_what_workers_run_and_the_master_registers_again() {
        let t = Instant::now();
        let (mut c, id, am) = registered(&[("core1", NodeLabel::Core), ("core2", NodeLabel::Core)], t);
        let r = c.allocate(&am, "alice", call(0, vec![ask(1, 2, &[], true)])).unwrap();
        let ids: Vec<String> = r.allocated.iter().map(|a| a.container_id.clone()).collect();
        let mut launch = call(1, vec![]);
        launch.launch = ids.iter().map(|i| (i.clone(), spec("/bin/work"))).collect();
        c.allocate(&am, "alice", launch).unwrap();
        let records: Vec<AppRecord> = c.apps.values().map(record_of).collect();
        assert_eq!(records.len(), 1);
        let on = |cid: &str| c.containers[cid].worker.clone();
        let (w_am, w_a, w_b) = (on(&am), on(&ids[0]), on(&ids[1]));

        let mut b = ClusterState::with_limits(Duration::from_secs(10), AppLimits::default(), 8);
        b.persist(2);
        b.recover(records, Vec::new(), t, Duration::ZERO, Duration::ZERO);
        assert_eq!(b.report(&id, "alice", false).unwrap().state, AppState::Running);
        // Until the master's worker is back, its master waits.
        assert_eq!(b.register_master(&am, "alice", "").unwrap_err().kind, ErrorKind::Unavailable);
        // The workers register: ids[0] still runs; ids[1] ended meanwhile.
        let mut has: BTreeMap<String, Vec<ReportedContainer>> = BTreeMap::new();
        has.entry(w_am.clone()).or_default().push(reported(ContainerStatus::running(&am), &id, 1));
        has.entry(w_a.clone()).or_default().push(reported(ContainerStatus::running(&ids[0]), &id, 1));
        let done = ContainerStatus::ended(&ids[1], ExitReason::Exited, 0, "");
        has.entry(w_b.clone()).or_default().push(reported(done, &id, 1));
        for w in ["core1", "core2"] {
            b.register(info(w, NodeLabel::Core), has.remove(w).unwrap_or_default(), t).unwrap();
        }
        b.expire(t);
        assert!(!b.recovering());
        // Nothing running is killed, and the grants count again.
        for w in ["core1", "core2"] {
            let mut st = vec![ContainerStatus::running(&am), ContainerStatus::running(&ids[0])];
            st.retain(|s| on(&s.container_id) == w);
            assert!(b.heartbeat(w, st, t).unwrap().kill.is_empty());
        }
        let used: u32 = b.workers(t).iter().map(|w| w.used.vcores).sum();
        assert_eq!(used, 2, "the master and the container that still runs");
        // The master must register again; then it knows what it has and hears of the end.
        assert_eq!(b.allocate(&am, "alice", call(2, vec![])).unwrap_err().kind, ErrorKind::MasterNotRegistered);
        let reg = b.register_master(&am, "alice", "").unwrap();
        let mut known = ids.clone();
        known.sort();
        assert_eq!(reg.containers, known, "the running one, and the ended one it has not heard of yet");
        let r = b.allocate(&am, "alice", call(0, vec![ask(1, 1, &[], true)])).unwrap();
        assert_eq!(r.response_id, 1);
        assert_eq!(r.completed.iter().map(|s| s.container_id.as_str()).collect::<Vec<_>>(), [ids[1].as_str()]);
        // New containers never repeat an id the one before allocated.
        assert!(r.allocated[0].container_id.starts_with(&format!("{id}_01_e2_")), "{:?}", r.allocated);
        b.finish_master(&am, "alice", FinalStatus::Succeeded, "", t).unwrap();
        assert_eq!(b.report(&id, "alice", false).unwrap().state, AppState::Finished);
    }

    /// With records kept, a master starts only once its attempt is on record: a resource
    /// manager taking over then never starts a second master for the same attempt.
    #[test]
    fn a_master_starts_only_once_its_attempt_is_on_record() {
        let t = Instant::now();
        let mut c = cluster(&[("core1", NodeLabel::Core)], t);
        c.persist(1);
        let id = c.submit("alice", app("am")).unwrap();
        assert!(c.heartbeat("core1", vec![], t).unwrap().start.is_empty(), "not on record yet");
        let d = c.take_dirty();
        assert_eq!(d.records[0].attempts.len(), 1, "the record names the attempt");
        c.durable(d.gen);
        let start = c.heartbeat("core1", vec![], t).unwrap().start;
        assert_eq!(start.len(), 1);
        assert_eq!(start[0].app_id, id);
        // A kill before it is delivered ends it at once.
        let id2 = c.submit("alice", app("am")).unwrap();
        c.kill_app(&id2, "alice", false).unwrap();
        let gen = c.take_dirty().gen;
        c.durable(gen);
        assert!(c.heartbeat("core1", vec![], t).unwrap().start.is_empty());
        assert_eq!(c.report(&id2, "alice", false).unwrap().state, AppState::Killed);
    }

    /// A worker the records name that never registers with the new resource manager is
    /// lost at the expiry, and the attempt with it: the next one runs elsewhere.
    #[test]
    fn a_worker_missing_after_a_takeover_is_lost_with_its_attempt() {
        let t = Instant::now();
        let (c, id, am) = registered(&[("core1", NodeLabel::Core), ("core2", NodeLabel::Core)], t);
        let w_am = c.containers[&am].worker.clone();
        let other = if w_am == "core1" { "core2" } else { "core1" };
        let records: Vec<AppRecord> = c.apps.values().map(record_of).collect();
        let mut b = ClusterState::with_limits(Duration::from_secs(10), AppLimits::default(), 8);
        b.persist(2);
        b.recover(records, Vec::new(), t, Duration::ZERO, Duration::ZERO);
        b.register(info(other, NodeLabel::Core), Vec::new(), t).unwrap();
        b.expire(t + Duration::from_secs(5));
        assert!(b.recovering(), "still waiting for {w_am}");
        b.heartbeat(other, vec![], t + Duration::from_secs(9)).unwrap();
        assert_eq!(b.expire(t + Duration::from_secs(11)), vec![w_am.clone()]);
        assert!(!b.recovering());
        let r = b.report(&id, "alice", false).unwrap();
        assert_eq!(r.attempts[0].status.ended, Some(ExitReason::WorkerLost));
        assert_eq!((r.attempts.len(), r.attempts[1].worker_id.as_str()), (2, other));
    }

    /// After a takeover: masters wait for every worker the one before knew (not only the
    /// masters' workers); a container of an attempt that ended meanwhile is not adopted
    /// (its worker is told to kill it); a master whose registration was not on record yet
    /// is told to register again, not refused.
    #[test]
    fn a_takeover_waits_for_every_known_worker_and_adopts_only_running_attempts() {
        let t = Instant::now();
        let (mut c, id, am) = registered(&[("core1", NodeLabel::Core), ("core2", NodeLabel::Core)], t);
        let r = c.allocate(&am, "alice", call(0, vec![ask(1, 1, &[], true)])).unwrap();
        let cid = r.allocated[0].container_id.clone();
        let w_am = c.containers[&am].worker.clone();
        let mut records: Vec<AppRecord> = c.apps.values().map(record_of).collect();
        records[0].attempts[0].registered = false; // its registration never reached the record
        let mut b = ClusterState::with_limits(Duration::from_secs(10), AppLimits::default(), 8);
        b.persist(2);
        b.recover(records.clone(), vec!["core1".into(), "core2".into()], t, Duration::ZERO, Duration::ZERO);
        b.register(info(&w_am, NodeLabel::Core), vec![reported(ContainerStatus::running(&am), &id, 1)], t).unwrap();
        b.expire(t);
        assert!(b.recovering(), "the other worker the records name is not back yet");
        let other = if w_am == "core1" { "core2" } else { "core1" };
        b.register(info(other, NodeLabel::Core), vec![], t).unwrap();
        b.expire(t);
        assert!(!b.recovering());
        assert_eq!(b.allocate(&am, "alice", call(3, vec![])).unwrap_err().kind, ErrorKind::MasterNotRegistered);

        // Its master gone when its worker registers: the attempt ended, and a container of
        // it that the worker still runs is not adopted but killed.
        let mut d = ClusterState::with_limits(Duration::from_secs(10), AppLimits::default(), 9);
        d.persist(3);
        d.recover(records, vec![w_am.clone()], t, Duration::ZERO, Duration::ZERO);
        let leftover = reported(ContainerStatus::running(&cid), &id, 1);
        d.register(info(&w_am, NodeLabel::Core), vec![leftover], t).unwrap();
        let r = d.report(&id, "alice", false).unwrap();
        assert_eq!(r.attempts[0].status.ended, Some(ExitReason::WorkerLost), "{r:?}");
        assert_eq!(r.attempts.len(), 2, "a new attempt: {r:?}");
        let kill = d.heartbeat(&w_am, vec![ContainerStatus::running(&cid)], t).unwrap().kill;
        assert_eq!(kill.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(), [cid.as_str()]);
    }

    /// A master's end is forgotten by its worker only once on record: until then the
    /// worker reports it again, so a takeover still learns how the attempt ended.
    #[test]
    fn a_masters_end_is_forgotten_only_once_on_record() {
        let t = Instant::now();
        let mut c = cluster(&[("core1", NodeLabel::Core)], t);
        c.persist(1);
        let id = c.submit("alice", app("am")).unwrap();
        let gen = c.take_dirty().gen;
        c.durable(gen);
        let cid = c.heartbeat("core1", vec![], t).unwrap().start[0].container_id.clone();
        let end = || vec![ContainerStatus::ended(&cid, ExitReason::Exited, 0, "")];
        assert!(c.heartbeat("core1", end(), t).unwrap().forget.is_empty(), "not on record yet");
        assert_eq!(state(&c, &id), AppState::Finished);
        assert!(c.heartbeat("core1", end(), t).unwrap().forget.is_empty(), "reported again: still not");
        let d = c.take_dirty();
        assert_eq!(d.records[0].state, AppState::Finished);
        c.durable(d.gen);
        assert_eq!(c.heartbeat("core1", end(), t).unwrap().forget, vec![cid.clone()]);
    }

    fn queues(text: &str) -> Queues {
        Queues::parse(text).unwrap()
    }

    /// Two queues at 70/30 with a backlog each: as containers end, what frees up goes to
    /// the queue furthest below its guarantee, and the shares settle at 70/30.
    #[test]
    fn two_queues_under_a_backlog_share_the_cluster_70_30() {
        let t = Instant::now();
        let mut c = ClusterState::with_limits(Duration::from_secs(10), AppLimits::default(), 7);
        let ws: Vec<String> = (1..=10).map(|i| format!("w{i}")).collect();
        for w in &ws {
            c.register_bare(info(w, NodeLabel::Core), t).unwrap();
        }
        c.set_queues(queues(
            "[queue.a]\ncapacity = 70\nuser_limit_factor = 2\n[queue.b]\ncapacity = 30\nuser_limit_factor = 4\n",
        ))
        .unwrap();
        let mut masters = Vec::new();
        for (q, user) in [("a", "alice"), ("b", "bob")] {
            let mut sub = app("am");
            sub.queue = q.into();
            let id = c.submit(user, sub).unwrap();
            let am = c.report(&id, user, false).unwrap().attempts[0].container_id.clone();
            c.register_master(&am, user, "").unwrap();
            masters.push((am, user, 0u64));
        }
        // Each round every master keeps 100 asked for; what was allocated the round before
        // ends (a churn of the whole cluster).
        let mut live: Vec<(String, String)> = Vec::new();
        let (mut sum_a, mut sum_b) = (0.0, 0.0);
        for round in 0..40 {
            for (am, user, rid) in masters.iter_mut() {
                let r = c.allocate(am, user, call(*rid, vec![ask(1, 100, &[], true)])).unwrap();
                *rid = r.response_id;
                live.extend(r.allocated.into_iter().map(|a| (a.container_id, a.worker_id)));
            }
            let ending = std::mem::take(&mut live);
            for w in &ws {
                let st: Vec<ContainerStatus> = ending
                    .iter()
                    .filter(|(_, on)| on == w)
                    .map(|(cid, _)| ContainerStatus::ended(cid, ExitReason::Exited, 0, ""))
                    .collect();
                c.heartbeat(w, st, t).unwrap();
            }
            if round >= 10 {
                let q = c.queue_reports();
                sum_a += q[0].used;
                sum_b += q[1].used;
            }
        }
        let a = sum_a / (sum_a + sum_b);
        assert!((a - 0.7).abs() < 0.05, "queue a had {:.1}% of what was used", a * 100.0);
        let busy: u32 = c.workers(t).iter().map(|w| w.used.vcores).sum();
        assert_eq!(busy, 40, "the cluster stays full");
    }

    /// A queue stays within its maximum, a user within the user limit, masters within
    /// their share (one always runs); only listed users submit; a refresh that would drop
    /// a busy queue is refused.
    #[test]
    fn queues_keep_their_limits_and_their_users() {
        let t = Instant::now();
        let mut c = cluster(&[("w1", NodeLabel::Core), ("w2", NodeLabel::Core), ("w3", NodeLabel::Core)], t);
        c.set_queues(queues(
            "[queue.etl]\ncapacity = 50\nmax_capacity = 50\nuser_limit_factor = 10\nmax_am_share = 0.1\n\
             [queue.adhoc]\ncapacity = 50\nuser_limit_factor = 0.5\nsubmit_users = [\"alice\"]\n",
        ))
        .unwrap();
        // 12 vcores: etl may use 6 (its maximum), its masters 0.6 (so one).
        let mut sub = app("am");
        sub.queue = "etl".into();
        let e1 = c.submit("carol", sub.clone()).unwrap();
        let e2 = c.submit("carol", sub.clone()).unwrap();
        assert_eq!(c.report(&e1, "carol", false).unwrap().state, AppState::Running);
        let r = c.report(&e2, "carol", false).unwrap();
        assert_eq!(r.state, AppState::Accepted, "one master only");
        assert!(r.diagnostics.contains("masters of queue etl"), "{}", r.diagnostics);
        let am = c.report(&e1, "carol", false).unwrap().attempts[0].container_id.clone();
        c.register_master(&am, "carol", "").unwrap();
        let got = c.allocate(&am, "carol", call(0, vec![ask(1, 20, &[], true)])).unwrap().allocated.len();
        assert_eq!(got, 5, "the master and 5 containers: etl's maximum");
        // adhoc: alice only; a user there may use 0.5 x 50% = 3 vcores.
        sub.queue = "adhoc".into();
        let refused = c.submit("bob", sub.clone()).unwrap_err();
        assert_eq!(refused.kind, ErrorKind::PermissionDenied);
        assert!(refused.message.contains("submit_users: alice"), "{}", refused.message);
        assert!(c.submit_as("root", true, sub.clone()).is_ok(), "an admin may");
        let h = c.submit("alice", sub).unwrap();
        let am = c.report(&h, "alice", false).unwrap().attempts[0].container_id.clone();
        c.register_master(&am, "alice", "").unwrap();
        let got = c.allocate(&am, "alice", call(0, vec![ask(1, 20, &[], true)])).unwrap().allocated.len();
        assert_eq!(got, 2, "alice's master and 2 containers: her user limit");
        // A refresh that drops queue etl (applications running there) is refused.
        let e = c.set_queues(queues("[queue.adhoc]\ncapacity = 100\n")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ConditionFailed);
        assert!(e.message.contains("\"etl\""), "{}", e.message);
        assert_eq!(c.queue_reports().len(), 2, "nothing changed");
    }

    /// A queue under its guarantee with work waiting, and no room: the newest containers
    /// of the queue over its guarantee are taken back after a notice to their master,
    /// until the starved queue has its guarantee (within a container) and the other still
    /// has its own; masters are never taken.
    #[test]
    fn preemption_brings_a_starved_queue_up_to_its_guarantee_after_a_notice() {
        let t = Instant::now();
        let limits = AppLimits { preemption_wait: Some(Duration::from_secs(5)), ..AppLimits::default() };
        let mut c = ClusterState::with_limits(Duration::from_secs(60), limits, 7);
        let ws = ["w1", "w2", "w3"];
        for w in ws {
            c.register_bare(info(w, NodeLabel::Core), t).unwrap();
        }
        c.set_queues(queues("[queue.a]\ncapacity = 70\nuser_limit_factor = 10\n[queue.b]\ncapacity = 30\n")).unwrap();
        let mut sub = app("am");
        sub.queue = "a".into();
        let a = c.submit("alice", sub.clone()).unwrap();
        let am_a = c.report(&a, "alice", false).unwrap().attempts[0].container_id.clone();
        c.register_master(&am_a, "alice", "").unwrap();
        let got = c.allocate(&am_a, "alice", call(0, vec![ask(1, 20, &[], true)])).unwrap();
        assert_eq!(got.allocated.len(), 11, "queue a takes the idle cluster");
        let mut launch = call(1, vec![ask(1, 20, &[], true)]);
        launch.launch = got.allocated.iter().map(|a| (a.container_id.clone(), spec("/bin/work"))).collect();
        c.allocate(&am_a, "alice", launch).unwrap();
        for w in ws {
            assert!(!c.heartbeat(w, vec![], t).unwrap().start.is_empty(), "started on {w}");
        }
        sub.queue = "b".into();
        let b = c.submit("bob", sub).unwrap();
        assert_eq!(c.report(&b, "bob", false).unwrap().state, AppState::Accepted);
        // Rounds of the monitor and heartbeats; workers report killed containers ended.
        let mut kills: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut now = t;
        let mut told = Vec::new();
        let mut rid_a = 2;
        let mut killed = 0;
        let mut b_master: Option<(String, u64)> = None;
        for _ in 0..20 {
            now += Duration::from_secs(1);
            c.expire(now);
            for w in ws {
                let ended: Vec<ContainerStatus> = kills
                    .remove(w)
                    .unwrap_or_default()
                    .iter()
                    .map(|cid| ContainerStatus::ended(cid, ExitReason::Preempted, 137, ""))
                    .collect();
                let cmds = c.heartbeat(w, ended, now).unwrap();
                assert!(cmds.kill.iter().all(|k| k.1 == ExitReason::Preempted && k.0 != am_a));
                killed += cmds.kill.len();
                kills.entry(w).or_default().extend(cmds.kill.into_iter().map(|k| k.0));
            }
            let r = c.allocate(&am_a, "alice", call(rid_a, vec![ask(1, 20, &[], true)])).unwrap();
            rid_a = r.response_id;
            told.extend(r.preempted);
            if b_master.is_none() && c.report(&b, "bob", false).unwrap().state == AppState::Running {
                let am = c.report(&b, "bob", false).unwrap().attempts[0].container_id.clone();
                c.register_master(&am, "bob", "").unwrap();
                b_master = Some((am, 0));
            }
            if let Some((am, rid)) = b_master.as_mut() {
                *rid = c.allocate(am, "bob", call(*rid, vec![ask(1, 10, &[], true)])).unwrap().response_id;
            }
        }
        let q = c.queue_reports();
        assert_eq!((q[0].used_resources.vcores, q[1].used_resources.vcores), (9, 3), "{q:?}");
        assert_eq!(killed, 3, "three of a's containers, each killed once");
        assert_eq!(told.len(), 3, "its master was told of each, once: {told:?}");
    }

    /// A submission sent again (a lost answer, a failover between) with its id is the
    /// same application, also for the resource manager that took over; another user's
    /// with the same id is another.
    #[test]
    fn a_submission_sent_again_is_the_same_application_even_after_a_takeover() {
        let t = Instant::now();
        let mut c = cluster(&[("core1", NodeLabel::Core)], t);
        let mut s = app("am");
        s.submission_id = "7f3a".into();
        let id = c.submit("alice", s.clone()).unwrap();
        assert_eq!(c.submit("alice", s.clone()).unwrap(), id);
        assert_ne!(c.submit("bob", s.clone()).unwrap(), id);
        let records: Vec<AppRecord> = c.apps.values().map(record_of).collect();
        let mut b = ClusterState::with_limits(Duration::from_secs(10), AppLimits::default(), 8);
        b.persist(2);
        b.recover(records, Vec::new(), t, Duration::ZERO, Duration::ZERO);
        assert_eq!(b.submit("alice", s).unwrap(), id);
        assert_eq!(b.list("alice", false, false).unwrap().len(), 1);
    }

    /// A queue too small for even a master and a container by its user limit still runs
    /// one of each: slow, never stuck.
    #[test]
    fn a_small_queue_still_runs_a_master_and_a_container() {
        let t = Instant::now();
        let mut c = cluster(&[("w1", NodeLabel::Core)], t);
        c.set_queues(queues("[queue.big]\ncapacity = 90\n[queue.small]\ncapacity = 10\n")).unwrap();
        let mut sub = app("am");
        sub.queue = "small".into();
        let id = c.submit("alice", sub).unwrap();
        let am = c.report(&id, "alice", false).unwrap().attempts[0].container_id.clone();
        c.register_master(&am, "alice", "").unwrap();
        let r = c.allocate(&am, "alice", call(0, vec![ask(1, 3, &[], true)])).unwrap();
        assert_eq!(r.allocated.len(), 1, "one container besides the master, no more");
    }

    /// Beyond `max_completed_apps`, the oldest ended applications are forgotten, their
    /// records with them; running ones and ones whose workers were not told yet stay.
    #[test]
    fn the_oldest_ended_applications_are_forgotten_beyond_the_limit() {
        let t = Instant::now();
        let limits = AppLimits { max_completed_apps: 2, ..AppLimits::default() };
        let mut c = ClusterState::with_limits(Duration::from_secs(10), limits, 7);
        c.register_bare(info("core1", NodeLabel::Core), t).unwrap();
        c.persist(1);
        let mut ids = Vec::new();
        for _ in 0..4 {
            let mut s = app("/bin/true");
            s.submission_id = format!("s{}", ids.len());
            let id = c.submit("alice", s).unwrap();
            let gen = c.take_dirty().gen;
            c.durable(gen);
            let cid = c.heartbeat("core1", vec![], t).unwrap().start[0].container_id.clone();
            c.heartbeat("core1", vec![ContainerStatus::ended(&cid, ExitReason::Exited, 0, "")], t).unwrap();
            let gen = c.take_dirty().gen;
            c.durable(gen);
            // Told it ended (its logs are kept), the worker forgets it.
            c.heartbeat("core1", vec![ContainerStatus::ended(&cid, ExitReason::Exited, 0, "")], t).unwrap();
            ids.push(id);
        }
        let running = c.submit("alice", app("sleep")).unwrap();
        c.expire(t);
        let known: Vec<String> = c.list("alice", false, false).unwrap().into_iter().map(|r| r.app_id).collect();
        assert_eq!(known, [ids[2].clone(), ids[3].clone(), running], "the two oldest ended ones are forgotten");
        assert_eq!(c.take_dirty().removed, ids[..2].to_vec(), "their records go");
        let mut again = app("/bin/true");
        again.submission_id = "s0".into();
        assert_ne!(c.submit("alice", again).unwrap(), ids[0], "a forgotten submission id is free again");
    }

    /// An admin's drain is on record (with its deadline by the wall clock): the resource
    /// manager that takes over drains the worker on.
    #[test]
    fn a_drain_outlives_a_takeover() {
        let t = Instant::now();
        let mut c = cluster(&[("core1", NodeLabel::Core), ("core2", NodeLabel::Core)], t);
        c.persist(1);
        c.drain("core1", Some(t + Duration::from_secs(60))).unwrap();
        c.note_drain_ms("core1", Some(1_000_060_000));
        let workers = c.take_dirty().workers.expect("the set of workers changed");
        assert!(workers.contains(&("core1".to_string(), Some(1_000_060_000))), "{workers:?}");
        let (ids, drains) = crate::ha::decode_workers("x", &crate::ha::encode_workers(&workers)).unwrap();
        let mut b = ClusterState::with_limits(Duration::from_secs(10), AppLimits::default(), 8);
        b.persist(2);
        b.recover(Vec::new(), ids, t, Duration::ZERO, Duration::ZERO);
        b.restore_drains(drains, t, 1_000_000_000);
        for w in ["core1", "core2"] {
            b.register_bare(info(w, NodeLabel::Core), t).unwrap();
        }
        let id = b.submit("alice", app("am")).unwrap();
        assert_eq!(b.report(&id, "alice", false).unwrap().attempts[0].worker_id, "core2", "not on the drained one");
        let states: Vec<WorkerState> = b.workers(t).into_iter().map(|w| w.state).collect();
        assert_eq!(states, [WorkerState::Draining, WorkerState::Running]);
    }
}
