//! The request shape of each provider (the connections themselves are in [`super::pool`]).
//! The client's own Authorization never leaves the pod: the deployment's credential is added
//! instead.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, header};
use http_body_util::Full;
use llmroute_proto::v1;

use super::request::Endpoint;

/// The pooled upstream client.
pub type UpstreamClient = std::sync::Arc<super::pool::Pool>;

/// Client headers passed on upstream (everything else, Authorization included, is dropped).
const FORWARDED: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::USER_AGENT,
    HeaderName::from_static("openai-beta"),
    HeaderName::from_static("x-request-id"),
];
const API_KEY: HeaderName = HeaderName::from_static("api-key");

/// The URL of `endpoint` on `deployment` for `model`.
pub fn url(deployment: &v1::Deployment, endpoint: Endpoint, model: &str) -> String {
    let base = deployment.base_url.trim_end_matches('/');
    if deployment.provider == v1::Provider::Azure as i32 {
        let version = &deployment.api_version;
        match endpoint {
            Endpoint::Responses => format!("{base}/openai/responses?api-version={version}"),
            other => format!("{base}/openai/deployments/{model}{}?api-version={version}", other.openai_suffix()),
        }
    } else {
        format!("{base}{}", endpoint.openai_suffix())
    }
}

/// The URL of the models listing (health probes).
pub fn models_url(deployment: &v1::Deployment) -> String {
    let base = deployment.base_url.trim_end_matches('/');
    if deployment.provider == v1::Provider::Azure as i32 {
        format!("{base}/openai/models?api-version={}", deployment.api_version)
    } else {
        format!("{base}/models")
    }
}

/// Adds the deployment's credential in its provider's header.
pub fn authorize(headers: &mut HeaderMap, deployment: &v1::Deployment) {
    if deployment.api_key.is_empty() {
        return;
    }
    let azure = deployment.provider == v1::Provider::Azure as i32;
    let value = if azure {
        HeaderValue::from_str(&deployment.api_key)
    } else {
        HeaderValue::from_str(&format!("Bearer {}", deployment.api_key))
    };
    if let Ok(mut value) = value {
        value.set_sensitive(true);
        headers.insert(if azure { API_KEY } else { header::AUTHORIZATION }, value);
    }
}

/// One upstream attempt's request.
pub fn request(
    deployment: &v1::Deployment,
    endpoint: Endpoint,
    model: &str,
    body: Bytes,
    client_headers: &HeaderMap,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let mut builder = Request::builder().method(Method::POST).uri(url(deployment, endpoint, model));
    if let Some(headers) = builder.headers_mut() {
        for name in &FORWARDED {
            if let Some(v) = client_headers.get(name) {
                headers.insert(name.clone(), v.clone());
            }
        }
        headers.entry(header::CONTENT_TYPE).or_insert(HeaderValue::from_static("application/json"));
        authorize(headers, deployment);
    }
    builder.body(Full::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(provider: v1::Provider) -> v1::Deployment {
        v1::Deployment {
            id: "ns/d".into(),
            provider: provider as i32,
            base_url: "https://example.test/v1/".into(),
            api_key: "sk-x".into(),
            api_version: "2024-10-21".into(),
            ..Default::default()
        }
    }

    #[test]
    fn openai_shape() {
        let d = dep(v1::Provider::Openai);
        let mut client = HeaderMap::new();
        client.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer client-token"));
        client.insert("x-llmroute-session-id", HeaderValue::from_static("s"));
        let r = request(&d, Endpoint::ChatCompletions, "gpt-4o", Bytes::new(), &client).unwrap();
        assert_eq!(r.uri(), "https://example.test/v1/chat/completions");
        assert_eq!(r.headers()[header::AUTHORIZATION], "Bearer sk-x");
        assert!(r.headers().get("x-llmroute-session-id").is_none());
    }

    #[test]
    fn azure_shape() {
        let d = dep(v1::Provider::Azure);
        let r = request(&d, Endpoint::Embeddings, "emb", Bytes::new(), &HeaderMap::new()).unwrap();
        assert_eq!(r.uri(), "https://example.test/v1/openai/deployments/emb/embeddings?api-version=2024-10-21");
        assert_eq!(r.headers()["api-key"], "sk-x");
        assert!(r.headers().get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn no_credential_no_header() {
        let mut d = dep(v1::Provider::Openai);
        d.api_key.clear();
        let mut client = HeaderMap::new();
        client.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer client-token"));
        let r = request(&d, Endpoint::Completions, "m", Bytes::new(), &client).unwrap();
        assert!(r.headers().get(header::AUTHORIZATION).is_none(), "the client's Authorization is never forwarded");
    }
}
