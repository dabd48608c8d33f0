use super::*;
use crate::{ModelDeploymentSpec, TeamModelSpec};

fn md(yaml: &str) -> ModelDeployment {
    let spec: ModelDeploymentSpec = serde_yaml::from_str(yaml).expect("test spec parses");
    ModelDeployment::new("d", spec)
}

fn tm(yaml: &str) -> TeamModel {
    let spec: TeamModelSpec = serde_yaml::from_str(yaml).expect("test spec parses");
    TeamModel::new("t", spec)
}

fn messages(result: Result<(), Vec<Violation>>) -> Vec<String> {
    result.err().unwrap_or_default().into_iter().map(|v| v.to_string()).collect()
}

const MD_OK: &str = "modelName: gpt-4o\nupstream: {baseUrl: 'https://api.openai.com/v1'}\n";

#[test]
fn minimal_model_deployment_is_valid_with_defaults() {
    let d = md(MD_OK);
    assert_eq!(d.spec.weight, 1);
    assert_eq!(d.spec.order, 1);
    assert_eq!(d.spec.quality_tier, 3);
    assert_eq!(validate_model_deployment(&d), Ok(()));
}

#[test]
fn order_zero_is_rejected() {
    let m = messages(validate_model_deployment(&md(&format!("{MD_OK}order: 0\n"))));
    assert!(m.iter().any(|m| m.contains("order must be >= 1")), "{m:?}");
}

#[test]
fn negative_weight_does_not_parse() {
    let err = serde_yaml::from_str::<ModelDeploymentSpec>(&format!("{MD_OK}weight: -1\n"));
    assert!(err.is_err());
}

#[test]
fn quality_tier_outside_one_to_five_is_rejected() {
    for tier in [0, 6] {
        let m = messages(validate_model_deployment(&md(&format!("{MD_OK}qualityTier: {tier}\n"))));
        assert!(m.iter().any(|m| m.contains("qualityTier")), "{tier}: {m:?}");
    }
    assert_eq!(validate_model_deployment(&md(&format!("{MD_OK}qualityTier: 5\n"))), Ok(()));
}

#[test]
fn model_name_with_two_stars_is_rejected() {
    let d = md("modelName: 'a/*/*'\nupstream: {baseUrl: 'http://x'}\n");
    let m = messages(validate_model_deployment(&d));
    assert!(m.iter().any(|m| m.contains("at most one '*'")), "{m:?}");
    let d = md("modelName: 'openai/*'\nupstream: {baseUrl: 'http://x', model: '*'}\n");
    assert_eq!(validate_model_deployment(&d), Ok(()));
}

#[test]
fn upstream_model_with_two_stars_is_rejected() {
    let d = md("modelName: 'a/*'\nupstream: {baseUrl: 'http://x', model: '**'}\n");
    let m = messages(validate_model_deployment(&d));
    assert!(m.iter().any(|m| m.contains("upstream.model")), "{m:?}");
}

#[test]
fn base_url_must_be_http_or_https() {
    for bad in ["ftp://host/v1", "api.openai.com/v1", "http://", "https:///v1"] {
        let d = md(&format!("modelName: m\nupstream: {{baseUrl: '{bad}'}}\n"));
        let m = messages(validate_model_deployment(&d));
        assert!(m.iter().any(|m| m.contains("baseUrl")), "{bad}: {m:?}");
    }
    for good in ["http://127.0.0.1:8080", "https://x.openai.azure.com/openai?x=1"] {
        let d = md(&format!("modelName: m\nupstream: {{baseUrl: '{good}'}}\n"));
        assert_eq!(validate_model_deployment(&d), Ok(()), "{good}");
    }
}

#[test]
fn azure_requires_api_version() {
    let d = md("modelName: m\nprovider: azure\nupstream: {baseUrl: 'https://x'}\n");
    let m = messages(validate_model_deployment(&d));
    assert!(m.iter().any(|m| m.contains("apiVersion")), "{m:?}");
    let d = md("modelName: m\nprovider: azure\nupstream: {baseUrl: 'https://x', apiVersion: '2024-10-21'}\n");
    assert_eq!(validate_model_deployment(&d), Ok(()));
}

#[test]
fn team_must_be_a_dns_label() {
    let m = messages(validate_model_deployment(&md(&format!("{MD_OK}team: Team_A\n"))));
    assert!(m.iter().any(|m| m.contains("DNS label")), "{m:?}");
}

#[test]
fn cost_must_be_decimal_strings() {
    let d = md(&format!("{MD_OK}cost: {{inputPerMillionTokens: 'cheap', outputPerMillionTokens: '10.00'}}\n"));
    let m = messages(validate_model_deployment(&d));
    assert!(m.iter().any(|m| m.contains("inputPerMillionTokens")), "{m:?}");
}

#[test]
fn health_check_interval_must_be_positive() {
    let d = md(&format!("{MD_OK}healthCheck: {{mode: models, intervalSeconds: 0}}\n"));
    let m = messages(validate_model_deployment(&d));
    assert!(m.iter().any(|m| m.contains("intervalSeconds")), "{m:?}");
}

#[test]
fn unknown_enum_values_do_not_parse() {
    assert!(serde_yaml::from_str::<ModelDeploymentSpec>(&format!("{MD_OK}provider: bedrock\n")).is_err());
    let bad_affinity = "team: a\npublicName: m\nmodelName: m\nrouting: {affinity: [cookie]}\n";
    let err = serde_yaml::from_str::<TeamModelSpec>(bad_affinity).unwrap_err().to_string();
    assert!(err.contains("unknown variant `cookie`"), "{err}");
}

#[test]
fn team_model_needs_exactly_one_target() {
    let none = "team: a\npublicName: m\n";
    let two = "team: a\npublicName: m\nmodelName: m\ndeployments: [x]\n";
    for yaml in [none, two] {
        let m = messages(validate_team_model(&tm(yaml)));
        assert!(m.iter().any(|m| m.contains("exactly one target")), "{yaml}: {m:?}");
    }
    for yaml in [
        "team: a\npublicName: m\nmodelName: m\n",
        "team: a\npublicName: m\ndeployments: [x]\n",
        "team: a\npublicName: m\nselector: {matchLabels: {model: m}}\n",
    ] {
        assert_eq!(validate_team_model(&tm(yaml)), Ok(()), "{yaml}");
    }
}

#[test]
fn team_model_public_name_pattern_has_at_most_one_star() {
    let m = messages(validate_team_model(&tm("team: a\npublicName: '*/*'\nmodelName: m\n")));
    assert!(m.iter().any(|m| m.contains("publicName may hold at most one")), "{m:?}");
}

#[test]
fn list_sizes_are_bounded() {
    let many: Vec<String> = (0..65).map(|i| format!("d{i}")).collect();
    let yaml = format!("team: a\npublicName: m\ndeployments: [{}]\n", many.join(","));
    let m = messages(validate_team_model(&tm(&yaml)));
    assert!(m.iter().any(|m| m.contains("at most 64 items")), "{m:?}");
    let m = messages(validate_team_model(&tm("team: a\npublicName: m\ndeployments: []\n")));
    assert!(!m.is_empty());
}

#[test]
fn routing_policy_rules_apply_inside_team_model() {
    let yaml = "team: a\npublicName: m\nmodelName: m\nrouting: {maxAttempts: 0, cooldown: {allowedFails: 10001}}\n";
    let m = messages(validate_team_model(&tm(yaml)));
    assert!(m.iter().any(|m| m.contains("maxAttempts")), "{m:?}");
    assert!(m.iter().any(|m| m.contains("allowedFails")), "{m:?}");
}

#[test]
fn base_url_with_userinfo_is_rejected() {
    let d = md("modelName: m\nupstream: {baseUrl: 'http://user:pass@api.example.test/v1'}\n");
    let m = messages(validate_model_deployment(&d));
    assert!(m.iter().any(|m| m.contains("must not carry credentials")), "{m:?}");
    let d = md("modelName: m\nupstream: {baseUrl: 'http://api.example.test/v1?x=a@b'}\n");
    assert_eq!(validate_model_deployment(&d), Ok(()), "an @ after the authority is not userinfo");
}

mod routing_config {
    use crate::{ConfigError, RoutingConfig};

    fn error(text: &str) -> String {
        RoutingConfig::parse(text).expect_err(text).to_string()
    }

    #[test]
    fn a_valid_config_parses() {
        let c = RoutingConfig::parse(
            "defaults: {maxAttempts: 3, timeoutSeconds: 600, retryBudget: {percent: 20, minPerSecond: 10}}\n\
             modelGroups: {gpt-4o: {affinity: [session], cooldown: {allowedFails: 2, windowSeconds: 60, seconds: 30}}}\n",
        )
        .unwrap();
        assert_eq!(c.defaults.max_attempts, Some(3));
        assert_eq!(RoutingConfig::parse("  \n").unwrap(), RoutingConfig::default());
    }

    #[test]
    fn adaptive_weights_are_numbers_from_0_to_100() {
        let c = RoutingConfig::parse(
            "modelGroups: {smart: {strategy: adaptive, adaptive: {qualityWeight: 1.0, costWeight: 0.25}}}\n",
        )
        .unwrap();
        let weights = c.model_groups["smart"].adaptive.clone().unwrap();
        assert_eq!(weights.quality_weight.map(|w| w.get()), Some(1.0));
        assert_eq!(weights.cost_weight.map(|w| w.get()), Some(0.25));
        assert!(error("defaults: {adaptive: {costWeight: 101}}\n").contains("defaults.adaptive.costWeight"));
        assert!(error("defaults: {adaptive: {costWeight: 1e300}}\n").contains("defaults.adaptive.costWeight"));
        for bad in ["-1", ".nan", ".inf", "'high'"] {
            assert!(
                RoutingConfig::parse(&format!("defaults: {{adaptive: {{qualityWeight: {bad}}}}}\n")).is_err(),
                "{bad}"
            );
        }
        assert!(error("defaults: {adaptive: {speedWeight: 1}}\n").contains("defaults.adaptive.speedWeight"));
        assert!(
            error("modelGroups: {smart: {adaptive: {qualityWeight: 101}}}\n")
                .contains("modelGroups.smart.adaptive.qualityWeight")
        );
    }

    #[test]
    fn misspelt_fields_are_named() {
        assert_eq!(
            RoutingConfig::parse("defaults: {maxAtempts: 3}\n"),
            Err(ConfigError::UnknownField("defaults.maxAtempts".into()))
        );
        assert!(error("modelGroups: {m: {cooldown: {secs: 1}}}\n").contains("modelGroups.m.cooldown.secs"));
        assert!(error("default: {}\n").contains("default"));
    }

    #[test]
    fn the_teammodel_routing_rules_apply_with_their_paths() {
        for (text, needle) in [
            ("defaults: {maxAttempts: 0}", "defaults.maxAttempts"),
            ("defaults: {maxAttempts: 21}", "maxAttempts must be between 1 and 20"),
            ("defaults: {timeoutSeconds: 0}", "timeoutSeconds"),
            ("defaults: {timeoutSeconds: 4000000000}", "timeoutSeconds must be between 1 and 86400"),
            ("modelGroups: {x: {maxAttempts: 4000000000}}", "modelGroups.x.maxAttempts"),
            ("defaults: {cooldown: {seconds: 4000000000}}", "cooldown.seconds"),
            ("defaults: {retryBudget: {percent: 5000}}", "retryBudget.percent"),
        ] {
            let e = error(text);
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn values_past_their_type_are_errors_not_crashes() {
        for text in
            ["defaults: {maxAttempts: 99999999999999999999999}", "defaults: {maxAttempts: -1}", "defaults: [1]", ": :"]
        {
            assert!(RoutingConfig::parse(text).is_err(), "{text}");
        }
    }
}
