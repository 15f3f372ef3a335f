//! openraft's own conformance suite against the RocksDB log store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use tarn_namenode::store::{open_db, DbMemory, LogStore, StateMachine};
use tarn_namenode::types::{NodeId, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mem = DbMemory { block_cache_bytes: 8 << 20, write_buffer_bytes: 8 << 20 };
        let db = open_db(&dir.path().join("db"), mem).expect("open db");
        let sm = StateMachine::open(db.clone(), dir.path().join("snapshots"), Default::default())
            .expect("open state machine");
        Ok((dir, LogStore::new(db), sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("storage suite");
}
