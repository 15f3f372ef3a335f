//! Distributed SQL jobs (`tarn job`): DataFusion SQL run by Ballista in containers on real
//! workers, over files in the cluster, as the submitting user; their results match
//! single-process DataFusion over the same files; bad SQL is refused at submit.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tarn_security::Role;
use tarn_tests::Cluster;

/// Purchases (customer_id, purchase_amount in cents) in `files` parquet files of `rows`
/// rows each; deterministic.
fn purchases(files: usize, rows: usize) -> Vec<Vec<u8>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("purchase_amount", DataType::Int64, false),
    ]));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..files)
        .map(|_| {
            let ids: Int64Array = (0..rows).map(|_| (next() % 500) as i64).collect();
            let amounts: Int64Array = (0..rows).map(|_| (next() % 100_000) as i64).collect();
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(amounts)]).unwrap();
            let mut w = ArrowWriter::try_new(Vec::new(), schema.clone(), None).unwrap();
            w.write(&batch).unwrap();
            w.into_inner().unwrap()
        })
        .collect()
}

/// Writes `data` to `path` as `user` (making its directory).
async fn put_as(cl: &Cluster, user: &str, path: &str, data: &[u8]) {
    use tarn_client::blocks::FileWriter;
    let c = tarn_client::NamenodeClient::new(&cl.addrs, &tarn_tests::pki().transport(Role::User, user)).unwrap();
    c.mkdirs(path.rsplit_once('/').unwrap().0).await.unwrap();
    let mut w = FileWriter::create(&c, path, &tarn_client::CreateOptions::default()).await.unwrap();
    w.write(data).await.unwrap();
    w.close().await.unwrap();
}

/// `/NAME` owned by `user` (a bucket of theirs).
async fn bucket(cl: &Cluster, name: &str, user: &str) {
    let admin = cl.client();
    admin.mkdirs(&format!("/{name}")).await.unwrap();
    let own = tarn_client::SetAttributes { owner: Some(user.into()), mode: Some(0o755), ..Default::default() };
    admin.set_attributes(&format!("/{name}"), own).await.unwrap();
}

/// Runs `tarn job ARGS` as `user` against the cluster; (exit code, stdout, stderr).
async fn job(cl: &Cluster, user: &str, args: &[&str]) -> (i32, String, String) {
    let config = tarn_tests::config_file(Role::User, user);
    let rm_addr = cl.rm_addrs[0].clone();
    let run = tokio::process::Command::new(tarn_tests::tarn_bin())
        .args(["job", "--resource-manager", &rm_addr, "--namenode", &cl.addrs[0], "--config"])
        .arg(&config)
        .args(args)
        .kill_on_drop(true)
        .output();
    let o = tokio::time::timeout(Duration::from_secs(120), run).await.expect("tarn job within 120 s").unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
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
    let (code, _, err) = job(&cl, "alice", &["submit", "--queue", "nowhere", "--sql", "SELECT 1"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("nowhere"), "{err}");
    // Nothing was submitted.
    assert!(cl.rm_client().applications(true).await.unwrap().is_empty());
}

const TPCH_TABLES: [&str; 8] = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"];

/// The statements of TPC-H query `n` (`tests/tpch/qN.sql`).
fn tpch_query(n: usize) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tpch/q{n}.sql"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.split(';').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// The 22 TPC-H queries at scale 0.1, as one distributed job on three workers (each query
/// written with `COPY ... TO` a parquet file of the cluster), return the rows that
/// single-process DataFusion returns over the same files, in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_22_tpch_queries_return_what_datafusion_does() {
    let data = tempfile::tempdir().unwrap();
    let gen = std::process::Command::new(tarn_tests::venv_bin("tpchgen-cli"))
        .args(["parquet", "-s", "0.1", "-o"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(gen.status.success(), "tpchgen-cli: {}", String::from_utf8_lossy(&gen.stderr));

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
