//! Feedback handles that cannot be forged. An answer of an adaptive group carries a handle
//! naming what to credit (group, request type, deployment) and when it was issued, signed with
//! HMAC-SHA256 under a key the operator hands out; `POST /v1/feedback` is accepted only for a
//! handle this fleet signed and that has not expired. Pure: the key and the time are passed in.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::RequestType;

/// Prefix of a handle (and its format version).
pub const PREFIX: &str = "fbk1";
/// Longest handle accepted, bytes.
const MAX_LEN: usize = 1_024;

/// What a handle credits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handle {
    /// The group (public name).
    pub group: String,
    /// The request's type.
    pub request_type: RequestType,
    /// The deployment that answered.
    pub deployment: String,
    /// When it was issued (Unix ms).
    pub issued_ms: u64,
}

/// Why a handle is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    /// Not a handle.
    #[error("not a feedback handle")]
    Malformed,
    /// Not signed by this fleet's key (forged or altered).
    #[error("the feedback handle is not valid")]
    Forged,
    /// Too old to credit.
    #[error("the feedback handle has expired")]
    Expired,
}

fn tag(key: &[u8], payload: &str) -> Option<Vec<u8>> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).ok()?;
    mac.update(payload.as_bytes());
    Some(mac.finalize().into_bytes().to_vec())
}

/// `fbk1.<hex payload>.<hex tag>`, the payload `group \t type \t deployment \t issued`.
pub fn sign(key: &[u8], handle: &Handle) -> String {
    let payload =
        format!("{}\t{}\t{}\t{}", handle.group, handle.request_type.as_str(), handle.deployment, handle.issued_ms);
    let tag = tag(key, &payload).unwrap_or_default();
    format!("{PREFIX}.{}.{}", hex::encode(payload), hex::encode(tag))
}

/// The handle `text` carries, if this fleet's `key` signed it and it is younger than `ttl_ms`
/// at `now_ms`.
pub fn verify(key: &[u8], text: &str, now_ms: u64, ttl_ms: u64) -> Result<Handle, FeedbackError> {
    if text.len() > MAX_LEN {
        return Err(FeedbackError::Malformed);
    }
    let mut parts = text.split('.');
    let (Some(PREFIX), Some(payload), Some(given), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(FeedbackError::Malformed);
    };
    let payload = String::from_utf8(hex::decode(payload).map_err(|_| FeedbackError::Malformed)?)
        .map_err(|_| FeedbackError::Malformed)?;
    let given = hex::decode(given).map_err(|_| FeedbackError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| FeedbackError::Forged)?;
    mac.update(payload.as_bytes());
    // Constant-time comparison.
    mac.verify_slice(&given).map_err(|_| FeedbackError::Forged)?;
    let fields: Vec<&str> = payload.split('\t').collect();
    let [group, kind, deployment, issued] = fields.as_slice() else { return Err(FeedbackError::Malformed) };
    let request_type = RequestType::ALL.into_iter().find(|t| t.as_str() == *kind).ok_or(FeedbackError::Malformed)?;
    let issued_ms: u64 = issued.parse().map_err(|_| FeedbackError::Malformed)?;
    if now_ms.saturating_sub(issued_ms) > ttl_ms {
        return Err(FeedbackError::Expired);
    }
    Ok(Handle { group: (*group).to_owned(), request_type, deployment: (*deployment).to_owned(), issued_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> Handle {
        Handle {
            group: "smart".into(),
            request_type: RequestType::Writing,
            deployment: "llm/gpt".into(),
            issued_ms: 1_000,
        }
    }

    #[test]
    fn a_signed_handle_round_trips_within_its_ttl() {
        let text = sign(b"fleet-key", &handle());
        assert_eq!(verify(b"fleet-key", &text, 5_000, 60_000), Ok(handle()));
        assert_eq!(verify(b"fleet-key", &text, 100_000, 60_000), Err(FeedbackError::Expired));
    }

    #[test]
    fn forged_altered_and_malformed_handles_are_refused() {
        let text = sign(b"fleet-key", &handle());
        assert_eq!(verify(b"another-key", &text, 5_000, 60_000), Err(FeedbackError::Forged));
        // Credit another deployment with the same tag.
        let mut other = handle();
        other.deployment = "llm/cheap".into();
        let forged_payload = sign(b"attacker", &other);
        let tag = text.rsplit('.').next().unwrap();
        let payload = forged_payload.split('.').nth(1).unwrap();
        assert_eq!(
            verify(b"fleet-key", &format!("{PREFIX}.{payload}.{tag}"), 5_000, 60_000),
            Err(FeedbackError::Forged)
        );
        for bad in ["", "fbk1", "fbk1..", "fbk1.zz.zz", "fbk2.00.00", &"a".repeat(5_000), "fbk1.00.00.00"] {
            assert!(verify(b"fleet-key", bad, 5_000, 60_000).is_err(), "{bad:?}");
        }
    }
}
