//! The Spark Connect endpoint driven by the real PySpark thin client (`pyspark-client`):
//! the seed's script runs unchanged and its output reads back through the S3 gateway with
//! the rows DataFusion computes; DataFrame and SQL operations match pandas; errors arrive
//! as PySpark's AnalysisException with Spark's error classes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use datafusion::arrow::array::Int64Array;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tarn_security::Role;
use tarn_tests::jobs::{bucket, put_as, run_job};
use tarn_tests::{pki, venv_bin, Cluster};

/// Purchases (customer_id, purchase_amount) in `files` parquet files of `rows` rows each.
fn purchases(files: usize, rows: usize) -> Vec<Vec<u8>> {
    tarn_tests::jobs::purchases(files, rows, 300, 0x2545_f491_4f6c_dd1d)
}

/// Runs python `args` with `env` within `secs`; its stdout (fails the test on failure).
async fn python(args: &[&str], env: &[(&str, String)], secs: u64) -> String {
    let mut cmd = tokio::process::Command::new(venv_bin("python"));
    cmd.args(args).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = tokio::time::timeout(Duration::from_secs(secs), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("python {args:?} within {secs} s"))
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "python {args:?} failed:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// A cluster (one datanode, two workers) whose admin bucket `my-bucket` holds `files`
/// purchases files of `rows` rows under `customer-data/`; the key clients use.
async fn shop(files: usize, rows: usize) -> (Cluster, tarn_gateway::AccessKey) {
    let cl = Cluster::builder().datanodes(1).workers(2, 0).start().await;
    bucket(&cl, "my-bucket", "admin").await;
    for (i, f) in purchases(files, rows).iter().enumerate() {
        put_as(&cl, "admin", &format!("/my-bucket/customer-data/part-{i}.parquet"), f).await;
    }
    (cl, tarn_gateway::AccessKey::generate())
}

/// A Spark Connect endpoint on `cl` taking `key`'s token (the admin's), with the gateway's
/// certificate; the environment a client needs (SPARK_REMOTE, the CA).
async fn endpoint(
    cl: &Cluster,
    key: &tarn_gateway::AccessKey,
    stop_after_idle_s: u64,
) -> (tarn_connect::ConnectHandle, [(&'static str, String); 2]) {
    let size = tarn_connect::SessionSize { stop_after_idle_s, ..test_session(1, 2) };
    sized_endpoint(cl, key, size).await
}

/// [`endpoint`] with sessions of `size`.
async fn sized_endpoint(
    cl: &Cluster,
    key: &tarn_gateway::AccessKey,
    size: tarn_connect::SessionSize,
) -> (tarn_connect::ConnectHandle, [(&'static str, String); 2]) {
    endpoint_at(cl, key, size, "127.0.0.1:0").await
}

/// [`sized_endpoint`] listening on `listen`.
async fn endpoint_at(
    cl: &Cluster,
    key: &tarn_gateway::AccessKey,
    size: tarn_connect::SessionSize,
    listen: &str,
) -> (tarn_connect::ConnectHandle, [(&'static str, String); 2]) {
    let tls = pki().paths(Role::Gateway, "gw");
    let cfg = tarn_connect::ConnectConfig {
        detached_operation_timeout_s: 5,
        ..tarn_tests::connect_config(cl, key, size, listen)
    };
    let connect = tarn_connect::start(cfg, pki().transport(Role::Gateway, "gw")).await.unwrap();
    let remote = connect.remote("localhost", &format!("{}:{}", key.access_key, key.secret_key));
    (connect, [("SPARK_REMOTE", remote), ("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", tls.ca.display().to_string())])
}

/// The cases of `tests/connect/cases.py` (DataFrame operations and SQL over data with
/// nulls, empty strings, decimals, dates and timestamps) give the columns, Spark types
/// and rows classic PySpark gave (`tests/connect/gold/`, made by `scripts/connect-gold`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dataframe_cases_answer_as_classic_pyspark() {
    let tables = answers_match_classic_pyspark("tests/connect/cases.py", "cases", "tests/connect/gold").await;
    assert_eq!(tables, ["orders", "people"]);
}

/// The 22 TPC-H queries as PySpark DataFrame code (`tests/connect/tpch.py`, scale 0.01)
/// give classic PySpark's columns, types and rows (`tests/connect/gold-tpch/`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tpch_queries_as_dataframes_answer_as_classic_pyspark() {
    let tables = answers_match_classic_pyspark("tests/connect/tpch.py", "tpch", "tests/connect/gold-tpch").await;
    assert_eq!(tables.len(), 8, "TPC-H's eight tables: {tables:?}");
}

/// Runs `script data DIR` (a directory per table, each one `part-0.parquet`), puts the
/// tables into bucket `bucket` as the admin, then `script check s3://BUCKET GOLD` through
/// an endpoint: every answer must be classic PySpark's. The tables, sorted.
async fn answers_match_classic_pyspark(script: &str, bucket_name: &str, gold: &str) -> Vec<String> {
    let cl = Cluster::builder().datanodes(1).workers(2, 0).start().await;
    let key = tarn_gateway::AccessKey::generate();
    bucket(&cl, bucket_name, "admin").await;
    let data = tempfile::tempdir().unwrap();
    let script = repo().join(script);
    python(&[script.to_str().unwrap(), "data", data.path().to_str().unwrap()], &[], 120).await;
    let mut tables = Vec::new();
    for entry in std::fs::read_dir(data.path()).unwrap() {
        let table = entry.unwrap().file_name().into_string().unwrap();
        let bytes = std::fs::read(data.path().join(&table).join("part-0.parquet")).unwrap();
        put_as(&cl, "admin", &format!("/{bucket_name}/{table}/part-0.parquet"), &bytes).await;
        tables.push(table);
    }
    tables.sort();
    let (connect, env) = endpoint(&cl, &key, 0).await;
    let base = format!("s3://{bucket_name}");
    let gold = repo().join(gold);
    let out = python(&[script.to_str().unwrap(), "check", &base, gold.to_str().unwrap()], &env, 900).await;
    assert_eq!(out.lines().last(), Some("ok"), "{out}");
    connect.stop().await;
    cl.shutdown().await;
    tables
}

/// The catalog (`tests/connect/catalog.py`): databases and tables made through one
/// endpoint (over partitioned files, by `saveAsTable`, by `CREATE TABLE ... AS`) are read
/// by name by another user's SQL job, and, once the namenode group has lost its leader,
/// found by a new session of another endpoint, which drops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_outlive_sessions_endpoints_and_a_namenode_failover() {
    let mut cl = Cluster::builder().namenodes(3).datanodes(1).workers(3, 0).start().await;
    let key = tarn_gateway::AccessKey::generate();
    bucket(&cl, "lake", "admin").await;
    // The admin's home, under which their managed tables go.
    let nn = cl.client();
    nn.mkdirs("/user/admin").await.unwrap();
    let own = tarn_client::SetAttributes { owner: Some("admin".into()), mode: Some(0o755), ..Default::default() };
    nn.set_attributes("/user/admin", own).await.unwrap();
    let local = tempfile::tempdir().unwrap();
    for (i, f) in purchases(3, 700).iter().enumerate() {
        let part = format!("day=2024-01-0{}", i + 1);
        put_as(&cl, "admin", &format!("/lake/events/{part}/part-0.parquet"), f).await;
        std::fs::create_dir_all(local.path().join(&part)).unwrap();
        std::fs::write(local.path().join(&part).join("part-0.parquet"), f).unwrap();
    }
    let script = repo().join("tests/connect/catalog.py");
    let (script, dir) = (script.to_str().unwrap(), local.path().to_str().unwrap());
    let (connect, env) = endpoint(&cl, &key, 0).await;
    let out = python(&[script, "create", dir], &env, 600).await;
    assert_eq!(out.lines().last(), Some("ok"), "{out}");
    connect.stop().await;

    // Another user's SQL job names the table; the data's permissions let them read it.
    let sql = "SELECT day, count(*) AS n FROM sales.events GROUP BY day ORDER BY day";
    let args =
        ["submit", "--wait", "--executors", "1", "--memory-mib", "768", "--master-memory-mib", "512", "--sql", sql];
    let (code, out, err) = run_job(&cl, "alice", &args, Duration::from_secs(240)).await;
    assert_eq!(code, 0, "the job failed:\n{out}\n{err}");
    for day in 1..=3 {
        assert!(out.contains(&format!("| 2024-01-0{day} | 700 |")), "rows per day:\n{out}");
    }

    // The namenode group loses its leader; a new endpoint and session find every table.
    let leader = cl.leader().await;
    cl.stop(leader).await;
    let (connect, env) = endpoint(&cl, &key, 0).await;
    let out = python(&[script, "check", dir], &env, 600).await;
    assert_eq!(out.lines().last(), Some("ok"), "{out}");
    connect.stop().await;
    cl.shutdown().await;
}

/// A worker SIGKILLed while a Spark Connect query runs (a self-join of TPC-H lineitem at
/// scale 0.1, its scans done and its join reading their map output): the client gets the
/// rows single-process DataFusion computes, as the session application runs the lost
/// work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_a_query_costs_the_client_nothing() {
    use tokio::io::AsyncBufReadExt;
    let data = tempfile::tempdir().unwrap();
    let mut cl = Cluster::builder().datanodes(3).workers(3, 0).worker_processes().start().await;
    let key = tarn_gateway::AccessKey::generate();
    bucket(&cl, "tpch", "admin").await;
    tarn_tests::jobs::tpch_data(data.path(), "0.1", Some("lineitem"));
    let local = data.path().join("lineitem.parquet");
    put_as(&cl, "admin", "/tpch/lineitem/lineitem.parquet", &std::fs::read(&local).unwrap()).await;
    let ctx = SessionContext::new();
    ctx.register_parquet("lineitem", local.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    let sql = "SELECT l1.l_suppkey, count(*) AS pairs FROM lineitem l1 JOIN lineitem l2 \
               ON l1.l_partkey = l2.l_partkey GROUP BY l1.l_suppkey ORDER BY pairs DESC, l1.l_suppkey LIMIT 20";
    let mut want = Vec::new();
    for b in ctx.sql(sql).await.unwrap().collect().await.unwrap() {
        let (a, n) = (
            b.column(0).as_any().downcast_ref::<Int64Array>().unwrap(),
            b.column(1).as_any().downcast_ref::<Int64Array>().unwrap(),
        );
        want.extend((0..b.num_rows()).map(|i| format!("{},{}", a.value(i), n.value(i))));
    }
    // Three executors: at least two on workers other than the session's master's.
    let size = test_session(3, 3);
    let (connect, env) = sized_endpoint(&cl, &key, size).await;
    let script = repo().join("tests/connect/lose_worker.py");
    let mut child = tokio::process::Command::new(venv_bin("python"))
        .arg(&script)
        .arg("s3://tpch")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The client's errors, for the failure message.
    let mut stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let told = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l == "scans done" {
                return true;
            }
        }
        false
    })
    .await
    .expect("the scans done within 300 s");
    assert!(told, "the query ended before the client saw its scans done");
    let rm = cl.rm_client();
    let apps = rm.applications(true).await.unwrap();
    let session = apps.iter().find(|a| a.name == "session: spark-connect" && !a.state.is_final()).expect("the session");
    let master = session.attempts.last().unwrap().worker_id.clone();
    let victim = (1..=3)
        .find(|i| {
            let dir = cl.container_dir(*i, &session.app_id, "x");
            format!("w{i}") != master
                && std::fs::read_dir(dir.parent().unwrap()).map(|d| d.count() > 0).unwrap_or(false)
        })
        .expect("a worker running an executor and not the master");
    cl.stop_worker(victim).await;
    let mut got = Vec::new();
    let rest = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            got.push(l);
        }
        child.wait().await.unwrap()
    })
    .await
    .expect("the query's end within 300 s");
    let errors = errors.await.unwrap();
    assert!(rest.success(), "the query failed after the loss: {got:?}\n{errors}");
    assert_eq!(got, want, "the rows after the loss");
    // The session application counted the executor it lost.
    let (nn, dir) = (cl.client(), tarn_jobs::job_dir("admin", &session.app_id));
    tarn_tests::wait_for("the lost executor to be counted", Duration::from_secs(60), || async {
        let st = nn.get_file_info(&dir, true).await.ok()??;
        let p: tarn_jobs::master::JobProgress =
            serde_json::from_slice(st.xattrs.get(tarn_jobs::master::PROGRESS_XATTR)?).ok()?;
        (p.executors_lost >= 1).then_some(())
    })
    .await;
    connect.stop().await;
    cl.shutdown().await;
}

/// The endpoint restarted under a client (`tests/connect/restart.py`): the client goes on
/// with the same session, whose server-side id, setting, current database and temp
/// views were kept in the cluster; a query it sends while the endpoint is down is sent
/// again by its retries and finishes. Then the released session's record is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_outlives_a_restart_of_its_endpoint() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (cl, key) = shop(2, 1_000).await;
    let size = test_session(1, 1);
    let (connect, env) = sized_endpoint(&cl, &key, size.clone()).await;
    let listen = format!("127.0.0.1:{}", connect.addr.port());
    let script = repo().join("tests/connect/restart.py");
    let mut child = tokio::process::Command::new(venv_bin("python"))
        .arg(&script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdin = child.stdin.take().unwrap();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(180), lines.next_line()).await.expect("a line in time").unwrap()
    };
    assert_eq!(next().await.as_deref(), Some("phase 1 done"));
    let kept = tarn_connect::sessions::SESSIONS_DIR.to_string() + "/admin";
    let records = cl.client().list_dir_all(&kept).await.unwrap();
    assert_eq!(records.len(), 1, "the session's record");
    connect.stop().await;
    stdin.write_all(b"go\n").await.unwrap();
    assert_eq!(next().await.as_deref(), Some("sending"));
    let (connect, _) = endpoint_at(&cl, &key, size, &listen).await;
    let mut rest = Vec::new();
    while let Some(l) = next().await {
        rest.push(l);
    }
    let status = child.wait().await.unwrap();
    assert!(status.success(), "the client failed after the restart: {rest:?}");
    assert_eq!(rest.last().map(String::as_str), Some("ok"), "{rest:?}");
    // `spark.stop()` released the session: its record is gone.
    assert!(cl.client().list_dir_all(&kept).await.unwrap().is_empty(), "a released session's record");
    connect.stop().await;
    cl.shutdown().await;
}

/// Endpoints as processes of their own (`tarn connect`, as on every master): a session
/// made through one continues through another (its `session_id` in the connection
/// string) after the first is SIGKILLed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_continues_on_another_endpoint_after_a_sigkill() {
    let (cl, key) = shop(2, 1_000).await;
    let dir = tempfile::tempdir().unwrap();
    let tls = pki().paths(Role::Gateway, "gw");
    #[derive(serde::Serialize)]
    struct File {
        security: tarn_security::SecurityConfig,
        connect: tarn_connect::ConnectConfig,
    }
    let size = test_session(1, 1);
    let file = File {
        security: pki().security(Role::Gateway, "gw"),
        connect: tarn_tests::connect_config(&cl, &key, size, "127.0.0.1:0"),
    };
    let config = dir.path().join("master.toml");
    std::fs::write(&config, toml::to_string(&file).unwrap()).unwrap();
    let start = |i: usize| {
        let addr_file = dir.path().join(format!("connect-{i}.addr"));
        let child = tokio::process::Command::new(tarn_tests::tarn_bin())
            .arg("connect")
            .arg("--config")
            .arg(&config)
            .arg("--addr-file")
            .arg(&addr_file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        (child, addr_file)
    };
    let port = |f: std::path::PathBuf| async move {
        let addr: std::net::SocketAddr =
            tarn_tests::wait_for("the endpoint's address", Duration::from_secs(30), || {
                let f = f.clone();
                async move { std::fs::read_to_string(&f).ok()?.trim().parse().ok() }
            })
            .await;
        addr.port()
    };
    let ((mut a, fa), (mut b, fb)) = (start(1), start(2));
    let (pa, pb) = (port(fa).await, port(fb).await);
    let session = "5c4d6b0e-8a1f-4b2e-9c3d-7e6f5a4b3c2d";
    let token = format!("{}:{}", key.access_key, key.secret_key);
    let remote = |p: u16| format!("{};session_id={session}", tarn_connect::remote_url("localhost", p, &token, true));
    let ca = ("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", tls.ca.display().to_string());
    let script = repo().join("tests/connect/two_endpoints.py");
    let script = script.to_str().unwrap();
    let made = python(&[script, "make"], &[("SPARK_REMOTE", remote(pa)), ca.clone()], 180).await;
    a.kill().await.unwrap();
    let went_on = python(&[script, "continue"], &[("SPARK_REMOTE", remote(pb)), ca], 180).await;
    assert_eq!(made.lines().last(), Some("ok"), "{made}");
    assert_eq!(went_on.lines().last(), Some("ok"), "{went_on}");
    assert_eq!(made.lines().next(), went_on.lines().next(), "the temp view's rows through both endpoints");
    b.kill().await.unwrap();
    cl.shutdown().await;
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The seed's PySpark script, verbatim (`examples/customer_analytics.py`), against the
/// endpoint with only SPARK_REMOTE (its token) and the CA path set: its parquet output,
/// read back through the S3 gateway with pyarrow in file-name order, holds DataFusion's
/// sums per customer in descending order. Then the seed's notebook, run headless, and
/// the DataFrame checks of `tests/connect/dataframes.py`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_pyspark_script_runs_unchanged_on_the_cluster() {
    let cl = Cluster::builder().datanodes(1).workers(2, 0).start().await;
    let key = tarn_gateway::AccessKey::generate();
    // The token's user: the configured keys act as the administrator, "admin".
    bucket(&cl, "my-bucket", "admin").await;
    let local = tempfile::tempdir().unwrap();
    for (i, f) in purchases(3, 4_000).iter().enumerate() {
        put_as(&cl, "admin", &format!("/my-bucket/customer-data/part-{i}.parquet"), f).await;
        std::fs::write(local.path().join(format!("part-{i}.parquet")), f).unwrap();
    }
    let ctx = SessionContext::new();
    ctx.register_parquet("tx", local.path().to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    let want: BTreeMap<i64, i64> = {
        let b = ctx.sql("SELECT customer_id, sum(purchase_amount) FROM tx GROUP BY customer_id").await.unwrap();
        let mut m = BTreeMap::new();
        for batch in b.collect().await.unwrap() {
            let ids = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let sums = batch.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            m.extend((0..batch.num_rows()).map(|i| (ids.value(i), sums.value(i))));
        }
        m
    };

    let (connect, env) = endpoint(&cl, &key, 3).await;
    let remote = env[0].1.clone();
    let tls = pki().paths(Role::Gateway, "gw");
    let files = tarn_gateway::TlsFiles { cert: tls.cert.clone(), key: tls.key.clone() };
    let seed = repo().join("examples/customer_analytics.py");
    python(&[seed.to_str().unwrap()], &env, 240).await;

    // The output through the S3 gateway, files in name order.
    let gw_cfg = tarn_gateway::GatewayConfig {
        listen: "127.0.0.1:0".into(),
        namenodes: cl.addrs.clone(),
        tls: Some(files),
        access_keys: vec![key.clone()],
        ..Default::default()
    };
    let gw = tarn_gateway::start(gw_cfg, pki().transport(Role::Gateway, "gw")).await.unwrap();
    let endpoint = gw.endpoint();
    let (scheme, host) = endpoint.split_once("://").unwrap();
    let read = format!(
        "import pyarrow.fs as f, pyarrow.parquet as pq\n\
         fs = f.S3FileSystem(access_key='{}', secret_key='{}', region='us-east-1', scheme='{scheme}', \
         endpoint_override='{host}', tls_ca_file_path='{}')\n\
         names = sorted(i.path for i in fs.get_file_info(f.FileSelector('my-bucket/processed-data')))\n\
         assert any(n.endswith('/_SUCCESS') for n in names), names\n\
         for p in (n for n in names if n.endswith('.parquet')):\n    t = pq.read_table(p, filesystem=fs)\n    \
         assert t.column_names == ['customer_id', 'sum(purchase_amount)'], t.column_names\n    \
         for a, b in zip(t.column(0).to_pylist(), t.column(1).to_pylist()): print(f'{{a}},{{b}}')\n",
        key.access_key,
        key.secret_key,
        tls.ca.display()
    );
    let out = python(&["-c", &read], &[], 60).await;
    let got: Vec<(i64, i64)> = out
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    assert_eq!(got.len(), want.len(), "one row per customer");
    assert_eq!(got.iter().copied().collect::<BTreeMap<_, _>>(), want, "DataFusion's sums");
    assert!(got.windows(2).all(|w| w[0].1 >= w[1].1), "the files in name order hold the rows in descending order");
    gw.stop().await;

    // The same analysis as an EMR notebook would run it (`examples/customer_analytics.ipynb`),
    // executed headless by nbclient with only the same two lines in its environment.
    let nn = cl.client();
    nn.mkdirs("/user/admin").await.unwrap();
    let own = tarn_client::SetAttributes { owner: Some("admin".into()), ..Default::default() };
    nn.set_attributes("/user/admin", own).await.unwrap();
    let notebook = repo().join("examples/customer_analytics.ipynb");
    let runner = repo().join("tests/connect/notebook.py");
    let out = python(&[runner.to_str().unwrap(), notebook.to_str().unwrap()], &env, 300).await;
    assert!(out.contains("'4.2.0'"), "spark.version:\n{out}");
    assert!(out.contains(&format!("purchases: {}", 3 * 4_000)), "the count:\n{out}");
    let max = want.values().max().unwrap();
    let tops: Vec<&str> = out.lines().filter(|l| l.starts_with("top customer ")).collect();
    assert_eq!(tops.len(), 3, "{out}");
    assert!(tops[0].ends_with(&format!(": {max}")), "the top customer's sum is the largest:\n{out}");
    let total: i64 = want.values().sum();
    assert!(
        out.lines().any(|l| l.contains(&format!("|{:>9}|", want.len())) && l.contains(&total.to_string())),
        "the table's customers and total:\n{out}"
    );

    let checks = repo().join("tests/connect/dataframes.py");
    let out = python(&[checks.to_str().unwrap(), local.path().to_str().unwrap()], &env, 300).await;
    assert_eq!(out.lines().last(), Some("ok"), "{out}");

    // A client SIGKILLed mid-query leaves its operation behind: once no stream has
    // followed it for the timeout (5 s here), the endpoint interrupts it (which cancels
    // its job in the session application) and forgets it.
    let abandon = repo().join("tests/connect/abandon.py");
    let mut cmd = tokio::process::Command::new(venv_bin("python"));
    cmd.arg(&abandon).envs(env.iter().map(|(k, v)| (*k, v.as_str()))).kill_on_drop(true);
    let o = tokio::time::timeout(Duration::from_secs(300), cmd.output()).await.expect("abandon.py in time").unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(o.status.signal(), Some(9), "abandon.py: {}", String::from_utf8_lossy(&o.stderr));
    assert!(connect.operations() >= 1, "the abandoned operation is held until its timeout");
    tarn_tests::wait_for("the abandoned operation to be interrupted", Duration::from_secs(60), || async {
        (connect.operations() == 0).then_some(())
    })
    .await;

    // The session application ends after 3 s without a query, giving its containers
    // back; the next query starts another.
    let rm = cl.rm_client();
    let ended: Vec<String> = tarn_tests::wait_for("the idle session to end", Duration::from_secs(60), || async {
        let apps = rm.applications(true).await.ok()?;
        let s: Vec<_> = apps.into_iter().filter(|a| a.name == "session: spark-connect").collect();
        let done = !s.is_empty() && s.iter().all(|a| a.state == tarn_client::rm::AppState::Finished);
        done.then(|| s.into_iter().map(|a| a.app_id).collect())
    })
    .await;
    let probe = "from pyspark.sql import SparkSession\n\
                 s = SparkSession.builder.getOrCreate()\n\
                 try:\n    print([r.id for r in s.range(3).collect()])\nexcept Exception as e:\n    print(type(e).__name__, e)\n";
    // A file, not `-c`: pyspark takes a main module without a file for its doctests.
    let probe_file = tempfile::tempdir().unwrap();
    let probe_path = probe_file.path().join("probe.py");
    std::fs::write(&probe_path, probe).unwrap();
    let ca = ("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", tls.ca.display().to_string());
    let out = python(&[probe_path.to_str().unwrap()], &[("SPARK_REMOTE", remote), ca.clone()], 120).await;
    assert_eq!(out.trim(), "[0, 1, 2]");
    let apps = rm.applications(true).await.unwrap();
    let new: Vec<_> =
        apps.iter().filter(|a| a.name == "session: spark-connect" && !ended.contains(&a.app_id)).collect();
    assert_eq!(new.len(), 1, "one new session application: {new:?}");
    assert_eq!(new[0].state, tarn_client::rm::AppState::Running);

    // A wrong token is refused before anything runs.
    let bad = connect.remote("localhost", &format!("{}:wrong", key.access_key));
    let out = python(&[probe_path.to_str().unwrap()], &[("SPARK_REMOTE", bad), ca], 60).await;
    assert!(out.contains("the token does not match a key of the cluster"), "{out}");
    connect.stop().await;
    cl.shutdown().await;
}

/// A session application small enough for the test machine: `min` to `max` executors of
/// 768 MiB and a 512 MiB master.
fn test_session(min: u32, max: u32) -> tarn_connect::SessionSize {
    tarn_connect::SessionSize {
        min_executors: min,
        max_executors: max,
        memory_mib: 768,
        master_memory_mib: 512,
        ..Default::default()
    }
}
