//! One deployment's upstream, computed once per snapshot: where to connect, which path and
//! query each endpoint gets, and the credential header. Converting from the wire message is
//! the edge where an unusable deployment is rejected with a typed error.

use http::{HeaderName, HeaderValue, Uri, header};
use llmroute_proto::v1;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::Endpoint;

/// The request shape of an upstream API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Any OpenAI-compatible API: `{base}/chat/completions`, `Authorization: Bearer`.
    OpenAi,
    /// Azure OpenAI: `{base}/openai/deployments/{model}/...?api-version=`, `api-key` header.
    Azure {
        /// The `api-version` query value, percent-encoded.
        api_version: String,
    },
}

/// Why a deployment's upstream cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTarget {
    /// `baseUrl` is not an absolute http(s) URL with a host, or carries userinfo.
    #[error("deployment {id}: baseUrl is not an http(s) URL with a host and no userinfo")]
    BaseUrl {
        /// Deployment id.
        id: String,
    },
    /// An enum value this build does not know.
    #[error("deployment {id}: unknown provider {value}")]
    Provider {
        /// Deployment id.
        id: String,
        /// The wire value.
        value: i32,
    },
    /// The credential holds bytes a header cannot carry (newline, control character).
    #[error("deployment {id}: the credential cannot be sent as a header value")]
    Credential {
        /// Deployment id.
        id: String,
    },
}

/// A model name that cannot be put in the upstream's URL path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the model name {0:?} cannot be used in the upstream URL path (it holds '/', '..', '?', '#' or a control character)"
)]
pub struct InvalidModelName(pub String);

/// Where an origin is and how to talk to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    /// `scheme://host:port`, the pool key.
    pub key: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Characters percent-encoded in a path segment (RFC 3986 pchar complement, plus '%').
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');
/// Characters percent-encoded in a query value.
const QUERY_VALUE: &AsciiSet = &SEGMENT.add(b'&').add(b'=').add(b'+');

const API_KEY: HeaderName = HeaderName::from_static("api-key");

/// One deployment's upstream.
#[derive(Clone, Debug)]
pub struct Target {
    pub(crate) origin: Origin,
    /// `Host` header value.
    pub(crate) authority: HeaderValue,
    /// Path of the base URL, without a trailing `/`.
    base_path: String,
    provider: Provider,
    /// Credential header, marked sensitive (never printed by `http`'s Debug).
    pub(crate) credential: Option<(HeaderName, HeaderValue)>,
    /// Origin-form URI of each endpoint whose path does not hold the model, built once.
    fixed: [Option<Uri>; 4],
}

const ENDPOINTS: [Endpoint; 4] =
    [Endpoint::ChatCompletions, Endpoint::Completions, Endpoint::Embeddings, Endpoint::Responses];

fn slot(endpoint: Endpoint) -> usize {
    match endpoint {
        Endpoint::ChatCompletions => 0,
        Endpoint::Completions => 1,
        Endpoint::Embeddings => 2,
        Endpoint::Responses => 3,
    }
}

impl TryFrom<&v1::Deployment> for Target {
    type Error = InvalidTarget;

    fn try_from(d: &v1::Deployment) -> Result<Self, InvalidTarget> {
        let bad_url = || InvalidTarget::BaseUrl { id: d.id.clone() };
        let uri: Uri = d.base_url.trim_end_matches('/').parse().map_err(|_| bad_url())?;
        let authority = uri.authority().ok_or_else(bad_url)?;
        if authority.as_str().contains('@') {
            return Err(bad_url());
        }
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad_url()),
        };
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(bad_url());
        }
        // A port that is not 1..65535 is refused, never replaced by the default.
        let text = authority.as_str();
        let after_host = &text[text.rfind(']').map_or(0, |i| i + 1)..];
        let port = match after_host.rsplit_once(':') {
            Some((_, port)) => port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad_url)?,
            None if tls => 443,
            None => 80,
        };
        let key = format!("{}://{}:{port}", if tls { "https" } else { "http" }, authority.host());
        let provider = match v1::Provider::try_from(d.provider) {
            Ok(v1::Provider::Openai) => Provider::OpenAi,
            Ok(v1::Provider::Azure) => {
                Provider::Azure { api_version: utf8_percent_encode(&d.api_version, QUERY_VALUE).to_string() }
            }
            Ok(v1::Provider::Unspecified) | Err(_) => {
                return Err(InvalidTarget::Provider { id: d.id.clone(), value: d.provider });
            }
        };
        let credential =
            credential(&provider, &d.api_key).map_err(|()| InvalidTarget::Credential { id: d.id.clone() })?;
        let mut target = Self {
            origin: Origin { key, host, port, tls },
            authority: HeaderValue::from_str(authority.as_str()).map_err(|_| bad_url())?,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            provider,
            credential,
            fixed: Default::default(),
        };
        for endpoint in ENDPOINTS {
            if !target.model_in_path_of(endpoint) {
                let path = target.path(endpoint, "").map_err(|_| bad_url())?;
                target.fixed[slot(endpoint)] = Some(path.parse().map_err(|_| bad_url())?);
            }
        }
        Ok(target)
    }
}

fn credential(provider: &Provider, key: &str) -> Result<Option<(HeaderName, HeaderValue)>, ()> {
    if key.is_empty() {
        return Ok(None);
    }
    let (name, text) = match provider {
        Provider::Azure { .. } => (API_KEY, key.to_owned()),
        Provider::OpenAi => (header::AUTHORIZATION, format!("Bearer {key}")),
    };
    // Visible ASCII only: a header value with a newline or control character is refused
    // here rather than silently dropped at send time.
    if !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(());
    }
    let mut value = HeaderValue::from_str(&text).map_err(|_| ())?;
    value.set_sensitive(true);
    Ok(Some((name, value)))
}

impl Target {
    /// The request shape of this upstream.
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// `scheme://host:port` of the upstream (no path, no credential): safe to log.
    pub fn origin(&self) -> &str {
        &self.origin.key
    }

    /// The upstream's host name or IP address (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.origin.host
    }

    /// The upstream's port (the scheme's when the URL names none).
    pub fn port(&self) -> u16 {
        self.origin.port
    }

    /// Whether the model name is part of `endpoint`'s URL path (it must then be one clean
    /// segment).
    pub fn model_in_path_of(&self, endpoint: Endpoint) -> bool {
        matches!(self.provider, Provider::Azure { .. }) && endpoint != Endpoint::Responses
    }

    /// Origin-form URI of `endpoint` for `model`: built once per snapshot unless the model is
    /// part of the path.
    pub fn uri(&self, endpoint: Endpoint, model: &str) -> Result<Uri, InvalidModelName> {
        if let Some(uri) = &self.fixed[slot(endpoint)] {
            return Ok(uri.clone());
        }
        // Segments are percent-encoded: the path always parses.
        self.path(endpoint, model)?.parse().map_err(|_| InvalidModelName(model.to_owned()))
    }

    /// Origin-form path and query of `endpoint` for `model`.
    pub fn path(&self, endpoint: Endpoint, model: &str) -> Result<String, InvalidModelName> {
        let base = &self.base_path;
        Ok(match &self.provider {
            Provider::OpenAi => format!("{base}{}", endpoint.openai_suffix()),
            Provider::Azure { api_version } => match endpoint {
                Endpoint::Responses => format!("{base}/openai/responses?api-version={api_version}"),
                other => {
                    let segment = path_segment(model)?;
                    format!("{base}/openai/deployments/{segment}{}?api-version={api_version}", other.openai_suffix())
                }
            },
        })
    }

    /// Origin-form path and query of the models listing (health probes).
    pub fn models_path(&self) -> String {
        match &self.provider {
            Provider::OpenAi => format!("{}/models", self.base_path),
            Provider::Azure { api_version } => format!("{}/openai/models?api-version={api_version}", self.base_path),
        }
    }
}

/// `model` as exactly one percent-encoded path segment; names that could walk the path or
/// end it are refused.
pub fn path_segment(model: &str) -> Result<String, InvalidModelName> {
    let walks = model.is_empty()
        || model == "."
        || model.contains("..")
        || model.chars().any(|c| matches!(c, '/' | '\\' | '?' | '#') || c.is_control());
    if walks {
        return Err(InvalidModelName(model.to_owned()));
    }
    Ok(utf8_percent_encode(model, SEGMENT).to_string())
}

#[cfg(test)]
mod tests;
