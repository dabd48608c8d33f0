//! One test per compile rule, each rejection reason included.

mod support;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use llmroute_api::RoutingConfig;
use llmroute_proto::v1;
use llmroute_snapshot::{Kind, Reason, ResourceStore, compile};
use support::*;

fn store() -> ResourceStore {
    ResourceStore::default()
}

#[test]
fn global_deployments_are_in_every_view_private_ones_only_in_their_team() {
    let mut s = store();
    s.apply_model_deployment(md("g", "gpt-4o"));
    s.apply_model_deployment(private_md("pa", "gpt-4o", "team-a"));
    s.apply_model_deployment(private_md("pb", "gpt-4o", "team-b"));
    let c = compile(&s);
    assert_eq!(ids(&c.view("team-a")), ["llm/g", "llm/pa"]);
    assert_eq!(ids(&c.view("team-b")), ["llm/g", "llm/pb"]);
    assert_eq!(ids(&c.view("nobody")), ["llm/g"]);
    let a = c.view("team-a");
    let kinds: Vec<i32> = a.routes.iter().map(|r| r.kind).collect();
    assert_eq!(kinds, [v1::RouteKind::TeamDeployment as i32, v1::RouteKind::GlobalDeployment as i32]);
    assert_eq!(c.teams().collect::<Vec<_>>(), ["team-a", "team-b"]);
}

#[test]
fn deployments_of_one_model_name_form_one_group() {
    let mut s = store();
    s.apply_model_deployment(md("east", "gpt-4o"));
    s.apply_model_deployment(md("west", "gpt-4o"));
    s.apply_model_deployment(md("any", "openai/*"));
    let view = compile(&s).view("t");
    assert_eq!(route(&view, "gpt-4o").unwrap().deployment_ids, ["llm/east", "llm/west"]);
    let wildcard = route(&view, "openai/*").unwrap();
    assert!(wildcard.pattern);
}

#[test]
fn schema_violation_is_reported_and_excluded_while_the_rest_compiles() {
    let mut s = store();
    let mut bad = md("bad", "gpt-4o");
    bad.spec.order = 0;
    s.apply_model_deployment(bad);
    s.apply_model_deployment(md("good", "gpt-4o"));
    let c = compile(&s);
    let d = diagnostic(&c, Kind::ModelDeployment, "bad");
    assert_eq!(d.reason, Reason::Invalid);
    assert!(d.message.contains("order must be >= 1"), "{}", d.message);
    assert_eq!(ids(&c.view("t")), ["llm/good"]);
    assert!(diagnostic(&c, Kind::ModelDeployment, "good").accepted());
}

#[test]
fn unreadable_object_is_reported_on_its_name() {
    let mut s = store();
    s.apply_model_deployment(md("x", "m"));
    s.apply_unreadable(Kind::ModelDeployment, key("x"), Some(3), "spec.weight: invalid value");
    let c = compile(&s);
    let d = diagnostic(&c, Kind::ModelDeployment, "x");
    assert_eq!((d.reason, d.generation), (Reason::Invalid, Some(3)));
    assert!(c.view("t").deployments.is_empty(), "the unreadable version replaces the old one");
    s.apply_model_deployment(md("x", "m"));
    assert!(diagnostic(&compile(&s), Kind::ModelDeployment, "x").accepted());
}

#[test]
fn missing_secret_or_key_is_secret_not_found() {
    let mut s = store();
    s.apply_model_deployment(with_secret(md("a", "m"), "nope", "api-key"));
    s.apply_model_deployment(with_secret(md("b", "m"), "s", "other"));
    s.apply_secret(&secret("s", &[("api-key", "sk-1")]));
    let c = compile(&s);
    for (name, needle) in [("a", "does not exist"), ("b", "has no key \"other\"")] {
        let d = diagnostic(&c, Kind::ModelDeployment, name);
        assert_eq!(d.reason, Reason::SecretNotFound);
        assert!(d.message.contains(needle), "{}", d.message);
    }
    assert!(c.view("t").deployments.is_empty());
}

#[test]
fn a_secret_value_no_header_can_carry_is_secret_invalid() {
    let mut s = store();
    s.apply_secret(&secret("s", &[("nl", "sk-1\nInjected: yes"), ("ctl", "sk-\u{1}x"), ("ok", "  sk-fine\n")]));
    s.apply_model_deployment(with_secret(md("a", "m"), "s", "nl"));
    s.apply_model_deployment(with_secret(md("b", "m"), "s", "ctl"));
    s.apply_model_deployment(with_secret(md("c", "m"), "s", "ok"));
    let c = compile(&s);
    for name in ["a", "b"] {
        let d = diagnostic(&c, Kind::ModelDeployment, name);
        assert_eq!(d.reason, Reason::SecretInvalid, "{name}");
        assert!(!d.message.contains("sk-"), "the message never holds the value: {}", d.message);
    }
    assert!(diagnostic(&c, Kind::ModelDeployment, "c").accepted(), "surrounding whitespace is trimmed");
    assert_eq!(c.view("t").deployments.iter().map(|d| d.api_key.as_str()).collect::<Vec<_>>(), ["sk-fine"]);
}

#[test]
fn credentials_travel_only_in_their_own_team_view() {
    let mut s = store();
    s.apply_secret(&secret("s", &[("a", "sk-team-a"), ("g", "sk-global")]));
    s.apply_model_deployment(with_secret(private_md("pa", "m", "team-a"), "s", "a"));
    s.apply_model_deployment(with_secret(md("g", "m"), "s", "g"));
    let c = compile(&s);
    let a = c.view("team-a");
    let keys: Vec<&str> = a.deployments.iter().map(|d| d.api_key.as_str()).collect();
    assert_eq!(keys, ["sk-global", "sk-team-a"]);
    let b = format!("{:?}", c.view("team-b").deployments.iter().map(|d| &d.api_key).collect::<Vec<_>>());
    assert!(!b.contains("sk-team-a"));
    let everything = format!("{c:?}");
    assert!(!everything.contains("sk-team-a") && !everything.contains("sk-global"), "debug output redacts");
    assert!(c.diagnostics().iter().all(|d| !d.message.contains("sk-")));
}

#[test]
fn team_model_by_name_selector_and_alias() {
    let mut s = store();
    s.apply_model_deployment(labelled(md("east", "gpt-4o"), "model", "gpt-4o"));
    s.apply_model_deployment(labelled(md("west", "gpt-4o"), "model", "gpt-4o"));
    s.apply_model_deployment(private_md("mine", "gpt-4o", "team-a"));
    s.apply_team_model(tm("by-name", "team-a", "fast", "deployments: [east, mine]"));
    s.apply_team_model(tm("by-label", "team-a", "labelled", "selector: {matchLabels: {model: gpt-4o}}"));
    s.apply_team_model(tm("alias", "team-a", "four", "modelName: gpt-4o"));
    let c = compile(&s);
    let view = c.view("team-a");
    assert_eq!(route(&view, "fast").unwrap().deployment_ids, ["llm/east", "llm/mine"]);
    assert_eq!(route(&view, "labelled").unwrap().deployment_ids, ["llm/east", "llm/west"]);
    assert_eq!(route(&view, "four").unwrap().deployment_ids, ["llm/east", "llm/west"], "alias: global only");
    assert_eq!(route(&view, "fast").unwrap().source, "TeamModel llm/by-name");
    assert!(route(&c.view("team-b"), "fast").is_none(), "TeamModels are private to their team");
}

#[test]
fn dangling_and_rejected_references() {
    let mut s = store();
    let mut broken = md("broken", "m");
    broken.spec.quality_tier = 9;
    s.apply_model_deployment(broken);
    s.apply_team_model(tm("dangling", "team-a", "x", "deployments: [ghost]"));
    s.apply_team_model(tm("on-broken", "team-a", "y", "deployments: [broken]"));
    s.apply_team_model(tm("empty-sel", "team-a", "z", "selector: {matchLabels: {none: none}}"));
    s.apply_team_model(tm("empty-alias", "team-a", "w", "modelName: nothing"));
    s.apply_team_model(tm("bad-op", "team-a", "v", "selector: {matchExpressions: [{key: a, operator: Near}]}"));
    let c = compile(&s);
    let reason = |n| diagnostic(&c, Kind::TeamModel, n).reason;
    assert_eq!(reason("dangling"), Reason::DeploymentNotFound);
    assert_eq!(reason("on-broken"), Reason::DeploymentNotAccepted);
    assert_eq!(reason("empty-sel"), Reason::NoDeployments);
    assert_eq!(reason("empty-alias"), Reason::NoDeployments);
    assert_eq!(reason("bad-op"), Reason::Invalid);
    assert!(c.view("team-a").routes.is_empty());
}

#[test]
fn selecting_another_teams_private_deployment_is_cross_team_reference() {
    let mut s = store();
    s.apply_model_deployment(labelled(private_md("theirs", "m", "team-b"), "model", "m"));
    s.apply_model_deployment(labelled(md("shared", "m"), "model", "m"));
    s.apply_team_model(tm("by-name", "team-a", "x", "deployments: [theirs]"));
    s.apply_team_model(tm("by-label", "team-a", "y", "selector: {matchLabels: {model: m}}"));
    let c = compile(&s);
    for name in ["by-name", "by-label"] {
        let d = diagnostic(&c, Kind::TeamModel, name);
        assert_eq!(d.reason, Reason::CrossTeamReference, "{name}");
        assert!(d.message.contains("team-b"));
    }
    assert!(!ids(&c.view("team-a")).contains(&"llm/theirs"), "never widens access");
}

#[test]
fn oldest_claim_of_a_team_public_name_wins() {
    let mut s = store();
    s.apply_model_deployment(md("d", "m"));
    let ts = |secs| Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap()));
    let mut older = tm("zz-older", "team-a", "x", "modelName: m");
    older.metadata.creation_timestamp = ts(100);
    let mut newer = tm("aa-newer", "team-a", "x", "modelName: m");
    newer.metadata.creation_timestamp = ts(200);
    s.apply_team_model(newer);
    s.apply_team_model(older);
    s.apply_team_model(tm("other-team", "team-b", "x", "modelName: m"));
    let c = compile(&s);
    let d = diagnostic(&c, Kind::TeamModel, "aa-newer");
    assert_eq!(d.reason, Reason::Conflict);
    assert!(d.message.contains("zz-older"), "{}", d.message);
    assert!(diagnostic(&c, Kind::TeamModel, "zz-older").accepted());
    assert!(diagnostic(&c, Kind::TeamModel, "other-team").accepted(), "another team may use the name");
}

#[test]
fn fallbacks_must_name_something_the_team_can_call() {
    let mut s = store();
    s.apply_model_deployment(md("d", "gpt-4o"));
    s.apply_model_deployment(md("w", "openai/*"));
    s.apply_model_deployment(private_md("p", "secret-model", "team-b"));
    s.apply_team_model(with_routing(
        tm("ok", "team-a", "x", "modelName: gpt-4o"),
        "{fallbacks: [gpt-4o, openai/gpt-4.1, y]}",
    ));
    s.apply_team_model(tm("y", "team-a", "y", "modelName: gpt-4o"));
    s.apply_team_model(with_routing(tm("bad", "team-a", "z", "modelName: gpt-4o"), "{fallbacks: [nope]}"));
    s.apply_team_model(with_routing(
        tm("foreign", "team-a", "f", "modelName: gpt-4o"),
        "{contextWindowFallbacks: [secret-model]}",
    ));
    let c = compile(&s);
    assert!(diagnostic(&c, Kind::TeamModel, "ok").accepted());
    for name in ["bad", "foreign"] {
        assert_eq!(diagnostic(&c, Kind::TeamModel, name).reason, Reason::UnknownFallback, "{name}");
    }
}

#[test]
fn team_model_references_are_namespace_local() {
    let mut s = store();
    let mut elsewhere = md("d", "m");
    elsewhere.metadata.namespace = Some("other".into());
    s.apply_model_deployment(elsewhere);
    s.apply_team_model(tm("t", "team-a", "x", "deployments: [d]"));
    assert_eq!(diagnostic(&compile(&s), Kind::TeamModel, "t").reason, Reason::DeploymentNotFound);
}

#[test]
fn route_policies_follow_precedence() {
    let config =
        RoutingConfig::parse("defaults: {maxAttempts: 4}\nmodelGroups: {gpt-4o: {affinity: [session]}}\n").unwrap();
    let mut s = ResourceStore::new(config);
    s.apply_model_deployment(md("d", "gpt-4o"));
    s.apply_model_deployment(md("e", "other"));
    s.apply_team_model(with_routing(tm("t", "team-a", "gpt-4o", "modelName: gpt-4o"), "{maxAttempts: 2}"));
    let view = compile(&s).view("team-a");
    let policy = |n: &str, kind: v1::RouteKind| {
        view.routes.iter().find(|r| r.public_name == n && r.kind == kind as i32).unwrap().policy.clone().unwrap()
    };
    let global = policy("gpt-4o", v1::RouteKind::GlobalDeployment);
    assert_eq!((global.max_attempts, global.affinity.clone()), (4, vec![v1::Affinity::Session as i32]));
    let team = policy("gpt-4o", v1::RouteKind::TeamModel);
    assert_eq!((team.max_attempts, team.affinity), (2, vec![v1::Affinity::Session as i32]));
    assert!(policy("other", v1::RouteKind::GlobalDeployment).affinity.is_empty());
}

#[test]
fn version_depends_on_content_only() {
    let build = |order: &[&str]| {
        let mut s = store();
        for name in order {
            s.apply_model_deployment(md(name, "m"));
        }
        compile(&s)
    };
    let a = build(&["a", "b", "c"]);
    let b = build(&["c", "a", "b"]);
    assert_eq!(a.version("t"), b.version("t"));
    assert_eq!(a.view("t"), b.view("t"));
    assert_ne!(a.version("t"), build(&["a", "b"]).version("t"));
    assert_eq!(a.version("t").len(), 16);
}

#[test]
fn spec_hash_changes_with_the_deployment() {
    let mut s = store();
    s.apply_model_deployment(md("d", "m"));
    let before = compile(&s).view("t").deployments[0].spec_hash.clone();
    let mut changed = md("d", "m");
    changed.spec.weight = 5;
    s.apply_model_deployment(changed);
    assert_ne!(compile(&s).view("t").deployments[0].spec_hash, before);
}

#[test]
fn deleting_removes_everything_of_the_object() {
    let mut s = store();
    s.apply_model_deployment(md("d", "m"));
    s.apply_team_model(tm("t", "team-a", "x", "deployments: [d]"));
    s.delete_model_deployment(&key("d"));
    let c = compile(&s);
    assert!(c.view("team-a").deployments.is_empty());
    assert_eq!(diagnostic(&c, Kind::TeamModel, "t").reason, Reason::DeploymentNotFound);
    s.delete_team_model(&key("t"));
    assert!(compile(&s).diagnostics().is_empty());
}

#[test]
fn a_view_is_its_two_parts_and_their_digests_are_of_the_parts_encoding() {
    use prost::Message;
    let mut s = store();
    s.apply_model_deployment(md("g", "m"));
    s.apply_model_deployment(private_md("p", "own", "t"));
    let c = compile(&s);
    let (global_digest, global) = c.global_part();
    let (own_digest, own) = c.team_part("t");
    let digest =
        |part: &llmroute_proto::v1::Part| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(part.encode_to_vec()));
    assert_eq!((digest(&global), digest(&own)), (global_digest, own_digest));
    assert_eq!(llmroute_proto::view::assemble(c.version("t"), "t", &global, &own), c.view("t"));
    assert!(c.team_part("nobody").1.deployments.is_empty());
}

#[test]
fn a_base_url_port_outside_1_to_65535_is_invalid() {
    let mut s = store();
    for (name, url) in [
        ("big", "http://127.0.0.1:99999/v1"),
        ("zero", "http://h:0"),
        ("v6", "http://[::1]:8080/v1"),
        ("plain", "https://h/v1"),
    ] {
        let mut d = md(name, "m");
        d.spec.upstream.base_url = url.into();
        s.apply_model_deployment(d);
    }
    let c = compile(&s);
    for name in ["big", "zero"] {
        let d = diagnostic(&c, Kind::ModelDeployment, name);
        assert_eq!(d.reason, Reason::Invalid, "{name}");
        assert!(d.message.contains("port"), "{}", d.message);
    }
    assert!(diagnostic(&c, Kind::ModelDeployment, "v6").accepted());
    assert!(diagnostic(&c, Kind::ModelDeployment, "plain").accepted());
}

#[test]
fn an_azure_pattern_whose_names_can_never_be_a_path_segment_is_invalid() {
    let mut s = store();
    for (name, pattern, model) in [("bad", "az/*", None), ("ok", "az/*", Some("*")), ("plain", "azz-*", None)] {
        let mut d = md(name, pattern);
        d.spec.provider = llmroute_api::Provider::Azure;
        d.spec.upstream.api_version = Some("2024-10-21".into());
        d.spec.upstream.model = model.map(str::to_owned);
        s.apply_model_deployment(d);
    }
    let c = compile(&s);
    assert_eq!(diagnostic(&c, Kind::ModelDeployment, "bad").reason, Reason::Invalid);
    assert!(diagnostic(&c, Kind::ModelDeployment, "ok").accepted());
    assert!(diagnostic(&c, Kind::ModelDeployment, "plain").accepted());
}
