//! Content hashes: identical content gives the identical version on every replica.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub(crate) type Digest32 = [u8; 32];

/// SHA-256 of `bytes`.
pub(crate) fn digest(bytes: &[u8]) -> Digest32 {
    Sha256::digest(bytes).into()
}

/// First 16 hex digits of the SHA-256 of `bytes`.
pub(crate) fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&digest(bytes)[..8])
}

/// Version of a team view: a hash over the team name and the digests of the canonical
/// encodings of its two parts (the shared global part and the team's own part).
pub(crate) fn view_version(team: &str, global: &Digest32, own: &Digest32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"llmroute.v1/view\0");
    hasher.update(team.as_bytes());
    hasher.update([0]);
    hasher.update(global);
    hasher.update(own);
    hex::encode(&hasher.finalize()[..8])
}
