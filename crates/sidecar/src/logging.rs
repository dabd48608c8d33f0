//! The log filter (`LLMROUTE_LOG`, `EnvFilter` syntax, default `info`). At `debug` or `trace`
//! the transport libraries under the sidecar (HTTP/2, hyper, tonic, tower, rustls) stay at
//! `info` unless the filter names them: their debug lines print what peers send, such as the
//! debug data of a collector's GOAWAY, which can echo the credential the sidecar sent it.
//! Naming one (`debug,h2=debug`) turns its lines back on.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// The libraries held at `info` under a bare `debug` or `trace` (a target directive covers
/// every target it prefixes: `hyper` also holds `hyper_rustls`, `tower` also `tower_http`).
const TRANSPORT: [&str; 6] = ["h2", "hyper", "hyper_util", "tonic", "tower", "rustls"];

/// The filter for `spec` (the value of `LLMROUTE_LOG`); `info` when it is absent or invalid.
pub fn filter(spec: Option<&str>) -> EnvFilter {
    let spec = spec.filter(|s| !s.trim().is_empty() && EnvFilter::try_new(s).is_ok()).unwrap_or("info");
    let directives: Vec<&str> = spec.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    // A bare level (`debug`, `TRACE`, `4`, `5`: tracing reads numbers as levels) of debug or more.
    let verbose =
        directives.iter().filter_map(|d| d.parse::<LevelFilter>().ok()).any(|level| level >= LevelFilter::DEBUG);
    let mut full = spec.to_owned();
    if verbose {
        for name in TRANSPORT.iter().filter(|name| !directives.iter().any(|d| names(d, name))) {
            full.push_str(&format!(",{name}=info"));
        }
    }
    EnvFilter::try_new(&full).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Whether directive `d` is about target `name` (the crate or one of its modules).
fn names(d: &str, name: &str) -> bool {
    let target = d.split(['=', '[']).next().unwrap_or_default();
    target == name || target.strip_prefix(name).is_some_and(|rest| rest.starts_with("::"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the filter for `spec` lets through of a debug and an info line of each target.
    fn logged(spec: Option<&str>) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter(spec))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "h2::codec::framed_read", "h2-debug");
            tracing::info!(target: "h2", "h2-info");
            tracing::debug!(target: "tonic::transport::channel::service::connection", "tonic-debug");
            tracing::debug!(target: "hyper_util::client", "hyper-util-debug");
            tracing::debug!(target: "llmroute_sidecar::forward", "own-debug");
            tracing::info!(target: "llmroute_sidecar::app", "own-info");
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn at_debug_the_transport_libraries_stay_at_info_unless_named() {
        let debug = logged(Some("debug"));
        for hidden in ["h2-debug", "tonic-debug", "hyper-util-debug"] {
            assert!(!debug.contains(hidden), "{hidden}: {debug}");
        }
        for shown in ["h2-info", "own-debug", "own-info"] {
            assert!(debug.contains(shown), "{shown}: {debug}");
        }
        for spec in ["trace", "TRACE", "DeBuG", "4", "5", "warn,5"] {
            let out = logged(Some(spec));
            assert!(
                !out.contains("h2-debug") && !out.contains("tonic-debug") && out.contains("own-debug"),
                "{spec}: {out}"
            );
        }
        // Named, a library logs at the level asked.
        let named = logged(Some("debug,h2=debug"));
        assert!(named.contains("h2-debug") && !named.contains("tonic-debug"), "{named}");
        let module = logged(Some("info,tonic::transport=debug"));
        assert!(module.contains("tonic-debug") && !module.contains("own-debug"), "{module}");
    }

    #[test]
    fn quieter_or_targeted_filters_are_left_as_written() {
        // `warn` does not become `info` for the libraries.
        let warn = logged(Some("warn"));
        assert!(warn.is_empty(), "{warn}");
        let own = logged(Some("llmroute_sidecar=debug"));
        assert!(own.contains("own-debug") && !own.contains("h2"), "{own}");
        // Absent or invalid: info.
        for spec in [None, Some("not a [valid filter"), Some("")] {
            let out = logged(spec);
            assert!(
                out.contains("own-info") && out.contains("h2-info") && !out.contains("own-debug"),
                "{spec:?}: {out}"
            );
        }
    }
}
