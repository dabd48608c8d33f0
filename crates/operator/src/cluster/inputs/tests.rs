use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use llmroute_snapshot::{Kind, Reason, compile};

use super::*;

fn object(kind: &str, ns: &str, name: &str, spec: serde_json::Value) -> Arc<DynamicObject> {
    let value = serde_json::json!({
        "apiVersion": "llmroute.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": ns, "generation": 1}, "spec": spec,
    });
    Arc::new(serde_json::from_value(value).unwrap())
}

fn secret(ns: &str, name: &str, value: &str) -> Arc<Secret> {
    Arc::new(Secret {
        metadata: ObjectMeta { name: Some(name.into()), namespace: Some(ns.into()), ..Default::default() },
        data: Some(BTreeMap::from([("api-key".to_string(), ByteString(value.as_bytes().to_vec()))])),
        ..Default::default()
    })
}

fn namespace(name: &str, team: Option<&str>) -> Arc<PartialObjectMeta<Namespace>> {
    let mut meta = PartialObjectMeta::<Namespace>::default();
    meta.metadata.name = Some(name.into());
    meta.metadata.labels = team.map(|t| BTreeMap::from([(TEAM_LABEL.to_string(), t.to_string())]));
    Arc::new(meta)
}

fn settings(grace: u64) -> Settings {
    Settings {
        global_namespaces: BTreeSet::from(["llmroute".to_string()]),
        config_name: "llmroute".into(),
        namespace: "llmroute".into(),
        grace: Duration::from_secs(grace),
    }
}

fn md(ns: &str, name: &str, team: Option<&str>) -> Arc<DynamicObject> {
    let mut spec = serde_json::json!({"modelName": "gpt-4o", "upstream": {"baseUrl": "http://127.0.0.1:9/v1",
        "apiKeySecretRef": {"name": "keys", "key": "api-key"}}});
    if let Some(team) = team {
        spec["team"] = team.into();
    }
    object("ModelDeployment", ns, name, spec)
}

#[test]
fn secret_rotation_changes_the_version_and_a_brief_deletion_keeps_the_route() {
    let deployments = [md("llmroute", "gpt", None)];
    let namespaces = [namespace("llmroute", None)];
    let mut assembler = Assembler::default();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let mut build = |secrets: &[Arc<Secret>], at: SystemTime| {
        let objects =
            Objects { deployments: &deployments, team_models: &[], secrets, namespaces: &namespaces, configs: &[] };
        let a = assembler.assemble(&objects, &settings(60), at);
        (compile(&a.store), a.next_expiry)
    };
    let (first, _) = build(&[secret("llmroute", "keys", "sk-1")], t0);
    assert!(first.diagnostics()[0].accepted());
    let (rotated, _) = build(&[secret("llmroute", "keys", "sk-2")], t0);
    assert_ne!(rotated.version("any"), first.version("any"), "a rotated key is a new view");
    // Deleted (an external-secrets refresh): still served, Degraded, with a rebuild due.
    let (during, expiry) = build(&[], t0 + Duration::from_secs(1));
    let d = &during.diagnostics()[0];
    assert!(d.accepted() && d.degraded.as_deref().is_some_and(|n| n.contains("llmroute/keys")), "{d:?}");
    assert_eq!(during.version("any"), rotated.version("any"), "same content while it lingers");
    assert_eq!(expiry, Some(t0 + Duration::from_secs(61)));
    // Back in time: no longer degraded.
    let (back, expiry) = build(&[secret("llmroute", "keys", "sk-2")], t0 + Duration::from_secs(5));
    assert_eq!((back.diagnostics()[0].degraded.clone(), expiry), (None, None));
    // Gone for good: after the grace period the deployment leaves the views.
    build(&[], t0 + Duration::from_secs(6));
    let (after, expiry) = build(&[], t0 + Duration::from_secs(67));
    assert_eq!(after.diagnostics()[0].reason, Reason::SecretNotFound);
    assert_eq!(expiry, None);
}

#[test]
fn tenancy_comes_from_namespace_labels_and_misfits_are_reported_on_themselves() {
    let deployments = [
        md("team-a", "a-gpt", Some("team-a")),
        md("team-b", "b-claims-a", Some("team-a")),
        md("team-a", "global-from-team-ns", None),
        object("ModelDeployment", "team-a", "misfit", serde_json::json!({"modelName": 5})),
    ];
    let namespaces = [namespace("team-a", Some("team-a")), namespace("team-b", Some("team-b"))];
    let secrets = [secret("team-a", "keys", "sk"), secret("team-b", "keys", "sk")];
    let objects = Objects {
        deployments: &deployments,
        team_models: &[],
        secrets: &secrets,
        namespaces: &namespaces,
        configs: &[],
    };
    let a = Assembler::default().assemble(&objects, &settings(60), SystemTime::now());
    let c = compile(&a.store);
    let reason = |ns: &str, name: &str| {
        c.diagnostics()
            .iter()
            .find(|d| d.kind == Kind::ModelDeployment && d.key == ObjectKey::new(ns, name))
            .unwrap()
            .reason
    };
    assert_eq!(reason("team-a", "a-gpt"), Reason::Accepted);
    assert_eq!(reason("team-b", "b-claims-a"), Reason::TeamMismatch);
    assert_eq!(reason("team-a", "global-from-team-ns"), Reason::TeamMismatch);
    assert_eq!(reason("team-a", "misfit"), Reason::Invalid);
}

#[test]
fn a_broken_routing_config_keeps_the_last_good_one() {
    let good = object("RoutingConfig", "llmroute", "llmroute", serde_json::json!({"defaults": {"maxAttempts": 4}}));
    let bad = object("RoutingConfig", "llmroute", "llmroute", serde_json::json!({"defaults": {"maxAttempts": 400}}));
    let typo = object("RoutingConfig", "llmroute", "llmroute", serde_json::json!({"defualts": {}}));
    let elsewhere = object("RoutingConfig", "team-a", "llmroute", serde_json::json!({"defaults": {"maxAttempts": 2}}));
    let mut assembler = Assembler::default();
    let mut run = |configs: &[Arc<DynamicObject>]| {
        let objects = Objects { deployments: &[], team_models: &[], secrets: &[], namespaces: &[], configs };
        let a = assembler.assemble(&objects, &settings(0), SystemTime::now());
        (a.store.config().defaults.max_attempts, a.config_problem)
    };
    assert_eq!(run(&[good.clone(), elsewhere]).0, Some(4), "only the operator's namespace counts");
    let (kept, problem) = run(&[bad]);
    assert_eq!(kept, Some(4));
    assert!(problem.unwrap().contains("maxAttempts"));
    let (kept, problem) = run(&[typo]);
    assert_eq!(kept, Some(4));
    assert!(problem.unwrap().contains("defualts"));
    assert_eq!(run(&[]).0, None, "deleted: built-in defaults");
}
