//! Applications and their containers on real workers: the master runs in a container on a
//! core node, as an unprivileged user of its own, in its own directory; a container past
//! its memory grant is killed and says why; a failed master gets another attempt; a lost
//! worker's master is started again elsewhere; a killed application's processes are gone.

use std::time::Duration;

use tarn_client::rm::{AppReport, AppState, AppSubmission, ContainerSpec, ExitReason, Resources, RmClient};
use tarn_tests::{wait_for, Cluster};

fn sh(script: &str, memory_mib: u64, max_attempts: u32) -> AppSubmission {
    AppSubmission {
        name: "test".into(),
        am_resources: Resources::new(1, memory_mib),
        am_spec: ContainerSpec { command: vec!["/bin/sh".into(), "-c".into(), script.into()], ..Default::default() },
        max_attempts,
        ..Default::default()
    }
}

async fn wait_state(rm: &RmClient, id: &str, want: AppState) -> AppReport {
    wait_for(&format!("{id} {}", want.as_str()), Duration::from_secs(30), || async {
        let r = rm.application(id).await.ok()?;
        (r.state == want).then_some(r)
    })
    .await
}

/// Home directories `/home/<u>` (0755) owned by each user, and bob's private file
/// `/home/bob/secret` (0600), as the tests of containers' users want them.
async fn homes_and_bobs_secret(cl: &Cluster) {
    let admin = cl.client();
    for u in ["alice", "bob"] {
        admin.mkdirs(&format!("/home/{u}")).await.unwrap();
        let own = tarn_client::SetAttributes { owner: Some(u.into()), mode: Some(0o755), ..Default::default() };
        admin.set_attributes(&format!("/home/{u}"), own).await.unwrap();
    }
    put_as(cl, "bob", "/home/bob/secret", b"bob's secret", 0o600).await;
}

/// Writes `text` to `path` as `user`, with `mode`.
async fn put_as(cl: &Cluster, user: &str, path: &str, text: &[u8], mode: u32) {
    use tarn_client::blocks::FileWriter;
    let c = tarn_client::NamenodeClient::new(&cl.addrs, &tarn_tests::pki().transport(tarn_security::Role::User, user))
        .unwrap();
    let mut w = FileWriter::create(&c, path, &tarn_client::CreateOptions::default()).await.unwrap();
    w.write(text).await.unwrap();
    w.close().await.unwrap();
    c.set_attributes(path, tarn_client::SetAttributes { mode: Some(mode), ..Default::default() }).await.unwrap();
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) only reads this process's effective uid.
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_runs_on_a_core_node_as_an_unprivileged_user_in_its_own_directory() {
    let cl = Cluster::builder().workers(1, 1).start().await;
    let rm = cl.rm_client();
    tokio::time::timeout(Duration::from_secs(60), async {
        // What a container must not read: the worker's certificate key.
        let key = tarn_tests::pki().paths(tarn_security::Role::Worker, "w1").key;
        let script = format!(
            "id -u > uid; id -G > groups; pwd > pwd; echo \"$TARN_CONTAINER_ID $TARN_APP_ID\" > ids; \
             cat {} > stolen 2> refused; echo done",
            key.display()
        );
        let id = rm.submit(&sh(&script, 256, 1)).await.unwrap();
        let r = wait_state(&rm, &id, AppState::Finished).await;
        let a = &r.attempts[0];
        assert_eq!(a.worker_id, "w1", "the master runs on the core node");
        let dir = cl.container_dir(1, &id, &a.container_id);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(read("stdout"), "done\n");
        assert_eq!(read("pwd").trim(), dir.to_str().unwrap());
        assert_eq!(read("ids").trim(), format!("{} {id}", a.container_id));
        let uid: u32 = read("uid").trim().parse().unwrap();
        if is_root() {
            assert!(uid >= 3_000_000, "a uid of the application's own, not {uid}");
            assert!(!read("groups").split_whitespace().any(|g| g == "0"), "no root group: {}", read("groups"));
            assert_eq!(read("stolen"), "", "the container read the worker's key");
            assert!(read("refused").contains("Permission denied"), "{}", read("refused"));
        } else {
            // A worker that is not root runs containers as itself (it warns at start).
            // SAFETY: as above.
            assert_eq!(uid, unsafe { libc::geteuid() });
        }
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_over_its_memory_grant_is_killed_and_says_why() {
    let cl = Cluster::builder().workers(1, 0).start().await;
    let rm = cl.rm_client();
    tokio::time::timeout(Duration::from_secs(60), async {
        // `tail` of an endless line holds all of it: memory grows until the check.
        let id = rm.submit(&sh("tail /dev/zero", 64, 1)).await.unwrap();
        let r = wait_state(&rm, &id, AppState::Failed).await;
        let st = &r.attempts[0].status;
        assert_eq!(st.ended, Some(ExitReason::KilledExceededPmem), "{r:?}");
        assert!(st.diagnostics.contains("64 MiB granted"), "{}", st.diagnostics);
        assert!(r.diagnostics.contains("over its memory grant"), "{}", r.diagnostics);
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_master_gets_another_attempt_then_the_application_fails() {
    let cl = Cluster::builder().workers(2, 0).start().await;
    let rm = cl.rm_client();
    tokio::time::timeout(Duration::from_secs(60), async {
        let id = rm.submit(&sh("echo \"attempt $TARN_ATTEMPT\"; exit 3", 128, 2)).await.unwrap();
        let r = wait_state(&rm, &id, AppState::Failed).await;
        assert_eq!(r.attempts.len(), 2, "{r:?}");
        for (i, a) in r.attempts.iter().enumerate() {
            assert_eq!((a.status.ended, a.status.exit_code), (Some(ExitReason::Exited), 3));
            let w: usize = a.worker_id.trim_start_matches('w').parse().unwrap();
            let out = std::fs::read_to_string(cl.container_dir(w, &id, &a.container_id).join("stdout")).unwrap();
            assert_eq!(out, format!("attempt {}\n", i + 1));
        }
        assert_ne!(r.attempts[0].worker_id, r.attempts[1].worker_id, "the second attempt runs elsewhere");
        assert!(r.diagnostics.starts_with("2 of 2 attempts failed"), "{}", r.diagnostics);
        // Listed for its user (the admin here); another user sees none of it.
        let listed = rm.applications(false).await.unwrap();
        assert!(listed.iter().any(|a| a.app_id == id && a.state == AppState::Failed), "{listed:?}");
        let alice = RmClient::new(
            std::slice::from_ref(&cl.rm.as_ref().unwrap().addr),
            &tarn_tests::pki().transport(tarn_security::Role::User, "alice"),
        )
        .unwrap();
        assert!(alice.applications(false).await.unwrap().is_empty());
        assert_eq!(alice.applications(true).await.unwrap_err().kind(), tarn_client::ErrorKind::PermissionDenied);
        assert_eq!(alice.application(&id).await.unwrap_err().kind(), tarn_client::ErrorKind::PermissionDenied);
        // A bad submission is refused with what is wrong.
        let e = rm.submit(&sh("true", 1 << 30, 1)).await.unwrap_err();
        assert_eq!(e.kind(), tarn_client::ErrorKind::InvalidArgument, "{e}");
        assert!(e.to_string().contains("more than a container may have"), "{e}");
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// Whether a process whose command line holds `marker` runs on this host.
fn running(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_workers_master_starts_again_elsewhere_and_a_killed_application_stops() {
    let mut cl = Cluster::builder().workers(2, 0).start().await;
    let rm = cl.rm_client();
    tokio::time::timeout(Duration::from_secs(60), async {
        let marker = format!("tarn-test-sleeper-{}", std::process::id());
        // The shell's command line carries the marker while it waits for `sleep`.
        let id = rm.submit(&sh(&format!("sleep 600; echo {marker}"), 128, 2)).await.unwrap();
        let first = wait_for("the first attempt running", Duration::from_secs(30), || async {
            let r = rm.application(&id).await.ok()?;
            (r.state == AppState::Running && r.attempts.len() == 1).then(|| r.attempts[0].clone())
        })
        .await;
        wait_for("the master's process", Duration::from_secs(10), || async { running(&marker).then_some(()) }).await;
        // Its worker goes (its containers with it); the resource manager gives the attempt up.
        let w: usize = first.worker_id.trim_start_matches('w').parse().unwrap();
        cl.stop_worker(w).await;
        let second = wait_for("a second attempt elsewhere", Duration::from_secs(30), || async {
            let r = rm.application(&id).await.ok()?;
            (r.attempts.len() == 2).then_some(r)
        })
        .await;
        assert_eq!(second.attempts[0].status.ended, Some(ExitReason::WorkerLost), "{second:?}");
        assert_ne!(second.attempts[1].worker_id, first.worker_id);
        // Killed, its container's processes are gone.
        assert!(rm.kill(&id).await.unwrap());
        let r = wait_state(&rm, &id, AppState::Killed).await;
        assert_eq!(r.diagnostics, "killed by tester");
        wait_for("the master's processes gone", Duration::from_secs(10), || async {
            (!running(&marker)).then_some(())
        })
        .await;
        assert!(!rm.kill(&id).await.unwrap(), "already ended");
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// An application's directory is its user's, so an earlier container can plant a link
/// where the worker will make the next attempt's directory. The worker follows no link:
/// the next attempt fails to launch, and what the link points to is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_planted_by_a_container_is_not_followed_by_the_worker() {
    let cl = Cluster::builder().workers(1, 0).start().await;
    let rm = cl.rm_client();
    let victim = tempfile::tempdir().unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        let script = format!("ln -s {} \"../${{TARN_APP_ID}}_02_000001\" && exit 1", victim.path().display());
        let id = rm.submit(&sh(&script, 128, 2)).await.unwrap();
        let r = wait_state(&rm, &id, AppState::Failed).await;
        assert_eq!(r.attempts.len(), 2, "{r:?}");
        assert_eq!(r.attempts[0].status.exit_code, 1, "{r:?}");
        let second = &r.attempts[1].status;
        if is_root() {
            // The application's directory is the worker's: the link cannot even be made.
            let dir = cl.container_dir(1, &id, &r.attempts[0].container_id);
            let err = std::fs::read_to_string(dir.join("stderr")).unwrap();
            assert!(err.contains("Permission denied"), "{err}");
            assert_eq!((second.ended, second.exit_code), (Some(ExitReason::Exited), 1), "{r:?}");
        } else {
            // Same user as the worker: the link is made, and the worker refuses to use it.
            assert_eq!(second.ended, Some(ExitReason::LaunchFailed), "{r:?}");
            assert!(second.diagnostics.contains("exists"), "{}", second.diagnostics);
        }
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(victim.path()).unwrap();
        // SAFETY: geteuid(2) only reads this process's effective uid.
        assert_eq!(m.uid(), unsafe { libc::geteuid() }, "the link's target was given away");
        assert!(std::fs::read_dir(victim.path()).unwrap().next().is_none(), "files were made through the link");
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// A container's delegation credential: it reaches the namespace as its application's
/// user and as nobody else. alice's container writes in her directory, and is refused
/// bob's 0600 file and the superuser's root directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_acts_as_its_user_and_no_one_else() {
    use tarn_security::Role;
    let cl = Cluster::builder().datanodes(1).workers(1, 0).start().await;
    tokio::time::timeout(Duration::from_secs(60), async {
        let admin = cl.client();
        homes_and_bobs_secret(&cl).await;

        // `tarn` by name: the worker's own, first on the container's PATH.
        let script = "set -u; echo from-alice > mine; \
             tarn fs put mine /home/alice/mine 2> put-err; tarn fs cat /home/alice/mine > readback; \
             tarn fs cat /home/bob/secret > stolen 2> refused-read; \
             tarn fs mkdir /by-alice 2> refused-mkdir; echo done";
        let rm_alice =
            RmClient::new(&[cl.rm.as_ref().unwrap().addr.clone()], &tarn_tests::pki().transport(Role::User, "alice"))
                .unwrap();
        let id = rm_alice.submit(&sh(script, 512, 1)).await.unwrap();
        let r = wait_state(&rm_alice, &id, AppState::Finished).await;
        let dir = cl.container_dir(1, &id, &r.attempts[0].container_id);
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(read("stdout"), "done\n", "stderr: {}", read("stderr"));
        assert_eq!(read("readback"), "from-alice\n", "put: {}", read("put-err"));
        let st = admin.get_file_info("/home/alice/mine", false).await.unwrap().expect("the container's file");
        assert_eq!(st.owner, "alice", "the container wrote as its application's user");
        assert_eq!(read("stolen"), "", "alice's container read bob's 0600 file");
        assert!(read("refused-read").to_lowercase().contains("permission"), "{}", read("refused-read"));
        assert!(read("refused-mkdir").to_lowercase().contains("permission"), "{}", read("refused-mkdir"));
        assert!(admin.get_file_info("/by-alice", false).await.unwrap().is_none());
        // Its credential is a user's certificate for this container, not the worker's.
        let cert = std::fs::read_to_string(dir.join("tls/cert.pem")).unwrap();
        let (who, container) = tarn_security::container_ca::names_of_pem(&cert).unwrap();
        assert_eq!((who.to_string(), container), ("user alice".into(), Some(r.attempts[0].container_id.clone())));
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// The built-in shell application on two core workers and a task worker: its master asks
/// for six containers (more than fit at once), starts the command in each, and finishes
/// once every one has exited 0; each container's output is its index's. Then the workers
/// keep every container's output in the file system as the user's, and `tarn app logs`
/// shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_application_runs_its_command_in_six_containers() {
    let cl = Cluster::builder().datanodes(1).workers(2, 1).tune_workers(|_, w| w.delete_delay_ms = 1_000).start().await;
    let rm_addr = cl.rm.as_ref().unwrap().addr.clone();
    let tarn = tarn_tests::tarn_bin();
    let config = tarn_tests::config_file(tarn_security::Role::User, "alice");
    // The master runs `tarn` by name: the worker's own (run-shell's default).
    let run = tokio::process::Command::new(&tarn)
        .args(["app", "run-shell", "--resource-manager", &rm_addr, "--config"])
        .arg(&config)
        .args(["-n", "6", "--memory-mib", "128", "--", "/bin/sh", "-c", "echo index=$SHELL_INDEX"])
        .kill_on_drop(true)
        .output();
    let o = tokio::time::timeout(Duration::from_secs(60), run).await.expect("run-shell within 60 s").unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "run-shell failed ({:?}):\n{out}\n{err}", o.status.code());
    let app = out.lines().next().unwrap().to_string();
    assert!(out.contains("FINISHED: 6 of 6 containers succeeded"), "{out}");
    let rm = cl.rm_client();
    let r = rm.application(&app).await.unwrap();
    let a = &r.attempts[0];
    let master_worker: usize = a.worker_id.trim_start_matches('w').parse().unwrap();
    assert!(master_worker <= 2, "the master runs on a core worker");

    // Aggregated: `tarn app logs` holds every container's output (and the master's).
    let logs = wait_for("the application's logs in the file system", Duration::from_secs(30), || async {
        let o = tokio::process::Command::new(&tarn)
            .args(["app", "logs", &app, "--resource-manager", &rm_addr, "--namenode", &cl.addrs[0], "--config"])
            .arg(&config)
            .output()
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        // Each worker keeps its own containers' logs: all seven (the master's too) in time.
        let complete = text.contains("6 of 6 containers succeeded") && text.matches("/stdout <==").count() == 7;
        (o.status.success() && complete).then_some(text)
    })
    .await;
    // Sections "==> CONTAINER/FILE <==" followed by the file.
    let mut sections = std::collections::BTreeMap::new();
    let mut current = String::new();
    for line in logs.lines() {
        if let Some(h) = line.strip_prefix("==> ").and_then(|l| l.strip_suffix(" <==")) {
            current = h.to_string();
            sections.insert(current.clone(), String::new());
        } else if let Some(text) = sections.get_mut(&current) {
            text.push_str(line);
            text.push('\n');
        }
    }
    // The master's log says where each index ran; each container's output is its own.
    let master_log = sections.get(&format!("{}/stdout", a.container_id)).cloned().unwrap_or_default();
    let mut placed = std::collections::BTreeMap::new();
    for line in master_log.lines().filter(|l| l.contains(": container ") && l.contains(" on w")) {
        // "index K: container CID on wN"
        let f: Vec<&str> = line.split_whitespace().collect();
        let index: u32 = f[1].trim_end_matches(':').parse().unwrap();
        let worker: usize = f[5].trim_start_matches('w').parse().unwrap();
        assert_eq!(sections.get(&format!("{}/stdout", f[3])), Some(&format!("index={index}\n")), "{line}\n{logs}");
        placed.insert(index, worker);
    }
    assert_eq!(placed.keys().copied().collect::<Vec<_>>(), (0..6).collect::<Vec<_>>(), "logs:\n{logs}");
    assert!(placed.values().any(|&w| w == 3), "containers run on the task node too: {placed:?}");
    let kept = format!("/.tarn/logs/alice/{app}/{}/stdout", a.container_id);
    let st = cl.client().get_file_info(&kept, false).await.unwrap().expect("kept log");
    assert_eq!(st.owner, "alice");
    let home = cl.client().get_file_info("/.tarn/logs/alice", false).await.unwrap().unwrap();
    assert_eq!((home.owner.as_str(), home.mode & 0o777), ("alice", 0o700));
    // Bob may not read them.
    let bob =
        tarn_client::NamenodeClient::new(&cl.addrs, &tarn_tests::pki().transport(tarn_security::Role::User, "bob"))
            .unwrap();
    assert!(bob.list_dir_all(&format!("/.tarn/logs/alice/{app}")).await.is_err());
    // Once kept, the workers' local directories of the application are gone.
    wait_for("the local directories removed", Duration::from_secs(10), || async {
        (1..=3).all(|w| !cl.container_dir(w, &app, "x").parent().unwrap().exists()).then_some(())
    })
    .await;
    cl.shutdown().await;
}

/// A container that swaps its log files for links to the worker's key (and its own
/// directory for a link elsewhere) gets none of it copied into the file system: the
/// worker keeps only regular files it reached without following a link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_aggregation_follows_no_link_a_container_planted() {
    let cl = Cluster::builder().datanodes(1).workers(1, 0).tune_workers(|_, w| w.delete_delay_ms = 0).start().await;
    let rm = cl.rm_client();
    tokio::time::timeout(Duration::from_secs(60), async {
        let key = tarn_tests::pki().paths(tarn_security::Role::Worker, "w1").key;
        let script = format!(
            "rm -f stdout stderr; ln -s {key} stdout; mkfifo stderr; \
             mkdir ../decoy && echo decoy > ../decoy/stdout && ln -s ../decoy \"../${{TARN_APP_ID}}_01_000009\"; exit 0",
            key = key.display()
        );
        let id = rm.submit(&sh(&script, 128, 1)).await.unwrap();
        wait_state(&rm, &id, AppState::Finished).await;
        let admin = cl.client();
        let dir = format!("/.tarn/logs/tester/{id}");
        // The worker removes the application's directory once it has copied what it keeps.
        let local = cl.container_dir(1, &id, "x").parent().unwrap().to_path_buf();
        wait_for("the logs kept", Duration::from_secs(20), || async { (!local.exists()).then_some(()) }).await;
        assert!(admin.get_file_info(&dir, false).await.unwrap().is_some(), "{dir} made");
        let kept: Vec<String> =
            admin.list_recursive_all(&dir, false).await.unwrap().into_iter().map(|s| s.path).collect();
        assert!(kept.is_empty(), "copied through links or from a fifo: {kept:?}");
        assert!(admin.get_file_info(&format!("{dir}/{id}_01_000009"), false).await.unwrap().is_none());
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// The process groups a worker notes for its running containers (`<local_dir>/run/`).
fn noted_groups(cl: &Cluster, worker: usize) -> Vec<i32> {
    let run = cl.container_dir(worker, "x", "x").parent().unwrap().parent().unwrap().parent().unwrap().join("run");
    let Ok(dir) = std::fs::read_dir(run) else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.split_whitespace().next()?.parse().ok())
        .collect()
}

fn group_alive(pgid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the group exists.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// Workers as real processes. SIGKILL of a worker running containers of an application:
/// its containers die with it, the resource manager declares it lost, the master hears of
/// it and replaces them, and the application finishes. SIGKILL of the master's worker: a
/// new attempt on the other core worker finishes the application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_worker_or_of_the_masters_worker_and_the_application_still_finishes() {
    let mut cl = Cluster::builder().datanodes(1).workers(2, 1).worker_processes().start().await;
    let rm = cl.rm_client();
    let rm_addr = cl.rm.as_ref().unwrap().addr.clone();
    let tarn = tarn_tests::tarn_bin();
    let config = tarn_tests::config_file(tarn_security::Role::User, "alice");
    // Containers wait for a gate file (theirs to poll) before they print and exit; each
    // leaves a process behind in its group, which its worker's end must take too.
    let gates = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(gates.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let submit = |n: &str, gate: &std::path::Path| {
        let script =
            format!("sleep 600 & while [ ! -e {} ]; do sleep 0.05; done; echo index=$SHELL_INDEX", gate.display());
        std::process::Command::new(&tarn)
            .args(["app", "run-shell", "--detach", "--resource-manager", &rm_addr, "--config"])
            .arg(&config)
            .args(["-n", n, "--memory-mib", "64", "--", "/bin/sh", "-c", &script])
            .output()
            .unwrap()
    };
    let r = tokio::time::timeout(Duration::from_secs(120), async {
        // Four containers: five vcores busy with the master, so the task node runs some.
        let o = submit("4", &gates.path().join("go1"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let app = String::from_utf8_lossy(&o.stdout).trim().to_string();
        wait_for("four containers running, some on the task node", Duration::from_secs(30), || async {
            let ws = rm.workers().await.ok()?;
            let busy: u32 = ws.iter().map(|w| w.used.vcores).sum();
            (busy == 5 && noted_groups(&cl, 3).len() == 2).then_some(())
        })
        .await;
        let orphans = noted_groups(&cl, 3);
        assert!(orphans.iter().all(|&g| group_alive(g)));
        cl.stop_worker(3).await; // SIGKILL
                                 // The core workers' four vcores fill up: the master, its two containers there, and
                                 // one replacement (the other waits for room).
        wait_for("the master to replace the lost containers", Duration::from_secs(30), || async {
            let ws = rm.workers().await.ok()?;
            let lost = ws.iter().any(|w| w.worker_id == "w3" && w.state == tarn_client::rm::WorkerState::Lost);
            let busy: u32 = ws.iter().filter(|w| w.worker_id != "w3").map(|w| w.used.vcores).sum();
            (lost && busy == 4).then_some(())
        })
        .await;
        // Restarted, the worker ends what its killed run left (each group's first process
        // died with it; the one left behind in each group has not).
        cl.start_worker(3).await;
        wait_for("the restarted worker to end the orphaned containers", Duration::from_secs(10), || async {
            orphans.iter().all(|&g| !group_alive(g)).then_some(())
        })
        .await;
        std::fs::write(gates.path().join("go1"), "").unwrap();
        let r = wait_state(&rm, &app, AppState::Finished).await;
        let am = &r.attempts[0];
        let am_log = std::fs::read_to_string(
            cl.container_dir(am.worker_id[1..].parse().unwrap(), &app, &am.container_id).join("stdout"),
        )
        .unwrap_or_default();
        assert!(r.diagnostics.contains("4 of 4 containers succeeded (2 failed"), "{r:?}\nmaster:\n{am_log}");

        // The master's worker killed: the next attempt finishes the application.
        let o = submit("2", &gates.path().join("go2"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let app = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let first = wait_for("the master's containers running", Duration::from_secs(30), || async {
            let r = rm.application(&app).await.ok()?;
            let busy: u32 = rm.workers().await.ok()?.iter().map(|w| w.used.vcores).sum();
            (busy == 3).then(|| r.attempts[0].clone())
        })
        .await;
        let victim: usize = first.worker_id.trim_start_matches('w').parse().unwrap();
        cl.stop_worker(victim).await; // SIGKILL
        let second = wait_for("a second attempt", Duration::from_secs(30), || async {
            let r = rm.application(&app).await.ok()?;
            (r.attempts.len() == 2).then(|| r.attempts[1].clone())
        })
        .await;
        assert_ne!(second.worker_id, first.worker_id);
        assert!(second.worker_id == "w1" || second.worker_id == "w2", "masters stay on core nodes: {second:?}");
        std::fs::write(gates.path().join("go2"), "").unwrap();
        let r = wait_state(&rm, &app, AppState::Finished).await;
        assert_eq!(r.attempts.len(), 2, "{r:?}");
    })
    .await;
    if r.is_err() {
        for i in 1..=3 {
            eprintln!("--- worker {i} ---\n{}", cl.worker_log(i));
        }
        panic!("timed out");
    }
    cl.shutdown().await;
}

/// `tarn admin drain-worker`: the drained worker gets no new container, its master is
/// stopped at the deadline and the next attempt runs on the other worker; `tarn admin
/// nodes` says DRAINING; only an admin may drain another worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_drains_a_worker() {
    let cl = Cluster::builder().workers(2, 0).start().await;
    let rm = cl.rm_client();
    let rm_addr = cl.rm.as_ref().unwrap().addr.clone();
    let tarn = |config: std::path::PathBuf, args: &[&str]| {
        let o = std::process::Command::new(tarn_tests::tarn_bin())
            .args(args)
            .args(["--resource-manager", &rm_addr, "--config"])
            .arg(config)
            .output()
            .unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr))
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        let id = rm.submit(&sh("sleep 600", 64, 2)).await.unwrap();
        let first = wait_for("the master running", Duration::from_secs(20), || async {
            let r = rm.application(&id).await.ok()?;
            let a = r.attempts.first()?.clone();
            (r.state == AppState::Running
                && cl.container_dir(a.worker_id[1..].parse().ok()?, &id, &a.container_id).exists())
            .then_some(a)
        })
        .await;
        let alice = tarn_tests::config_file(tarn_security::Role::User, "alice");
        let (code, text) = tarn(alice, &["admin", "drain-worker", &first.worker_id]);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("admins only"), "{text}");
        let admin = tarn_tests::admin_config();
        let (code, text) = tarn(admin.clone(), &["admin", "drain-worker", &first.worker_id, "--deadline-secs", "1"]);
        assert_eq!(code, Some(0), "{text}");
        assert!(text.contains("draining; 1 containers on it have 1 s"), "{text}");
        let (_, nodes) = tarn(admin, &["admin", "nodes"]);
        let row = nodes.lines().find(|l| l.starts_with(&first.worker_id)).unwrap_or_default();
        assert!(row.contains("DRAINING"), "{nodes}");
        // At the deadline the master is stopped; the next attempt runs on the other worker.
        let r = wait_for("a second attempt", Duration::from_secs(20), || async {
            let r = rm.application(&id).await.ok()?;
            (r.attempts.len() == 2).then_some(r)
        })
        .await;
        assert!(r.attempts[0].status.diagnostics.contains("drained"), "{r:?}");
        assert_ne!(r.attempts[1].worker_id, first.worker_id);
        // A worker may drain itself (a spot node's interruption notice), not another, and
        // may not take a drain back.
        let other = r.attempts[1].worker_id.clone();
        let own = tarn_tests::config_file(tarn_security::Role::Worker, &other);
        let (code, text) = tarn(own.clone(), &["admin", "drain-worker", &first.worker_id, "--cancel"]);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("admins only"), "{text}");
        let (code, text) = tarn(own.clone(), &["admin", "drain-worker", &first.worker_id]);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("admins only"), "{text}");
        let (code, text) = tarn(own.clone(), &["admin", "drain-worker", &other, "--deadline-secs", "600"]);
        assert_eq!(code, Some(0), "{text}");
        let (code, text) = tarn(own, &["admin", "drain-worker", &other, "--cancel"]);
        assert_eq!(code, Some(1), "{text}");
        let (_, nodes) = tarn(tarn_tests::admin_config(), &["admin", "nodes"]);
        let row = nodes.lines().find(|l| l.starts_with(&other)).unwrap_or_default();
        assert!(row.contains("DRAINING"), "{nodes}");
        rm.kill(&id).await.unwrap();
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// A container's credential is renewed while it runs: with 10-second credentials, a
/// container that reaches the namenode every 2 s for 14 s keeps getting in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_containers_credential_is_renewed_before_it_expires() {
    let cl = Cluster::builder().workers(1, 0).tune_rm(|r| r.container_credential_secs = 10).start().await;
    let rm = cl.rm_client();
    tokio::time::timeout(Duration::from_secs(60), async {
        let script = "first=$(cat tls/cert.pem); for i in 1 2 3 4 5 6 7 8; do tarn fs ls / > /dev/null || exit 3; \
                      sleep 2; done; [ \"$first\" != \"$(cat tls/cert.pem)\" ] || exit 4; echo renewed";
        let id = rm.submit(&sh(script, 256, 1)).await.unwrap();
        let r = wait_for(&format!("{id} to end"), Duration::from_secs(40), || async {
            let r = rm.application(&id).await.ok()?;
            r.state.is_final().then_some(r)
        })
        .await;
        let a = &r.attempts[0];
        let err = std::fs::read_to_string(cl.container_dir(1, &id, &a.container_id).join("stderr")).unwrap_or_default();
        assert_eq!(r.state, AppState::Finished, "exit {} (3: refused, 4: not renewed): {err}", a.status.exit_code);
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// Files localized from the file system: alice's script reaches her container's
/// directory, executable, read as alice; bob's 0600 file does not (the launch fails and
/// says why); a name that would leave the directory is refused at submit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containers_files_come_from_the_file_system_read_as_its_user() {
    use tarn_client::rm::LocalFile;
    use tarn_security::Role;
    let cl = Cluster::builder().datanodes(1).workers(1, 0).start().await;
    tokio::time::timeout(Duration::from_secs(60), async {
        homes_and_bobs_secret(&cl).await;
        put_as(&cl, "alice", "/home/alice/job.sh", b"#!/bin/sh\necho localized as $(id -u)\n", 0o644).await;
        let rm =
            RmClient::new(&[cl.rm.as_ref().unwrap().addr.clone()], &tarn_tests::pki().transport(Role::User, "alice"))
                .unwrap();
        let mut sub = sh("./run.sh", 128, 1);
        sub.am_spec.command = vec!["./run.sh".into()];
        sub.am_spec.files =
            vec![LocalFile { path: "/home/alice/job.sh".into(), name: "run.sh".into(), executable: true }];
        let id = rm.submit(&sub).await.unwrap();
        let r = wait_state(&rm, &id, AppState::Finished).await;
        let out =
            std::fs::read_to_string(cl.container_dir(1, &id, &r.attempts[0].container_id).join("stdout")).unwrap();
        assert!(out.starts_with("localized as "), "{out}");
        // Bob's private file: not for alice's container.
        sub.am_spec.files = vec![LocalFile { path: "/home/bob/secret".into(), name: "s".into(), executable: false }];
        let id = rm.submit(&sub).await.unwrap();
        let r = wait_state(&rm, &id, AppState::Failed).await;
        let st = &r.attempts[0].status;
        assert_eq!(st.ended, Some(ExitReason::LaunchFailed), "{r:?}");
        assert!(st.diagnostics.to_lowercase().contains("permission"), "{}", st.diagnostics);
        // A name that would leave the directory: refused at submit.
        sub.am_spec.files =
            vec![LocalFile { path: "/home/alice/job.sh".into(), name: "../x".into(), executable: false }];
        let e = rm.submit(&sub).await.unwrap_err();
        assert!(e.to_string().contains("one path component"), "{e}");
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}

/// An application's logs stay in the file system for `log_retention_secs`, then the
/// resource manager deletes them (as their user).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_logs_are_deleted_after_their_retention() {
    let cl = Cluster::builder()
        .datanodes(1)
        .workers(1, 0)
        .tune_workers(|_, w| w.delete_delay_ms = 1_000)
        .tune_rm(|r| r.log_retention_secs = 3)
        .start()
        .await;
    let rm = cl.rm_client();
    let c = cl.client();
    tokio::time::timeout(Duration::from_secs(60), async {
        let id = rm.submit(&sh("echo kept for a while", 64, 1)).await.unwrap();
        let r = wait_state(&rm, &id, AppState::Finished).await;
        let dir = format!("/.tarn/logs/{}/{id}", r.user);
        let kept = wait_for("the logs kept", Duration::from_secs(30), || async {
            c.get_file_info(&dir, false).await.ok()?.map(|_| std::time::Instant::now())
        })
        .await;
        wait_for("the logs deleted after their retention", Duration::from_secs(30), || async {
            c.get_file_info(&dir, false).await.ok()?.is_none().then_some(())
        })
        .await;
        assert!(kept.elapsed() >= Duration::from_secs(2), "deleted before their time: {:?}", kept.elapsed());
    })
    .await
    .expect("timed out");
    cl.shutdown().await;
}
