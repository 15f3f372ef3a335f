//! Queues on real workers: an admin loads a tree from TOML (`tarn admin refresh-queues`),
//! two users' applications with a backlog each share a busy cluster at the queues' 70/30,
//! and bad input (an unknown queue, a user not allowed, a bad file) is refused clearly.

use std::time::{Duration, Instant};

use tarn_client::rm::AppState;
use tarn_security::Role;
use tarn_tests::{config_file, tarn_bin, wait_for, Cluster};

const QUEUES: &str = "[queue.a]\ncapacity = 70\nuser_limit_factor = 2\n\
                      [queue.b]\ncapacity = 30\nuser_limit_factor = 4\nsubmit_users = [\"bob\"]\n";

fn tarn(user: &str, args: &[&str], rms: &str) -> std::process::Output {
    let role = if user == "admin" { Role::Admin } else { Role::User };
    // The options before the subcommand's own (a command after `--` takes the rest).
    std::process::Command::new(tarn_bin())
        .arg(args[0])
        .args(["--resource-manager", rms, "--config"])
        .arg(config_file(role, user))
        .args(&args[1..])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_queues_at_70_30_share_a_busy_cluster() {
    let cl = Cluster::builder().datanodes(1).workers(3, 0).tune_workers(|_, w| w.vcores = 4).start().await;
    let rms = cl.rm_addrs.join(",");
    let admin = cl.rm_client();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("queues.toml");
    std::fs::write(&file, QUEUES).unwrap();
    let r = tokio::time::timeout(Duration::from_secs(120), async {
        let o = tarn("admin", &["admin", "refresh-queues", file.to_str().unwrap()], &rms);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("2 leaf queues"));
        // Bad input changes nothing and says why.
        std::fs::write(dir.path().join("bad.toml"), "[queue.a]\ncapacity = 60\n").unwrap();
        let o = tarn("admin", &["admin", "refresh-queues", dir.path().join("bad.toml").to_str().unwrap()], &rms);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("add up to 60"), "{}", String::from_utf8_lossy(&o.stderr));
        let o = tarn("alice", &["admin", "refresh-queues", file.to_str().unwrap()], &rms);
        assert!(!o.status.success(), "only admins refresh the queues");
        let shell = |user: &str, queue: &str| {
            tarn(
                user,
                &[
                    "app",
                    "run-shell",
                    "--detach",
                    "--queue",
                    queue,
                    "-n",
                    "400",
                    "--memory-mib",
                    "32",
                    "--",
                    "/bin/sh",
                    "-c",
                    "sleep 0.3",
                ],
                &rms,
            )
        };
        let o = shell("alice", "b");
        assert!(!o.status.success(), "alice may not use queue b");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("may not submit to queue b"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = shell("alice", "gold");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("no queue \"gold\""),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );

        let mut apps = Vec::new();
        for (user, queue) in [("alice", "a"), ("bob", "b")] {
            let o = shell(user, queue);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            apps.push(String::from_utf8_lossy(&o.stdout).trim().to_string());
        }
        wait_for("both queues running containers", Duration::from_secs(30), || async {
            let (q, _) = admin.queues().await.ok()?;
            (q.iter().all(|q| q.used_resources.vcores >= 2)).then_some(())
        })
        .await;
        // Shares over a window of churn (each container lives 0.3 s).
        let (mut a, mut b, mut n) = (0.0, 0.0, 0);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(6) {
            let (q, _) = admin.queues().await.unwrap();
            a += q.iter().find(|q| q.path == "a").unwrap().used;
            b += q.iter().find(|q| q.path == "b").unwrap().used;
            n += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let share_a = a / (a + b);
        eprintln!("queue a: {:.1}% of what was used over {n} samples", share_a * 100.0);
        assert!((share_a - 0.7).abs() <= 0.10, "queue a had {:.1}%, not 70 +- 10", share_a * 100.0);
        let o = tarn("admin", &["admin", "queues"], &rms);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("70.0%") && out.contains("30.0%") && out.contains("bob"), "{out}");
        for (id, user) in apps.iter().zip(["alice", "bob"]) {
            let o = tarn(user, &["app", "kill", id], &rms);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        for id in &apps {
            let r = admin.application(id).await.unwrap();
            assert_eq!(r.state, AppState::Killed);
        }
    })
    .await;
    assert!(r.is_ok(), "timed out");
    cl.shutdown().await;
}

/// Queue a (70%) holds the whole idle cluster; bob's work arrives in queue b (30%): the
/// newest of a's containers are taken back after a notice to a's master, until b has its
/// guarantee (within one container), within 30 s; a keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_brings_a_starved_queue_up_to_its_guarantee_within_30_s() {
    let cl = Cluster::builder()
        .datanodes(1)
        .workers(3, 0)
        .tune_workers(|_, w| w.vcores = 4)
        .tune_rm(|r| r.preemption_wait_ms = 1_000)
        .start()
        .await;
    let rms = cl.rm_addrs.join(",");
    let admin = cl.rm_client();
    let r = tokio::time::timeout(Duration::from_secs(120), async {
        admin
            .refresh_queues("[queue.a]\ncapacity = 70\nuser_limit_factor = 10\n[queue.b]\ncapacity = 30\n")
            .await
            .unwrap();
        let shell = |user: &str, queue: &str, n: &str| {
            let args =
                ["app", "run-shell", "--detach", "--queue", queue, "-n", n, "--memory-mib", "32", "--", "sleep", "600"];
            let o = tarn(user, &args, &rms);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        let used = |q: &[tarn_client::rm::QueueReport], name: &str| {
            q.iter().find(|q| q.path == name).map(|q| q.used_resources.vcores).unwrap_or(0)
        };
        let a = shell("alice", "a", "40");
        wait_for("queue a to take the idle cluster", Duration::from_secs(30), || async {
            let (q, _) = admin.queues().await.ok()?;
            (used(&q, "a") == 12).then_some(())
        })
        .await;
        let b = shell("bob", "b", "10");
        let start = Instant::now();
        let q = wait_for("queue b at its guarantee", Duration::from_secs(30), || async {
            let (q, _) = admin.queues().await.ok()?;
            (used(&q, "b") >= 3).then_some(q)
        })
        .await;
        eprintln!("preemption: queue b had its guarantee {:?} after it asked", start.elapsed());
        assert!(used(&q, "a") >= 9, "queue a keeps its guarantee: {q:?}");
        // The master of a was told, and ran the preempted containers' work again.
        let r = admin.application(&a).await.unwrap();
        let am = &r.attempts[0];
        let worker: usize = am.worker_id.trim_start_matches('w').parse().unwrap();
        let log = std::fs::read_to_string(cl.container_dir(worker, &a, &am.container_id).join("stdout")).unwrap();
        assert!(log.contains("will be preempted") && log.contains("was preempted; running it again"), "{log}");
        for (id, user) in [(&a, "alice"), (&b, "bob")] {
            let o = tarn(user, &["app", "kill", id], &rms);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    })
    .await;
    assert!(r.is_ok(), "timed out");
    cl.shutdown().await;
}
