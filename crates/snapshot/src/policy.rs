//! Policy precedence, field by field: TeamModel `routing` > `modelGroups[name]` > `defaults`
//! > built-in defaults.

use llmroute_api::{
    AdaptivePolicy, Affinity, CooldownPolicy, RetryBudgetPolicy, RoutingConfig, RoutingPolicy, Strategy, Weight,
};
use llmroute_proto::v1;

/// The built-in defaults every unset field falls back to.
pub fn builtin_defaults() -> RoutingPolicy {
    RoutingPolicy {
        strategy: Some(Strategy::Weighted),
        affinity: Some(Vec::new()),
        prefix_bytes: Some(4096),
        bounded_load_epsilon: llmroute_api::Epsilon::new(0.25),
        affinity_ttl_seconds: Some(3600),
        failover: Some(true),
        max_attempts: Some(3),
        fallbacks: Some(Vec::new()),
        context_window_fallbacks: Some(Vec::new()),
        cooldown: Some(CooldownPolicy { allowed_fails: Some(3), window_seconds: Some(60), seconds: Some(30) }),
        health_routing: Some(true),
        timeout_seconds: Some(600),
        retry_budget: Some(RetryBudgetPolicy { percent: Some(20), min_per_second: Some(10) }),
        adaptive: Some(AdaptivePolicy { quality_weight: Weight::new(1.0), cost_weight: Weight::new(0.0) }),
    }
}

/// The concrete policy of public name `name`, given the TeamModel's own overrides (if any).
pub fn resolve_policy(team_model: Option<&RoutingPolicy>, config: &RoutingConfig, name: &str) -> v1::RoutingPolicy {
    let builtin = builtin_defaults();
    let layers: Vec<&RoutingPolicy> =
        [team_model, config.model_groups.get(name), Some(&config.defaults), Some(&builtin)]
            .into_iter()
            .flatten()
            .collect();
    let pick = |f: &dyn Fn(&RoutingPolicy) -> Option<u32>| layers.iter().find_map(|p| f(p)).unwrap_or_default();
    let cooldown = |f: &dyn Fn(&CooldownPolicy) -> Option<u32>| {
        layers.iter().find_map(|p| p.cooldown.as_ref().and_then(f)).unwrap_or_default()
    };
    let budget = |f: &dyn Fn(&RetryBudgetPolicy) -> Option<u32>| {
        layers.iter().find_map(|p| p.retry_budget.as_ref().and_then(f)).unwrap_or_default()
    };
    let weight = |f: &dyn Fn(&AdaptivePolicy) -> Option<Weight>| {
        layers.iter().find_map(|p| p.adaptive.as_ref().and_then(f)).unwrap_or_default().get()
    };
    let list = |f: &dyn Fn(&RoutingPolicy) -> Option<&Vec<String>>| {
        layers.iter().find_map(|p| f(p)).cloned().unwrap_or_default()
    };
    v1::RoutingPolicy {
        strategy: strategy(layers.iter().find_map(|p| p.strategy).unwrap_or(Strategy::Weighted)) as i32,
        affinity: layers.iter().find_map(|p| p.affinity.as_ref()).map(|a| affinity(a)).unwrap_or_default(),
        affinity_ttl_seconds: pick(&|p| p.affinity_ttl_seconds),
        prefix_bytes: pick(&|p| p.prefix_bytes),
        bounded_load_epsilon: layers.iter().find_map(|p| p.bounded_load_epsilon).unwrap_or_default().get(),
        failover: layers.iter().find_map(|p| p.failover).unwrap_or(true),
        max_attempts: pick(&|p| p.max_attempts),
        fallbacks: list(&|p| p.fallbacks.as_ref()),
        context_window_fallbacks: list(&|p| p.context_window_fallbacks.as_ref()),
        cooldown: Some(v1::Cooldown {
            allowed_fails: cooldown(&|c| c.allowed_fails),
            window_seconds: cooldown(&|c| c.window_seconds),
            seconds: cooldown(&|c| c.seconds),
        }),
        health_routing: layers.iter().find_map(|p| p.health_routing).unwrap_or(true),
        timeout_seconds: pick(&|p| p.timeout_seconds),
        retry_budget: Some(v1::RetryBudget {
            percent: budget(&|b| b.percent),
            min_per_second: budget(&|b| b.min_per_second),
        }),
        adaptive: Some(v1::AdaptiveWeights {
            quality_weight: weight(&|a| a.quality_weight),
            cost_weight: weight(&|a| a.cost_weight),
        }),
    }
}

fn strategy(s: Strategy) -> v1::Strategy {
    match s {
        Strategy::Weighted => v1::Strategy::Weighted,
        Strategy::LeastBusy => v1::Strategy::LeastBusy,
        Strategy::Latency => v1::Strategy::Latency,
        Strategy::Cost => v1::Strategy::Cost,
        Strategy::Adaptive => v1::Strategy::Adaptive,
    }
}

/// Affinity kinds, deduplicated and in canonical order.
fn affinity(kinds: &[Affinity]) -> Vec<i32> {
    let mut kinds = kinds.to_vec();
    kinds.sort();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|a| match a {
            Affinity::Session => v1::Affinity::Session as i32,
            Affinity::User => v1::Affinity::User as i32,
            Affinity::Responses => v1::Affinity::Responses as i32,
            Affinity::Prefix => v1::Affinity::Prefix as i32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RoutingConfig {
        RoutingConfig::parse(
            "defaults: {maxAttempts: 4, timeoutSeconds: 100, cooldown: {seconds: 10}}\n\
             modelGroups:\n  gpt-4o: {maxAttempts: 5, affinity: [session], cooldown: {allowedFails: 1}}\n",
        )
        .expect("config parses")
    }

    #[test]
    fn built_in_defaults_fill_everything() {
        let p = resolve_policy(None, &RoutingConfig::default(), "x");
        assert_eq!(p.strategy, v1::Strategy::Weighted as i32);
        assert_eq!((p.max_attempts, p.timeout_seconds, p.affinity_ttl_seconds), (3, 600, 3600));
        assert!(p.failover && p.health_routing && p.affinity.is_empty());
        assert_eq!(p.cooldown, Some(v1::Cooldown { allowed_fails: 3, window_seconds: 60, seconds: 30 }));
        assert_eq!(p.retry_budget, Some(v1::RetryBudget { percent: 20, min_per_second: 10 }));
        assert_eq!(p.adaptive, Some(v1::AdaptiveWeights { quality_weight: 1.0, cost_weight: 0.0 }));
    }

    #[test]
    fn prefix_affinity_resolves_with_its_defaults_and_overrides() {
        let p = resolve_policy(None, &RoutingConfig::default(), "x");
        assert_eq!((p.prefix_bytes, p.bounded_load_epsilon), (4096, 0.25));
        let config =
            RoutingConfig::parse("defaults: {affinity: [prefix, session], boundedLoadEpsilon: 0.5}\n").unwrap();
        let team = RoutingPolicy { prefix_bytes: Some(1024), ..Default::default() };
        let p = resolve_policy(Some(&team), &config, "x");
        assert_eq!(p.affinity, vec![v1::Affinity::Session as i32, v1::Affinity::Prefix as i32]);
        assert_eq!((p.prefix_bytes, p.bounded_load_epsilon), (1024, 0.5));
    }

    #[test]
    fn prefix_affinity_bounds_are_enforced() {
        for (bad, field) in [
            ("defaults: {prefixBytes: 10}\n", "prefixBytes"),
            ("defaults: {prefixBytes: 99999999}\n", "prefixBytes"),
            ("defaults: {boundedLoadEpsilon: 11}\n", "boundedLoadEpsilon"),
            ("defaults: {boundedLoadEpsilon: -1}\n", "boundedLoadEpsilon"),
            ("defaults: {boundedLoadEpsilon: .nan}\n", "boundedLoadEpsilon"),
            ("defaults: {boundedLoadEpsilon: 1e308}\n", "boundedLoadEpsilon"),
            ("defaults: {affinity: [prefixes]}\n", "affinity"),
        ] {
            let error = RoutingConfig::parse(bad).expect_err(bad).to_string();
            assert!(error.contains(field) || error.contains("unknown variant"), "{bad}: {error}");
            assert!(!error.contains("100") && !error.contains("weight"), "the bound named is this field's: {error}");
        }
    }

    #[test]
    fn adaptive_weights_resolve_field_by_field() {
        let config = RoutingConfig::parse("defaults: {adaptive: {costWeight: 0.5}}\n").unwrap();
        let team = RoutingPolicy {
            adaptive: Some(AdaptivePolicy { quality_weight: Weight::new(2.0), cost_weight: None }),
            ..Default::default()
        };
        let p = resolve_policy(Some(&team), &config, "x");
        assert_eq!(p.adaptive, Some(v1::AdaptiveWeights { quality_weight: 2.0, cost_weight: 0.5 }));
    }

    #[test]
    fn defaults_override_built_in_and_groups_override_defaults() {
        let other = resolve_policy(None, &config(), "other");
        assert_eq!((other.max_attempts, other.timeout_seconds), (4, 100));
        assert!(other.affinity.is_empty());
        let group = resolve_policy(None, &config(), "gpt-4o");
        assert_eq!((group.max_attempts, group.timeout_seconds), (5, 100));
        assert_eq!(group.affinity, vec![v1::Affinity::Session as i32]);
    }

    #[test]
    fn precedence_is_field_by_field_down_to_nested_cooldown() {
        let team = RoutingPolicy {
            timeout_seconds: Some(7),
            cooldown: Some(CooldownPolicy { window_seconds: Some(5), ..Default::default() }),
            ..Default::default()
        };
        let p = resolve_policy(Some(&team), &config(), "gpt-4o");
        assert_eq!(p.timeout_seconds, 7, "team model wins");
        assert_eq!(p.max_attempts, 5, "model group next");
        assert_eq!(p.cooldown, Some(v1::Cooldown { allowed_fails: 1, window_seconds: 5, seconds: 10 }));
    }

    #[test]
    fn explicit_false_and_empty_lists_override_lower_layers() {
        let team = RoutingPolicy { failover: Some(false), affinity: Some(vec![]), ..Default::default() };
        let p = resolve_policy(Some(&team), &config(), "gpt-4o");
        assert!(!p.failover);
        assert!(p.affinity.is_empty());
    }
}
