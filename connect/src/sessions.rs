//! Sessions kept in the replicated metadata, so that a client whose endpoint restarted, or
//! who reaches another master's endpoint, continues its session (its
//! `server_side_session_id`, configuration, current database and temp views).
//!
//! A session's record is the file `SESSIONS_DIR/USER/SESSION_ID` (the user's directory
//! 0700, made and written as the user; `SESSIONS_DIR` is 1777, made by the namenode),
//! written when the session starts and whenever its state changes, removed when it is
//! released or expires. Temp views are kept as the relations the client sent (Spark
//! Connect's protobuf), planned again when a session is restored, in the order they
//! were made.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use tarn_client::store::TarnStore;
use tarn_client::NamenodeClient;

use crate::errors::SparkError;

/// Where sessions are kept (made by the namenode, mode 1777).
pub const SESSIONS_DIR: &str = "/.tarn/connect";

/// What a session is beyond the endpoint's memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// [`SessionRecord::FORMAT`]; a newer one is refused, not misread.
    pub format: u32,
    pub server_id: String,
    pub conf: BTreeMap<String, String>,
    pub database: String,
    /// In the order they were made.
    pub views: Vec<StoredView>,
}

/// A temp view: its name, the relation it was made of (protobuf, base64), and the
/// database current when it was made (its unqualified names are that database's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredView {
    pub name: String,
    pub relation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

impl StoredView {
    pub fn new(name: &str, relation: &[u8], database: &str) -> StoredView {
        StoredView {
            name: name.into(),
            relation: base64::engine::general_purpose::STANDARD.encode(relation),
            database: Some(database.into()),
        }
    }

    pub fn relation(&self) -> Result<Vec<u8>, SparkError> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.relation)
            .map_err(|e| SparkError::internal(format!("the stored view {}: {e}", self.name)))
    }
}

impl SessionRecord {
    pub const FORMAT: u32 = 1;

    pub fn decode(path: &str, bytes: &[u8]) -> Result<SessionRecord, SparkError> {
        let bad = |why: String| SparkError::internal(format!("the session record {path} cannot be read: {why}"));
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let format = v.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
        if format > u64::from(Self::FORMAT) {
            return Err(bad(format!("format {format} is newer than this binary's ({})", Self::FORMAT)));
        }
        serde_json::from_value(v).map_err(|e| bad(e.to_string()))
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a record serializes")
    }
}

pub fn record_path(user: &str, session_id: &str) -> String {
    format!("{SESSIONS_DIR}/{user}/{session_id}")
}

fn location(path: &str) -> Result<object_store::path::Path, SparkError> {
    object_store::path::Path::parse(path.trim_start_matches('/'))
        .map_err(|e| SparkError::invalid(format!("the session path {path}: {e}")))
}

/// A session id that may name a file (the client's are UUIDs).
fn check_id(session_id: &str) -> Result<(), SparkError> {
    if session_id.is_empty()
        || session_id.len() > 128
        || !session_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(SparkError::invalid(format!("the session_id {session_id:?} (letters, digits, '-' and '_')")));
    }
    Ok(())
}

/// The record of `user`'s session `session_id`, if one is kept.
pub async fn load(nn: &Arc<NamenodeClient>, user: &str, session_id: &str) -> Result<Option<SessionRecord>, SparkError> {
    check_id(session_id)?;
    let path = record_path(user, session_id);
    match TarnStore::new(nn.clone()).get(&location(&path)?).await {
        Ok(r) => {
            let bytes = r.bytes().await.map_err(|e| SparkError::internal(format!("read {path}: {e}")))?;
            SessionRecord::decode(&path, &bytes).map(Some)
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(SparkError::internal(format!("read {path}: {e}"))),
    }
}

/// Keeps `record` as `user`'s session `session_id` (replacing what was kept).
pub async fn save(
    nn: &Arc<NamenodeClient>,
    user: &str,
    session_id: &str,
    record: &SessionRecord,
) -> Result<(), SparkError> {
    check_id(session_id)?;
    let dir = format!("{SESSIONS_DIR}/{user}");
    tarn_jobs::own_private_dir(nn, &dir, user).await.map_err(|e| SparkError::internal(e.to_string()))?;
    let path = record_path(user, session_id);
    TarnStore::new(nn.clone())
        .put(&location(&path)?, record.encode().into())
        .await
        .map(|_| ())
        .map_err(|e| SparkError::internal(format!("keep the session in {path}: {e}")))
}

/// Forgets `user`'s session `session_id`.
pub async fn remove(nn: &NamenodeClient, user: &str, session_id: &str) -> Result<(), SparkError> {
    check_id(session_id)?;
    let path = record_path(user, session_id);
    nn.delete(&path, false, None).await.map(|_| ()).map_err(|e| SparkError::internal(format!("remove {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as format 1 wrote it still reads, byte for byte; a newer one is refused.
    #[test]
    fn golden_record_of_format_1_decodes() {
        let bytes = include_bytes!("../tests/golden/session-v1.json");
        let r = SessionRecord::decode("p", bytes).unwrap();
        assert_eq!(r.server_id, "6b0e3f0c-2f5e-4c1f-9a43-7f0d0f1e2a3b");
        assert_eq!(r.conf.get("spark.sql.shuffle.partitions").map(String::as_str), Some("8"));
        assert_eq!(r.database, "sales");
        assert_eq!(r.views[0].name, "recent");
        assert_eq!(r.views[0].relation().unwrap(), b"\x12\x00".to_vec());
        assert_eq!(r.encode(), bytes.to_vec());
        let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        v["format"] = serde_json::json!(SessionRecord::FORMAT + 1);
        let e = SessionRecord::decode("p", &serde_json::to_vec(&v).unwrap()).unwrap_err().to_string();
        assert!(e.contains("newer"), "{e}");
    }

    #[test]
    fn session_ids_must_be_names() {
        assert!(check_id("6b0e3f0c-2f5e-4c1f-9a43-7f0d0f1e2a3b").is_ok());
        assert!(check_id("../x").is_err());
        assert!(check_id("").is_err());
    }
}
