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
    let Some(endpoint) = endpoint.map(str::to_owned).or_else(|| traces_or_all("ENDPOINT")) else {
        return Ok(None);
    };
    let endpoint = endpoint.trim().to_owned();
    let uri: http::Uri = endpoint.parse().map_err(|e| format!("endpoint {endpoint:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!("endpoint {endpoint:?} must be http://HOST:PORT or https://HOST:PORT"));
    }
    let mut warnings = Vec::new();
    let sampler = match (sample_ratio, env("OTEL_TRACES_SAMPLER")) {
        (Some(ratio), _) => Sampler::ratio(ratio),
        (None, Some(name)) => Sampler::from_env(&name, env("OTEL_TRACES_SAMPLER_ARG").as_deref()).unwrap_or_else(|e| {
            warnings.push(format!("{e}; sampling every trace (parent-based)"));
            Sampler::ratio(1.0)
        }),
        (None, None) => Sampler::ratio(1.0),
    };
    let mut headers = MetadataMap::new();
    for entry in traces_or_all("HEADERS").iter().flat_map(|h| h.split(',')).filter(|e| !e.trim().is_empty()) {
        let Some((name, value)) = entry.split_once('=') else {
            warnings.push("an OTEL_EXPORTER_OTLP_HEADERS entry has no '='; skipped".into());
            continue;
        };
        let name = decode(name.trim()).to_ascii_lowercase();
        match (MetadataKey::from_bytes(name.as_bytes()), MetadataValue::try_from(decode(value.trim()).as_str())) {
            (Ok(key), Ok(value)) => {
                headers.insert(key, value);
            }
            // The value may be a credential: never in a warning.
            _ => warnings.push(format!("OTEL_EXPORTER_OTLP_HEADERS entry {name:?} is not a valid header; skipped")),
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
        for bad in ["collector:4317", "ftp://x:1", "http://", "not a url"] {
            assert!(resolve(Some(bad), None, env(&[])).is_err(), "{bad}");
        }
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
    }

    #[test]
    fn headers_and_timeout_are_read_and_bad_ones_skipped_without_their_values() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20sekrit,x-tenant=a+b,broken,bad key=sekrit2"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        ];
        let r = resolve(Some("https://c:4317"), None, env(&vars)).unwrap().unwrap();
        assert_eq!(r.headers.get("authorization").unwrap(), "Bearer sekrit");
        assert_eq!(r.headers.get("x-tenant").unwrap(), "a+b");
        assert_eq!(r.headers.len(), 2);
        assert_eq!(r.timeout, Duration::from_millis(2500));
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings.iter().all(|w| !w.contains("sekrit")));
        let r = resolve(Some("http://c:4317"), None, env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "0")])).unwrap().unwrap();
        assert_eq!((r.timeout, r.warnings.len()), (DEFAULT_TIMEOUT, 1));
    }
}
