//! The `x-llmroute-*` response headers.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::routes::Routes;

const DEPLOYMENT: HeaderName = HeaderName::from_static("x-llmroute-deployment");
const MODEL_GROUP: HeaderName = HeaderName::from_static("x-llmroute-model-group");
const SNAPSHOT: HeaderName = HeaderName::from_static("x-llmroute-snapshot");
const ATTEMPTS: HeaderName = HeaderName::from_static("x-llmroute-attempts");
const ROUTE: HeaderName = HeaderName::from_static("x-llmroute-route");
const AFFINITY: HeaderName = HeaderName::from_static("x-llmroute-affinity");

/// Sets the `x-llmroute-*` response headers; `deployment` is an index into the table.
pub(crate) fn llmroute_headers(
    headers: &mut HeaderMap,
    routes: &Routes,
    deployment: Option<u32>,
    group: &str,
    attempts: usize,
) {
    if let Some(d) = deployment {
        headers.insert(DEPLOYMENT, routes.deployment_header(d).clone());
    }
    if let Ok(v) = HeaderValue::from_str(group) {
        headers.insert(MODEL_GROUP, v);
    }
    headers.insert(SNAPSHOT, routes.version_header.clone());
    headers.insert(ATTEMPTS, HeaderValue::from(attempts));
}

/// Sets `x-llmroute-route`: the route that served, `public name (source)`.
pub(crate) fn route_header(headers: &mut HeaderMap, routes: &Routes, route: llmroute_router::RouteIdx) {
    if let Some(value) = routes.route_header(route) {
        headers.insert(ROUTE, value.clone());
    }
}

/// Sets `x-llmroute-affinity`: the affinity that decided the pick (`session`, `user`,
/// `responses`, `prefix`) or `none`. An adaptive session kept on its owner is `session`.
pub(crate) fn affinity_header(headers: &mut HeaderMap, affinity: Option<&str>) {
    let value = match affinity {
        Some("session" | "session_owner") => "session",
        Some("user") => "user",
        Some("responses") => "responses",
        Some("prefix") => "prefix",
        _ => "none",
    };
    headers.insert(AFFINITY, HeaderValue::from_static(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_affinity_header_names_the_kind_never_the_key() {
        for (used, shown) in [
            (Some("session"), "session"),
            (Some("session_owner"), "session"),
            (Some("user"), "user"),
            (Some("responses"), "responses"),
            (Some("prefix"), "prefix"),
            (None, "none"),
        ] {
            let mut headers = HeaderMap::new();
            affinity_header(&mut headers, used);
            assert_eq!(headers[&AFFINITY], shown);
        }
    }
}
