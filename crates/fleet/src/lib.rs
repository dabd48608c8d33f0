//! What the fleet decides together, as pure functions over plain values (no IO, no clock of
//! its own: instants are passed in as seconds).
//!
//! - [`quota`]: the operator's fleet-wide quota assignment for a deployment's `limits.rpm` /
//!   `limits.tpm` (after Envoy's Rate Limit Quota Service: assignments granted from reported
//!   demand, each with a time to live, plus a reserve for sidecars that hold none), and the
//!   sidecar's admission under its assignment.
//! - [`learning`]: the operator's exact, deduplicated, capped merge of the adaptive
//!   posteriors' deltas, folded and decayed once per epoch.
//! - [`outlier`]: which sidecar-reported cooldowns the operator shares with the fleet.

#![forbid(unsafe_code)]

pub mod learning;
pub mod outlier;
pub mod quota;
