//! A cluster in the seed's shape on real hosts (containers on a private docker network:
//! three masters, three core nodes, two task nodes, a gateway; mutual TLS and encryption at
//! rest on): applications run across core and task nodes; SIGKILL of the namenode leader's
//! master and a core node cut off the network lose nothing that was acknowledged, and
//! applications still run; then `tarn demo` runs against it from a client host on its
//! network. And the seed's script through Spark Connect completes, with the fault-free
//! result, through SIGKILL of a core node and the active resource manager's master. Needs docker (fails, never skips, without) and root (the client host's
//! `/etc/hosts` is its own mount namespace's).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tarn_tests::compose::ComposeCluster;
use tarn_tests::{noise, wait_for};
use tokio::io::AsyncBufReadExt;

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

        // The seed's use case from a client host on the network.
        let t = Instant::now();
        demo(&c, "m2", 4).await;
        eprintln!("compose cluster: tarn demo from a client host in {:.1?}", t.elapsed());
        w.files.len()
    })
    .await;
    let files = r.unwrap_or_else(|_| panic!("the compose cluster test did not finish within 420 s"));
    eprintln!("compose cluster: {files} files verified; started in {started:.1?}, whole test {:.1?}", t0.elapsed());
}

/// What s3://my-bucket/ holds, as JSON: each object's md5 (but the seed script's output),
/// and the seed script's result as rows (a digest of them sorted, and how many). With
/// `--delete-output`, the output is deleted after (the script is run again).
const PY_SNAPSHOT: &str = r#"
import hashlib, io, json, sys
import boto3
import pyarrow.parquet as pq

s3 = boto3.client("s3")
keys = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="my-bucket"):
    keys += [o["Key"] for o in page.get("Contents", [])]
objects, rows = {}, []
for k in sorted(keys):
    body = s3.get_object(Bucket="my-bucket", Key=k)["Body"].read()
    if k.startswith("processed-data/"):
        if k.endswith(".parquet"):
            rows += [tuple(r.values()) for r in pq.read_table(io.BytesIO(body)).to_pylist()]
    else:
        objects[k] = hashlib.md5(body).hexdigest()
rows.sort(key=repr)
print(json.dumps({"objects": objects, "rows": len(rows), "result": hashlib.sha256(repr(rows).encode()).hexdigest()}))
if "--delete-output" in sys.argv:
    for k in keys:
        if k.startswith("processed-data/"):
            s3.delete_object(Bucket="my-bucket", Key=k)
"#;

/// The seed's script, saying when its job (the write) starts and ends.
const PY_SEED: &str = r#"
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("CustomerAnalytics").getOrCreate()
df = spark.read.parquet("s3://my-bucket/customer-data/")
results = df.groupBy("customer_id").agg({"purchase_amount": "sum"}).orderBy("sum(purchase_amount)", ascending=False)
print("writing", flush=True)
results.write.parquet("s3://my-bucket/processed-data/")
print("written", flush=True)
"#;

/// `tarn demo --size-mb SIZE` from a client host on the network, as a user runs it against
/// a cluster: the gateway's S3 endpoint and `master`'s Spark Connect (data through S3, the
/// seed's script and the analyses through Spark Connect, the SQL job, results compared).
async fn demo(c: &ComposeCluster, master: &str, size_mb: u32) {
    let data = tempfile::tempdir().unwrap();
    let mut demo = c.on_network(master, std::path::Path::new("/bin/sh")).await;
    let script = "exec \"$0\" demo --size-mb \"$2\" --s3-endpoint https://gw:9000 --spark-remote \"$SPARK_REMOTE\" --data-dir \"$1\"";
    demo.args(["-c", script]).arg(tarn_tests::tarn_bin()).arg(data.path()).arg(size_mb.to_string()).kill_on_drop(true);
    let o = tokio::time::timeout(Duration::from_secs(180), demo.output()).await.expect("the demo ends").unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "tarn demo against the compose cluster:\n{out}");
    assert!(out.contains("using the cluster of"), "it used the cluster, not an appliance of its own:\n{out}");
    assert!(out.contains("Top customers"), "{out}");
}

/// Runs a Python program from a client host on the network (Spark Connect on `master`).
/// From a file: PySpark run by `python -c` looks for a local Spark instead.
async fn python(c: &ComposeCluster, master: &str, program: &str, args: &[&str]) -> tokio::process::Child {
    let file = c.io_dir().join(format!("program-{:016x}.py", crc32c::crc32c(program.as_bytes())));
    std::fs::write(&file, program).expect("write the program");
    let mut cmd = c.on_network(master, &tarn_tests::venv_bin("python")).await;
    cmd.arg(&file)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn().expect("python")
}

async fn snapshot(c: &ComposeCluster, master: &str, args: &[&str]) -> serde_json::Value {
    let o = python(c, master, PY_SNAPSHOT, args).await.wait_with_output().await.unwrap();
    assert!(o.status.success(), "snapshot: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("snapshot JSON")
}

/// The issue's acceptance on the multi-host cluster: the demo's data written through S3
/// and the seed's script run through Spark Connect on a master that stays up; then, while
/// it runs again, SIGKILL of a core node and of the active resource manager's master.
/// The job completes with the fault-free result, every object written before reads back,
/// fsck shows the lost replicas as under-replicated, and once the core node is back
/// replication is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_script_completes_through_the_loss_of_a_core_node_and_the_active_resource_manager() {
    let c = ComposeCluster::start().await;
    let r = tokio::time::timeout(Duration::from_secs(480), async {
        let active = wait_for("an active resource manager", Duration::from_secs(60), || c.active_rm_master()).await;
        let stay = ["m1", "m2", "m3"].into_iter().find(|m| *m != active).unwrap();
        // Fault-free: the demo's data and everything it runs (the seed's script among them).
        demo(&c, stay, 16).await;
        let before = snapshot(&c, stay, &["--delete-output"]).await;
        assert!(before["rows"].as_u64().unwrap() > 100, "{before}");

        // Again, losing a core node (not the one the session's master runs on) and the
        // active resource manager's master once its job has started.
        let apps = c.client_ok(&["app", "list"]).await.text();
        let session = apps.lines().find(|l| l.contains("RUNNING")).and_then(|l| l.split_whitespace().next());
        let session = session.unwrap_or_else(|| panic!("the Spark Connect session application runs: {apps}"));
        let status = c.client_ok(&["app", "status", session]).await.text();
        let am_worker = status.lines().rfind(|l| l.contains("attempt")).and_then(|l| l.split(" on ").nth(1));
        let am_worker = am_worker.and_then(|w| w.split(':').next()).unwrap_or_default().trim().to_string();
        let core = ["c1", "c2", "c3"].into_iter().zip(["w1", "w2", "w3"]).find(|(_, w)| *w != am_worker).unwrap().0;
        let mut seed = python(&c, stay, PY_SEED, &[]).await;
        let mut lines = tokio::io::BufReader::new(seed.stdout.take().unwrap()).lines();
        let first = lines.next_line().await.unwrap();
        if first.as_deref() != Some("writing") {
            let o = seed.wait_with_output().await.unwrap();
            panic!("the seed's script did not start its job: {first:?}\n{}", String::from_utf8_lossy(&o.stderr));
        }
        let t = Instant::now();
        c.kill(core).await;
        c.kill(&active).await;
        eprintln!("killed {core} and {active} (the active resource manager) {:.1?} into the job", t.elapsed());
        let next = tokio::time::timeout(Duration::from_millis(1), lines.next_line()).await;
        assert!(next.is_err(), "the job ended before the kills landed: {next:?}");
        let done = tokio::time::timeout(Duration::from_secs(240), seed.wait_with_output()).await.expect("the job ends");
        let done = done.unwrap();
        let rest = lines.next_line().await.unwrap();
        assert!(
            done.status.success() && rest.as_deref() == Some("written"),
            "the seed's script after the kills: {rest:?}\n{}",
            String::from_utf8_lossy(&done.stderr)
        );
        eprintln!("the job completed {:.1?} after the kills", t.elapsed());
        let after = snapshot(&c, stay, &[]).await;
        assert_eq!(after["result"], before["result"], "the result differs from the fault-free run");
        assert_eq!(after["objects"], before["objects"], "objects written before the kills read back the same");

        // The lost core node's replicas: under-replicated (two datanodes left cannot make a
        // third copy) until it is back; then whole again.
        let fsck = wait_for("fsck to see the lost replicas", Duration::from_secs(90), || async {
            let text = c.client(&["admin", "fsck", "/my-bucket"]).await.text();
            text.contains("Status: UNDER-REPLICATED").then_some(text)
        })
        .await;
        assert!(fsck.contains("missing blocks: 0"), "{fsck}");
        c.start_service(core).await;
        c.start_service(&active).await;
        wait_for("replication whole again", Duration::from_secs(120), || async {
            let text = c.client(&["admin", "fsck", "/my-bucket"]).await.text();
            (text.contains("Status: HEALTHY") && text.contains("under-replicated blocks (and small files): 0"))
                .then_some(())
        })
        .await;
    })
    .await;
    r.unwrap_or_else(|_| panic!("the seed script test did not finish within 480 s"));
}
