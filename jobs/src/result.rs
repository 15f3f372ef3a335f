//! A job's result: the last statement's rows, kept as an Arrow IPC file in the job's
//! directory (`result.arrow`), so `tarn job result` reads it after the application ended
//! (and after a failover of anything). At most [`RESULT_ROWS_MAX`] rows are kept; larger
//! outputs belong in files (`COPY ... TO`).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use tarn_client::store::TarnStore;
use tarn_client::NamenodeClient;

use crate::{JobError, Result};

pub const RESULT_FILE: &str = "result.arrow";
pub const RESULT_ROWS_MAX: usize = 100_000;

/// What was kept of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    pub rows: usize,
    /// Rows the statement returned beyond [`RESULT_ROWS_MAX`].
    pub dropped: usize,
}

fn location(job_dir: &str) -> Result<Path> {
    Path::parse(format!("{}/{RESULT_FILE}", job_dir.trim_start_matches('/')))
        .map_err(|e| JobError::Invalid(format!("{job_dir}: {e}")))
}

/// Keeps `batches` (up to [`RESULT_ROWS_MAX`] rows) as the result of the job in `job_dir`.
pub async fn write(nn: Arc<NamenodeClient>, job_dir: &str, schema: SchemaRef, batches: &[RecordBatch]) -> Result<Kept> {
    let mut w = FileWriter::try_new(Vec::new(), &schema).map_err(|e| JobError::Run(format!("result: {e}")))?;
    let mut kept = Kept { rows: 0, dropped: 0 };
    for b in batches {
        let room = RESULT_ROWS_MAX - kept.rows;
        let take = b.num_rows().min(room);
        kept.dropped += b.num_rows() - take;
        if take > 0 {
            w.write(&b.slice(0, take)).map_err(|e| JobError::Run(format!("result: {e}")))?;
            kept.rows += take;
        }
    }
    let bytes = w.into_inner().map_err(|e| JobError::Run(format!("result: {e}")))?;
    TarnStore::new(nn)
        .put(&location(job_dir)?, bytes.into())
        .await
        .map_err(|e| JobError::Run(format!("write the result to {job_dir}/{RESULT_FILE}: {e}")))?;
    Ok(kept)
}

/// The result kept in `job_dir`; `None` if the job kept none (it has not finished, or
/// failed).
pub async fn read(nn: Arc<NamenodeClient>, job_dir: &str) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>> {
    let got = match TarnStore::new(nn).get(&location(job_dir)?).await {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(JobError::Run(format!("read {job_dir}/{RESULT_FILE}: {e}"))),
    };
    let bytes = got.bytes().await.map_err(|e| JobError::Run(format!("read {job_dir}/{RESULT_FILE}: {e}")))?;
    let r = FileReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| JobError::Run(format!("{job_dir}/{RESULT_FILE}: {e}")))?;
    let schema = r.schema();
    let batches = r
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| JobError::Run(format!("{job_dir}/{RESULT_FILE}: {e}")))?;
    Ok(Some((schema, batches)))
}
