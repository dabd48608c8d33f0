//! Tenancy (cluster mode): a team's objects come only from its namespaces, global objects only
//! from trusted namespaces; a Secret that is gone lingers with `Degraded` for its grace period.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use llmroute_snapshot::{Kind, Reason, ResourceStore, Tenancy, compile};
use support::*;

fn tenancy(ns_team: &[(&str, &str)], global: &[&str]) -> Option<Tenancy> {
    Some(Tenancy {
        teams: ns_team.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect::<BTreeMap<_, _>>(),
        global_namespaces: global.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
    })
}

#[test]
fn a_team_object_from_another_teams_namespace_is_team_mismatch_and_excluded() {
    let mut store = ResourceStore::default();
    store.apply_model_deployment(private_md("a-gpt", "gpt-4o", "team-a"));
    store.apply_team_model(tm("a-chat", "team-a", "chat", "deployments: [a-gpt]"));
    // The namespace belongs to team-b: neither object may speak for team-a.
    store.set_tenancy(tenancy(&[(NS, "team-b")], &[]));
    let c = compile(&store);
    let d = diagnostic(&c, Kind::ModelDeployment, "a-gpt");
    assert_eq!(d.reason, Reason::TeamMismatch);
    assert!(d.message.contains("belongs to team \"team-b\""), "{}", d.message);
    assert_eq!(diagnostic(&c, Kind::TeamModel, "a-chat").reason, Reason::TeamMismatch);
    assert!(c.view("team-a").routes.is_empty() && c.view("team-a").deployments.is_empty());

    // Bound to team-a, the same objects are accepted.
    store.set_tenancy(tenancy(&[(NS, "team-a")], &[]));
    let c = compile(&store);
    assert!(diagnostic(&c, Kind::TeamModel, "a-chat").accepted());
    assert_eq!(ids(&c.view("team-a")), vec!["llm/a-gpt"]);
}

#[test]
fn an_unlabelled_namespace_cannot_declare_a_team() {
    let mut store = ResourceStore::default();
    store.apply_team_model(tm("chat", "team-a", "chat", "modelName: gpt-4o"));
    store.set_tenancy(tenancy(&[], &[]));
    let d = compile(&store).diagnostics()[0].clone();
    assert_eq!(d.reason, Reason::TeamMismatch);
    assert!(d.message.contains("has no llmroute.dev/team label"), "{}", d.message);
}

#[test]
fn global_objects_only_from_trusted_namespaces() {
    let mut store = ResourceStore::default();
    store.apply_model_deployment(md("gpt", "gpt-4o"));
    store.set_tenancy(tenancy(&[(NS, "team-a")], &["llmroute"]));
    let c = compile(&store);
    let d = diagnostic(&c, Kind::ModelDeployment, "gpt");
    assert_eq!(d.reason, Reason::TeamMismatch);
    assert!(d.message.contains("(llmroute)"), "{}", d.message);
    assert!(c.view("").deployments.is_empty());
    store.set_tenancy(tenancy(&[], &[NS]));
    assert!(compile(&store).diagnostics()[0].accepted());
}

#[test]
fn manifests_mode_has_no_tenancy_rule() {
    let mut store = ResourceStore::default();
    store.apply_model_deployment(private_md("a-gpt", "gpt-4o", "team-a"));
    store.apply_model_deployment(md("gpt", "gpt-4o"));
    assert!(compile(&store).diagnostics().iter().all(|d| d.accepted()));
}

#[test]
fn a_lingering_secret_keeps_the_deployment_degraded_until_it_is_dropped_or_back() {
    let mut store = ResourceStore::default();
    store.apply_model_deployment(with_secret(md("gpt", "gpt-4o"), "keys", "api-key"));
    let s = secret("keys", &[("api-key", "sk-1")]);
    store.apply_secret(&s);
    let before = compile(&store);
    assert_eq!(diagnostic(&before, Kind::ModelDeployment, "gpt").degraded, None);

    store.apply_lingering_secret(&s, "Secret llm/keys was deleted; kept until 12:00:00");
    let during = compile(&store);
    let d = diagnostic(&during, Kind::ModelDeployment, "gpt");
    assert!(d.accepted());
    assert_eq!(d.degraded.as_deref(), Some("Secret llm/keys was deleted; kept until 12:00:00"));
    assert_eq!(ids(&during.view("")), vec!["llm/gpt"], "still routed during the grace period");
    assert_eq!(during.version(""), before.version(""), "same content, same version");

    // Recreated: no longer degraded.
    store.apply_secret(&s);
    assert_eq!(diagnostic(&compile(&store), Kind::ModelDeployment, "gpt").degraded, None);
    // Grace period over: gone.
    store.apply_lingering_secret(&s, "x");
    store.delete_secret(&key("keys"));
    assert_eq!(diagnostic(&compile(&store), Kind::ModelDeployment, "gpt").reason, Reason::SecretNotFound);
}
