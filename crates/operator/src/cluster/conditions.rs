//! The status an object should have, from plain values: the compile's verdict, the fleet's
//! acknowledgements, the probe table and the status it has now. `lastTransitionTime` moves
//! only when a condition's status flips; the sidecar counts change only meaningfully.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use llmroute_api::{ResourceStatus, SidecarCounts};
use llmroute_proto::v1;
use llmroute_snapshot::{Diagnostic, Kind};

/// The fleet's view of one object: how many connected sidecars hold a view with it, and how
/// many of those acknowledged a view with its current generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Acks {
    /// Connected sidecars whose views contain the object.
    pub connected: u64,
    /// Of those, how many acknowledged the current view.
    pub acknowledged: u64,
}

/// Everything the desired status is computed from.
pub struct Inputs<'a> {
    /// The compile's verdict.
    pub diagnostic: &'a Diagnostic,
    /// The version reported: the team view's, or the global part's digest.
    pub snapshot_version: &'a str,
    /// Fleet acknowledgements.
    pub acks: Acks,
    /// The probe result, for ModelDeployments.
    pub health: Option<&'a v1::HealthEntry>,
    /// Share of connected sidecars that must acknowledge for `Ready=True`.
    pub ready_threshold: f64,
    /// The status the object has now (its conditions' transition times are kept).
    pub current: Option<&'a ResourceStatus>,
    /// Now.
    pub now: Timestamp,
}

/// The status `inputs` call for.
pub fn desired(inputs: &Inputs<'_>) -> ResourceStatus {
    let d = inputs.diagnostic;
    let accepted = d.accepted();
    let Acks { connected, acknowledged } = inputs.acks;
    // As in `/status`: with no sidecar connected the object is not (yet) serving anywhere.
    #[allow(clippy::cast_precision_loss)]
    let ready = accepted && connected > 0 && acknowledged as f64 >= inputs.ready_threshold * connected as f64;
    let ready_reason = if !accepted {
        "NotAccepted"
    } else if connected == 0 {
        "NoSidecars"
    } else if ready {
        "Acknowledged"
    } else {
        "Propagating"
    };
    let counts = SidecarCounts { acknowledged: clamp(acknowledged), connected: clamp(connected) };
    let sidecars = match inputs.current.and_then(|c| c.sidecars.as_ref()) {
        Some(old) if !meaningful(old, &counts) => old.clone(),
        _ => counts,
    };
    let mut conditions = vec![
        ("Accepted", bool_status(accepted), d.reason.as_str().to_owned(), d.message.clone()),
        (
            "Ready",
            bool_status(ready),
            ready_reason.to_owned(),
            // The counts as written: a message that moved with every acknowledgement would be a
            // write per acknowledgement.
            format!(
                "{} of {} connected sidecars acknowledged the view holding this generation",
                sidecars.acknowledged, sidecars.connected
            ),
        ),
    ];
    if d.kind == Kind::ModelDeployment {
        conditions.push(match inputs.health {
            Some(e) => (
                "Healthy",
                bool_status(e.healthy),
                if e.healthy { "ProbeSucceeded" } else { "ProbeFailed" }.to_owned(),
                e.message.chars().take(512).collect(),
            ),
            None => ("Healthy", "Unknown", "NotProbed".to_owned(), "no active probe result".to_owned()),
        });
    }
    if let Some(note) = &d.degraded {
        conditions.push(("Degraded", "True", "DependencyMissing".to_owned(), note.clone()));
    }
    let conditions = conditions
        .into_iter()
        .map(|(kind, status, reason, message)| {
            let previous = inputs.current.and_then(|c| c.conditions.iter().find(|c| c.type_ == kind));
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => Time(inputs.now),
            };
            Condition {
                type_: kind.to_owned(),
                status: status.to_owned(),
                reason,
                message,
                observed_generation: d.generation,
                last_transition_time,
            }
        })
        .collect();
    ResourceStatus {
        observed_generation: d.generation,
        conditions,
        snapshot_version: accepted.then(|| inputs.snapshot_version.to_owned()),
        sidecars: Some(sidecars),
    }
}

fn bool_status(ok: bool) -> &'static str {
    if ok { "True" } else { "False" }
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Whether new counts are worth a write: all-acknowledged flips, a count reaches or leaves 0,
/// or either moves by at least a tenth of the fleet (at least 1).
pub fn meaningful(old: &SidecarCounts, new: &SidecarCounts) -> bool {
    if old == new {
        return false;
    }
    let complete = |c: &SidecarCounts| c.acknowledged >= c.connected;
    let zero = |c: &SidecarCounts| (c.acknowledged == 0, c.connected == 0);
    let step = (old.connected.max(new.connected) / 10).max(1);
    complete(old) != complete(new)
        || zero(old) != zero(new)
        || old.acknowledged.abs_diff(new.acknowledged) >= step
        || old.connected.abs_diff(new.connected) >= step
}

#[cfg(test)]
mod tests;
