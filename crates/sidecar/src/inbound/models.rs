//! `GET /v1/models`: what this team can call.

use http::{Response, header};
use serde_json::json;

use crate::body::{Body, full};
use crate::routes::Routes;

/// The OpenAI model list of this team's view (patterns included, as written).
pub(crate) fn list(routing: &Routes) -> Response<Body> {
    let mut names: Vec<&str> = routing.table.public_names().collect();
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(*n));
    let data: Vec<_> =
        names.iter().map(|n| json!({"id": n, "object": "model", "created": 0, "owned_by": "llmroute"})).collect();
    let mut r = Response::new(full(json!({"object": "list", "data": data}).to_string()));
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}
