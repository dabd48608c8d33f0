//! The wire codec of a view part: the canonical protobuf encoding, gzip-compressed once by the
//! sender, decompressed within a bound by the receiver.

use std::io::{Read as _, Write as _};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use prost::Message;

use crate::v1::Part;

/// Why a received part cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    /// Not gzip.
    #[error("part is not gzip: {0}")]
    Gzip(String),
    /// Larger than the receiver accepts.
    #[error("part larger than {0} bytes uncompressed")]
    TooLarge(u64),
    /// Not a Part.
    #[error("part does not decode: {0}")]
    Decode(String),
    /// Its content does not have the digest it was sent under.
    #[error("part content does not match its digest {0}")]
    Digest(String),
}

/// Hex SHA-256 of a part's encoding: the digest it travels under.
pub fn digest(encoding: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(encoding))
}

/// The gzip of `part`'s encoding.
pub fn compress(part: &Part) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(&part.encode_to_vec());
    encoder.finish().unwrap_or_default()
}

/// The part in `gzip`, refusing more than `limit` bytes once decompressed.
pub fn decompress(gzip: &[u8], limit: u64) -> Result<Part, PartError> {
    decompress_raw(gzip, limit).and_then(|bytes| decode(&bytes))
}

/// The part in `gzip`, which must have `expected` as its digest.
pub fn decompress_checked(gzip: &[u8], limit: u64, expected: &str) -> Result<Part, PartError> {
    let bytes = decompress_raw(gzip, limit)?;
    if digest(&bytes) != expected {
        return Err(PartError::Digest(expected.to_owned()));
    }
    decode(&bytes)
}

fn decompress_raw(gzip: &[u8], limit: u64) -> Result<Vec<u8>, PartError> {
    let mut bytes = Vec::new();
    GzDecoder::new(gzip)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| PartError::Gzip(e.to_string()))?;
    if bytes.len() as u64 > limit {
        return Err(PartError::TooLarge(limit));
    }
    Ok(bytes)
}

fn decode(bytes: &[u8]) -> Result<Part, PartError> {
    Part::decode(bytes).map_err(|e| PartError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::Deployment;

    fn sample() -> Part {
        Part { deployments: vec![Deployment { id: "a/b".into(), ..Default::default() }], routes: vec![] }
    }

    fn part_encoding() -> Vec<u8> {
        sample().encode_to_vec()
    }

    #[test]
    fn round_trip_and_bounds() {
        let part = Part { deployments: vec![Deployment { id: "a/b".into(), ..Default::default() }], routes: vec![] };
        let gzip = compress(&part);
        assert_eq!(decompress(&gzip, 1 << 20), Ok(part));
        assert!(matches!(decompress(&gzip, 2), Err(PartError::TooLarge(2))));
        assert!(matches!(decompress(b"not gzip", 1 << 20), Err(PartError::Gzip(_))));
        let bomb = compress(&Part {
            deployments: vec![Deployment { id: "x".repeat(1 << 20), ..Default::default() }],
            routes: vec![],
        });
        assert!(bomb.len() < 8 << 10, "1 MiB of one byte compresses well");
        assert!(matches!(decompress(&bomb, 64 << 10), Err(PartError::TooLarge(_))), "a bomb stops at the bound");
        let good = digest(&part_encoding());
        assert!(decompress_checked(&compress(&sample()), 1 << 20, &good).is_ok());
        assert!(matches!(decompress_checked(&compress(&sample()), 1 << 20, "00"), Err(PartError::Digest(_))));
    }
}
