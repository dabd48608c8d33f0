//! Tenancy in a cluster: an object's team is the team of its namespace, and global objects
//! come only from the namespaces trusted for them. A pod or object label cannot choose a team.

use crate::store::Tenancy;
use crate::{ObjectKey, Reason};

/// The label that binds a namespace to a team.
pub const TEAM_LABEL: &str = "llmroute.dev/team";

/// Whether the object at `key` may declare `team` (`None`: a global object).
pub(crate) fn check(tenancy: Option<&Tenancy>, key: &ObjectKey, team: Option<&str>) -> Result<(), (Reason, String)> {
    let Some(tenancy) = tenancy else { return Ok(()) };
    let namespace = key.namespace.as_str();
    let owner = tenancy.teams.get(namespace).map(String::as_str);
    match team {
        Some(team) if owner == Some(team) => Ok(()),
        Some(team) => {
            let whose = owner.map_or_else(
                || format!("namespace {namespace:?} has no {TEAM_LABEL} label"),
                |owner| format!("namespace {namespace:?} belongs to team {owner:?}"),
            );
            Err((
                Reason::TeamMismatch,
                format!(
                    "spec.team is {team:?} but {whose}; a team's objects live in namespaces labelled {TEAM_LABEL}={team}"
                ),
            ))
        }
        None if tenancy.global_namespaces.contains(namespace) => Ok(()),
        None => {
            let trusted: Vec<&str> = tenancy.global_namespaces.iter().map(String::as_str).collect();
            Err((
                Reason::TeamMismatch,
                format!(
                    "a global object (no spec.team) is accepted only from the namespaces trusted for global objects \
                     ({}); set spec.team or move it",
                    trusted.join(", ")
                ),
            ))
        }
    }
}
