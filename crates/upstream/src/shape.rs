//! One attempt's request to an upstream. The client's headers pass only from an allow-list:
//! its own `Authorization` never leaves the pod; the deployment's credential is added.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};

use crate::{Endpoint, InvalidModelName, RequestBody, Target};

/// Client headers passed on upstream (everything else, Authorization included, is dropped).
const FORWARDED: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::USER_AGENT,
    HeaderName::from_static("openai-beta"),
    HeaderName::from_static("x-request-id"),
];

/// The request of `endpoint` for `model` on `target`, in origin form with `Host` set.
pub fn request(
    target: &Target,
    endpoint: Endpoint,
    model: &str,
    body: Bytes,
    client_headers: &HeaderMap,
) -> Result<Request<RequestBody>, InvalidModelName> {
    let mut request = origin_form(target, Method::POST, target.uri(endpoint, model)?, body);
    let headers = request.headers_mut();
    for name in &FORWARDED {
        if let Some(v) = client_headers.get(name) {
            headers.insert(name.clone(), v.clone());
        }
    }
    headers.entry(header::CONTENT_TYPE).or_insert(HeaderValue::from_static("application/json"));
    Ok(request)
}

/// `GET` of the models listing with the credential (the `models` health probe).
pub fn models_request(target: &Target) -> Request<RequestBody> {
    // Built from validated parts; a failure here would be a bug, answered by "/".
    let uri = target.models_path().parse().unwrap_or_else(|_| http::Uri::from_static("/"));
    origin_form(target, Method::GET, uri, Bytes::new())
}

fn origin_form(target: &Target, method: Method, uri: http::Uri, body: Bytes) -> Request<RequestBody> {
    let mut request = Request::new(RequestBody::new(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(header::HOST, target.authority.clone());
    if let Some((name, value)) = &target.credential {
        headers.insert(name.clone(), value.clone());
    }
    request
}

#[cfg(test)]
mod tests {
    use llmroute_proto::v1;

    use super::*;

    fn target(provider: v1::Provider, key: &str) -> Target {
        let d = v1::Deployment {
            id: "ns/d".into(),
            provider: provider as i32,
            base_url: "https://example.test/v1/".into(),
            api_key: key.into(),
            api_version: "2024-10-21".into(),
            ..Default::default()
        };
        Target::try_from(&d).unwrap()
    }

    #[test]
    fn openai_shape() {
        let mut client = HeaderMap::new();
        client.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer client-token"));
        client.insert("x-llmroute-session-id", HeaderValue::from_static("s"));
        let r =
            request(&target(v1::Provider::Openai, "sk-x"), Endpoint::ChatCompletions, "gpt-4o", Bytes::new(), &client)
                .unwrap();
        assert_eq!(r.uri(), "/v1/chat/completions");
        assert_eq!(r.headers()[header::HOST], "example.test");
        assert_eq!(r.headers()[header::AUTHORIZATION], "Bearer sk-x");
        assert!(r.headers().get("x-llmroute-session-id").is_none());
    }

    #[test]
    fn azure_shape() {
        let r =
            request(&target(v1::Provider::Azure, "sk-x"), Endpoint::Embeddings, "emb", Bytes::new(), &HeaderMap::new())
                .unwrap();
        assert_eq!(r.uri(), "/v1/openai/deployments/emb/embeddings?api-version=2024-10-21");
        assert_eq!(r.headers()["api-key"], "sk-x");
        assert!(r.headers().get(header::AUTHORIZATION).is_none());
        let bad = request(
            &target(v1::Provider::Azure, ""),
            Endpoint::Embeddings,
            "../../admin",
            Bytes::new(),
            &HeaderMap::new(),
        );
        assert!(bad.is_err());
    }

    #[test]
    fn no_credential_no_header() {
        let mut client = HeaderMap::new();
        client.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer client-token"));
        let r = request(&target(v1::Provider::Openai, ""), Endpoint::Completions, "m", Bytes::new(), &client).unwrap();
        assert!(r.headers().get(header::AUTHORIZATION).is_none(), "the client's Authorization is never forwarded");
    }
}
