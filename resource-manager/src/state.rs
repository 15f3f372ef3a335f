//! What the resource manager's services and background tasks share.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tarn_client::rm::{Credential, StartContainer};
use tarn_proto::ErrorKind;
use tarn_security::ContainerCa;
use tokio::sync::{watch, Notify};

use crate::cluster::ClusterState;
use crate::error::Refusal;

/// Why a resource manager does not serve now, and the active one if it knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotServing {
    pub message: String,
    pub leader: Option<String>,
}

/// How long a call waits for the change it made to be on record before it gives up
/// (within a client's attempt, [`tarn_client::rm::RM_ATTEMPT_MAX`]).
const DURABLE_WAIT: Duration = Duration::from_millis(2500);

/// The wall clock, in ms since the epoch (what records keep).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether this resource manager serves.
#[derive(Debug, Clone)]
enum Activity {
    /// Always (no high availability: one resource manager, its state in memory).
    Always,
    /// Active while its lease is fresh: until then.
    Until(Instant),
    /// Standby; the active one, if known (its address).
    Standby(Option<String>),
}

pub struct RmState {
    core: Mutex<ClusterState>,
    /// The container CA and how long its credentials last.
    credentials: Option<(ContainerCa, Duration)>,
    /// Random per start and per takeover: a worker that sees another epoch registers again.
    epoch: AtomicU64,
    /// How often workers are told to heartbeat.
    pub heartbeat: Duration,
    activity: Mutex<Activity>,
    /// The address workers and clients reach this one at.
    pub addr: String,
    /// The latest change on record (see [`ClusterState::take_dirty`]), with the core it
    /// belongs to (changes are numbered per core).
    durable: watch::Sender<(u64, u64)>,
    /// Wakes the task that keeps records.
    pub persist_now: Notify,
}

impl RmState {
    /// `ha`: starts as a standby (records kept, serving only while it holds the lease);
    /// else it serves at once, its state in memory.
    pub fn new(
        core: ClusterState,
        heartbeat: Duration,
        credentials: Option<(ContainerCa, Duration)>,
        addr: String,
        ha: bool,
    ) -> Self {
        let activity = if ha { Activity::Standby(None) } else { Activity::Always };
        RmState {
            core: Mutex::new(core),
            credentials,
            epoch: AtomicU64::new(rand::random::<u64>().max(1)),
            heartbeat,
            activity: Mutex::new(activity),
            addr,
            durable: watch::channel((0, 0)).0,
            persist_now: Notify::new(),
        }
    }

    /// Gives a container about to start its delegation credential (none without a
    /// container CA). A container that cannot get one is started without: it then cannot
    /// reach the cluster, which its logs say.
    pub fn add_credential(&self, s: &mut StartContainer) {
        s.credential = self.credential(&s.user, &s.container_id);
    }

    /// A new credential for container `cid` of `user` (none without a container CA).
    pub fn credential(&self, user: &str, cid: &str) -> Option<Credential> {
        let (ca, valid) = self.credentials.as_ref()?;
        match ca.issue(user, cid, *valid) {
            Ok(c) => Some(Credential { cert_pem: c.cert_pem, key_pem: c.key_pem, not_after_ms: c.not_after_ms }),
            Err(e) => {
                tracing::warn!(container = %cid, %user, error = %e, "no credential issued");
                None
            }
        }
    }

    /// The core, for one decision (never held across an await).
    pub fn core(&self) -> MutexGuard<'_, ClusterState> {
        lock(&self.core)
    }

    /// What workers must heartbeat with (else they register again).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Whether it serves now (it is active and its lease is fresh).
    pub fn is_serving(&self) -> bool {
        match &*lock(&self.activity) {
            Activity::Always => true,
            Activity::Until(t) => Instant::now() < *t,
            Activity::Standby(_) => false,
        }
    }

    /// `Ok` when it serves now; else why not, naming the active resource manager when it
    /// is known (the edge makes it a refusal clients retry there, as they follow the
    /// namenodes' leader).
    pub fn serving(&self) -> Result<(), NotServing> {
        let leader = match &*lock(&self.activity) {
            Activity::Always => return Ok(()),
            Activity::Until(t) if Instant::now() < *t => return Ok(()),
            Activity::Until(_) => None,
            Activity::Standby(l) => l.clone().filter(|l| *l != self.addr),
        };
        let message = match &leader {
            Some(l) => format!("resource manager {} is a standby; the active one is {l}", self.addr),
            None => format!("resource manager {} is not active now (no active one is known yet)", self.addr),
        };
        Err(NotServing { message, leader })
    }

    /// Becomes the active one with `core` (what it took over), serving until `until`.
    pub fn activate(&self, core: ClusterState, until: Instant) {
        *self.core() = core;
        self.epoch.store(rand::random::<u64>().max(1), Ordering::Relaxed);
        *lock(&self.activity) = Activity::Until(until);
        // Calls still waiting for a change of the core before learn it is gone.
        self.durable.send_modify(|_| {});
    }

    /// A beat of its lease that started at `at` landed: it serves until `until`; `false`
    /// when it had stopped serving before the beat started (a standby may have taken
    /// over meanwhile: it must not serve again without taking the lease anew).
    pub fn extend(&self, at: Instant, until: Instant) -> bool {
        let mut a = lock(&self.activity);
        match &mut *a {
            Activity::Until(t) if at < *t => {
                *t = until.max(*t);
                true
            }
            _ => false,
        }
    }

    /// Becomes (or stays) a standby; `leader` the active one's address, if known. What it
    /// knew as the active one is dropped (the next active one has it on record).
    pub fn stand_by(&self, leader: Option<String>, empty: impl FnOnce() -> ClusterState) {
        let was_active = {
            let mut a = lock(&self.activity);
            let was = matches!(*a, Activity::Until(_));
            *a = Activity::Standby(leader);
            was
        };
        if was_active {
            *self.core() = empty();
            self.durable.send_modify(|_| {});
        }
    }

    /// Every change of core `core` up to `gen` is on record.
    pub fn note_durable(&self, core: u64, gen: u64) {
        {
            let mut c = self.core();
            if c.id() != core {
                return;
            }
            c.durable(gen);
        }
        self.durable.send_if_modified(|(c, g)| {
            let newer = *c != core || gen > *g;
            *c = core;
            *g = (*g).max(gen);
            newer
        });
    }

    /// Makes one change with the core (`f`) and answers once it is on record (see
    /// [`Self::wait_durable`]).
    pub async fn durably<T>(&self, f: impl FnOnce(&mut ClusterState) -> Result<T, Refusal>) -> Result<T, Refusal> {
        let (out, core, gen) = {
            let mut c = self.core();
            let out = f(&mut c)?;
            (out, c.id(), c.generation())
        };
        self.wait_durable(core, gen).await?;
        Ok(out)
    }

    /// Waits until change `gen` of core `core` is on record (at once when records are not
    /// kept). Fails if that core is replaced first (it stood by: the change is lost).
    pub async fn wait_durable(&self, core: u64, gen: u64) -> Result<(), Refusal> {
        if matches!(*lock(&self.activity), Activity::Always) {
            return Ok(());
        }
        self.persist_now.notify_one();
        let mut rx = self.durable.subscribe();
        let done = |(c, g): &(u64, u64)| *c == core && *g >= gen;
        let on_record = tokio::time::timeout(DURABLE_WAIT, rx.wait_for(|v| done(v) || self.core().id() != core)).await;
        match on_record.is_ok_and(|r| r.is_ok_and(|v| done(&v))) {
            true => Ok(()),
            // Clients try again: every call that waits here is idempotent (a submission
            // carries its id, a kill or a finish of an ended application changes nothing).
            false => Err(Refusal::new(
                ErrorKind::Unavailable,
                format!(
                    "the change was made but is not on record after {DURABLE_WAIT:?} (the namenodes may be \
                     unreachable)"
                ),
            )),
        }
    }
}
