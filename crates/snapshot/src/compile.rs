//! The compile: resource store -> shared global part + per-team parts + diagnostics.

use std::collections::{BTreeMap, BTreeSet};

use llmroute_api::TeamModel;
use llmroute_proto::{NamePattern, v1};

use crate::deployment::compile_deployment;
use crate::store::{ResourceStore, age_key, team_of};
use crate::team_model::{DeploymentIndex, resolve_targets};
use crate::tenancy;
use crate::view::{Compiled, Part};
use crate::{Diagnostic, Kind, ObjectKey, Reason, resolve_policy};

/// Compiles every view and every object's verdict. Pure; the input order never matters.
pub fn compile(store: &ResourceStore) -> Compiled {
    let mut diagnostics = unreadable_diagnostics(store);
    let mut index = DeploymentIndex { all: BTreeMap::new(), global_by_model: BTreeMap::new() };
    let mut global = Vec::new();
    let mut private: BTreeMap<&str, Vec<v1::Deployment>> = BTreeMap::new();
    // In a cluster only labelled Secrets are watched: a missing one may just lack the label.
    let secret_hint = store.tenancy.as_ref().map(|_| {
        "in a cluster only Secrets labelled llmroute.dev/credentials=true are read: add the label if the Secret exists"
    });
    for (key, admitted) in &store.deployments {
        let md = &admitted.object;
        let team = team_of(md);
        let result = admitted
            .schema
            .clone()
            .map_err(|m| (Reason::Invalid, m))
            .and_then(|()| tenancy::check(store.tenancy.as_ref(), key, team))
            .and_then(|()| compile_deployment(key, md, &store.secrets, secret_hint));
        let mut diagnostic = verdict(Kind::ModelDeployment, key, md.metadata.generation, team, result.as_ref().err());
        if result.is_ok() {
            diagnostic.degraded = md
                .spec
                .upstream
                .api_key_secret_ref
                .as_ref()
                .and_then(|r| store.lingering.get(&ObjectKey::new(&key.namespace, &r.name)).cloned());
        }
        diagnostics.push(diagnostic);
        index.all.insert(key, (admitted, result.is_ok()));
        let Ok(deployment) = result else { continue };
        match team {
            None => {
                index.global_by_model.entry(md.spec.model_name.as_str()).or_default().push(key);
                global.push(deployment);
            }
            Some(team) => private.entry(team).or_default().push(deployment),
        }
    }
    let global_routes = group_routes(&global, v1::RouteKind::GlobalDeployment, store);
    let team_models = accept_team_models(store, &index, &private, &mut diagnostics);
    let mut teams: BTreeMap<String, Part> = BTreeMap::new();
    let team_names: BTreeSet<&str> = private.keys().copied().chain(team_models.keys().copied()).collect();
    for team in team_names {
        let deployments = private.remove(team).unwrap_or_default();
        let mut routes = team_models.get(team).cloned().unwrap_or_default();
        routes.extend(group_routes(&deployments, v1::RouteKind::TeamDeployment, store));
        teams.insert(team.to_owned(), Part::new(deployments, routes));
    }
    diagnostics.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
    Compiled::new(Part::new(global, global_routes), teams, diagnostics)
}

fn verdict(
    kind: Kind,
    key: &ObjectKey,
    generation: Option<i64>,
    team: Option<&str>,
    error: Option<&(Reason, String)>,
) -> Diagnostic {
    let (reason, message) = match error {
        Some((reason, message)) => (*reason, message.clone()),
        None => (Reason::Accepted, format!("{kind} is valid and included in the routing snapshot")),
    };
    Diagnostic { kind, key: key.clone(), generation, team: team.map(str::to_owned), reason, message, degraded: None }
}

fn unreadable_diagnostics(store: &ResourceStore) -> Vec<Diagnostic> {
    store
        .unreadable
        .iter()
        .map(|((kind, key), u)| {
            let error = (Reason::Invalid, u.message.clone());
            verdict(*kind, key, u.generation, None, Some(&error))
        })
        .collect()
}

/// One route per distinct modelName among `deployments` (already sorted by id).
fn group_routes(deployments: &[v1::Deployment], kind: v1::RouteKind, store: &ResourceStore) -> Vec<v1::Route> {
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for d in deployments {
        groups.entry(d.model_name.as_str()).or_default().push(d.id.clone());
    }
    groups
        .into_iter()
        .map(|(name, deployment_ids)| v1::Route {
            public_name: name.to_owned(),
            kind: kind as i32,
            pattern: name.contains('*'),
            deployment_ids,
            policy: Some(resolve_policy(None, &store.config, name)),
            source: String::new(),
        })
        .collect()
}

/// A TeamModel whose targets resolved: its key, the object and the deployment ids.
type Claim<'a> = (&'a ObjectKey, &'a TeamModel, Vec<String>);

/// Resolves every TeamModel; returns the accepted routes by team and records every verdict.
fn accept_team_models<'s>(
    store: &'s ResourceStore,
    index: &DeploymentIndex<'_>,
    private: &BTreeMap<&str, Vec<v1::Deployment>>,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<&'s str, Vec<v1::Route>> {
    // Targets first; among the resolvable, the oldest claim of a team/public name wins.
    let mut resolved: BTreeMap<(&str, &str), Vec<Claim<'_>>> = BTreeMap::new();
    for (key, admitted) in &store.team_models {
        let tm = &admitted.object;
        let targets = admitted
            .schema
            .clone()
            .map_err(|m| (Reason::Invalid, m))
            .and_then(|()| tenancy::check(store.tenancy.as_ref(), key, Some(&tm.spec.team)))
            .and_then(|()| resolve_targets(key, tm, index));
        match targets {
            Ok(ids) => resolved.entry((&tm.spec.team, &tm.spec.public_name)).or_default().push((key, tm, ids)),
            Err(e) => diagnostics.push(tm_verdict(key, tm, Some(&e))),
        }
    }
    let mut winners = Vec::new();
    for ((team, name), mut claims) in resolved {
        claims.sort_by_key(|claim| age_key(claim.1));
        let mut claims = claims.into_iter();
        let Some(winner) = claims.next() else { continue };
        for (key, tm, _) in claims {
            let e = (Reason::Conflict, format!("TeamModel {} already claims {name:?} for team {team:?}", winner.0));
            diagnostics.push(tm_verdict(key, tm, Some(&e)));
        }
        winners.push(winner);
    }
    let callable = callable_names(&winners, private);
    let global: Vec<&str> = index.global_by_model.keys().copied().collect();
    let mut routes: BTreeMap<&str, Vec<v1::Route>> = BTreeMap::new();
    for (key, tm, ids) in winners {
        let team = tm.spec.team.as_str();
        if let Some(e) = unknown_fallback(tm, &global, callable.get(team)) {
            diagnostics.push(tm_verdict(key, tm, Some(&e)));
            continue;
        }
        diagnostics.push(tm_verdict(key, tm, None));
        routes.entry(team).or_default().push(v1::Route {
            public_name: tm.spec.public_name.clone(),
            kind: v1::RouteKind::TeamModel as i32,
            pattern: tm.spec.public_name.contains('*'),
            deployment_ids: ids,
            policy: Some(resolve_policy(tm.spec.routing.as_ref(), &store.config, &tm.spec.public_name)),
            source: format!("TeamModel {key}"),
        });
    }
    routes
}

fn tm_verdict(key: &ObjectKey, tm: &TeamModel, error: Option<&(Reason, String)>) -> Diagnostic {
    verdict(Kind::TeamModel, key, tm.metadata.generation, Some(&tm.spec.team), error)
}

/// Per team: the public names (or patterns) only its view can resolve. The global names are
/// shared by every team and kept once, so the work stays linear in objects, not teams x globals.
fn callable_names<'a>(
    winners: &[Claim<'a>],
    private: &'a BTreeMap<&'a str, Vec<v1::Deployment>>,
) -> BTreeMap<&'a str, Vec<&'a str>> {
    let mut names: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (_, tm, _) in winners {
        names.entry(&tm.spec.team).or_default().push(&tm.spec.public_name);
    }
    for (team, deployments) in private {
        names.entry(team).or_default().extend(deployments.iter().map(|d| d.model_name.as_str()));
    }
    names
}

fn unknown_fallback(tm: &TeamModel, global: &[&str], own: Option<&Vec<&str>>) -> Option<(Reason, String)> {
    let routing = tm.spec.routing.as_ref()?;
    let names = routing.fallbacks.iter().flatten().chain(routing.context_window_fallbacks.iter().flatten());
    let own = own.map(Vec::as_slice).unwrap_or_default();
    for name in names {
        if !global.iter().chain(own).any(|c| NamePattern::parse(c).matches(name)) {
            let message = format!("fallback {name:?} names no model team {:?} can call", tm.spec.team);
            return Some((Reason::UnknownFallback, message));
        }
    }
    None
}
