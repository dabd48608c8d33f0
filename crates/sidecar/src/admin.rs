//! Admin endpoints: /healthz, /readyz, /metrics, /debug/snapshot (credentials redacted),
//! /debug/route (why a request would go where it goes, without calling any upstream).

use std::sync::Arc;

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use llmroute_proto::v1;
use serde_json::{Value, json};

use crate::body::{Body, full};
use crate::clock::now_ms;
use crate::context::Context;
use crate::routes::Routes;

/// Handles one admin request.
pub(crate) async fn handle<U>(proxy: Arc<Context<U>>, request: Request<Incoming>) -> Response<Body> {
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "admin endpoints accept GET only\n");
    }
    let routing = proxy.routes.load();
    // A view's debug output names upstreams and routes: loopback peers only, even when the
    // admin port listens on the pod IP for Prometheus.
    let local =
        request.extensions().get::<crate::inbound::Peer>().is_none_or(|p| p.0.ip().to_canonical().is_loopback());
    if request.uri().path().starts_with("/debug/") && !local {
        return text(StatusCode::FORBIDDEN, "debug endpoints are served to loopback peers only\n");
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match routing {
            Some(r) => text(StatusCode::OK, &format!("ready {}\n", r.snapshot.version)),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "no snapshot applied yet\n"),
        },
        "/metrics" => {
            let mut r = text(StatusCode::OK, &proxy.metrics.render(routing.as_deref(), now_ms()));
            r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4"));
            r
        }
        "/debug/route" => {
            let (status, body) = match routing {
                Some(r) => debug_route(&proxy, &r, request.uri().query().unwrap_or_default(), request.headers()),
                None => (StatusCode::SERVICE_UNAVAILABLE, json!({"error": "no snapshot applied yet"})),
            };
            let mut r = Response::new(full(serde_json::to_vec_pretty(&body).unwrap_or_default()));
            *r.status_mut() = status;
            r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            r
        }
        "/debug/snapshot" => {
            let body = match routing {
                Some(r) => debug_snapshot(&r, now_ms()),
                None => json!({"version": null, "team": proxy.team, "deployments": [], "routes": []}),
            };
            let mut r = Response::new(full(serde_json::to_vec_pretty(&body).unwrap_or_default()));
            r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `GET /debug/route?model=NAME`, with the `x-llmroute-*` headers a request would carry:
/// the route and its policy, every candidate with its live state and why it is excluded,
/// the affinity that applies, and the pick, computed as a request's first attempt would be,
/// with nothing recorded and no upstream called.
fn debug_route<U>(ctx: &Context<U>, routing: &Routes, query: &str, headers: &http::HeaderMap) -> (StatusCode, Value) {
    let model = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "model").map(|(_, v)| v.into_owned());
    let Some(model) = model.filter(|m| !m.is_empty()) else {
        return (StatusCode::BAD_REQUEST, json!({"error": "give the model: /debug/route?model=NAME"}));
    };
    let mut keys = match crate::inbound::header_keys(headers) {
        Ok(keys) => keys,
        Err(e) => return (StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
    };
    let table = &routing.table;
    let Some(route_idx) = table.resolve(&model).map(|r| r.route) else {
        let shown: String = model.chars().take(256).collect();
        return (
            StatusCode::NOT_FOUND,
            json!({"error": format!("team {:?} cannot call {shown:?}", ctx.team), "model": shown}),
        );
    };
    let route = table.route(route_idx);
    let now = now_ms();
    if let Some(session) = &keys.session {
        let key = crate::fleet::session_key(&route.public_name, session);
        keys.session_owner = ctx.memory.session(&key, now).map(|s| s.credit.deployment);
    }
    let Some(mut planner) = llmroute_router::Planner::new(table, &model, keys) else {
        return (StatusCode::NOT_FOUND, json!({"error": "no route"}));
    };
    // A request's prompt is not here: its `prompt_cache_key` can be (`&prompt_cache_key=K`).
    let cache_key = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "prompt_cache_key").map(|(_, v)| v);
    if let (Some(bytes), Some(cache_key)) = (planner.prefix_bytes(), cache_key) {
        let body = serde_json::to_vec(&json!({ "prompt_cache_key": cache_key })).unwrap_or_default();
        planner.set_prefix(crate::inbound::prefix::key(llmroute_upstream::Endpoint::ChatCompletions, &body, bytes));
    }
    let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(rand::Rng::next_u64(&mut rand::rng()));
    let explained = planner.explain(&routing.state, now, &mut rng);
    let wire =
        routing.snapshot.routes.iter().find(|r| r.public_name == route.public_name && r.kind == route.kind as i32);
    let candidates: Vec<Value> = explained
        .candidates
        .iter()
        .map(|(i, excluded)| {
            let d = table.deployment(*i);
            let state = routing.state.get(*i);
            json!({
                "deployment": d.id,
                "weight": d.weight,
                "order": d.order,
                "qualityTier": d.quality_tier,
                "healthy": state.health().filter(|h| h.is_fresh(now)).map(|h| h.healthy),
                "coolingDown": state.in_cooldown(now),
                "cooldownRemainingMs": state.cooldown_until_ms().saturating_sub(now),
                "sharedCooldown": state.shared_cooldown_until_ms() > now,
                "inFlight": state.in_flight(),
                "fleetLoad": state.load(now),
                "latencyMs": state.latency_ms(),
                "limits": {"rpm": d.limits.rpm, "tpm": d.limits.tpm, "maxConcurrency": d.limits.max_concurrency},
                "excluded": excluded,
            })
        })
        .collect();
    let body = json!({
        "model": model,
        "route": {
            "publicName": route.public_name,
            "kind": route.kind.as_str_name(),
            "source": route.source,
            "policy": wire.map(policy_json).unwrap_or(Value::Null),
        },
        "candidates": candidates,
        "affinity": explained.affinity,
        "healthSafetyNet": explained.health_safety_net,
        "pick": explained.pick.map(|i| table.deployment(i).id.clone()),
        "snapshot": routing.snapshot.version,
    });
    (StatusCode::OK, body)
}

fn policy_json(r: &v1::Route) -> Value {
    let policy = r.policy.clone().unwrap_or_default();
    json!({
        "strategy": v1::Strategy::try_from(policy.strategy).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
        "affinity": policy.affinity.iter().filter_map(|a| v1::Affinity::try_from(*a).ok()).map(|a| a.as_str_name()).collect::<Vec<_>>(),
        "failover": policy.failover,
        "maxAttempts": policy.max_attempts,
        "fallbacks": policy.fallbacks,
        "contextWindowFallbacks": policy.context_window_fallbacks,
        "healthRouting": policy.health_routing,
        "timeoutSeconds": policy.timeout_seconds,
        "prefixBytes": policy.prefix_bytes,
        "boundedLoadEpsilon": policy.bounded_load_epsilon,
    })
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_owned()));
    *r.status_mut() = status;
    r
}

/// The applied view as JSON, with live state; credentials appear only as "<redacted>".
pub(crate) fn debug_snapshot(routing: &Routes, now_ms: u64) -> Value {
    let deployments: Vec<Value> = routing
        .snapshot
        .deployments
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let state = routing.state.get(i as u32);
            json!({
                "id": d.id,
                "modelName": d.model_name,
                "team": d.team,
                "provider": if d.provider == v1::Provider::Azure as i32 { "azure" } else { "openai" },
                "baseUrl": d.base_url,
                "upstreamModel": d.upstream_model,
                "apiKey": if d.api_key.is_empty() { "" } else { "<redacted>" },
                "apiVersion": d.api_version,
                "weight": d.weight,
                "order": d.order,
                "contextWindow": d.context_window,
                "qualityTier": d.quality_tier,
                "specHash": d.spec_hash,
                "live": {
                    "inFlight": state.in_flight(),
                "fleetLoad": state.load(now_ms),
                    "cooldown": state.in_cooldown(now_ms),
                    "latencyMs": state.latency_ms(),
                    "healthy": state.health().filter(|h| h.is_fresh(now_ms)).map(|h| h.healthy),
                },
            })
        })
        .collect();
    let routes: Vec<Value> = routing
        .snapshot
        .routes
        .iter()
        .map(|r| {
            let kind = v1::RouteKind::try_from(r.kind).map(|k| k.as_str_name()).unwrap_or("UNKNOWN");
            json!({
                "publicName": r.public_name,
                "kind": kind,
                "pattern": r.pattern,
                "deployments": r.deployment_ids,
                "source": r.source,
                "policy": policy_json(r),
            })
        })
        .collect();
    json!({"version": routing.snapshot.version, "team": routing.snapshot.team, "deployments": deployments, "routes": routes})
}
