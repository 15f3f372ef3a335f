//! The storage roles on real hosts (containers on a private docker network, mutual TLS and
//! encryption at rest on): SIGKILL of the namenode leader's host and a datanode cut off the
//! network lose nothing that was acknowledged. Needs docker (fails, never skips, without).

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
    let r = tokio::time::timeout(Duration::from_secs(240), async {
        let mut w = Written { files: BTreeMap::new(), next: 0 };
        // Compute on the same hosts' network: three workers register (two core, one task);
        // a shell application's master (on a core worker) runs `tarn fs ls /` in six
        // containers across the three, each reaching the namenodes on other hosts with its
        // own credential; the workers keep every container's output in the file system.
        wait_for("the workers registered", Duration::from_secs(60), || async {
            c.client(&["workers"]).await.text().contains("workers: 3 running, 0 lost").then_some(())
        })
        .await;
        c.client_ok(&["fs", "mkdir", "-p", "/compose"]).await;
        let o =
            c.client_ok(&["app", "run-shell", "-n", "6", "--memory-mib", "64", "--", "tarn", "fs", "ls", "/"]).await;
        let text = o.text();
        assert!(text.contains("FINISHED: 6 of 6 containers succeeded"), "{text}");
        let app = text.lines().next().unwrap_or_default().to_string();
        let logs = wait_for("the shell application's logs", Duration::from_secs(30), || async {
            let text = c.client(&["app", "logs", &app]).await.text();
            (text.matches("/stdout <==").count() == 7).then_some(text)
        })
        .await;
        assert_eq!(logs.matches("/compose").count(), 6, "each container listed / as its user:\n{logs}");
        assert!(logs.contains(" on w3"), "containers ran on the task node too:\n{logs}");
        let status = c.client_ok(&["app", "status", &app]).await.text();
        assert!(status.contains(" on w1:") || status.contains(" on w2:"), "the master runs on a core worker: {status}");
        for _ in 0..4 {
            w.put(&c, "healthy").await;
        }

        // SIGKILL the leader's host: the group elects another; writes go on once it has.
        let before = c.status().await.expect("a leader before the kill");
        let old = before.leader;
        let victim = format!("nn{old}");
        c.kill(&victim).await;
        let t = Instant::now();
        for _ in 0..4 {
            w.put_retrying(&c, "leader killed", Duration::from_secs(60)).await;
        }
        let after = c.status().await.expect("a leader after the kill");
        assert_ne!(after.leader, old, "the killed namenode {old} still leads");
        eprintln!("leader {old} killed: namenode {} leads; 4 writes in {:.1?}", after.leader, t.elapsed());

        // Cut a datanode off: writes carry on with the other two, at once (no retry), both
        // before and after the namenode has declared it dead (30 s of silence).
        let cut = "dn1";
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
        // fully replicated (blocks written without dn1 get their third replica).
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
        w.files.len()
    })
    .await;
    let files = r.unwrap_or_else(|_| panic!("the compose cluster test did not finish within 240 s"));
    eprintln!("compose cluster: {files} files verified; started in {started:.1?}, whole test {:.1?}", t0.elapsed());
}
