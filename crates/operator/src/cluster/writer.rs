//! The leader's status writer: every object's desired status (from the build, the fleet's
//! merged acknowledgements and the probe table) compared with what it has; only a difference
//! is written, by server-side apply under the field manager `llmroute-operator`, within a
//! fleet-wide budget of writes per second. Transitions are also Events.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use llmroute_api::{ModelDeployment, ResourceStatus, TeamModel};
use llmroute_proto::v1;
use llmroute_snapshot::{Kind, ObjectKey};
use serde_json::json;

use super::conditions::{Acks, Inputs, desired};
use super::source::resource;
use crate::hub::Built;
use crate::registry::TeamCounts;

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "llmroute-operator";

/// A token bucket: `rate` per second, bursts of at most `rate` (at least 1).
#[derive(Debug)]
pub struct Budget {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Budget {
    /// A full bucket.
    pub fn new(rate: f64, now: Instant) -> Self {
        Self { rate, tokens: rate.max(1.0), at: now }
    }

    /// Takes a token if one is there.
    pub fn take(&mut self, now: Instant) -> bool {
        self.tokens =
            (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * self.rate).min(self.rate.max(1.0));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A status to write.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    /// Kind of the object.
    pub kind: Kind,
    /// Its namespace/name.
    pub key: ObjectKey,
    /// The status it should have.
    pub status: ResourceStatus,
    /// The status it has (for Events on transitions).
    pub current: Option<ResourceStatus>,
}

/// The leader's writer.
pub struct StatusWriter {
    client: Client,
    recorder: Recorder,
    budget: Budget,
    threshold: f64,
    /// What this leader wrote, trusted over the (lagging) stores.
    written: HashMap<(Kind, ObjectKey), ResourceStatus>,
}

/// Acknowledgements of every team's current view, computed once per pass: an object's are
/// its team's, a global object's the sum over every team (computing that per object would
/// cost globals x teams version hashes per pass).
pub struct FleetAcks {
    teams: HashMap<String, Acks>,
    all: Acks,
}

impl FleetAcks {
    /// The acknowledgements of `built`'s current versions in `teams`.
    pub fn new(built: &Built, teams: &BTreeMap<String, TeamCounts>) -> Self {
        let mut all = Acks::default();
        let teams = teams
            .iter()
            .map(|(team, counts)| {
                let version = built.compiled.version(team);
                let acks = Acks {
                    connected: counts.connected,
                    acknowledged: counts.acked.get(&version).copied().unwrap_or(0),
                };
                all.connected += acks.connected;
                all.acknowledged += acks.acknowledged;
                (team.clone(), acks)
            })
            .collect();
        Self { teams, all }
    }

    /// The acknowledgements of an object of `team` (`None`: a global object).
    pub fn of(&self, team: Option<&str>) -> Acks {
        match team {
            Some(team) => self.teams.get(team).copied().unwrap_or_default(),
            None => self.all,
        }
    }
}

impl StatusWriter {
    /// A writer for `client`, as `pod`, at most `rate` writes per second.
    pub fn new(client: Client, pod: &str, rate: f64, threshold: f64) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(pod.to_owned()) };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            budget: Budget::new(rate, Instant::now()),
            threshold,
            written: HashMap::new(),
        }
    }

    /// Forgets what was written (leadership was lost: the next term starts from the stores).
    pub fn forget(&mut self) {
        self.written.clear();
    }

    /// Every object whose status differs from the one it should have. `current` reads an
    /// object's status from the stores.
    pub fn pending(
        &self,
        built: &Built,
        teams: &BTreeMap<String, TeamCounts>,
        health: &[v1::HealthEntry],
        current: &dyn Fn(Kind, &ObjectKey) -> Option<ResourceStatus>,
        now: Timestamp,
    ) -> Vec<Pending> {
        let health: HashMap<&str, &v1::HealthEntry> = health.iter().map(|e| (e.deployment_id.as_str(), e)).collect();
        let global = built.compiled.global_digest()[..16].to_owned();
        let fleet = FleetAcks::new(built, teams);
        let mut versions: HashMap<&str, String> = HashMap::new();
        let mut out = Vec::new();
        for d in built.compiled.diagnostics() {
            let known = self.written.get(&(d.kind, d.key.clone())).cloned().or_else(|| current(d.kind, &d.key));
            let version = match &d.team {
                Some(team) => versions.entry(team.as_str()).or_insert_with(|| built.compiled.version(team)).clone(),
                None => global.clone(),
            };
            let id = d.key.to_string();
            let status = desired(&Inputs {
                diagnostic: d,
                snapshot_version: &version,
                acks: fleet.of(d.team.as_deref()),
                health: health.get(id.as_str()).copied(),
                ready_threshold: self.threshold,
                current: known.as_ref(),
                now,
            });
            if known.as_ref() != Some(&status) {
                out.push(Pending { kind: d.kind, key: d.key.clone(), status, current: known });
            }
        }
        // Verdict changes first, then readiness, then counts.
        out.sort_by_key(|p| {
            let changed = |kind: &str| {
                let now = p.status.conditions.iter().find(|c| c.type_ == kind).map(|c| c.status.as_str());
                let before = p
                    .current
                    .as_ref()
                    .and_then(|s| s.conditions.iter().find(|c| c.type_ == kind))
                    .map(|c| c.status.as_str());
                now != before
            };
            (!changed("Accepted"), !changed("Ready"), !changed("Healthy"))
        });
        out
    }

    /// Writes as many of `pending` as the budget allows now; the number written.
    pub async fn write(
        &mut self,
        pending: Vec<Pending>,
        uid: &(dyn Fn(Kind, &ObjectKey) -> Option<String> + Sync),
    ) -> usize {
        let mut written = 0;
        for p in pending {
            if !self.budget.take(Instant::now()) {
                break;
            }
            match self.patch(&p).await {
                Ok(()) => {
                    written += 1;
                    self.events(&p, uid(p.kind, &p.key)).await;
                    self.written.insert((p.kind, p.key.clone()), p.status);
                }
                // Deleted meanwhile, or a conflict: the next pass decides again.
                Err(e) => tracing::debug!(object = %p.key, error = %e, "status write failed"),
            }
        }
        written
    }

    async fn patch(&self, p: &Pending) -> Result<(), kube::Error> {
        let (ar, kind) = match p.kind {
            Kind::ModelDeployment => (resource::<ModelDeployment>(), "ModelDeployment"),
            Kind::TeamModel => (resource::<TeamModel>(), "TeamModel"),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &p.key.namespace, &ar);
        let body = json!({
            "apiVersion": format!("{}/{}", llmroute_api::GROUP, llmroute_api::VERSION),
            "kind": kind,
            "status": p.status,
        });
        api.patch_status(&p.key.name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body)).await?;
        Ok(())
    }

    async fn events(&self, p: &Pending, uid: Option<String>) {
        let kind = match p.kind {
            Kind::ModelDeployment => "ModelDeployment",
            Kind::TeamModel => "TeamModel",
        };
        let reference = ObjectReference {
            api_version: Some(format!("{}/{}", llmroute_api::GROUP, llmroute_api::VERSION)),
            kind: Some(kind.into()),
            name: Some(p.key.name.clone()),
            namespace: Some(p.key.namespace.clone()),
            uid,
            ..Default::default()
        };
        for event in transitions(p) {
            if let Err(e) = self.recorder.publish(&event, &reference).await {
                tracing::debug!(object = %p.key, error = %e, "event not recorded");
            }
        }
    }
}

/// The Events a status change calls for: `Accepted` and `Healthy` flips (Warning when they go
/// false), and a change of rejection reason.
pub fn transitions(p: &Pending) -> Vec<Event> {
    let find = |s: Option<&ResourceStatus>, kind: &str| {
        s.and_then(|s| s.conditions.iter().find(|c| c.type_ == kind)).map(|c| (c.status.clone(), c.reason.clone()))
    };
    let mut events = Vec::new();
    for (kind, action) in [("Accepted", "Compile"), ("Healthy", "Probe")] {
        let (Some(now), before) = (find(Some(&p.status), kind), find(p.current.as_ref(), kind)) else { continue };
        if before.as_ref() == Some(&now) || now.0 == "Unknown" {
            continue;
        }
        let message = p.status.conditions.iter().find(|c| c.type_ == kind).map(|c| c.message.clone());
        events.push(Event {
            type_: if now.0 == "True" { EventType::Normal } else { EventType::Warning },
            reason: now.1.clone(),
            note: message.map(|m| m.chars().take(1024).collect()),
            action: action.into(),
            secondary: None,
        });
    }
    events
}
