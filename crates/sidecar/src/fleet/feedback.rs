//! `POST /v1/feedback` `{"response_id": "...", "score": 0..1}`: explicit feedback on an answer
//! of an adaptive group this sidecar served. The id is the `id` of the answer (chat completion,
//! completion or Responses, as the client received it); the sidecar remembers recent ones in
//! bounded memory, so feedback cannot be forged for an answer it did not give, and each
//! answer is rated once. The score is a signal for the deployment that answered, in the
//! group and for the request type it was routed as, reported to the fleet like any other.

use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::json;

use crate::body::{Body, full};
use crate::clock::now_ms;
use crate::inbound::ApiError;
use crate::routes::RoutesHandle;

use super::Memory;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Feedback {
    response_id: String,
    score: f64,
}

/// Answers one feedback request whose body is `body`.
pub(crate) fn handle(memory: &Memory, routes: &RoutesHandle, body: &[u8]) -> Response<Body> {
    let feedback: Feedback = match serde_json::from_slice(body) {
        Ok(f) => f,
        Err(e) => {
            return ApiError::InvalidRequest(format!(
                "feedback must be {{\"response_id\": string, \"score\": number from 0 to 1}}: {e}"
            ))
            .response();
        }
    };
    if !(0.0..=1.0).contains(&feedback.score) {
        return ApiError::InvalidRequest("`score` must be a number from 0 to 1.".into()).response();
    }
    // The Responses API id a client holds is llmroute's wrapped one; remembered ids are the
    // upstream's.
    let unwrapped = llmroute_router::unwrap_response_id(&feedback.response_id);
    let id = unwrapped.as_ref().map_or(feedback.response_id.as_str(), |(_, upstream)| upstream).to_owned();
    let shown: String = feedback.response_id.chars().take(256).collect();
    let now = now_ms();
    let Some(credit) = memory.take_answer(&id, now) else { return ApiError::ResponseNotFound(shown).response() };
    // A wrapped id names the deployment that answered: it must be the one remembered.
    if unwrapped.is_some_and(|(deployment, _)| deployment != credit.deployment) {
        return ApiError::ResponseNotFound(shown).response();
    }
    let Some(current) = routes.load() else { return ApiError::NoSnapshot.response() };
    let Some(idx) = current.table.deployment_index(&credit.deployment) else {
        return ApiError::ResponseNotFound(shown).response();
    };
    current.state.get(idx).observe_adaptive(&credit.group, credit.kind, credit.quality_tier, feedback.score);
    let answer = json!({
        "object": "feedback",
        "response_id": shown,
        "score": feedback.score,
        "model_group": credit.group,
        "request_type": credit.kind.as_str(),
        "deployment": credit.deployment,
    });
    let mut response = Response::new(full(answer.to_string()));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}
