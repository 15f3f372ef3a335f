//! What the jobs tests and `jobs-bench` share: a user's bucket and files, `tarn job` run
//! as a user, the TPC-H queries of `tests/tpch/`.

use std::time::Duration;

use tarn_security::Role;

use crate::{pki, tarn_bin, Cluster};

/// Purchases (customer_id, purchase_amount: int64) in `files` parquet files of `rows` rows
/// each, over `customers` customers; deterministic for a `seed`.
pub fn purchases(files: usize, rows: usize, customers: u64, seed: u64) -> Vec<Vec<u8>> {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::parquet::arrow::ArrowWriter;
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, false),
        Field::new("purchase_amount", DataType::Int64, false),
    ]));
    let mut x: u64 = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..files)
        .map(|_| {
            let ids: Int64Array = (0..rows).map(|_| (next() % customers) as i64).collect();
            let amounts: Int64Array = (0..rows).map(|_| (next() % 100_000) as i64).collect();
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(amounts)]).unwrap();
            let mut w = ArrowWriter::try_new(Vec::new(), schema.clone(), None).unwrap();
            w.write(&batch).unwrap();
            w.into_inner().unwrap()
        })
        .collect()
}

/// `/NAME` owned by `user` (a bucket of theirs).
pub async fn bucket(cl: &Cluster, name: &str, user: &str) {
    let admin = cl.client();
    admin.mkdirs(&format!("/{name}")).await.unwrap();
    let own = tarn_client::SetAttributes { owner: Some(user.into()), mode: Some(0o755), ..Default::default() };
    admin.set_attributes(&format!("/{name}"), own).await.unwrap();
}

/// Writes `data` to `path` as `user` (making its directory).
pub async fn put_as(cl: &Cluster, user: &str, path: &str, data: &[u8]) {
    use tarn_client::blocks::FileWriter;
    let c = tarn_client::NamenodeClient::new(&cl.addrs, &pki().transport(Role::User, user)).unwrap();
    c.mkdirs(path.rsplit_once('/').unwrap().0).await.unwrap();
    let mut w = FileWriter::create(&c, path, &tarn_client::CreateOptions::default()).await.unwrap();
    w.write(data).await.unwrap();
    w.close().await.unwrap();
}

/// Runs `tarn job ARGS` as `user` against the cluster, within `timeout`; (exit code,
/// stdout, stderr).
pub async fn run_job(cl: &Cluster, user: &str, args: &[&str], timeout: Duration) -> (i32, String, String) {
    let config = crate::config_file(Role::User, user);
    let rm_addr = cl.rm_addrs.join(",");
    let run = tokio::process::Command::new(tarn_bin())
        .args(["job", "--resource-manager", &rm_addr, "--namenode", &cl.addrs[0], "--config"])
        .arg(&config)
        .args(args)
        .kill_on_drop(true)
        .output();
    let o = tokio::time::timeout(timeout, run).await.unwrap_or_else(|_| panic!("tarn job within {timeout:?}")).unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

pub const TPCH_TABLES: [&str; 8] =
    ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"];

/// The statements of TPC-H query `n` (`tests/tpch/qN.sql`).
pub fn tpch_query(n: usize) -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tpch/q{n}.sql"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.split(';').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// TPC-H data at `scale` in `dir` (`tpchgen-cli parquet`), unless it is there.
pub fn tpch_data(dir: &std::path::Path, scale: &str, tables: Option<&str>) {
    if TPCH_TABLES.iter().all(|t| tables.is_some_and(|only| only != *t) || dir.join(format!("{t}.parquet")).is_file()) {
        return;
    }
    let mut cmd = std::process::Command::new(crate::venv_bin("tpchgen-cli"));
    cmd.args(["parquet", "-s", scale, "-o"]).arg(dir);
    if let Some(t) = tables {
        cmd.arg(format!("--tables={t}"));
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "tpchgen-cli: {}", String::from_utf8_lossy(&out.stderr));
}
