//! `/status`: every object's conditions (Accepted, Ready, and Healthy for ModelDeployments),
//! its view version and sidecar counts; every team's version and counts; the config's verdict.
//! Computed from plain values (the build, the registry's counts, the health table).

use std::collections::{BTreeMap, HashMap};

use llmroute_proto::v1;
use serde_json::{Value, json};

use crate::cluster::conditions::{Inputs, desired};
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
    ready_threshold: f64,
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
    // The same conditions a cluster writes to each object's status (one computation for both).
    let now = k8s_openapi::jiff::Timestamp::now();
    let fleet = crate::cluster::writer::FleetAcks::new(built, teams);
    let objects: Vec<Value> = built
        .compiled
        .diagnostics()
        .iter()
        .map(|d| {
            let acks = fleet.of(d.team.as_deref());
            let version = match d.team.as_deref() {
                Some(team) => built.compiled.version(team),
                None => global_version.clone(),
            };
            let id = d.key.to_string();
            let status = desired(&Inputs {
                diagnostic: d,
                snapshot_version: &version,
                acks,
                health: health.get(id.as_str()).copied(),
                ready_threshold,
                current: None,
                now,
            });
            let conditions: Vec<Value> = status
                .conditions
                .iter()
                .map(|c| json!({"type": c.type_, "status": c.status, "reason": c.reason, "message": c.message}))
                .collect();
            json!({
                "kind": d.kind.to_string(), "namespace": d.key.namespace, "name": d.key.name,
                "conditions": conditions, "snapshotVersion": version,
                "sidecars": {"acknowledged": acks.acknowledged, "connected": acks.connected},
            })
        })
        .collect();
    json!({"objects": objects, "teams": team_list, "config": config, "ready": true, "watermark": built.watermark})
}
