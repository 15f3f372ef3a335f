//! Resource managers as real processes, one active and one standing by: SIGKILL of the
//! active one with applications running and queued loses none of them and restarts no
//! container (the standby takes over from the records, the workers register with what
//! they run, the masters register again); SIGSTOP of the active one until the standby has
//! taken over, then SIGCONT: the old one serves nothing more.

use std::time::{Duration, Instant};

use tarn_client::rm::{AppState, AppSubmission, ContainerSpec, Resources, RmClient};
use tarn_tests::{rm_is_active, wait_for, Cluster};

/// The process groups of the containers worker `i` started (noted under its `run/`).
fn groups(cl: &Cluster, worker: usize) -> Vec<i32> {
    let run = cl.container_dir(worker, "x", "x").parent().unwrap().parent().unwrap().parent().unwrap().join("run");
    let Ok(dir) = std::fs::read_dir(run) else { return Vec::new() };
    let mut g: Vec<i32> = dir
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.split_whitespace().next()?.parse().ok())
        .collect();
    g.sort();
    g
}

fn alive(pgid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the group exists.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

/// A master that waits for `gate`, then exits 0.
fn waiting(gate: &std::path::Path) -> AppSubmission {
    let script = format!("while [ ! -e {} ]; do sleep 0.05; done", gate.display());
    AppSubmission {
        name: "waits".into(),
        am_resources: Resources::new(1, 64),
        am_spec: ContainerSpec { command: vec!["/bin/sh".into(), "-c".into(), script], ..Default::default() },
        ..Default::default()
    }
}

fn dump(cl: &Cluster) {
    for i in 1..=2 {
        eprintln!("--- resource manager {i} ---\n{}", cl.rm_log(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_active_resource_manager_loses_no_application_and_restarts_no_container() {
    let mut cl = Cluster::builder().datanodes(1).workers(2, 0).rm_processes(2).start().await;
    let rms = cl.rm_addrs.join(",");
    let alice = RmClient::new(&cl.rm_addrs, &tarn_tests::pki().transport(tarn_security::Role::User, "alice")).unwrap();
    let admin = cl.rm_client();
    let gates = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(gates.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let tarn = tarn_tests::tarn_bin();
    let config = tarn_tests::config_file(tarn_security::Role::User, "alice");
    let r = tokio::time::timeout(Duration::from_secs(120), async {
        // A shell application: its master and two containers waiting for a gate (3 of the
        // 4 vcores); a plain master waiting for another (the 4th); a third application
        // queued behind them.
        let script = format!(
            "while [ ! -e {} ]; do sleep 0.05; done; echo index=$SHELL_INDEX",
            gates.path().join("go1").display()
        );
        let o = std::process::Command::new(&tarn)
            .args(["app", "run-shell", "--detach", "--resource-manager", &rms, "--config"])
            .arg(&config)
            .args(["-n", "2", "--memory-mib", "64", "--", "/bin/sh", "-c", &script])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let shell = String::from_utf8_lossy(&o.stdout).trim().to_string();
        wait_for("the shell application's containers running", Duration::from_secs(30), || async {
            let busy: u32 = admin.workers().await.ok()?.iter().map(|w| w.used.vcores).sum();
            (busy == 3 && groups(&cl, 1).len() + groups(&cl, 2).len() == 3).then_some(())
        })
        .await;
        let plain = alice.submit(&waiting(&gates.path().join("go2"))).await.unwrap();
        let queued = alice.submit(&waiting(&gates.path().join("go3"))).await.unwrap();
        wait_for("4 vcores busy", Duration::from_secs(30), || async {
            let busy: u32 = admin.workers().await.ok()?.iter().map(|w| w.used.vcores).sum();
            (busy == 4 && groups(&cl, 1).len() + groups(&cl, 2).len() == 4).then_some(())
        })
        .await;
        assert_eq!(alice.application(&queued).await.unwrap().state, AppState::Accepted);
        let before: Vec<i32> = [groups(&cl, 1), groups(&cl, 2)].concat();

        cl.kill_rm(1); // SIGKILL of the active one
        let killed = Instant::now();
        wait_for("the standby to take over", Duration::from_secs(20), || async {
            rm_is_active(&cl.rm_addrs[1]).await.then_some(())
        })
        .await;
        let took_over = killed.elapsed();
        // The workers register with it and what runs is adopted: every vcore busy again.
        wait_for("the workers' containers adopted", Duration::from_secs(20), || async {
            let busy: u32 = admin.workers().await.ok()?.iter().map(|w| w.used.vcores).sum();
            (busy == 4).then_some(())
        })
        .await;
        eprintln!("failover: the standby served {took_over:?} after the SIGKILL");
        let apps = admin.applications(true).await.unwrap();
        let state = |id: &str| apps.iter().find(|a| a.app_id == id).map(|a| (a.state, a.attempts.len()));
        assert_eq!(state(&shell), Some((AppState::Running, 1)), "{apps:?}");
        assert_eq!(state(&plain), Some((AppState::Running, 1)), "{apps:?}");
        assert_eq!(state(&queued), Some((AppState::Accepted, 0)), "{apps:?}");
        let after: Vec<i32> = [groups(&cl, 1), groups(&cl, 2)].concat();
        assert_eq!(after, before, "no container started again");
        assert!(before.iter().all(|&g| alive(g)), "every container still runs");

        // Everything finishes under the new one, with no container replaced.
        for g in ["go1", "go2", "go3"] {
            std::fs::write(gates.path().join(g), "").unwrap();
        }
        for id in [&shell, &plain, &queued] {
            wait_for(&format!("{id} finished"), Duration::from_secs(30), || async {
                let r = alice.application(id).await.ok()?;
                r.state.is_final().then_some(r)
            })
            .await;
        }
        let r = alice.application(&shell).await.unwrap();
        assert_eq!((r.state, r.attempts.len()), (AppState::Finished, 1), "{r:?}");
        assert!(r.diagnostics.contains("2 of 2 containers succeeded (0 failed"), "{r:?}");
        let r = alice.application(&plain).await.unwrap();
        assert_eq!((r.state, r.attempts.len()), (AppState::Finished, 1), "{r:?}");
        assert_eq!(alice.application(&queued).await.unwrap().state, AppState::Finished);
    })
    .await;
    if r.is_err() {
        dump(&cl);
        panic!("timed out");
    }
    cl.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_active_resource_manager_steps_down_when_it_runs_again() {
    let cl = Cluster::builder().datanodes(1).workers(1, 0).rm_processes(2).start().await;
    let alice = RmClient::new(&cl.rm_addrs, &tarn_tests::pki().transport(tarn_security::Role::User, "alice")).unwrap();
    let gates = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(gates.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(90), async {
        let before = alice.submit(&waiting(&gates.path().join("go1"))).await.unwrap();
        cl.pause_rm(1, true); // SIGSTOP
        wait_for("the standby to take over", Duration::from_secs(20), || async {
            rm_is_active(&cl.rm_addrs[1]).await.then_some(())
        })
        .await;
        // Submitted to the new one while the old one sleeps.
        let during = alice.submit(&waiting(&gates.path().join("go2"))).await.unwrap();
        cl.pause_rm(1, false); // SIGCONT
                               // From its first moment back it serves nothing: its lease ran out while it slept.
        assert!(!rm_is_active(&cl.rm_addrs[0]).await, "the old active one still serves");
        wait_for("the old one to stand by", Duration::from_secs(10), || async {
            cl.rm_log(1).contains("another resource manager holds the lease now").then_some(())
        })
        .await;
        assert!(!rm_is_active(&cl.rm_addrs[0]).await);
        assert!(rm_is_active(&cl.rm_addrs[1]).await);
        // The new one carries both applications to their end.
        std::fs::write(gates.path().join("go1"), "").unwrap();
        std::fs::write(gates.path().join("go2"), "").unwrap();
        for id in [&before, &during] {
            wait_for(&format!("{id} finished"), Duration::from_secs(30), || async {
                let r = alice.application(id).await.ok()?;
                (r.state == AppState::Finished).then_some(())
            })
            .await;
        }
        // The old one placed nothing after it woke.
        let log = cl.rm_log(1);
        let woke = log.find("another resource manager holds the lease now").unwrap();
        assert!(!log[woke..].contains("application master placed"), "{}", &log[woke..]);
        // Nor did it judge the workers it could not hear while it slept.
        assert!(!log.contains("worker lost"), "{log}");
    })
    .await;
    if r.is_err() {
        dump(&cl);
        panic!("timed out");
    }
    cl.shutdown().await;
}
