//! A cluster in the seed's shape on real hosts (containers on a private docker network:
//! three masters, three core nodes, two task nodes, a gateway; mutual TLS and encryption at
//! rest on): applications run across core and task nodes; SIGKILL of the namenode leader's
//! master and a core node cut off the network lose nothing that was acknowledged, and
//! applications still run; then `tarn demo` runs against it from a client host on its
//! network. Needs docker (fails, never skips, without) and root (the client host's
//! `/etc/hosts` is its own mount namespace's).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tarn_tests::compose::ComposeCluster;
use tarn_tests::{noise, wait_for};

/// Files of a few hundred KB: blocks on datanodes, not small files kept by the namenodes.
fn file_len(n: u64) -> usize {
    200_000 + (n as usize * 37_111) % 300_000
}

/// Files written and acknowledged: their path in the cluster and their bytes.
struct Written {
    files: BTreeMap<String, Vec<u8>>,
    next: u64,
}

impl Written {
    /// Lays out the next file in the client's `/io`; returns its local and cluster paths.
    fn prepare(&mut self, c: &ComposeCluster) -> (String, String, Vec<u8>) {
        let n = self.next;
        self.next += 1;
        let data = noise(file_len(n), 0xC0DE + n);
        let name = format!("f{n:03}");
        std::fs::write(c.io_dir().join(&name), &data).expect("write the local file");
        (format!("/io/{name}"), format!("/compose/{name}"), data)
    }

    /// One `tarn fs put` that must succeed at once.
    async fn put(&mut self, c: &ComposeCluster, phase: &str) {
        let (local, path, data) = self.prepare(c);
        let t = Instant::now();
        let o = c.client(&["fs", "put", &local, &path]).await;
        assert!(o.ok(), "{phase}: put {path} failed ({:?}) after {:.1?}:\n{}", o.code, t.elapsed(), o.stderr);
        self.files.insert(path, data);
    }

    /// `tarn fs put -f` repeated until it succeeds within `timeout` (through an election).
    async fn put_retrying(&mut self, c: &ComposeCluster, phase: &str, timeout: Duration) {
        let (local, path, data) = self.prepare(c);
        let mut tries = 0;
        wait_for(&format!("{phase}: put {path}"), timeout, || {
            tries += 1;
            let (local, path) = (local.clone(), path.clone());
            async move {
                let o = c.client(&["fs", "put", "-f", &local, &path]).await;
                if !o.ok() {
                    eprintln!("{phase}: put {path} failed ({:?}), trying again: {}", o.code, o.stderr.trim());
                }
                o.ok().then_some(())
            }
        })
        .await;
        eprintln!("{phase}: {path} acknowledged after {tries} tries");
        self.files.insert(path, data);
    }
}

/// Every acknowledged file reads back byte for byte.
async fn verify(c: &ComposeCluster, w: &Written, when: &str) {
    for (path, data) in &w.files {
        let o = c.client_ok(&["fs", "cat", path]).await;
        assert!(
            o.stdout == *data,
            "{when}: {path} reads back {} bytes (crc32c {:08x}), {} were written (crc32c {:08x})",
            o.stdout.len(),
            crc32c::crc32c(&o.stdout),
            data.len(),
            crc32c::crc32c(data)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_and_datanode_partition_lose_nothing_acknowledged() {
    let t0 = Instant::now();
    let c = ComposeCluster::start().await;
    let started = t0.elapsed();
    // Inside the bound, not around start: the cluster is dropped (torn down) either way.
    let r = tokio::time::timeout(Duration::from_secs(420), async {
        let mut w = Written { files: BTreeMap::new(), next: 0 };
        // Compute on the same hosts' network: five workers register (w1..w3 on the core
        // nodes, w4 and w5 on the task nodes); a shell application's master (on a core
        // worker) runs `tarn fs ls /` in six containers across them, each reaching the
        // namenodes on other hosts with its own credential; the workers keep every
        // container's output in the file system.
        wait_for("the workers registered", Duration::from_secs(60), || async {
            c.client(&["workers"]).await.text().contains("workers: 5 running, 0 lost").then_some(())
        })
        .await;
        // Every master serves Spark Connect beside its namenode and resource manager.
        for m in ["m1", "m2", "m3"] {
            let logs = c.logs(m, 1_000_000).await;
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            assert!(logs.contains("Spark Connect endpoint serving on"), "{m} serves Spark Connect:\n{}", tail.join("\n"));
        }
        c.client_ok(&["fs", "mkdir", "-p", "/compose"]).await;
        let o =
            c.client_ok(&["app", "run-shell", "-n", "6", "--memory-mib", "64", "--", "tarn", "fs", "ls", "/"]).await;
        let text = o.text();
        assert!(text.contains("FINISHED: 6 of 6 containers succeeded"), "{text}");
        let app = text.lines().next().unwrap_or_default().to_string();
        // Each worker keeps the logs once it hears the application ended (its heartbeat),
        // retrying 1, 2, 4, 8 s apart: on a loaded 2-core host that can take a while.
        let deadline = Instant::now() + Duration::from_secs(90);
        let logs = loop {
            let text = c.client(&["app", "logs", &app]).await.text();
            if text.matches("/stdout <==").count() == 7 {
                break text;
            }
            if Instant::now() > deadline {
                let status = c.client(&["app", "status", &app]).await.text();
                panic!("the shell application's logs were not all kept within 90 s; `tarn app logs` said:\n{text}\nstatus: {status}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(logs.matches("/compose").count(), 6, "each container listed / as its user:\n{logs}");
        assert!(logs.contains(" on w4") || logs.contains(" on w5"), "containers ran on a task node too:\n{logs}");
        let status = c.client_ok(&["app", "status", &app]).await.text();
        assert!(
            [" on w1:", " on w2:", " on w3:"].iter().any(|w| status.contains(w)),
            "the master runs on a core worker: {status}"
        );
        for _ in 0..4 {
            w.put(&c, "healthy").await;
        }

        // SIGKILL the leader's host (its resource manager and Spark Connect endpoint go
        // with it): the group elects another; writes go on once it has.
        let before = c.status().await.expect("a leader before the kill");
        let old = before.leader;
        let victim = format!("m{old}");
        c.kill(&victim).await;
        let t = Instant::now();
        for _ in 0..4 {
            w.put_retrying(&c, "leader killed", Duration::from_secs(60)).await;
        }
        let after = c.status().await.expect("a leader after the kill");
        assert_ne!(after.leader, old, "the killed namenode {old} still leads");
        eprintln!("leader {old} killed: namenode {} leads; 4 writes in {:.1?}", after.leader, t.elapsed());
        // Compute goes on without that master (its resource manager may have been the
        // active one: a standby takes over).
        let t = Instant::now();
        // (A submission during the takeover is refused: the client says so, and tries again.)
        let shell = ["app", "run-shell", "-n", "2", "--memory-mib", "64", "--", "tarn", "fs", "ls", "/compose"];
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let o = c.client(&shell).await;
            if o.text().contains("FINISHED: 2 of 2 containers succeeded") {
                break;
            }
            if Instant::now() > deadline {
                let mut rms = Vec::new();
                for m in ["m1", "m2", "m3"].into_iter().filter(|m| *m != victim) {
                    rms.push(c.logs(m, 30).await);
                }
                panic!(
                    "no shell application ran within 120 s of losing master {old}: {:?}\n{}\n{}\n{}",
                    o.code,
                    o.text(),
                    o.stderr,
                    rms.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("a shell application ran without master {old} in {:.1?}", t.elapsed());

        // Cut a datanode off: writes carry on with the other two, at once (no retry), both
        // before and after the namenode has declared it dead (30 s of silence).
        let cut = "c1";
        c.disconnect(cut).await;
        let t = Instant::now();
        for _ in 0..4 {
            w.put(&c, "datanode cut off").await;
        }
        eprintln!("{cut} cut off: 4 writes in {:.1?}", t.elapsed());
        verify(&c, &w, "while a datanode is cut off").await;
        c.connect(cut).await;
        c.start_service(&victim).await;

        // Back to whole: three live datanodes, the restarted namenode caught up, every file
        // fully replicated (blocks written without c1 get their third replica).
        c.wait_ready(Duration::from_secs(90)).await;
        // Asked again until a namenode answers as leader (the restarted one may answer
        // first, before it knows who leads).
        let target = wait_for("a leader's log index", Duration::from_secs(30), || c.status()).await.last_log;
        wait_for(&format!("namenode {old} to catch up to log index {target}"), Duration::from_secs(60), || async {
            let s = c.status().await?;
            s.members.iter().any(|&(id, matched)| id == old && matched >= target).then_some(())
        })
        .await;
        let fsck =
            wait_for("fsck /compose to report every block fully replicated", Duration::from_secs(120), || async {
                let o = c.client(&["admin", "fsck", "/compose"]).await;
                let text = o.text();
                (o.ok()
                    && text.contains("Status: HEALTHY")
                    && text.contains(
                        "under-replicated blocks (and small files): 0, missing blocks: 0, corrupt replicas: 0",
                    ))
                .then_some(text)
            })
            .await;
        assert!(fsck.contains(&format!("files: {} (0 kept in the namespace)", w.files.len())), "fsck:\n{fsck}");
        verify(&c, &w, "after the faults").await;

        // The seed's use case from a client host on the network, as a user runs it against
        // a cluster: `tarn demo` with the S3 endpoint and Spark Connect of a master (data
        // through the gateway, the seed's script and the analyses through Spark Connect,
        // the SQL job on the resource manager, their results compared).
        let t = Instant::now();
        let data = tempfile::tempdir().unwrap();
        let mut demo = c.on_network("m2", std::path::Path::new("/bin/sh")).await;
        demo.args(["-c", "exec \"$0\" demo --size-mb 4 --s3-endpoint https://gw:9000 --spark-remote \"$SPARK_REMOTE\" --data-dir \"$1\""])
            .arg(tarn_tests::tarn_bin())
            .arg(data.path())
            .kill_on_drop(true);
        let o = tokio::time::timeout(Duration::from_secs(150), demo.output()).await.expect("the demo ends").unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "tarn demo against the compose cluster:\n{out}");
        assert!(out.contains("using the cluster of"), "it used the cluster, not an appliance of its own:\n{out}");
        assert!(out.contains("Top customers"), "{out}");
        eprintln!("compose cluster: tarn demo from a client host in {:.1?}", t.elapsed());
        w.files.len()
    })
    .await;
    let files = r.unwrap_or_else(|_| panic!("the compose cluster test did not finish within 420 s"));
    eprintln!("compose cluster: {files} files verified; started in {started:.1?}, whole test {:.1?}", t0.elapsed());
}
