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

/// The filter for `spec` (the value of `LLMROUTE_LOG`): its directives trimmed (` debug `, a
/// trailing comma or newline mean what they say); `info` when it is absent, empty or invalid;
/// starting from `info` when it sets no level of its own (a filter naming only some targets
/// never silences the sidecar's warnings and errors).
pub fn filter(spec: Option<&str>) -> EnvFilter {
    let given: Vec<&str> = spec.unwrap_or_default().split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    let valid = !given.is_empty() && given.iter().all(|d| EnvFilter::try_new(d).is_ok());
    let mut directives = if valid { given } else { vec!["info"] };
    // Bare levels (`debug`, `TRACE`, `4`, `5`: tracing reads numbers as levels).
    let levels: Vec<LevelFilter> = directives.iter().filter_map(|d| d.parse().ok()).collect();
    if levels.is_empty() {
        directives.insert(0, "info");
    }
    let mut full = directives.join(",");
    if levels.iter().any(|level| *level >= LevelFilter::DEBUG) {
        for name in TRANSPORT.iter().filter(|name| !directives.iter().any(|d| names(d, name))) {
            full.push_str(&format!(",{name}=info"));
        }
    }
    EnvFilter::try_new(&full).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Whether directive `d` names the crate `name` itself. A module of it (`h2::frame=debug`)
/// does not: the crate's other modules stay held.
fn names(d: &str, name: &str) -> bool {
    d.split(['=', '[']).next().unwrap_or_default() == name
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
        // Naming one module of a crate leaves the crate's other modules held.
        let other = logged(Some("debug,h2::proto=debug"));
        assert!(!other.contains("h2-debug") && other.contains("own-debug"), "{other}");
        // Spacing, trailing commas and newlines do not change what a filter means.
        for spec in [" debug ", " 5 ", "\tdebug\n", "debug ,", "debug,,"] {
            let out = logged(Some(spec));
            assert!(out.contains("own-debug") && !out.contains("h2-debug"), "{spec:?}: {out}");
        }
    }

    #[test]
    fn quieter_targeted_and_malformed_filters_never_silence_the_sidecar() {
        // `warn` does not become `info` for the libraries.
        let warn = logged(Some("warn"));
        assert!(warn.is_empty(), "{warn}");
        // A filter that sets no level starts from info: nothing it does not name goes silent.
        let own = logged(Some("llmroute_sidecar=debug"));
        assert!(own.contains("own-debug") && own.contains("h2-info") && !own.contains("h2-debug"), "{own}");
        for spec in ["debug;h2=off", "[]=debug"] {
            assert!(logged(Some(spec)).contains("own-info"), "{spec}");
        }
        // Absent, empty or invalid: info.
        for spec in [None, Some("not a [valid filter"), Some(""), Some(" , ")] {
            let out = logged(spec);
            assert!(
                out.contains("own-info") && out.contains("h2-info") && !out.contains("own-debug"),
                "{spec:?}: {out}"
            );
        }
    }
}
