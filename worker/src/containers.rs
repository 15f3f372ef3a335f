//! Containers: the OS processes a worker runs for applications (YARN's containers).
//!
//! Each runs in a working directory of its own (`<local_dir>/apps/<app>/<container>`,
//! 0700, with its `stdout` and `stderr` files), in a process group of its own, with a clean
//! environment (`TARN_CONTAINER_ID`, `TARN_APP_ID`, `TARN_ATTEMPT`, `TARN_NODE_HOST`, `HOME`, `PATH`, and the
//! application's own variables). A worker running as root never runs a container as root
//! nor as itself: as the application's user where the host has one, else as a uid of the
//! application's own from `uid_base` up (YARN's LinuxContainerExecutor), without the
//! worker's supplementary groups, so a container reads neither the node's keys,
//! certificates, block files nor another application's directories. The worker samples
//! the resident memory of each container's process group and kills the group when it
//! passes the grant (YARN's pmem check), saying so in the container's status.
//!
//! A container does not outlive its worker: its first process gets SIGKILL when the worker
//! dies (`PR_SET_PDEATHSIG`), and the worker notes each running container's process group
//! under `<local_dir>/run/`; a worker that starts finds the groups of the one before it
//! that still run (same group, uid and start time) and kills them, since the resource
//! manager has given them up.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tarn_client::rm::{ContainerStatus, ExitReason, StartContainer};
use tokio::sync::Notify;

/// How a worker runs containers.
#[derive(Debug, Clone)]
pub struct ContainerSettings {
    pub local_dir: PathBuf,
    /// How often each container's memory is sampled.
    pub pmem_check: Duration,
    /// Run containers as other users (the worker is root); else as the worker's own user.
    pub isolate: bool,
    /// Applications whose user the host lacks get uids from here up.
    pub uid_base: u32,
    /// `tarn`, offered to containers in `<local_dir>/bin` (first on their `PATH`).
    pub tarn_bin: Option<PathBuf>,
    /// This node's address as other nodes reach it (a container's `TARN_NODE_HOST`: where
    /// a service it runs is found, e.g. a job's scheduler).
    pub host: String,
    pub client: ClientSetup,
}

/// What a container needs to reach the cluster as a client (with its credential).
#[derive(Debug, Clone, Default)]
pub struct ClientSetup {
    /// The cluster CA certificate (PEM); `None` in dev mode.
    pub cluster_ca: Option<String>,
    pub namenodes: Vec<String>,
    pub resource_managers: Vec<String>,
}

struct Running {
    pgid: i32,
    rss: u64,
    /// Why the worker ended it, if it did.
    killed: Option<(ExitReason, String)>,
    /// Its credential's life (issued, expires; ms since the epoch), its directory and owner,
    /// and when a renewal was last asked for.
    credential: Option<CredentialLife>,
}

struct CredentialLife {
    issued_ms: u64,
    not_after_ms: u64,
    asked_ms: u64,
    dir: PathBuf,
    uid: u32,
    gid: u32,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[derive(Default)]
struct Inner {
    running: HashMap<String, Running>,
    /// Ended, reported until the resource manager says `forget`.
    done: BTreeMap<String, ContainerStatus>,
    /// The uid each application's containers run as here.
    uids: HashMap<String, u32>,
    /// Containers whose files are being localized.
    starting: std::collections::HashSet<String>,
    /// Whose each started container is (until it is forgotten): told to a resource
    /// manager the worker registers with, so that one that took over can adopt them.
    owners: HashMap<String, Owner>,
}

/// The application, attempt, user and grant of a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Owner {
    pub app_id: String,
    pub attempt: u32,
    pub user: String,
    pub resources: tarn_client::rm::Resources,
}

/// The containers of one worker.
pub struct Containers {
    settings: ContainerSettings,
    /// Reads the files containers get (as their user); `None`: no namenode configured.
    nn: Option<Arc<tarn_client::NamenodeClient>>,
    inner: Mutex<Inner>,
    /// Signalled when a container ends (the worker reports it at once).
    pub changed: Notify,
}

impl Containers {
    pub fn new(
        mut settings: ContainerSettings,
        nn: Option<Arc<tarn_client::NamenodeClient>>,
    ) -> std::io::Result<Arc<Self>> {
        let apps = settings.local_dir.join("apps");
        std::fs::create_dir_all(&apps)?;
        // Containers run elsewhere (their own directory): every path they are given
        // (HOME, PATH, their configuration's files) is absolute.
        settings.local_dir = std::fs::canonicalize(&settings.local_dir)?;
        let apps = settings.local_dir.join("apps");
        // Containers of other users must pass through (not list) the worker's directories.
        for d in [&settings.local_dir, &apps] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))?;
        }
        if let Some(src) = &settings.tarn_bin {
            offer_program(src, &settings.local_dir.join("bin"))?;
        }
        let run = settings.local_dir.join("run");
        std::fs::create_dir_all(&run)?;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))?;
        reap_orphans(&run);
        let stage = settings.local_dir.join("stage");
        let _ = std::fs::remove_dir_all(&stage);
        std::fs::create_dir_all(&stage)?;
        std::fs::set_permissions(&stage, std::fs::Permissions::from_mode(0o700))?;
        Ok(Arc::new(Containers { settings, nn, inner: Mutex::default(), changed: Notify::new() }))
    }

    /// Containers' `PATH`: the worker's `tarn` first, when it offers it.
    fn path(&self) -> String {
        let system = "/usr/local/bin:/usr/bin:/bin";
        match &self.settings.tarn_bin {
            Some(_) => format!("{}:{system}", self.settings.local_dir.join("bin").display()),
            None => system.to_string(),
        }
    }

    /// Running containers whose credential is past half its life (asked again at most
    /// every few seconds until renewed).
    pub fn due_renewals(&self) -> Vec<String> {
        let now = now_ms();
        let mut inner = self.lock();
        let mut out = Vec::new();
        for (id, r) in inner.running.iter_mut() {
            let Some(c) = r.credential.as_mut() else { continue };
            let half = c.issued_ms + c.not_after_ms.saturating_sub(c.issued_ms) / 2;
            if now >= half && now.saturating_sub(c.asked_ms) >= 5_000 {
                c.asked_ms = now;
                out.push(id.clone());
            }
        }
        out
    }

    /// Puts a renewed credential in place for container `id` (its files replaced by
    /// rename, so the container's TLS reload picks them up).
    pub fn renew(self: &Arc<Self>, id: &str, cred: tarn_client::rm::Credential) {
        let (dir, owner) = {
            let mut inner = self.lock();
            let Some(c) = inner.running.get_mut(id).and_then(|r| r.credential.as_mut()) else { return };
            (c.dir.clone(), self.settings.isolate.then_some((c.uid, c.gid)))
        };
        // Written outside the lock (the directory is the container's: its file system
        // could be slow on purpose), then noted.
        let (me, id) = (self.clone(), id.to_string());
        tokio::task::spawn_blocking(move || {
            let result = replace_credential(&dir, owner, &cred);
            let mut inner = me.lock();
            let Some(c) = inner.running.get_mut(&id).and_then(|r| r.credential.as_mut()) else { return };
            match result {
                Ok(()) => {
                    c.issued_ms = now_ms();
                    c.not_after_ms = cred.not_after_ms;
                    tracing::info!(container = %id, "container credential renewed");
                }
                Err(e) => {
                    // Not again for a minute: each try costs the resource manager a key.
                    c.asked_ms = now_ms() + 60_000;
                    tracing::warn!(container = %id, error = %e, "could not renew the container's credential");
                }
            }
        });
    }

    /// Where the record of container `id`'s process group is kept while it runs.
    fn record(&self, id: &str) -> PathBuf {
        self.settings.local_dir.join("run").join(id)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every running container and the ended ones not yet forgotten.
    pub fn statuses(&self) -> Vec<ContainerStatus> {
        let inner = self.lock();
        let mut out: Vec<ContainerStatus> = inner
            .running
            .iter()
            .map(|(id, r)| ContainerStatus { rss_bytes: r.rss, ..ContainerStatus::running(id) })
            .collect();
        out.extend(inner.done.values().cloned());
        out
    }

    pub fn forget(&self, ids: &[String]) {
        let mut inner = self.lock();
        for id in ids {
            if inner.done.remove(id).is_some() {
                inner.owners.remove(id);
            }
        }
    }

    /// Every container it has (running, or ended and not yet forgotten) with whose it is:
    /// what a registration tells the resource manager.
    pub fn report(&self) -> Vec<(ContainerStatus, Option<Owner>)> {
        let statuses = self.statuses();
        let inner = self.lock();
        // Containers still getting their files count as running: the resource manager
        // must not give them up (and start their work again elsewhere).
        let starting = inner.starting.iter().filter(|id| !statuses.iter().any(|s| s.container_id == **id));
        let starting: Vec<ContainerStatus> = starting.map(|id| ContainerStatus::running(id)).collect();
        statuses
            .into_iter()
            .chain(starting)
            .map(|st| {
                let owner = inner.owners.get(&st.container_id).cloned();
                (st, owner)
            })
            .collect()
    }

    /// Kills container `id`'s process group, saying why.
    pub fn kill(&self, id: &str, reason: ExitReason, diagnostics: String) {
        let mut inner = self.lock();
        if let Some(r) = inner.running.get_mut(id) {
            r.killed.get_or_insert((reason, diagnostics));
            kill_group(r.pgid);
        }
    }

    /// Kills every container (the worker stops).
    pub fn kill_all(&self) {
        let mut inner = self.lock();
        for r in inner.running.values_mut() {
            r.killed.get_or_insert((ExitReason::KilledByResourceManager, "the worker stopped".into()));
            kill_group(r.pgid);
        }
    }

    /// The uid and gid application `app` of `user` runs as here.
    fn identity(&self, app: &str, user: &str) -> (u32, u32) {
        if let Some((uid, gid)) = host_user(user).filter(|(uid, _)| *uid != 0) {
            return (uid, gid);
        }
        let mut inner = self.lock();
        let n = inner.uids.len() as u32;
        let uid = *inner.uids.entry(app.to_string()).or_insert(self.settings.uid_base + n);
        (uid, uid)
    }

    /// Starts a container; its end is reported through [`Containers::statuses`].
    pub fn start(self: &Arc<Self>, s: StartContainer) {
        {
            let mut inner = self.lock();
            let known = inner.running.contains_key(&s.container_id)
                || inner.done.contains_key(&s.container_id)
                || !inner.starting.insert(s.container_id.clone());
            if known {
                return;
            }
            let owner =
                Owner { app_id: s.app_id.clone(), attempt: s.attempt, user: s.user.clone(), resources: s.resources };
            inner.owners.insert(s.container_id.clone(), owner);
        }
        let me = self.clone();
        tokio::spawn(async move {
            // Its files first (as its user), then the process.
            let staged = me.localize(&s).await;
            let id = s.container_id.clone();
            // Out of `starting` only once running or ended (in the same step), so that a
            // registration never misses it.
            match staged {
                Ok(stage) => me.start_staged(s, stage),
                Err(e) => me.launch_failed(&id, format!("localizing its files: {e}")),
            }
        });
    }

    fn launch_failed(&self, id: &str, e: String) {
        tracing::warn!(container = %id, error = %e, "container could not be started");
        let st = ContainerStatus::ended(id, ExitReason::LaunchFailed, -1, e);
        let mut inner = self.lock();
        inner.starting.remove(id);
        inner.done.insert(id.to_string(), st);
        drop(inner);
        self.changed.notify_one();
    }

    /// Copies the container's files from the file system, read as its user, into a
    /// staging directory of the worker's; returns it (`None` when there are none).
    async fn localize(&self, s: &StartContainer) -> Result<Option<PathBuf>, String> {
        if s.spec.files.is_empty() {
            return Ok(None);
        }
        let nn = self.nn.as_ref().ok_or("the worker has no namenodes configured (worker.namenodes)")?;
        let nn = nn.for_user(&s.user);
        let stage = self.settings.local_dir.join("stage").join(safe(&s.container_id)?);
        let _ = std::fs::remove_dir_all(&stage);
        std::fs::create_dir(&stage).map_err(|e| format!("create {}: {e}", stage.display()))?;
        for f in &s.spec.files {
            if let Some(why) = f.bad_name() {
                return Err(why);
            }
            let r =
                tarn_client::blocks::FileReader::open(&nn, &f.path).await.map_err(|e| format!("{}: {e}", f.path))?;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(stage.join(&f.name))
                .map_err(|e| format!("create {}: {e}", f.name))?;
            let (len, mut at) = (r.length(), 0u64);
            while at < len {
                let n = (len - at).min(4 << 20);
                let chunk = r.read_at(at, n).await.map_err(|e| format!("{}: {e}", f.path))?;
                std::io::Write::write_all(&mut out, &chunk).map_err(|e| format!("write {}: {e}", f.name))?;
                at += n;
            }
            let mode = if f.executable { 0o755 } else { 0o644 };
            std::fs::set_permissions(stage.join(&f.name), std::fs::Permissions::from_mode(mode))
                .map_err(|e| e.to_string())?;
        }
        Ok(Some(stage))
    }

    fn start_staged(self: &Arc<Self>, s: StartContainer, stage: Option<PathBuf>) {
        let me = self.clone();
        let id = s.container_id.clone();
        let launched = me.launch(&s, stage.as_deref());
        if let Some(stage) = stage {
            let _ = std::fs::remove_dir_all(stage);
        }
        match launched {
            Ok((child, pgid, uid, gid)) => {
                // pgid, uid, start time: enough for a later worker to find this group again.
                if let Some((uid, start)) = proc_uid_start(pgid) {
                    if let Err(e) = std::fs::write(self.record(&id), format!("{pgid} {uid} {start}\n")) {
                        tracing::warn!(container = %id, error = %e, "could not note the container's process group");
                    }
                }
                let credential = s.credential.as_ref().map(|c| CredentialLife {
                    issued_ms: now_ms(),
                    not_after_ms: c.not_after_ms,
                    asked_ms: 0,
                    dir: self.settings.local_dir.join("apps").join(&s.app_id).join(&id),
                    uid,
                    gid,
                });
                let mut inner = self.lock();
                inner.starting.remove(&id);
                inner.running.insert(id.clone(), Running { pgid, rss: 0, killed: None, credential });
                drop(inner);
                tracing::info!(container = %id, app = %s.app_id, pid = pgid, "container started");
                tokio::spawn(async move { me.watch(id, child, pgid, s.resources.memory_mib << 20).await });
            }
            Err(e) => self.launch_failed(&id, e),
        }
    }

    fn launch(
        &self,
        s: &StartContainer,
        stage: Option<&Path>,
    ) -> Result<(tokio::process::Child, i32, u32, u32), String> {
        let program = s.spec.command.first().filter(|c| !c.is_empty()).ok_or("an empty command")?;
        let app_dir = self.settings.local_dir.join("apps").join(safe(&s.app_id)?);
        let dir = app_dir.join(safe(&s.container_id)?);
        // The application's directory stays the worker's (0711): a container can neither
        // add to it nor swap a sibling's directory for a link while the worker fills it.
        // The worker follows no link anyway: the application's directory must be a plain
        // directory, the container's is made new (refused if anything is there) and so are
        // the files in it, all before they are given to the container's user.
        let (uid, gid) = if self.settings.isolate { self.identity(&s.app_id, &s.user) } else { (0, 0) };
        // Containers of one application start side by side: whichever makes the
        // directory first, the others find it made.
        match std::fs::create_dir(&app_dir) {
            Ok(()) => {
                std::fs::set_permissions(&app_dir, std::fs::Permissions::from_mode(0o711)).map_err(|e| e.to_string())?
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("create {}: {e}", app_dir.display())),
        }
        if !std::fs::symlink_metadata(&app_dir).is_ok_and(|m| m.file_type().is_dir()) {
            return Err(format!("{} is not a directory", app_dir.display()));
        }
        std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
        let new_file = |name: &str| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(dir.join(name))
                .map_err(|e| format!("create {name}: {e}"))
        };
        let (out, err) = (new_file("stdout")?, new_file("stderr")?);
        let mut owned = vec![dir.join("stdout"), dir.join("stderr")];
        // Its localized files, moved in from the worker's staging directory.
        for f in stage.map(|_| &s.spec.files[..]).unwrap_or_default() {
            let (from, to) = (stage.unwrap_or(Path::new("")).join(&f.name), dir.join(&f.name));
            std::fs::rename(&from, &to).map_err(|e| format!("move {} in: {e}", f.name))?;
            owned.push(to);
        }
        let config = self.write_client_config(s, &dir, &mut owned)?;
        owned.push(dir.clone());
        let mut cmd = tokio::process::Command::new(program);
        cmd.env_clear();
        if let Some(c) = &config {
            cmd.env("TARN_CONFIG", c);
        }
        if self.settings.isolate {
            for p in &owned {
                chown(p, uid, gid)?;
            }
            // std drops the worker's supplementary groups when root sets a uid.
            cmd.uid(uid).gid(gid);
        }
        cmd.args(&s.spec.command[1..])
            .envs(&s.spec.env)
            .env("PATH", self.path())
            .env("HOME", &dir)
            .env("TARN_CONTAINER_ID", &s.container_id)
            .env("TARN_APP_ID", &s.app_id)
            .env("TARN_ATTEMPT", s.attempt.to_string())
            .env("TARN_NODE_HOST", &self.settings.host)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(false);
        // SAFETY: prctl(2) only, between fork and exec (async-signal-safe). std changes the
        // uid before running this, so the setting (cleared on a credential change) holds:
        // the container's first process is SIGKILLed when the worker dies.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("run {program:?}: {e}"))?;
        let pgid = child.id().ok_or("the process ended at once")? as i32;
        Ok((child, pgid, uid, gid))
    }

    /// Writes the container's client configuration (`tarn.toml`: its credential, the
    /// cluster CA, where the namenodes and resource managers are) under `dir/tls` and
    /// returns its path; `None` without a credential. Every file is new (nothing there is
    /// followed) and goes in `owned`, to be given to the container's user.
    fn write_client_config(
        &self,
        s: &StartContainer,
        dir: &Path,
        owned: &mut Vec<PathBuf>,
    ) -> Result<Option<PathBuf>, String> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let (Some(cred), Some(ca)) = (&s.credential, &self.settings.client.cluster_ca) else { return Ok(None) };
        let tls = dir.join("tls");
        std::fs::create_dir(&tls).map_err(|e| format!("create {}: {e}", tls.display()))?;
        std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
        owned.push(tls.clone());
        let write = |path: PathBuf, text: &str, mode: u32, owned: &mut Vec<PathBuf>| -> Result<PathBuf, String> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
                .map_err(|e| format!("create {}: {e}", path.display()))?;
            f.write_all(text.as_bytes()).map_err(|e| format!("write {}: {e}", path.display()))?;
            owned.push(path.clone());
            Ok(path)
        };
        let ca = write(tls.join("ca.pem"), ca, 0o644, owned)?;
        let cert = write(tls.join("cert.pem"), &cred.cert_pem, 0o644, owned)?;
        let key = write(tls.join("key.pem"), &cred.key_pem, 0o600, owned)?;
        let list = |v: &[String]| v.iter().map(|a| toml_str(a)).collect::<Vec<_>>().join(", ");
        let c = &self.settings.client;
        let text = format!(
            "# This container's client configuration (written by its worker).\n\
             [security.tls]\nca = {}\ncert = {}\nkey = {}\n\n\
             [client]\nnamenodes = [{}]\nresource_managers = [{}]\n",
            toml_str(&ca.to_string_lossy()),
            toml_str(&cert.to_string_lossy()),
            toml_str(&key.to_string_lossy()),
            list(&c.namenodes),
            list(&c.resource_managers),
        );
        write(dir.join("tarn.toml"), &text, 0o644, owned).map(Some)
    }

    /// Waits for the container to end, sampling its memory and killing it past its grant.
    async fn watch(self: Arc<Self>, id: String, mut child: tokio::process::Child, pgid: i32, grant: u64) {
        let mut tick = tokio::time::interval(self.settings.pmem_check);
        let exit = loop {
            tokio::select! {
                r = child.wait() => break r,
                _ = tick.tick() => {
                    let rss = group_rss(pgid);
                    let mut inner = self.lock();
                    let Some(r) = inner.running.get_mut(&id) else { continue };
                    r.rss = rss;
                    if rss > grant && r.killed.is_none() {
                        let why = format!("used {} MiB of memory, {} MiB granted", rss >> 20, grant >> 20);
                        tracing::warn!(container = %id, %why, "container over its memory grant: killed");
                        r.killed = Some((ExitReason::KilledExceededPmem, why));
                        kill_group(pgid);
                    }
                }
            }
        };
        // What else is left of the group goes with it.
        kill_group(pgid);
        let _ = std::fs::remove_file(self.record(&id));
        let code = match &exit {
            Ok(s) => s.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(s).unwrap_or(0)),
            Err(_) => -1,
        };
        let mut inner = self.lock();
        let killed = inner.running.remove(&id).and_then(|r| r.killed);
        let st = match (killed, exit) {
            (Some((reason, why)), _) => ContainerStatus::ended(&id, reason, code, why),
            (None, Ok(_)) => ContainerStatus::ended(&id, ExitReason::Exited, code, ""),
            (None, Err(e)) => ContainerStatus::ended(&id, ExitReason::Exited, code, format!("wait: {e}")),
        };
        tracing::info!(container = %id, exit_code = code, reason = ?st.ended, "container ended");
        inner.done.insert(id, st);
        drop(inner);
        self.changed.notify_one();
    }
}

/// Writes a renewed certificate and key into `<dir>/tls` of a running container. The
/// directory is the container's, so everything goes through descriptors opened without
/// following links (a `tls` swapped for a link to /etc gets nothing written there): each
/// file is made new beside the old one, given to the container's user, renamed over it.
fn replace_credential(dir: &Path, owner: Option<(u32, u32)>, cred: &tarn_client::rm::Credential) -> Result<(), String> {
    use std::ffi::CString;
    use std::io::Write as _;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let open = |at: i32, name: &str, flags: i32, mode: u32| -> Result<OwnedFd, String> {
        let c = CString::new(name).map_err(|_| "a name with NUL".to_string())?;
        // SAFETY: openat(2) with a valid directory descriptor (or AT_FDCWD) and a
        // NUL-terminated name; the descriptor is owned below.
        let fd = unsafe { libc::openat(at, c.as_ptr(), flags | libc::O_NOFOLLOW | libc::O_CLOEXEC, mode) };
        if fd < 0 {
            return Err(format!("open {name}: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a new descriptor nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let cdir = open(libc::AT_FDCWD, &dir.to_string_lossy(), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let tls = open(cdir.as_raw_fd(), "tls", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    // The key first: a reload that sees the new certificate finds its key.
    for (name, text, mode) in [("key.pem", &cred.key_pem, 0o600), ("cert.pem", &cred.cert_pem, 0o644)] {
        let tmp = format!(".{name}.new");
        let t = CString::new(tmp.as_str()).map_err(|_| "name".to_string())?;
        // SAFETY: unlinkat(2) of a name in a directory descriptor (a stale temporary file).
        unsafe { libc::unlinkat(tls.as_raw_fd(), t.as_ptr(), 0) };
        let fd = open(tls.as_raw_fd(), &tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, mode)?;
        if let Some((uid, gid)) = owner {
            // SAFETY: fchown(2) of the descriptor just made.
            if unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) } != 0 {
                return Err(format!("chown {tmp}: {}", std::io::Error::last_os_error()));
            }
        }
        let mut f = std::fs::File::from(fd);
        f.write_all(text.as_bytes()).map_err(|e| format!("write {tmp}: {e}"))?;
        let to = CString::new(name).map_err(|_| "name".to_string())?;
        // SAFETY: renameat(2) within one directory descriptor.
        if unsafe { libc::renameat(tls.as_raw_fd(), t.as_ptr(), tls.as_raw_fd(), to.as_ptr()) } != 0 {
            return Err(format!("rename {tmp}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Puts `src` as `<bin>/tarn` where any user may run it (its own home may be closed to
/// containers): a hard link, else a copy, renamed into place (a running container keeps
/// the old one); left alone when already the same file.
fn offer_program(src: &Path, bin: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(bin)?;
    std::fs::set_permissions(bin, std::fs::Permissions::from_mode(0o711))?;
    let dst = bin.join("tarn");
    let s = std::fs::metadata(src)?;
    if std::fs::metadata(&dst).is_ok_and(|d| (d.dev(), d.ino()) == (s.dev(), s.ino())) {
        return Ok(());
    }
    let tmp = bin.join(".tarn.new");
    let _ = std::fs::remove_file(&tmp);
    // A link only to a program everyone may already run (a chmod of the link would be
    // one of the original); else a copy of its own.
    let linked = s.mode() & 0o005 == 0o005 && std::fs::hard_link(src, &tmp).is_ok();
    if !linked {
        std::fs::copy(src, &tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::rename(&tmp, &dst)
}

/// `v` as a TOML basic string.
fn toml_str(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for ch in v.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A name that is one path component.
fn safe(name: &str) -> Result<&str, String> {
    let ok = !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0');
    if ok {
        Ok(name)
    } else {
        Err(format!("{name:?} cannot name a directory"))
    }
}

/// The uid and gid of `user` in /etc/passwd.
fn host_user(user: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == user).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?))).flatten()
    })
}

/// Gives `p` (never what a link at `p` points to) to `uid`.
fn chown(p: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", p.display()))
}

fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals the process group; no memory is shared.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// The fields of /proc/<pid>/stat after the command name (state is the first).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// A process's uid and start time (clock ticks since boot).
fn proc_uid_start(pid: i32) -> Option<(u32, u64)> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(format!("/proc/{pid}")).ok()?.uid();
    // rest: state(0) ... starttime (field 22 of stat) at 19.
    let start = stat_fields(pid)?.get(19)?.parse().ok()?;
    Some((uid, start))
}

/// Kills the process groups of containers a previous worker left running: a group whose
/// members have the recorded uid and started no earlier than the recorded leader (a reused
/// group id belongs to someone else).
fn reap_orphans(run: &Path) {
    let Ok(dir) = std::fs::read_dir(run) else { return };
    for e in dir.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let f: Vec<u64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if let [pgid, uid, start] = f[..] {
            let pgid = pgid as i32;
            let members = group_members(pgid)
                .into_iter()
                .filter(|&p| proc_uid_start(p).is_some_and(|(u, s)| u64::from(u) == uid && s >= start))
                .count();
            if members > 0 {
                tracing::warn!(container = ?e.file_name(), pgid, members, "killing a container a previous worker left running");
                kill_group(pgid);
            }
        }
        let _ = std::fs::remove_file(e.path());
    }
}

/// The processes in group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|&pid| stat_fields(pid).and_then(|f| f.get(2)?.parse::<i32>().ok()) == Some(pgid))
        .collect()
}

/// Resident bytes of every process in group `pgid` (from /proc/<pid>/stat).
fn group_rss(pgid: i32) -> u64 {
    let page = 4096u64;
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    let mut total = 0;
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest: state(0) ppid(1) pgrp(2) ... rss (field 24 of stat) at 21.
        if f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) {
            total += f.get(21).and_then(|r| r.parse::<u64>().ok()).unwrap_or(0) * page;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_leave_the_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(safe(bad).is_err(), "{bad:?}");
        }
        assert_eq!(safe("app-1-0001_01_000001"), Ok("app-1-0001_01_000001"));
    }

    #[test]
    fn this_process_group_has_resident_memory() {
        // SAFETY: getpgrp(2) reads this process's group id.
        let pgid = unsafe { libc::getpgrp() };
        assert!(group_rss(pgid) > 1 << 20, "a test process holds more than 1 MiB");
        assert_eq!(group_rss(i32::MAX), 0);
    }
}
