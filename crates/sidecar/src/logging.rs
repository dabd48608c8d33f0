//! The log filter (`LLMROUTE_LOG`, `EnvFilter` syntax, default `info`). The transport
//! libraries under the sidecar (HTTP/2, hyper, tonic, tower, rustls) never log below `info`
//! unless the filter names one of them, or a module of one, as a target: their debug lines print
//! what peers send, such as the debug data of a collector's GOAWAY, which can echo the
//! credential the sidecar sent it. The hold is a second filter every line must also pass, so no
//! other directive (a bare level, a target prefix such as `h`, a span rule such as
//! `[Connection]=trace`) can lift it; naming the crate (`h2=debug`) or a module
//! (`h2::codec=trace`) does, for that target.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::layer::Filter;
use tracing_subscriber::registry::LookupSpan;

/// The libraries held at `info` (a target covers every target it prefixes: `hyper` also holds
/// `hyper_rustls`, `tower` also `tower_http`).
const TRANSPORT: [&str; 6] = ["h2", "hyper", "hyper_util", "tonic", "tower", "rustls"];

/// The filter for `spec` (the value of `LLMROUTE_LOG`), for a layer: its directives trimmed
/// (` debug `, a trailing comma or newline mean what they say); `info` when it is absent, empty
/// or invalid; starting from `info` when it sets no level of its own (a filter naming only some
/// targets never silences the sidecar's warnings and errors); the transport libraries held.
pub fn filter<S: Subscriber + for<'a> LookupSpan<'a>>(spec: Option<&str>) -> impl Filter<S> + use<S> {
    let given: Vec<&str> = spec.unwrap_or_default().split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    let valid = !given.is_empty() && given.iter().all(|d| EnvFilter::try_new(d).is_ok());
    let mut directives = if valid { given } else { vec!["info"] };
    if !directives.iter().any(|d| d.parse::<LevelFilter>().is_ok()) {
        directives.insert(0, "info");
    }
    let env = EnvFilter::try_new(directives.join(",")).unwrap_or_else(|_| EnvFilter::new("info"));
    // Everything passes the hold but the transport libraries' lines below info, and what a
    // directive names of them as its target (the crate, or a module) is left to the filter.
    let mut hold = Targets::new().with_default(LevelFilter::TRACE);
    for name in TRANSPORT {
        hold = hold.with_target(name, LevelFilter::INFO);
    }
    // A directive lifts only to log more than `info` (`h2=warn` or `h2[x]=off` needs no lift,
    // and must not give another directive, `h=trace`, the crate's debug lines).
    let lifting = directives.iter().filter(|d| {
        let level = if d.contains('=') { d.rsplit('=').next().and_then(|l| l.trim().parse().ok()) } else { None };
        level.is_none_or(|level: LevelFilter| level > LevelFilter::INFO)
    });
    for target in lifting.filter_map(|d| d.split(['=', '[']).next()).map(str::trim) {
        if TRANSPORT
            .iter()
            .any(|name| target == *name || target.strip_prefix(name).is_some_and(|m| m.starts_with("::")))
        {
            hold = hold.with_target(target, LevelFilter::TRACE);
        }
    }
    env.and(hold)
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
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let layer = tracing_subscriber::fmt::layer().with_writer(move || writer.clone()).with_ansi(false);
        let subscriber = tracing_subscriber::registry().with(layer.with_filter(filter(spec)));
        tracing::subscriber::with_default(subscriber, || {
            tracing::debug!(target: "h2::codec::framed_read", "h2-debug");
            tracing::info!(target: "h2", "h2-info");
            tracing::debug!(target: "tonic::transport::channel::service::connection", "tonic-debug");
            tracing::debug!(target: "hyper_util::client", "hyper-util-debug");
            tracing::debug!(target: "llmroute_sidecar::forward", "own-debug");
            // As h2 logs a GOAWAY: inside its `Connection{peer=Client}` span.
            let span = tracing::info_span!(target: "h2::proto::connection", "Connection", peer = "Client");
            span.in_scope(|| tracing::debug!(target: "h2::codec::framed_read", "h2-span-debug"));
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
        // No other directive lifts the hold: a target prefix, a span or field rule, a near name.
        for spec in [
            "h=debug",
            "info,h=trace",
            "t=debug",
            "ton=trace",
            "h2:=debug",
            "[Connection]=trace",
            "debug,[Connection]=trace",
            "[{peer}]=trace",
            "debug,[{peer=Client}]=debug",
            "debug,[poll]=trace",
            "h=trace,h2[nonexistent]=off",
            "h=trace,h2=warn",
            "t=trace,tonic[{x}]=info",
        ] {
            let out = logged(Some(spec));
            for hidden in ["h2-debug", "h2-span-debug", "tonic-debug", "hyper-util-debug"] {
                assert!(!out.contains(hidden), "{spec}: {hidden}: {out}");
            }
        }
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
