//! What an adaptive group learns around one request: the request's type, its session's owner
//! and the signal its turn gives about the previous answer (a repeated question, a
//! correction); after a 2xx, the answer remembered for feedback and the session's new turn;
//! once relayed, truncation (`finish_reason: length`) as a failure and the real token usage
//! charged to a fleet `tpm` limit; after a failure, the turn marked failed (a session that
//! ends there is one more failure).

use std::sync::Arc;

use llmroute_router::{Pick, Planner};

use super::attempt::Answer;
use super::relay::Watch;
use crate::clock::now_ms;
use crate::context::Context;
use crate::fleet::scan::{AnswerScan, string_field};
use crate::fleet::{Credit, Session, charge};
use crate::inbound::{ClientRequest, Turn};
use crate::routes::Routes;

/// An adaptive request's turn and its session key (group-scoped).
pub(crate) struct AdaptiveTurn {
    turn: Turn,
    session: Option<String>,
}

/// Classifies the request, pins it to its session's owner, and charges the previous answer
/// when this turn says it failed.
pub(crate) fn adaptive_turn<U>(
    ctx: &Context<U>,
    routes: &Routes,
    request: &ClientRequest,
    planner: &mut Planner<'_>,
) -> AdaptiveTurn {
    let turn = crate::inbound::turn(&request.raw);
    planner.set_request_type(turn.kind);
    let group = &routes.table.route(planner.primary_route()).public_name;
    let key = request.keys.session.as_deref().or((!turn.conversation.is_empty()).then_some(turn.conversation.as_str()));
    let session = key.map(|k| crate::fleet::session_key(group, k));
    if let Some(key) = &session
        && let Some(previous) = ctx.memory.session(key, now_ms())
    {
        planner.set_session_owner(Some(previous.credit.deployment.clone()));
        // Once per answer: the same complaint sent again (a client retrying, a request refused
        // before any upstream saw it) is not more evidence.
        if !previous.charged && llmroute_router::signals::failed_previous(&previous.last_user, &turn.last_user) {
            charge(routes, &previous.credit, 0.0);
            ctx.memory.turn(key.clone(), Session { charged: true, ..previous }, now_ms());
        }
    }
    AdaptiveTurn { turn, session }
}

/// The request failed for the client: its session's turn is marked failed, charged to the
/// deployment of the last attempt if the session ends here (see [`crate::fleet::Memory::abandoned`]).
pub(crate) fn failed<U>(ctx: &Context<U>, routes: &Routes, planner: &Planner<'_>, adaptive: Option<AdaptiveTurn>) {
    let (Some(a), Some(last)) = (adaptive, planner.attempts().last()) else { return };
    let (Some(key), Some(idx)) = (a.session, routes.table.deployment_index(&last.deployment_id)) else { return };
    let credit = Credit {
        group: last.model_group.clone(),
        kind: planner.request_type(),
        deployment: last.deployment_id.clone(),
        quality_tier: routes.table.deployment(idx).quality_tier,
    };
    ctx.memory.turn(key, Session::new(credit, &a.turn.last_user, true), now_ms());
}

/// After a 2xx: remembers the answer and the session's turn (adaptive groups), and returns
/// the watch that reads the answer as it is relayed: its usage counted in tokens and cost,
/// charged to a fleet `tpm` limit, a truncation charged to an adaptive arm, the access log.
/// What was seen of a request up to its answer.
pub(crate) struct Seen {
    pub adaptive: Option<AdaptiveTurn>,
    pub logged: Option<super::Logged>,
    pub ttft: Option<std::time::Duration>,
    pub attempts: usize,
    pub span: Option<crate::trace::RequestSpan>,
}

pub(crate) fn answered<U>(
    ctx: &Context<U>,
    routes: &Arc<Routes>,
    request: &ClientRequest,
    planner: &Planner<'_>,
    pick: &Pick,
    answer: &Answer,
    seen: Seen,
) -> Watch {
    let Seen { adaptive, logged, ttft, attempts, span } = seen;
    let access = ctx.access.clone().zip(logged);
    let deployment = routes.table.deployment(pick.deployment);
    let fleet_tpm = deployment.limits.tpm > 0;
    let credit = adaptive.map(|a| {
        let credit = Credit {
            group: pick.model_group.clone(),
            kind: planner.request_type(),
            deployment: deployment.id.clone(),
            quality_tier: deployment.quality_tier,
        };
        let now = now_ms();
        if let Some(key) = a.session {
            ctx.memory.turn(key, Session::new(credit.clone(), &a.turn.last_user, false), now);
        }
        if let Some(id) = string_field(&answer.first, "id") {
            ctx.memory.answered(id, credit.clone(), now);
        }
        credit
    });
    let (routes, idx, estimate) = (routes.clone(), pick.deployment, request.keys.prompt_tokens);
    let (tokens, cost) = (ctx.metrics.tokens.clone(), ctx.metrics.cost.clone());
    let group = pick.model_group.clone();
    let on_end = move |scan: &AnswerScan, code: &str, completed: bool| {
        let deployment = routes.table.deployment(idx);
        if let Some(mut span) = span {
            use crate::trace::Value;
            if let Some(n) = scan.input_tokens {
                span.set(&[("gen_ai.usage.input_tokens", Value::Int(i64::try_from(n).unwrap_or(i64::MAX)))]);
            }
            if let Some(n) = scan.output_tokens {
                span.set(&[("gen_ai.usage.output_tokens", Value::Int(i64::try_from(n).unwrap_or(i64::MAX)))]);
            }
            span.end(code.parse().unwrap_or(0), (!completed).then_some(code));
        }
        if let Some((log, logged)) = &access {
            log.log(&crate::access::Entry {
                ttft_ms: ttft.map(|t| t.as_secs_f64() * 1000.0),
                input_tokens: scan.input_tokens,
                output_tokens: scan.output_tokens,
                cached_tokens: scan.cached_tokens,
                ..logged.entry(&group, &deployment.id, attempts, code)
            });
        }
        let labels = |kind: &'static str| [group.as_str(), deployment.id.as_str(), kind];
        for (kind, n) in [("input", scan.input_tokens), ("output", scan.output_tokens), ("cached", scan.cached_tokens)]
        {
            if let Some(n) = n.filter(|n| *n > 0) {
                tokens.with_label_values(&labels(kind)).inc_by(n);
            }
        }
        let price = scan.input_tokens.unwrap_or(0) as f64 * deployment.input_cost_per_million
            + scan.output_tokens.unwrap_or(0) as f64 * deployment.output_cost_per_million;
        let price = if price > 0.0 && price.is_finite() { price / 1_000_000.0 } else { 0.0 };
        if price > 0.0 {
            cost.with_label_values(&[group.as_str(), deployment.id.as_str()]).inc_by(price);
        }
        if scan.input_tokens.is_some() || scan.output_tokens.is_some() {
            routes.state.get(idx).add_usage(llmroute_router::Usage {
                input: scan.input_tokens.unwrap_or(0),
                output: scan.output_tokens.unwrap_or(0),
                cached: scan.cached_tokens.unwrap_or(0),
                cost_usd: price,
            });
        }
        if let Some(credit) = &credit
            && completed
            && scan.truncated
        {
            charge(&routes, credit, 0.0);
        }
        if fleet_tpm && let Some(total) = scan.total_tokens {
            let delta = i64::try_from(total).unwrap_or(i64::MAX).saturating_sub(i64::try_from(estimate).unwrap_or(0));
            routes.state.get(idx).charge_tokens(now_ms(), delta);
        }
    };
    Watch { scan: AnswerScan::default(), on_end: Box::new(on_end) }
}
