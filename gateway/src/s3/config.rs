//! A bucket's configuration: everything it carries beyond its grants (`s3.access`), in one
//! typed, versioned record, the `s3.config` attribute of the bucket's directory. Tags
//! (`tagging.rs`) and CORS rules (`cors.rs`) live here; later features add fields with
//! defaults, and `v` rises only when a field changes meaning.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tarn_client::SetAttributes;

use super::cors::CorsRule;
use super::tagging::Tags;
use super::{ApiError, ApiResult, TarnS3};
use crate::names::*;

/// The attribute holding a bucket's configuration.
pub(super) const CONFIG_XATTR: &str = "s3.config";

/// Everything a bucket is configured with beyond its grants, in one record (later
/// features add fields with defaults; `v` rises only when a field changes meaning).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketConfig {
    pub v: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: Tags,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors: Vec<CorsRule>,
}

impl BucketConfig {
    pub const VERSION: u32 = 1;
}

/// Decodes a record `what` of at most format `max` (`v`); a newer one is refused, naming
/// both, as the namenode refuses a newer store.
pub(super) fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8], max: u32) -> ApiResult<T> {
    #[derive(Deserialize)]
    struct V {
        v: u32,
    }
    let v = serde_json::from_slice::<V>(bytes).map_err(|e| ApiError::internal(&format!("stored {what}"), e))?;
    if v.v == 0 || v.v > max {
        return Err(ApiError::Internal(format!(
            "stored {what} is of format {}; this gateway reads formats 1 to {max}: upgrade it",
            v.v
        )));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::internal(&format!("stored {what}"), e))
}

/// A bucket's configuration, from its directory's attributes.
pub(super) fn config_of(xattrs: &BTreeMap<String, Vec<u8>>) -> ApiResult<BucketConfig> {
    match xattrs.get(CONFIG_XATTR) {
        Some(b) => decode("bucket configuration", b, BucketConfig::VERSION),
        None => Ok(BucketConfig { v: BucketConfig::VERSION, ..Default::default() }),
    }
}

/// Rewrites bucket `bucket`'s configuration with `change`, on the directory looked up
/// (a bucket deleted and made again meanwhile is not changed). Changes through one
/// gateway are made one at a time, so one never undoes another's field; two gateways
/// changing one bucket's configuration at the same moment can still (the namespace has
/// no compare-and-set on an attribute's value yet: ARCHITECTURE.md, gateway).
pub(super) async fn update_config(s3: &TarnS3, bucket: &str, change: impl FnOnce(&mut BucketConfig)) -> ApiResult<()> {
    let _one_at_a_time = s3.config_changes.lock().await;
    let st = s3.bucket_exists(bucket).await?;
    let mut c = config_of(&st.xattrs)?;
    c.v = BucketConfig::VERSION;
    change(&mut c);
    let mut a = SetAttributes { expected_file_id: Some(st.file_id), ..Default::default() };
    a.set_xattrs.insert(CONFIG_XATTR.into(), serde_json::to_vec(&c).expect("serializes"));
    s3.nn.set_attributes(&bucket_path(bucket), a).await.map_err(|e| match e.kind() {
        tarn_client::ErrorKind::ConditionFailed | tarn_client::ErrorKind::NotFound => {
            ApiError::NoSuchBucket(bucket.to_string())
        }
        _ => ApiError::Fs { what: "set bucket configuration", source: e },
    })?;
    Ok(())
}
