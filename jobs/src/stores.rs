//! Where a job's paths resolve: `tarn://a/b` and `s3://a/b` are both the cluster's file
//! `/a/b` (bucket `a` is the directory `/a`, as the S3 gateway maps it), read and written
//! through [`TarnStore`] as the job's user (the container's credential). `tarn:///a/b`
//! (no host) is the same file. Other schemes (`file://`) are DataFusion's own.
//!
//! The same registry serves the three places Ballista opens stores: the client session
//! in the master, the scheduler's planning sessions, and every executor's runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::ObjectStore;
use tarn_client::store::TarnStore;
use tarn_client::NamenodeClient;
use url::Url;

/// URL schemes that name the cluster's own file system.
pub const TARN_SCHEMES: [&str; 3] = ["tarn", "s3", "s3a"];

/// The cluster's stores by bucket (top directory), then DataFusion's defaults.
pub struct TarnStores {
    nn: Arc<NamenodeClient>,
    by_root: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
    others: DefaultObjectStoreRegistry,
}

impl std::fmt::Debug for TarnStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TarnStores")
    }
}

impl TarnStores {
    pub fn new(nn: Arc<NamenodeClient>) -> Arc<TarnStores> {
        Arc::new(TarnStores { nn, by_root: Mutex::new(HashMap::new()), others: DefaultObjectStoreRegistry::new() })
    }

    /// The client the stores act through (as the job's user).
    pub fn namenode(&self) -> &Arc<NamenodeClient> {
        &self.nn
    }
}

/// The directory a URL's store is rooted at: `/<host>` ("" without a host).
fn root_of(url: &Url) -> Result<String> {
    match url.host_str() {
        None | Some("") => Ok(String::new()),
        Some(h) if h.contains('/') || h == "." || h == ".." => {
            Err(DataFusionError::Configuration(format!("{url}: {h:?} cannot name a bucket or directory")))
        }
        Some(h) => Ok(format!("/{h}")),
    }
}

impl ObjectStoreRegistry for TarnStores {
    fn register_store(&self, url: &Url, store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        if TARN_SCHEMES.contains(&url.scheme()) {
            // The cluster's own stores are not replaced.
            return None;
        }
        self.others.register_store(url, store)
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        if !TARN_SCHEMES.contains(&url.scheme()) {
            return self.others.get_store(url);
        }
        let root = root_of(url)?;
        let mut map = self.by_root.lock().unwrap_or_else(|p| p.into_inner());
        let store = map
            .entry(root.clone())
            .or_insert_with(|| Arc::new(TarnStore::with_root(self.nn.clone(), &root)) as Arc<dyn ObjectStore>);
        Ok(store.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots() {
        let r = |u: &str| root_of(&Url::parse(u).unwrap()).unwrap();
        assert_eq!(r("s3://bucket/a/b.parquet"), "/bucket");
        assert_eq!(r("tarn://warehouse/t/"), "/warehouse");
        assert_eq!(r("tarn:///warehouse/t/"), "");
    }
}
