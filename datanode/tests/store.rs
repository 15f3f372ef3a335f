//! The replica store on real files, replicas in the clear (insecure dev mode): round trips
//! at chunk edges, corruption and truncation found on read, unfinished replicas recovered
//! at start-up, and a full disk refused. `store_sealed.rs` runs the same cases encrypted.

fn master() -> Option<tarn_security::MasterKey> {
    None
}

#[path = "common/store_cases.rs"]
mod cases;
