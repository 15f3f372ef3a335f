//! Distributed SQL jobs (`tarn job`): DataFusion SQL run by Ballista in containers on real
//! workers, over files in the cluster, as the submitting user; their results match
//! single-process DataFusion over the same files; bad SQL is refused at submit.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tarn_security::Role;
use tarn_tests::jobs::{bucket, put_as, run_job, tpch_data, tpch_query, TPCH_TABLES};
use tarn_tests::Cluster;

/// Purchases (customer_id, purchase_amount) in `files` parquet files of `rows` rows each.
fn purchases(files: usize, rows: usize) -> Vec<Vec<u8>> {
    tarn_tests::jobs::purchases(files, rows, 500, 0x9e37_79b9_7f4a_7c15)
}

/// `tarn job ARGS` as `user` (within 120 s).
async fn job(cl: &Cluster, user: &str, args: &[&str]) -> (i32, String, String) {
    run_job(cl, user, args, Duration::from_secs(120)).await
}

/// A self-join of lineitem on the part key: two scan stages, then a join stage reading
/// their map output for seconds, then the aggregation.
const SELF_JOIN: &str = "SELECT l1.l_suppkey, count(*) AS pairs FROM lineitem l1 JOIN lineitem l2 \
                         ON l1.l_partkey = l2.l_partkey GROUP BY l1.l_suppkey";
const LINEITEM_TABLE: &str = "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION 's3://tpch/lineitem/'";

/// TPC-H `lineitem` at scale 0.1 in `data` and in alice's bucket `tpch`; a DataFusion
/// session over the local file.
async fn lineitem(cl: &Cluster, data: &std::path::Path) -> SessionContext {
    tpch_data(data, "0.1", Some("lineitem"));
    let local = data.join("lineitem.parquet");
    bucket(cl, "tpch", "alice").await;
    put_as(cl, "alice", "/tpch/lineitem/lineitem.parquet", &std::fs::read(&local).unwrap()).await;
    let ctx = SessionContext::new();
    ctx.register_parquet("lineitem", local.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    ctx
}

/// Submits `sql` as alice without waiting; the application's id.
async fn submit(cl: &Cluster, executors: &str, sql: &str) -> String {
    let args = ["submit", "--executors", executors, "--memory-mib", "768", "--master-memory-mib", "512", "--sql", sql];
    let (code, out, err) = job(cl, "alice", &args).await;
    assert_eq!(code, 0, "{out}\n{err}");
    out.trim().to_string()
}

/// Waits until alice's job `app` records progress that `pred` accepts.
async fn wait_progress(cl: &Cluster, app: &str, what: &str, pred: impl Fn(&tarn_jobs::master::JobProgress) -> bool) {
    let nn = cl.client();
    let dir = tarn_jobs::job_dir("alice", app);
    tarn_tests::wait_for(what, Duration::from_secs(90), || async {
        let st = nn.get_file_info(&dir, true).await.ok()??;
        let p: tarn_jobs::master::JobProgress =
            serde_json::from_slice(st.xattrs.get(tarn_jobs::master::PROGRESS_XATTR)?).ok()?;
        pred(&p).then_some(())
    })
    .await;
}

/// Waits for application `app`'s end (within 180 s).
async fn wait_end(rm: &tarn_client::rm::RmClient, app: &str) -> tarn_client::rm::AppReport {
    tarn_tests::wait_for("the job's end", Duration::from_secs(180), || async {
        let r = rm.application(app).await.ok()?;
        r.state.is_final().then_some(r)
    })
    .await
}

const SEED_QUERY: &str = "SELECT customer_id, sum(purchase_amount) AS total FROM tx \
                          GROUP BY customer_id ORDER BY total DESC, customer_id LIMIT 25";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sql_job_runs_on_three_workers_and_returns_what_datafusion_does() {
    let cl = Cluster::builder().datanodes(3).workers(3, 0).start().await;
    bucket(&cl, "shop", "alice").await;
    let files = purchases(6, 20_000);
    let local = tempfile::tempdir().unwrap();
    for (i, f) in files.iter().enumerate() {
        put_as(&cl, "alice", &format!("/shop/tx/part-{i}.parquet"), f).await;
        std::fs::write(local.path().join(format!("part-{i}.parquet")), f).unwrap();
    }
    // What single-process DataFusion says over the same files.
    let ctx = SessionContext::new();
    ctx.register_parquet("tx", local.path().to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    let want = ctx.sql(SEED_QUERY).await.unwrap().collect().await.unwrap();
    let want = datafusion::arrow::util::pretty::pretty_format_batches(&want).unwrap().to_string();

    let sql = format!("CREATE EXTERNAL TABLE tx STORED AS PARQUET LOCATION 's3://shop/tx/'; {SEED_QUERY}");
    let (code, out, err) = job(
        &cl,
        "alice",
        &["submit", "--wait", "--executors", "3", "--memory-mib", "512", "--master-memory-mib", "512", "--sql", &sql],
    )
    .await;
    assert_eq!(code, 0, "the job failed:\n{out}\n{err}");
    let app = out.lines().next().unwrap().to_string();
    assert!(out.contains(&want), "the job's result differs from DataFusion's:\n{out}\nwant:\n{want}");
    // The result stays: `tarn job result` prints it again.
    let (code, again, err) = job(&cl, "alice", &["result", &app]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(again.trim(), want.trim());
    // The executors ran in containers of their own: the master plus three.
    let r = cl.rm_client().application(&app).await.unwrap();
    assert_eq!(r.user, "alice");
    // Its record is alice's alone.
    let dir = tarn_jobs::job_dir("alice", &app);
    let user_dir = cl.client().get_file_info("/.tarn/jobs/alice", false).await.unwrap().unwrap();
    assert_eq!((user_dir.owner.as_str(), user_dir.mode & 0o777), ("alice", 0o700));
    assert!(cl.client().get_file_info(&format!("{dir}/result.arrow"), false).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sql_a_missing_path_and_an_unknown_queue_are_refused_at_submit() {
    let cl = Cluster::builder().workers(1, 0).start().await;
    bucket(&cl, "shop", "alice").await;
    let (code, _, err) = job(&cl, "alice", &["submit", "--sql", "SELEC 1"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("does not parse"), "{err}");
    let (code, _, err) = job(&cl, "alice", &["submit", "--sql", "SELECT count(*) FROM no_such_table"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("no_such_table"), "{err}");
    let missing = "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://shop/missing/x.parquet'";
    let (code, _, err) = job(&cl, "alice", &["submit", "--sql", missing]).await;
    assert_ne!(code, 0);
    assert!(err.contains("missing/x.parquet"), "the error names the path: {err}");
    let (code, _, err) = job(&cl, "alice", &["submit", "--sql", "SELECT * FROM 's3://shop/none/'"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("s3://shop/none/"), "the error names the path: {err}");
    let (code, _, err) = job(&cl, "alice", &["submit", "--queue", "nowhere", "--sql", "SELECT 1"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("nowhere"), "{err}");
    // Nothing was submitted.
    assert!(cl.rm_client().applications(true).await.unwrap().is_empty());
}

/// The 22 TPC-H queries at scale 0.1, as one distributed job on three workers (each query
/// written with `COPY ... TO` a parquet file of the cluster), return the rows that
/// single-process DataFusion returns over the same files, in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_22_tpch_queries_return_what_datafusion_does() {
    let data = tempfile::tempdir().unwrap();
    tpch_data(data.path(), "0.1", None);

    let cl = Cluster::builder().datanodes(3).workers(3, 0).start().await;
    bucket(&cl, "tpch", "alice").await;
    bucket(&cl, "out", "alice").await;
    let ctx = SessionContext::new();
    let mut sql = String::new();
    for t in TPCH_TABLES {
        let local = data.path().join(format!("{t}.parquet"));
        put_as(&cl, "alice", &format!("/tpch/{t}/{t}.parquet"), &std::fs::read(&local).unwrap()).await;
        ctx.register_parquet(t, local.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
        sql.push_str(&format!("CREATE EXTERNAL TABLE {t} STORED AS PARQUET LOCATION 's3://tpch/{t}/';\n"));
    }
    for n in 1..=22 {
        for stmt in tpch_query(n) {
            if stmt.to_lowercase().starts_with("select") {
                sql.push_str(&format!("COPY ({stmt}) TO 's3://out/q{n}.parquet' STORED AS PARQUET;\n"));
            } else {
                sql.push_str(&format!("{stmt};\n"));
            }
        }
    }
    let (code, out, err) = job(
        &cl,
        "alice",
        &["submit", "--wait", "--executors", "3", "--memory-mib", "768", "--master-memory-mib", "768", "--sql", &sql],
    )
    .await;
    assert_eq!(code, 0, "the job failed:\n{out}\n{err}");

    let fmt = |b: &[RecordBatch]| datafusion::arrow::util::pretty::pretty_format_batches(b).unwrap().to_string();
    let got_dir = tempfile::tempdir().unwrap();
    let nn = Arc::new(cl.client());
    for n in 1..=22 {
        let mut want = Vec::new();
        for stmt in tpch_query(n) {
            let batches = ctx.sql(&stmt).await.unwrap().collect().await.unwrap();
            if stmt.to_lowercase().starts_with("select") {
                want = batches;
            }
        }
        let file = got_dir.path().join(format!("q{n}.parquet"));
        std::fs::write(&file, read_all(&nn, &format!("/out/q{n}.parquet")).await).unwrap();
        let got = SessionContext::new()
            .read_parquet(file.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(fmt(&got), fmt(&want), "TPC-H query {n}: the job's rows differ from DataFusion's");
    }
}

/// The bytes of file `path` of the cluster.
async fn read_all(nn: &Arc<tarn_client::NamenodeClient>, path: &str) -> Vec<u8> {
    use object_store::ObjectStoreExt;
    let store = tarn_client::store::TarnStore::new(nn.clone());
    let loc = object_store::path::Path::parse(path.trim_start_matches('/')).unwrap();
    let got = store.get(&loc).await.unwrap_or_else(|e| panic!("{path}: {e}"));
    got.bytes().await.unwrap().to_vec()
}

/// The seed's pipeline as a job: purchases summed per customer, ordered by the total,
/// written as parquet to `s3://shop/processed-data/`; pyarrow reads it back through the
/// S3 gateway with the rows (and order) DataFusion computes. The output appears whole:
/// with `_SUCCESS`, nothing left in staging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_job_writes_parquet_that_pyarrow_reads_through_the_gateway() {
    let cl = Cluster::builder().datanodes(3).workers(3, 0).start().await;
    bucket(&cl, "shop", "alice").await;
    let local = tempfile::tempdir().unwrap();
    for (i, f) in purchases(4, 20_000).iter().enumerate() {
        put_as(&cl, "alice", &format!("/shop/customer-data/part-{i}.parquet"), f).await;
        std::fs::write(local.path().join(format!("part-{i}.parquet")), f).unwrap();
    }
    let query = "SELECT customer_id, sum(purchase_amount) AS total FROM tx GROUP BY customer_id \
                 ORDER BY total DESC, customer_id";
    let ctx = SessionContext::new();
    ctx.register_parquet("tx", local.path().to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    let want: Vec<String> = {
        let b = ctx.sql(query).await.unwrap().collect().await.unwrap();
        let mut rows = Vec::new();
        for batch in &b {
            let ids = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let totals = batch.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            rows.extend((0..batch.num_rows()).map(|i| format!("{},{}", ids.value(i), totals.value(i))));
        }
        rows
    };
    let sql = format!(
        "CREATE EXTERNAL TABLE tx STORED AS PARQUET LOCATION 's3://shop/customer-data/'; \
         COPY ({query}) TO 's3://shop/processed-data/' STORED AS PARQUET"
    );
    let (code, out, err) =
        job(&cl, "alice", &["submit", "--wait", "--executors", "2", "--memory-mib", "512", "--sql", &sql]).await;
    assert_eq!(code, 0, "the job failed:\n{out}\n{err}");
    let app = out.lines().next().unwrap().to_string();
    let nn = cl.client();
    let out_dir = nn.get_file_info("/shop/processed-data", true).await.unwrap().expect("the output is published");
    assert_eq!(out_dir.owner, "alice");
    assert_eq!(
        out_dir.xattrs.get(tarn_jobs::commit::OUTPUT_XATTR).map(|v| v.as_slice()),
        Some(format!("{app}/2").as_bytes())
    );
    assert!(nn.get_file_info("/shop/processed-data/_SUCCESS", false).await.unwrap().is_some());
    let staging = format!("{}/staging/a1", tarn_jobs::job_dir("alice", &app));
    assert!(nn.get_file_info(&staging, false).await.unwrap().is_none(), "staging is removed");
    let key = format!("{}/tls/job-key.pem", tarn_jobs::job_dir("alice", &app));
    assert_eq!(nn.get_file_info(&key, false).await.unwrap().unwrap().mode & 0o777, 0o600);

    // pyarrow, through the gateway.
    let dir = tempfile::tempdir().unwrap();
    let tls = tarn_tests::gateway_tls(dir.path());
    let key = tarn_gateway::AccessKey::generate();
    let cfg = tarn_gateway::GatewayConfig {
        listen: "127.0.0.1:0".into(),
        namenodes: cl.addrs.clone(),
        tls: Some(tls.clone()),
        access_keys: vec![key.clone()],
        domains: vec!["localhost".into()],
        ..Default::default()
    };
    let gw = tarn_gateway::start(cfg, tarn_tests::pki().transport(Role::Gateway, "gw")).await.unwrap();
    let endpoint = gw.endpoint();
    let (scheme, host) = endpoint.split_once("://").unwrap();
    let script = format!(
        "import pyarrow.fs as f, pyarrow.parquet as pq\n\
         fs = f.S3FileSystem(access_key='{}', secret_key='{}', region='us-east-1', scheme='{scheme}', \
         endpoint_override='{host}', tls_ca_file_path='{}')\n\
         files = sorted(i.path for i in fs.get_file_info(f.FileSelector('shop/processed-data')) if i.path.endswith('.parquet'))\n\
         for p in files:\n    t = pq.read_table(p, filesystem=fs)\n    \
         for a, b in zip(t.column('customer_id').to_pylist(), t.column('total').to_pylist()): print(f'{{a}},{{b}}')\n",
        key.access_key,
        key.secret_key,
        tls.cert.display()
    );
    let run =
        tokio::process::Command::new(tarn_tests::venv_bin("python")).args(["-c", &script]).kill_on_drop(true).output();
    let o = tokio::time::timeout(Duration::from_secs(60), run).await.expect("pyarrow within 60 s").unwrap();
    assert!(o.status.success(), "pyarrow: {}", String::from_utf8_lossy(&o.stderr));
    let got: Vec<String> = String::from_utf8_lossy(&o.stdout).lines().map(String::from).collect();
    assert_eq!(got.len(), want.len(), "rows read through S3");
    assert_eq!(got, want, "the files, in name order, hold the rows in the query's order");
    gw.stop().await;
}

/// A job that fails (here: its second statement) publishes nothing, and a COPY onto an
/// existing output is refused at submit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_leaves_nothing_at_its_output() {
    let cl = Cluster::builder().datanodes(1).workers(2, 0).start().await;
    bucket(&cl, "shop", "alice").await;
    put_as(&cl, "alice", "/shop/tx/part-0.parquet", &purchases(1, 1000)[0]).await;
    // The second COPY fails at run time (not at planning): no number in 'x<id>'.
    let sql = "CREATE EXTERNAL TABLE tx STORED AS PARQUET LOCATION 's3://shop/tx/'; \
               COPY (SELECT customer_id FROM tx) TO 's3://shop/out-a/' STORED AS PARQUET; \
               COPY (SELECT CAST(concat('x', customer_id) AS BIGINT) AS boom FROM tx) TO 's3://shop/out-b/' STORED AS PARQUET";
    let (code, out, err) =
        job(&cl, "alice", &["submit", "--wait", "--executors", "1", "--memory-mib", "512", "--sql", sql]).await;
    assert_ne!(code, 0, "the job should fail:\n{out}\n{err}");
    assert!(out.contains("FAILED") && out.to_lowercase().contains("cast"), "{out}");
    let nn = cl.client();
    for p in ["/shop/out-a", "/shop/out-b"] {
        assert!(nn.get_file_info(p, false).await.unwrap().is_none(), "{p} must not appear");
    }
    // A bucket itself is not an output.
    let sql = "CREATE EXTERNAL TABLE tx STORED AS PARQUET LOCATION 's3://shop/tx/'; \
               COPY (SELECT * FROM tx) TO 's3://shop/' STORED AS PARQUET";
    let (code, out, err) =
        job(&cl, "alice", &["submit", "--wait", "--executors", "1", "--memory-mib", "512", "--sql", sql]).await;
    assert_ne!(code, 0);
    assert!(format!("{out}{err}").contains("inside a bucket"), "{out}{err}");
    // An existing output is refused before anything runs.
    nn.mkdirs("/shop/taken/x").await.unwrap();
    let sql = "CREATE EXTERNAL TABLE tx STORED AS PARQUET LOCATION 's3://shop/tx/'; \
               COPY (SELECT * FROM tx) TO 's3://shop/taken/' STORED AS PARQUET";
    let (code, _, err) = job(&cl, "alice", &["submit", "--sql", sql]).await;
    assert_ne!(code, 0);
    assert!(err.contains("/shop/taken exists"), "{err}");
}

/// SIGKILL of a worker (a real process) whose executor holds map output that the running
/// stage still needs: the master hears of the lost container and tells the scheduler,
/// which runs the lost stages again; since Ballista's recovery can count rows twice, the
/// master runs such a statement again and the job returns the rows it would have returned
/// anyway. Its progress counts the loss, the stages and the statement run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_costs_its_map_output_not_the_job() {
    let data = tempfile::tempdir().unwrap();
    let mut cl = Cluster::builder().datanodes(3).workers(3, 0).worker_processes().start().await;
    let ctx = lineitem(&cl, data.path()).await;
    let query = format!("{SELF_JOIN} ORDER BY pairs DESC, l1.l_suppkey LIMIT 20");
    let want = datafusion::arrow::util::pretty::pretty_format_batches(
        &ctx.sql(&query).await.unwrap().collect().await.unwrap(),
    )
    .unwrap()
    .to_string();
    let app = submit(&cl, "3", &format!("{LINEITEM_TABLE}; {query}")).await;
    // Both scans done, the join running: their map output is on the executors.
    wait_progress(&cl, &app, "the scan stages done", |p| p.statement == 2 && p.stages_done >= 2).await;
    // A worker with one of the job's executors, not its master.
    let rm = cl.rm_client();
    let am_worker = rm.application(&app).await.unwrap().attempts[0].worker_id.clone();
    let victim = (1..=3)
        .find(|i| {
            let apps = cl.container_dir(*i, &app, "x");
            let apps = apps.parent().unwrap();
            format!("w{i}") != am_worker && std::fs::read_dir(apps).map(|d| d.count() > 0).unwrap_or(false)
        })
        .expect("a worker running an executor and not the master");
    cl.stop_worker(victim).await;

    let r = wait_end(&rm, &app).await;
    assert_eq!(r.state, tarn_client::rm::AppState::Finished, "{}", r.diagnostics);
    let (code, got, err) = job(&cl, "alice", &["result", &app]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(got.trim(), want.trim(), "the rows after the loss");
    let st = cl.client().get_file_info(&tarn_jobs::job_dir("alice", &app), true).await.unwrap().unwrap();
    let p: tarn_jobs::master::JobProgress =
        serde_json::from_slice(&st.xattrs[tarn_jobs::master::PROGRESS_XATTR]).expect("progress");
    assert!(p.executors_lost >= 1, "the lost executor is counted: {p:?}");
    assert!(p.stage_retries >= 1 && p.statement_reruns >= 1, "its work was done again: {p:?}");
}

/// A job runs as its user: alice's job cannot read bob's private files. `tarn job submit`
/// refuses it, naming the path; a master started without that check (submitted straight to
/// the resource manager) fails the job with the same reason, and reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_as_alice_cannot_read_bobs_private_input() {
    let cl = Cluster::builder().datanodes(1).workers(2, 0).start().await;
    bucket(&cl, "bobs", "bob").await;
    put_as(&cl, "bob", "/bobs/private/part-0.parquet", &purchases(1, 100)[0]).await;
    let bob = tarn_client::NamenodeClient::new(&cl.addrs, &tarn_tests::pki().transport(Role::User, "bob")).unwrap();
    bob.set_attributes("/bobs/private", tarn_client::SetAttributes { mode: Some(0o700), ..Default::default() })
        .await
        .unwrap();
    let sql = "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://bobs/private/'; SELECT count(*) FROM t";
    let (code, _, err) = job(&cl, "alice", &["submit", "--sql", sql]).await;
    assert_ne!(code, 0);
    assert!(err.contains("/bobs/private") && err.to_lowercase().contains("permission"), "{err}");

    // The same spec, straight to the resource manager as alice.
    let mut spec = tarn_jobs::JobSpec::new(sql);
    spec.executors = 1;
    spec.memory_mib = 512;
    let sub = tarn_client::rm::AppSubmission {
        name: "job: sneaky".into(),
        am_resources: tarn_client::rm::Resources::new(1, 512),
        am_spec: tarn_client::rm::ContainerSpec {
            command: vec!["tarn".into(), "job".into(), "master".into(), spec.to_arg()],
            ..Default::default()
        },
        max_attempts: 1,
        ..Default::default()
    };
    let rm = tarn_client::rm::RmClient::new(&cl.rm_addrs, &tarn_tests::pki().transport(Role::User, "alice")).unwrap();
    let app = rm.submit(&sub).await.unwrap();
    let r = tarn_tests::wait_for("the job's end", Duration::from_secs(60), || async {
        let r = rm.application(&app).await.ok()?;
        r.state.is_final().then_some(r)
    })
    .await;
    assert_eq!(r.state, tarn_client::rm::AppState::Failed, "{r:?}");
    assert!(r.diagnostics.contains("/bobs/private"), "{}", r.diagnostics);
}

/// SIGKILL of the worker running a job's master mid-job: the resource manager starts a
/// second attempt elsewhere, which runs the job from its spec; the output is published
/// once, whole, with the rows DataFusion computes (no duplicate or partial file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_master_is_killed_finishes_in_a_new_attempt_with_one_output() {
    let data = tempfile::tempdir().unwrap();
    let mut cl = Cluster::builder().datanodes(3).workers(3, 0).worker_processes().start().await;
    let ctx = lineitem(&cl, data.path()).await;
    let sorted = |b: &[RecordBatch]| {
        let mut rows: Vec<String> = datafusion::arrow::util::pretty::pretty_format_batches(b)
            .unwrap()
            .to_string()
            .lines()
            .filter(|l| l.starts_with("| ") && !l.contains("l_suppkey"))
            .map(String::from)
            .collect();
        rows.sort();
        rows
    };
    let want = sorted(&ctx.sql(SELF_JOIN).await.unwrap().collect().await.unwrap());
    let app =
        submit(&cl, "2", &format!("{LINEITEM_TABLE}; COPY ({SELF_JOIN}) TO 's3://tpch/pairs/' STORED AS PARQUET"))
            .await;
    wait_progress(&cl, &app, "the query running", |p| p.statement == 2 && p.stages_done >= 1).await;
    let rm = cl.rm_client();
    let first = rm.application(&app).await.unwrap().attempts[0].worker_id.clone();
    cl.stop_worker(first.trim_start_matches('w').parse().unwrap()).await;

    let r = wait_end(&rm, &app).await;
    assert_eq!(r.state, tarn_client::rm::AppState::Finished, "{}", r.diagnostics);
    assert_eq!(r.attempts.len(), 2, "a second attempt ran the job: {r:?}");
    let nn = Arc::new(cl.client());
    let files: Vec<String> =
        nn.list_dir_all("/tpch/pairs").await.unwrap().into_iter().map(|s| format!("/tpch/pairs/{}", s.path)).collect();
    assert!(files.iter().any(|f| f.ends_with("/_SUCCESS")), "{files:?}");
    let got_dir = tempfile::tempdir().unwrap();
    for f in files.iter().filter(|f| f.ends_with(".parquet")) {
        let name = f.rsplit('/').next().unwrap();
        std::fs::write(got_dir.path().join(name), read_all(&nn, f).await).unwrap();
    }
    let got = SessionContext::new()
        .read_parquet(got_dir.path().to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(sorted(&got), want, "one whole output: no file twice, none partial");
}

/// SIGKILL of the active resource manager mid-job: the standby takes over, the job's
/// master registers with it (its executors adopted with their workers), and the job
/// finishes with DataFusion's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_rides_out_a_failover_of_the_resource_manager() {
    let data = tempfile::tempdir().unwrap();
    let mut cl = Cluster::builder().datanodes(3).workers(3, 0).rm_processes(2).start().await;
    let ctx = lineitem(&cl, data.path()).await;
    let query = format!("{SELF_JOIN} ORDER BY pairs DESC, l1.l_suppkey LIMIT 10");
    let want = datafusion::arrow::util::pretty::pretty_format_batches(
        &ctx.sql(&query).await.unwrap().collect().await.unwrap(),
    )
    .unwrap()
    .to_string();
    let app = submit(&cl, "2", &format!("{LINEITEM_TABLE}; {query}")).await;
    wait_progress(&cl, &app, "the query running", |p| p.statement == 2 && p.stages_done >= 1).await;
    assert!(tarn_tests::rm_is_active(&cl.rm_addrs[0]).await, "the first resource manager is the active one");
    cl.kill_rm(1);
    let r = wait_end(&cl.rm_client(), &app).await;
    assert_eq!(r.state, tarn_client::rm::AppState::Finished, "{}", r.diagnostics);
    assert_eq!(r.attempts.len(), 1, "the same attempt finished: {r:?}");
    let (code, got, err) = job(&cl, "alice", &["result", &app]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(got.trim(), want.trim());
}

/// `tarn job kill` mid-job: the application ends KILLED, its containers stop (the
/// workers' capacity is free again), and nothing appears at its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_job_releases_its_containers_and_leaves_no_output() {
    let data = tempfile::tempdir().unwrap();
    let cl = Cluster::builder().datanodes(1).workers(2, 0).start().await;
    lineitem(&cl, data.path()).await;
    let app =
        submit(&cl, "2", &format!("{LINEITEM_TABLE}; COPY ({SELF_JOIN}) TO 's3://tpch/killed/' STORED AS PARQUET"))
            .await;
    wait_progress(&cl, &app, "the query running", |p| p.statement == 2 && p.executors >= 1).await;
    let (code, out, err) = job(&cl, "alice", &["kill", &app]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("killed"), "{out}");
    let rm = cl.rm_client();
    assert_eq!(rm.application(&app).await.unwrap().state, tarn_client::rm::AppState::Killed);
    tarn_tests::wait_for("every container stopped", Duration::from_secs(30), || async {
        let used: u32 = rm.workers().await.ok()?.iter().map(|w| w.used.vcores).sum();
        (used == 0).then_some(())
    })
    .await;
    assert!(cl.client().get_file_info("/tpch/killed", false).await.unwrap().is_none(), "no output");
    // Stopped before the process ends: a namenode's RocksDB threads still running at exit
    // once aborted the test binary ("pthread lock: Invalid argument").
    cl.shutdown().await;
}

/// alice's client of her running session `name`.
async fn session_client(cl: &Cluster, name: &str) -> tarn_jobs::session::SessionClient {
    let nn = Arc::new(
        tarn_client::NamenodeClient::new(&cl.addrs, &tarn_tests::pki().transport(Role::User, "alice")).unwrap(),
    );
    let rm = tarn_client::rm::RmClient::new(&cl.rm_addrs, &tarn_tests::pki().transport(Role::User, "alice")).unwrap();
    tarn_jobs::session::SessionClient::connect(&rm, nn, name).await.unwrap()
}

fn table(batches: &[RecordBatch]) -> String {
    datafusion::arrow::util::pretty::pretty_format_batches(batches).unwrap().to_string()
}

/// A session application keeps one executor warm, runs jobs sent by the CLI (SQL) and
/// by a programmatic client (a DataFusion logical plan) with DataFusion's answers, grows
/// to its most executors while tasks wait and shrinks back after its idle timeout, stages
/// and publishes COPY outputs like a job, answers bad SQL with the reason and goes on
/// serving, and ends cleanly when stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_runs_many_jobs_on_warm_executors_that_grow_and_shrink() {
    let data = tempfile::tempdir().unwrap();
    let cl = Cluster::builder().datanodes(1).workers(2, 0).start().await;
    let want_join = lineitem(&cl, data.path()).await;
    let files = purchases(3, 5_000);
    let local = tempfile::tempdir().unwrap();
    for (i, f) in files.iter().enumerate() {
        put_as(&cl, "alice", &format!("/tpch/tx/part-{i}.parquet"), f).await;
        std::fs::write(local.path().join(format!("part-{i}.parquet")), f).unwrap();
    }
    let ctx = SessionContext::new();
    ctx.register_parquet("tx", local.path().to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    let want_seed = table(&ctx.sql(SEED_QUERY).await.unwrap().collect().await.unwrap());

    let start = [
        "session",
        "start",
        "s1",
        "--min-executors",
        "1",
        "--max-executors",
        "2",
        "--idle-timeout-s",
        "2",
        "--memory-mib",
        "768",
        "--master-memory-mib",
        "512",
    ];
    let (code, out, err) = job(&cl, "alice", &start).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let app = out.trim().to_string();
    assert!(err.contains("serves at"), "{err}");
    let (code, _, err) = job(&cl, "alice", &start).await;
    assert_ne!(code, 0, "a second session of one name");
    assert!(err.contains("already"), "{err}");
    wait_progress(&cl, &app, "one executor warm", |p| p.executors == 1).await;

    // SQL from the CLI: the rows come back here.
    let sql = format!("CREATE EXTERNAL TABLE tx STORED AS PARQUET LOCATION 's3://tpch/tx/'; {SEED_QUERY}");
    let (code, out, err) = job(&cl, "alice", &["submit", "--session", "s1", "--sql", &sql]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), want_seed.trim(), "{err}");

    // A self-join of lineitem keeps tasks waiting for seconds: the session grows to two
    // executors, then after the idle timeout shrinks back to one.
    wait_progress(&cl, &app, "one executor before the join", |p| p.executors == 1).await;
    let mut client = session_client(&cl, "s1").await;
    // Its queries are planned for its executors' cores (2 of 1 core), not Ballista's 16.
    let got = client.run_sql("SHOW datafusion.execution.target_partitions", |_| {}).await.unwrap();
    assert!(table(&got.batches).contains("| 2 "), "{}", table(&got.batches));
    let mut most = 0;
    let got = client
        .run_sql(&format!("{LINEITEM_TABLE}; {SELF_JOIN} ORDER BY l_suppkey"), |p| most = most.max(p.executors))
        .await
        .unwrap();
    let want = want_join.sql(&format!("{SELF_JOIN} ORDER BY l_suppkey")).await.unwrap().collect().await.unwrap();
    assert_eq!(table(&got.batches), table(&want));
    assert_eq!(most, 2, "the session grew while tasks waited");
    wait_progress(&cl, &app, "the idle session back to one executor", |p| p.executors == 1).await;
    // Its container really ended: the master's core and one executor's are all in use.
    let rm = cl.rm_client();
    tarn_tests::wait_for("the released executor's container ended", Duration::from_secs(30), || async {
        let used: u32 = rm.workers().await.ok()?.iter().map(|w| w.used.vcores).sum();
        (used == 2).then_some(())
    })
    .await;

    // Two jobs at once, from two clients: each gets its own rows.
    let mut other = session_client(&cl, "s1").await;
    let (a, b) = tokio::join!(client.run_sql(&sql, |_| {}), other.run_sql("SELECT 41 + 1 AS x", |_| {}));
    assert_eq!(table(&a.unwrap().batches).trim(), want_seed.trim());
    assert!(table(&b.unwrap().batches).contains("42"));

    // A logical plan made by a programmatic client (as Spark Connect will send).
    let alice_nn = Arc::new(
        tarn_client::NamenodeClient::new(&cl.addrs, &tarn_tests::pki().transport(Role::User, "alice")).unwrap(),
    );
    let planner = SessionContext::new_with_state(
        tarn_jobs::spec::session_state(
            tarn_jobs::stores::TarnStores::new(alice_nn.clone()),
            datafusion::prelude::SessionConfig::new(),
        )
        .unwrap(),
    );
    planner.register_parquet("tx", "s3://tpch/tx/", ParquetReadOptions::default()).await.unwrap();
    let plan = planner.sql(SEED_QUERY).await.unwrap().into_optimized_plan().unwrap();
    let got = client.run_plan(&plan, |_| {}).await.unwrap();
    assert_eq!(table(&got.batches).trim(), want_seed.trim());

    // A COPY is staged and published as a job's is; the output names the session's job.
    let copy = format!(
        "CREATE EXTERNAL TABLE tx STORED AS PARQUET LOCATION 's3://tpch/tx/'; \
         COPY ({SEED_QUERY}) TO 's3://tpch/top/' STORED AS PARQUET"
    );
    client.run_sql(&copy, |_| {}).await.unwrap();
    let out = alice_nn.get_file_info("/tpch/top", true).await.unwrap().expect("published");
    let tag = String::from_utf8(out.xattrs[tarn_jobs::commit::OUTPUT_XATTR].clone()).unwrap();
    assert!(tag.starts_with(&format!("{app}/a1/r")) && tag.ends_with("/2"), "{tag}");
    assert!(alice_nn.get_file_info("/tpch/top/_SUCCESS", false).await.unwrap().is_some());
    // The same COPY again: the output is there, so it is refused, and the session serves on.
    let e = client.run_sql(&copy, |_| {}).await.unwrap_err().to_string();
    assert!(e.contains("exists"), "{e}");
    let (code, _, err) = job(&cl, "alice", &["submit", "--session", "s1", "--sql", "SELEC 1"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("does not parse"), "{err}");
    let got = client.run_sql("SELECT 41 + 1 AS x", |_| {}).await.unwrap();
    assert!(table(&got.batches).contains("42"));

    // Nothing staged is left behind by the runs (each removes its own).
    let staging = format!("{}/staging/a1", tarn_jobs::job_dir("alice", &app));
    match alice_nn.list_dir(&staging, "", 100).await {
        Ok((entries, _)) => assert!(entries.is_empty(), "staging left in {staging}: {entries:?}"),
        Err(e) => assert_eq!(e.kind(), tarn_client::ErrorKind::NotFound, "{e}"),
    }

    // bob has no session of that name, and cannot reach alice's: its key is hers.
    let (code, _, err) = job(&cl, "bob", &["submit", "--session", "s1", "--sql", "SELECT 1"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("no session"), "{err}");
    let bob_nn =
        Arc::new(tarn_client::NamenodeClient::new(&cl.addrs, &tarn_tests::pki().transport(Role::User, "bob")).unwrap());
    let report = rm.application(&app).await.unwrap();
    let e = tarn_jobs::session::SessionClient::connect_app(bob_nn, &report).await.unwrap_err().to_string();
    assert!(e.to_lowercase().contains("permission"), "{e}");

    let (code, _, err) = job(&cl, "alice", &["session", "stop", "s1"]).await;
    assert_eq!(code, 0, "{err}");
    let r = wait_end(&rm, &app).await;
    assert_eq!(r.state, tarn_client::rm::AppState::Finished, "{}", r.diagnostics);
    tarn_tests::wait_for("every container stopped", Duration::from_secs(30), || async {
        let used: u32 = rm.workers().await.ok()?.iter().map(|w| w.used.vcores).sum();
        (used == 0).then_some(())
    })
    .await;
}
