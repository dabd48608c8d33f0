//! DESIGN §3: which route serves a name, and the upstream model sent.

mod support;

use llmroute_proto::v1::RouteKind;
use llmroute_router::{InvalidSnapshot, RouteTable};
use support::*;

fn name_of(t: &RouteTable, requested: &str) -> Option<String> {
    t.resolve(requested).map(|r| format!("{:?}:{}", t.route(r.route).kind, t.route(r.route).public_name))
}

#[test]
fn precedence_between_tiers() {
    let ids = ["d"];
    let t = table(
        vec![dep("d", "x", 1, 1)],
        vec![
            route("gpt-4o", RouteKind::TeamModel, &ids, policy()),
            route("gpt-4o", RouteKind::TeamDeployment, &ids, policy()),
            route("gpt-*", RouteKind::TeamModel, &ids, policy()),
            route("gpt-4*", RouteKind::TeamDeployment, &ids, policy()),
            route("gpt-4o", RouteKind::GlobalDeployment, &ids, policy()),
            route("llama", RouteKind::TeamDeployment, &ids, policy()),
            route("llama", RouteKind::GlobalDeployment, &ids, policy()),
            route("*", RouteKind::GlobalDeployment, &ids, policy()),
            route("claude", RouteKind::GlobalDeployment, &ids, policy()),
        ],
    );
    assert_eq!(name_of(&t, "gpt-4o").unwrap(), "TeamModel:gpt-4o");
    assert_eq!(name_of(&t, "llama").unwrap(), "TeamDeployment:llama");
    assert_eq!(name_of(&t, "gpt-4.1").unwrap(), "TeamModel:gpt-*", "TeamModel pattern beats team-private pattern");
    assert_eq!(name_of(&t, "claude").unwrap(), "GlobalDeployment:claude", "global exact beats global pattern");
    assert_eq!(name_of(&t, "anything").unwrap(), "GlobalDeployment:*");
}

#[test]
fn team_pattern_beats_global_exact() {
    let t = table(
        vec![dep("d", "x", 1, 1)],
        vec![route("openai/*", RouteKind::TeamModel, &["d"], policy()), global("openai/gpt-4o", &["d"])],
    );
    assert_eq!(name_of(&t, "openai/gpt-4o").unwrap(), "TeamModel:openai/*");
}

#[test]
fn longest_literal_wins_among_patterns() {
    let t = table(
        vec![dep("d", "x", 1, 1)],
        vec![global("*", &["d"]), global("openai/*", &["d"]), global("openai/gpt-*", &["d"]), global("*-mini", &["d"])],
    );
    assert_eq!(name_of(&t, "openai/gpt-4o").unwrap(), "GlobalDeployment:openai/gpt-*");
    assert_eq!(name_of(&t, "openai/o1").unwrap(), "GlobalDeployment:openai/*");
    assert_eq!(name_of(&t, "openai/gpt-4o-mini").unwrap(), "GlobalDeployment:openai/gpt-*");
    assert_eq!(name_of(&t, "x-mini").unwrap(), "GlobalDeployment:*-mini");
}

#[test]
fn upstream_model_substitution() {
    let mut star = dep("star", "openai/*", 1, 1);
    star.upstream_model = "*".into();
    let mut vendor = dep("vendor", "openai/*", 1, 1);
    vendor.upstream_model = "vendor-*-v1".into();
    let mut fixed = dep("fixed", "m", 1, 1);
    fixed.upstream_model = "gpt-4o-2024-08-06".into();
    let plain = dep("plain", "m", 1, 1);
    let t = table(
        vec![star, vendor, fixed, plain],
        vec![
            route("openai/*", RouteKind::TeamModel, &["star", "vendor"], policy()),
            route("alias", RouteKind::TeamModel, &["star"], policy()),
            global("m", &["fixed", "plain"]),
        ],
    );
    let model = |requested: &str, id: &str| {
        let r = t.resolve(requested).unwrap();
        t.upstream_model(t.deployment_index(id).unwrap(), requested, &r)
    };
    assert_eq!(model("openai/gpt-4o", "star"), "gpt-4o");
    assert_eq!(model("openai/gpt-4o", "vendor"), "vendor-gpt-4o-v1");
    assert_eq!(model("m", "fixed"), "gpt-4o-2024-08-06");
    assert_eq!(model("m", "plain"), "m", "default: the requested name");
    assert_eq!(model("alias", "star"), "alias", "exact route, no capture: the requested name");
}

#[test]
fn invalid_snapshots_are_rejected_whole() {
    use llmroute_proto::v1;
    let bad = |deployments: Vec<v1::Deployment>, routes: Vec<v1::Route>| {
        RouteTable::try_from(&v1::Snapshot { deployments, routes, ..Default::default() }).unwrap_err()
    };
    assert!(matches!(bad(vec![], vec![global("m", &["ghost"])]), InvalidSnapshot::UnknownDeployment { .. }));
    assert!(matches!(
        bad(vec![dep("a", "m", 1, 1), dep("a", "m", 1, 1)], vec![]),
        InvalidSnapshot::DuplicateDeployment(_)
    ));
    assert!(matches!(bad(vec![], vec![global("m", &[])]), InvalidSnapshot::EmptyRoute(_)));
    // Without `degrade`, a deployment of a provider this build does not know is refused.
    let mut d = dep("a", "m", 1, 1);
    d.provider = 42;
    assert!(matches!(bad(vec![d], vec![]), InvalidSnapshot::UnknownEnum(..)));
    assert!(matches!(bad(vec![dep("a", "m", 0, 1)], vec![]), InvalidSnapshot::Deployment(..)));
}

#[test]
fn models_list_names_every_callable_route() {
    let t = table(
        vec![dep("d", "x", 1, 1)],
        vec![route("smart", RouteKind::TeamModel, &["d"], policy()), global("gpt-4o", &["d"])],
    );
    assert_eq!(t.public_names().collect::<Vec<_>>(), ["smart", "gpt-4o"]);
}
