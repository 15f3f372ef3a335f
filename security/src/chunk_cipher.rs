//! The cipher of encrypted replicas, chunk by chunk: AES-256-GCM under the replica's data
//! key, nonce `(chunk index, writer session, chunk length)` and the block id as associated
//! data (why a nonce never repeats under one key: the datanode's `seal` module). Shared by
//! the datanode, which seals and opens chunks, and by clients reading a local replica
//! directly (short-circuit reads), which open them.

use ring::aead::{self, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

pub const KEY_BYTES: usize = 32;
pub const TAG_BYTES: usize = 16;

/// One replica's data key, ready to seal and open its chunks.
pub struct ChunkKey {
    key: LessSafeKey,
    block_id: u64,
}

/// A chunk's tag did not match: its bytes, tag, position or key are not what was sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthentic;

impl ChunkKey {
    /// The key of a replica of `block_id` from its raw bytes (`None` unless 32 bytes).
    pub fn new(raw: &[u8], block_id: u64) -> Option<ChunkKey> {
        if raw.len() != KEY_BYTES {
            return None;
        }
        let key = LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, raw).ok()?);
        Some(ChunkKey { key, block_id })
    }

    fn nonce(chunk: u64, session: u32, len: usize) -> Nonce {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&(chunk as u32).to_le_bytes());
        n[4..8].copy_from_slice(&session.to_le_bytes());
        n[8..].copy_from_slice(&(len as u32).to_le_bytes());
        Nonce::assume_unique_for_key(n)
    }

    /// Encrypts chunk `chunk` (all of `buf`) in place; returns its tag.
    pub fn seal(&self, chunk: u64, session: u32, buf: &mut [u8]) -> [u8; TAG_BYTES] {
        let nonce = ChunkKey::nonce(chunk, session, buf.len());
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(self.block_id.to_le_bytes()), buf)
            .expect("AES-GCM seal of one chunk");
        let mut t = [0u8; TAG_BYTES];
        t.copy_from_slice(tag.as_ref());
        t
    }

    /// Decrypts chunk `chunk` in place, checking its tag.
    pub fn open(&self, chunk: u64, session: u32, buf: &mut [u8], tag: &[u8; TAG_BYTES]) -> Result<(), Unauthentic> {
        let nonce = ChunkKey::nonce(chunk, session, buf.len());
        let tag = Tag::from(*tag);
        self.key
            .open_in_place_separate_tag(nonce, Aad::from(self.block_id.to_le_bytes()), tag, buf, 0..)
            .map(|_| ())
            .map_err(|_| Unauthentic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_opens_only_where_it_was_sealed() {
        let k = ChunkKey::new(&[7u8; 32], 42).unwrap();
        let mut buf = b"sixty-four kibibytes, give or take".to_vec();
        let tag = k.seal(3, 1, &mut buf);
        assert_ne!(&buf[..], b"sixty-four kibibytes, give or take");
        for (chunk, session, block) in [(4, 1, 42), (3, 2, 42), (3, 1, 43)] {
            let mut b = buf.clone();
            assert_eq!(ChunkKey::new(&[7u8; 32], block).unwrap().open(chunk, session, &mut b, &tag), Err(Unauthentic));
        }
        k.open(3, 1, &mut buf, &tag).unwrap();
        assert_eq!(&buf[..], b"sixty-four kibibytes, give or take");
        assert!(ChunkKey::new(&[0u8; 31], 1).is_none());
    }
}
