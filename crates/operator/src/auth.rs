//! Who a sidecar is. In a cluster it presents its projected ServiceAccount token (audience
//! `llmroute`), verified with a TokenReview; the review names its pod's namespace, and the
//! namespace's label names its team, so a sidecar can never ask for another team's view (which
//! holds that team's credentials). Reviews are cached until the token expires, and the stream
//! ends when it does. Manifests mode may require a shared token instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tonic::Status;

/// A verified caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The pod's namespace (from the review); `None` outside a cluster.
    pub namespace: Option<String>,
    /// The pod's name, when the token is bound to a pod.
    pub pod: Option<String>,
    /// When the token stops being valid: the stream ends then.
    pub expires_at: Option<SystemTime>,
}

/// Most cached reviews; expired ones are dropped first.
const MAX_CACHED: usize = 50_000;
/// A token with no readable expiry is trusted this long before a new review.
const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// Longest wait for the API server's review.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Reviews of tokens not in the cache, per second (and burst): a flood of made-up tokens
/// never becomes a flood on the API server.
const REVIEWS_PER_SECOND: f64 = 100.0;

/// How callers are verified.
pub enum Authenticator {
    /// Anyone (manifests mode without `--token`).
    Open,
    /// A shared token (manifests mode `--token`).
    Shared(String),
    /// TokenReview against the API server.
    Cluster(Box<TokenReviewer>),
}

impl Authenticator {
    /// Verifies the bearer token of a stream's request.
    pub async fn authenticate(&self, bearer: Option<&str>) -> Result<Identity, Status> {
        match self {
            Self::Open => Ok(Identity::default()),
            Self::Shared(expected) => {
                let given = bearer.ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
                // Compared by digest: equal time for any wrong token.
                if Sha256::digest(given.as_bytes()) == Sha256::digest(expected.as_bytes()) {
                    Ok(Identity::default())
                } else {
                    Err(Status::unauthenticated("the bearer token is not valid"))
                }
            }
            Self::Cluster(reviewer) => {
                let token = bearer.ok_or_else(|| {
                    Status::unauthenticated("a projected ServiceAccount token is required (--operator-token-file)")
                })?;
                reviewer.review(token).await
            }
        }
    }
}

/// The bearer token of gRPC request metadata.
pub fn bearer(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    let value = metadata.get("authorization")?.to_str().ok()?;
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim)
}

/// TokenReviews with a cache keyed by the token's digest (the token itself is never kept).
pub struct TokenReviewer {
    api: Api<TokenReview>,
    audience: String,
    cache: Mutex<HashMap<[u8; 32], Identity>>,
    bucket: Mutex<(f64, std::time::Instant)>,
}

impl TokenReviewer {
    /// Reviews tokens through `client`, requiring `audience`.
    pub fn new(client: kube::Client, audience: impl Into<String>) -> Self {
        Self {
            api: Api::all(client),
            audience: audience.into(),
            cache: Mutex::default(),
            bucket: Mutex::new((REVIEWS_PER_SECOND, std::time::Instant::now())),
        }
    }

    /// The identity behind `token`, from the cache while the token is valid.
    pub async fn review(&self, token: &str) -> Result<Identity, Status> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = SystemTime::now();
        if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned())
            && hit.expires_at.is_some_and(|t| t > now)
        {
            return Ok(hit);
        }
        if let Ok(mut bucket) = self.bucket.lock() {
            let at = std::time::Instant::now();
            bucket.0 =
                (bucket.0 + at.duration_since(bucket.1).as_secs_f64() * REVIEWS_PER_SECOND).min(REVIEWS_PER_SECOND);
            bucket.1 = at;
            if bucket.0 < 1.0 {
                return Err(Status::unavailable("too many token reviews at once; retry after a backoff"));
            }
            bucket.0 -= 1.0;
        }
        let review = TokenReview {
            spec: TokenReviewSpec { token: token.to_owned(), audiences: Some(vec![self.audience.clone()]) },
            ..TokenReview::default()
        };
        let reviewed = tokio::time::timeout(REVIEW_TIMEOUT, self.api.create(&PostParams::default(), &review))
            .await
            .map_err(|_| Status::unavailable("the token review timed out; retry"))?
            .map_err(|e| {
                tracing::warn!(error = %e, "token review failed");
                Status::unavailable("the token review failed; retry")
            })?;
        let mut identity = verdict(&reviewed, &self.audience)?;
        identity.expires_at = Some(expiry(token).unwrap_or(now + DEFAULT_TTL).min(now + Duration::from_secs(86_400)));
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                cache.retain(|_, i| i.expires_at.is_some_and(|t| t > now));
                if cache.len() >= MAX_CACHED {
                    cache.clear();
                }
            }
            cache.insert(key, identity.clone());
        }
        Ok(identity)
    }
}

/// What a completed review says: authenticated, for our audience, a ServiceAccount of a pod.
pub fn verdict(review: &TokenReview, audience: &str) -> Result<Identity, Status> {
    let status = review.status.as_ref().ok_or_else(|| Status::unauthenticated("the token review has no status"))?;
    if status.authenticated != Some(true) {
        let why = status.error.as_deref().unwrap_or("not authenticated");
        return Err(Status::unauthenticated(format!("token rejected: {why}")));
    }
    if !status.audiences.iter().flatten().any(|a| a == audience) {
        return Err(Status::unauthenticated(format!("the token is not issued for audience {audience:?}")));
    }
    let user = status.user.as_ref().and_then(|u| u.username.as_deref()).unwrap_or_default();
    let mut parts = user.strip_prefix("system:serviceaccount:").map(|rest| rest.splitn(2, ':'));
    let namespace = parts.as_mut().and_then(Iterator::next).filter(|n| !n.is_empty());
    let Some(namespace) = namespace else {
        return Err(Status::permission_denied("only a ServiceAccount token of a pod is accepted"));
    };
    let pod = status
        .user
        .as_ref()
        .and_then(|u| u.extra.as_ref())
        .and_then(|extra| extra.get("authentication.kubernetes.io/pod-name"))
        .and_then(|names| names.first().cloned());
    Ok(Identity { namespace: Some(namespace.to_owned()), pod, expires_at: None })
}

/// The `exp` claim of a JWT (read only after the API server verified the token).
pub fn expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    Some(UNIX_EPOCH + Duration::from_secs(exp))
}
