//! Where traces go and which are kept: `--otlp-endpoint` and `--trace-sample-ratio`, else
//! the standard `OTEL_*` environment variables.

use std::time::Duration;

use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use super::context::Sampler;

/// The export timeout when `OTEL_EXPORTER_OTLP_TIMEOUT` does not set one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The resolved trace configuration.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub endpoint: String,
    pub sampler: Sampler,
    pub headers: MetadataMap,
    pub timeout: Duration,
    /// What was wrong but not fatal (an unknown sampler, a malformed header), without values.
    pub warnings: Vec<String>,
}

/// Resolves the configuration from the flags and `env` (a variable's value, if set); `Ok(None)`
/// when no endpoint is configured (tracing off).
pub(crate) fn resolve(
    endpoint: Option<&str>,
    sample_ratio: Option<f64>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Resolved>, String> {
    let traces_or_all = |name: &str| {
        env(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
            .filter(|v| !v.trim().is_empty())
            .or_else(|| env(&format!("OTEL_EXPORTER_OTLP_{name}")).filter(|v| !v.trim().is_empty()))
    };
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let (source, endpoint) = match endpoint {
        Some(e) => ("--otlp-endpoint", e.to_owned()),
        None => match traces_or_all("ENDPOINT") {
            Some(e) => ("OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT", e),
            None => return Ok(None),
        },
    };
    let endpoint = endpoint.trim().to_owned();
    // The value is not repeated: it may carry a password.
    let uri: http::Uri = endpoint.parse().map_err(|e| format!("{source} is not a URL ({e})"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!("{source} must be http://HOST:PORT or https://HOST:PORT"));
    }
    let authority = uri.authority().map_or("", http::uri::Authority::as_str);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = host_port.rsplit_once(']').map_or(host_port, |(_, t)| t);
    if let Some((_, port)) = after_host.rsplit_once(':')
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err(format!("{source} has an invalid port"));
    }
    let mut warnings = Vec::new();
    if let Some(protocol) = env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        && protocol.trim() != "grpc"
    {
        warnings.push(format!("OTEL_EXPORTER_OTLP_PROTOCOL {:?} is not supported; using grpc", protocol.trim()));
    }
    let sampler = match (sample_ratio, env("OTEL_TRACES_SAMPLER")) {
        (Some(ratio), _) => Sampler::ratio(ratio),
        (None, Some(name)) => {
            let arg = env("OTEL_TRACES_SAMPLER_ARG");
            if name.contains("traceidratio")
                && let Some(arg) = &arg
                && !arg.trim().parse::<f64>().is_ok_and(|r| (0.0..=1.0).contains(&r))
            {
                warnings.push(format!("OTEL_TRACES_SAMPLER_ARG {:?} is not a ratio from 0 to 1", arg.trim()));
            }
            Sampler::from_env(&name, arg.as_deref()).unwrap_or_else(|e| {
                warnings.push(format!("{e}; sampling every trace (parent-based)"));
                Sampler::ratio(1.0)
            })
        }
        (None, None) => Sampler::ratio(1.0),
    };
    let mut headers = MetadataMap::new();
    let entries = traces_or_all("HEADERS");
    for (n, entry) in entries.iter().flat_map(|h| h.split(',')).filter(|e| !e.trim().is_empty()).enumerate() {
        // Neither names nor values appear in a warning: a malformed entry may hold a credential
        // on either side (`Authorization: Bearer abc=`).
        let Some((name, value)) = entry.split_once('=') else {
            warnings.push(format!("OTEL_EXPORTER_OTLP_HEADERS entry {} has no '='; skipped", n + 1));
            continue;
        };
        let name = decode(name.trim()).to_ascii_lowercase();
        match (MetadataKey::from_bytes(name.as_bytes()), MetadataValue::try_from(decode(value.trim()).as_str())) {
            (Ok(key), Ok(value)) => {
                headers.insert(key, value);
            }
            _ => warnings.push(format!("OTEL_EXPORTER_OTLP_HEADERS entry {} is not a valid header; skipped", n + 1)),
        }
    }
    let timeout = match traces_or_all("TIMEOUT") {
        None => DEFAULT_TIMEOUT,
        Some(ms) => match ms.trim().parse::<u64>() {
            Ok(ms) if (1..=600_000).contains(&ms) => Duration::from_millis(ms),
            _ => {
                warnings.push(format!("OTEL_EXPORTER_OTLP_TIMEOUT {ms:?} is not 1..=600000 ms; using 10000"));
                DEFAULT_TIMEOUT
            }
        },
    };
    Ok(Some(Resolved { endpoint, sampler, headers, timeout, warnings }))
}

/// Percent-decoding, as the OTLP exporter specification asks of header names and values.
fn decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn no_endpoint_is_tracing_off() {
        assert!(resolve(None, Some(1.0), env(&[])).unwrap().is_none());
        assert!(resolve(None, None, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])).unwrap().is_none());
    }

    #[test]
    fn the_flag_wins_then_the_traces_variable_then_the_general_one() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://all:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ];
        assert_eq!(resolve(Some("http://flag:4317"), None, env(&vars)).unwrap().unwrap().endpoint, "http://flag:4317");
        assert_eq!(resolve(None, None, env(&vars)).unwrap().unwrap().endpoint, "http://traces:4317");
        assert_eq!(resolve(None, None, env(&vars[..1])).unwrap().unwrap().endpoint, "http://all:4317");
    }

    #[test]
    fn a_bad_endpoint_is_an_error() {
        for bad in ["collector:4317", "ftp://x:1", "http://", "not a url", "http://h:99999", "http://h:0"] {
            assert!(resolve(Some(bad), None, env(&[])).is_err(), "{bad}");
        }
        // A password in the endpoint is not repeated; the source is named.
        let e = resolve(None, None, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://u:SECRETPW@x")])).unwrap_err();
        assert!(!e.contains("SECRETPW") && e.contains("OTEL_EXPORTER_OTLP"), "{e}");
    }

    #[test]
    fn the_sdk_can_be_disabled_and_other_protocols_are_a_warning() {
        let vars = [("OTEL_SDK_DISABLED", "true"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317")];
        assert!(resolve(None, None, env(&vars)).unwrap().is_none());
        let vars = [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")];
        assert_eq!(resolve(Some("http://c:4318"), None, env(&vars)).unwrap().unwrap().warnings.len(), 1);
        for good in ["http://[::1]:4317", "https://u:p@c:443/v1", "http://c"] {
            assert!(resolve(Some(good), None, env(&[])).is_ok(), "{good}");
        }
        let vars = [("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        assert!(resolve(Some("http://c:4317"), None, env(&vars)).unwrap().unwrap().warnings.is_empty());
    }

    #[test]
    fn the_sampler_comes_from_the_flag_else_the_environment() {
        let vars = [("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "0")];
        let r = |ratio, vars: &[(&str, &str)]| resolve(Some("http://c:4317"), ratio, env(vars)).unwrap().unwrap();
        assert_eq!(r(None, &vars).sampler, Sampler::ratio(0.0));
        assert_eq!(r(Some(1.0), &vars).sampler, Sampler::ratio(1.0));
        assert_eq!(r(None, &[]).sampler, Sampler::ratio(1.0));
        let unknown = r(None, &[("OTEL_TRACES_SAMPLER", "xray")]);
        assert_eq!(unknown.sampler, Sampler::ratio(1.0));
        assert_eq!(unknown.warnings.len(), 1);
        let bad_arg = r(None, &[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "abc")]);
        assert_eq!(bad_arg.warnings.len(), 1);
    }

    #[test]
    fn headers_and_timeout_are_read_and_bad_ones_skipped_without_their_values() {
        let vars = [
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer%20sekrit,x-tenant=a+b,broken,bad key=sekrit2,Authorization: Bearer sekrit3=",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ];
        let r = resolve(Some("https://c:4317"), None, env(&vars)).unwrap().unwrap();
        assert_eq!(r.headers.get("authorization").unwrap(), "Bearer sekrit");
        assert_eq!(r.headers.get("x-tenant").unwrap(), "a+b");
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.timeout, Duration::from_millis(2500));
        assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
        assert!(r.warnings.iter().all(|w| !w.contains("sekrit")));
        let r = resolve(Some("http://c:4317"), None, env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "0")])).unwrap().unwrap();
        assert_eq!((r.timeout, r.warnings.len()), (DEFAULT_TIMEOUT, 1));
    }
}
