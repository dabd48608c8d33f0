//! `/status`: every object's conditions (Accepted, Ready, and Healthy for ModelDeployments),
//! its view version and sidecar counts; every team's version and counts; the config's verdict.
//! Computed from plain values (the build, the registry's counts, the health table).

use std::collections::{BTreeMap, HashMap};

use llmroute_proto::v1;
use llmroute_snapshot::Kind;
use serde_json::{Value, json};

use crate::hub::Built;
use crate::registry::TeamCounts;

/// A team's current version and how many of its streams acknowledged it.
fn team_state(built: &Built, team: &str, counts: Option<&TeamCounts>) -> (String, u64, u64) {
    let version = built.view(team).version;
    let connected = counts.map_or(0, |c| c.connected);
    let acked = counts.and_then(|c| c.acked.get(&version)).copied().unwrap_or(0);
    (version, connected, acked)
}

/// The `/status` document.
pub fn status(
    built: Option<&Built>,
    teams: &BTreeMap<String, TeamCounts>,
    health: &[v1::HealthEntry],
    config: Option<String>,
) -> Value {
    let config =
        json!({"accepted": config.is_none(), "message": config.unwrap_or_else(|| "routing config accepted".into())});
    let Some(built) = built else {
        return json!({"objects": [], "teams": [], "config": config, "ready": false});
    };
    let global_version = built.compiled.global_digest()[..16].to_owned();
    let health: HashMap<&str, &v1::HealthEntry> = health.iter().map(|e| (e.deployment_id.as_str(), e)).collect();
    let team_list: Vec<Value> = teams
        .iter()
        .map(|(team, counts)| {
            let (version, connected, acknowledged) = team_state(built, team, Some(counts));
            let nacks: Vec<Value> =
                counts.nacks.iter().map(|(pod, v, e)| json!({"pod": pod, "version": v, "error": e})).collect();
            // Every stream is sent what its revision applies; v1 is the only revision, so
            // nothing is degraded yet, and the counts show any skew as it appears.
            let protocols: serde_json::Map<String, Value> = counts
                .protocols
                .iter()
                .map(|(p, n)| {
                    (
                        v1::Protocol::try_from(*p).map_or(format!("unknown-{p}"), |p| p.as_str_name().to_owned()),
                        json!(n),
                    )
                })
                .collect();
            json!({"team": team, "version": version, "connected": connected, "acknowledged": acknowledged,
                   "nacks": nacks, "protocols": protocols, "degraded": []})
        })
        .collect();
    let objects: Vec<Value> = built
        .compiled
        .diagnostics()
        .iter()
        .map(|d| {
            // A team's object is in that team's view; a global one in every connected team's.
            let (version, connected, acknowledged) = match &d.team {
                Some(team) => team_state(built, team, teams.get(team)),
                None => teams.iter().fold((String::new(), 0, 0), |(_, c, a), (team, counts)| {
                    let (_, connected, acked) = team_state(built, team, Some(counts));
                    (String::new(), c + connected, a + acked)
                }),
            };
            let version = if d.team.is_none() { global_version.clone() } else { version };
            let accepted = d.accepted();
            let ready = accepted && connected > 0 && acknowledged == connected;
            let mut conditions = vec![
                condition("Accepted", accepted, d.reason.as_str(), &d.message),
                condition(
                    "Ready",
                    ready,
                    if ready { "Acknowledged" } else if !accepted { "NotAccepted" } else if connected == 0 { "NoSidecars" } else { "Pending" },
                    &format!("{acknowledged} of {connected} connected sidecars acknowledged the view holding it"),
                ),
            ];
            if d.kind == Kind::ModelDeployment {
                let id = d.key.to_string();
                conditions.push(match health.get(id.as_str()) {
                    Some(e) => condition("Healthy", e.healthy, if e.healthy { "ProbeSucceeded" } else { "ProbeFailed" }, &e.message),
                    None => json!({"type": "Healthy", "status": "Unknown", "reason": "NotProbed", "message": "no probe result"}),
                });
            }
            json!({
                "kind": d.kind.to_string(), "namespace": d.key.namespace, "name": d.key.name,
                "conditions": conditions, "snapshotVersion": version,
                "sidecars": {"acknowledged": acknowledged, "connected": connected},
            })
        })
        .collect();
    json!({"objects": objects, "teams": team_list, "config": config, "ready": true, "watermark": built.watermark})
}

fn condition(kind: &str, ok: bool, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": if ok { "True" } else { "False" }, "reason": reason, "message": message})
}
