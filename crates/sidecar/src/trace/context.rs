//! W3C trace context (`traceparent`) and the sampler: which traces are recorded.

/// A parent read from a client's `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Parent {
    pub trace: u128,
    pub span: u64,
    pub sampled: bool,
}

fn hex(s: &[u8]) -> Option<u128> {
    s.iter().try_fold(0u128, |acc, &c| {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(digit))
    })
}

/// Parses a `traceparent` value (W3C Trace Context level 1): `None` for anything invalid
/// (then a new trace starts), including all-zero ids, upper-case hex and version `ff`. A
/// later version is read by its version-00 prefix.
pub(crate) fn parse(value: &[u8]) -> Option<Parent> {
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex(&value[..2])?;
    if version == 0xff || (version == 0 && value.len() != 55) || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    let trace = hex(&value[3..35])?;
    let span = u64::try_from(hex(&value[36..52])?).ok()?;
    let flags = hex(&value[53..55])?;
    (trace != 0 && span != 0).then_some(Parent { trace, span, sampled: flags & 1 == 1 })
}

/// The longest `tracestate` carried on, and its most members (W3C: 512 characters, 32).
const MAX_TRACESTATE: usize = 512;
const MAX_MEMBERS: usize = 32;

/// The client's `tracestate` headers combined (several are one list) when every member is
/// well formed; `None` otherwise, as W3C lets a vendor discard an invalid one.
pub(crate) fn tracestate<'a>(values: impl Iterator<Item = &'a http::HeaderValue>) -> Option<http::HeaderValue> {
    let mut members: Vec<&str> = Vec::new();
    for value in values {
        for member in value.to_str().ok()?.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            let (key, val) = member.split_once('=')?;
            let key_ok = key.len() <= 256
                && key.bytes().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && key.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/@".contains(&c))
                && key.bytes().filter(|c| *c == b'@').count() <= 1;
            let val_ok = (1..=256).contains(&val.len())
                && val.bytes().all(|c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
                && !val.ends_with(' ');
            if !key_ok || !val_ok {
                return None;
            }
            members.push(member);
        }
    }
    if members.is_empty() || members.len() > MAX_MEMBERS {
        return None;
    }
    let joined = members.join(",");
    if joined.len() > MAX_TRACESTATE {
        return None;
    }
    http::HeaderValue::from_str(&joined).ok()
}

/// The `traceparent` naming span `span` of trace `trace`.
pub(crate) fn format(trace: u128, span: u64, sampled: bool) -> http::HeaderValue {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    for (i, byte) in trace.to_be_bytes().into_iter().enumerate() {
        out[3 + 2 * i] = DIGITS[usize::from(byte >> 4)];
        out[4 + 2 * i] = DIGITS[usize::from(byte & 0xf)];
    }
    for (i, byte) in span.to_be_bytes().into_iter().enumerate() {
        out[36 + 2 * i] = DIGITS[usize::from(byte >> 4)];
        out[37 + 2 * i] = DIGITS[usize::from(byte & 0xf)];
    }
    out[54] = if sampled { b'1' } else { b'0' };
    http::HeaderValue::from_bytes(&out).expect("ASCII")
}

/// A new non-zero trace id.
pub(crate) fn new_trace() -> u128 {
    loop {
        let id = rand::random::<u128>();
        if id != 0 {
            return id;
        }
    }
}

/// A new non-zero span id.
pub(crate) fn new_span() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

/// How a trace with no parent (or, not parent-based, any trace) is sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Root {
    Always,
    Never,
    /// Sampled when the trace id's low 63 bits fall below this.
    Below(u64),
}

/// The sampler: as the OpenTelemetry SDK's, a trace-id ratio, usually parent-based (a
/// client's sampled parent is sampled, an unsampled one is not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sampler {
    root: Root,
    parent_based: bool,
}

impl Sampler {
    /// Parent-based, new traces sampled at `ratio` (clamped to 0..=1).
    pub fn ratio(ratio: f64) -> Self {
        Self { root: root(ratio), parent_based: true }
    }

    /// From `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`; `Err` names an unknown sampler.
    pub fn from_env(name: &str, arg: Option<&str>) -> Result<Self, String> {
        let ratio = || arg.and_then(|a| a.trim().parse::<f64>().ok()).unwrap_or(1.0);
        let (root, parent_based) = match name.trim() {
            "always_on" => (Root::Always, false),
            "always_off" => (Root::Never, false),
            "traceidratio" => (root(ratio()), false),
            "parentbased_always_on" => (Root::Always, true),
            "parentbased_always_off" => (Root::Never, true),
            "parentbased_traceidratio" => (root(ratio()), true),
            other => return Err(format!("unsupported OTEL_TRACES_SAMPLER {other:?}")),
        };
        Ok(Self { root, parent_based })
    }

    /// Whether a span of trace `trace` under `parent` is recorded.
    pub fn sample(&self, parent: Option<&Parent>, trace: u128) -> bool {
        if self.parent_based
            && let Some(parent) = parent
        {
            return parent.sampled;
        }
        match self.root {
            Root::Always => true,
            Root::Never => false,
            Root::Below(threshold) => ((trace as u64) >> 1) < threshold,
        }
    }
}

fn root(ratio: f64) -> Root {
    if ratio >= 1.0 {
        Root::Always
    } else if ratio > 0.0 {
        Root::Below((ratio * (1u64 << 63) as f64) as u64)
    } else {
        // Zero, negative and NaN alike.
        Root::Never
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VALID: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read() {
        let p = parse(VALID).unwrap();
        assert_eq!(p.trace, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p.span, 0x00f067aa0ba902b7);
        assert!(p.sampled);
        assert!(!parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap().sampled);
        // A later version with more fields is read by its prefix.
        assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").is_some());
    }

    #[test]
    fn an_invalid_traceparent_is_ignored() {
        for bad in [
            &b""[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473--00f067aa0ba902b7-01",
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            b"0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn what_is_written_is_read_back(trace in 1u128.., span in 1u64.., sampled in any::<bool>()) {
            let header = format(trace, span, sampled);
            prop_assert_eq!(parse(header.as_bytes()), Some(Parent { trace, span, sampled }));
        }

        #[test]
        fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn tracestate_is_combined_and_checked() {
        let h = |v: &str| http::HeaderValue::from_str(v).unwrap();
        let state = |values: &[&str]| {
            let values: Vec<_> = values.iter().map(|v| h(v)).collect();
            tracestate(values.iter()).map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(state(&["congo=t61rcWkgMzE"]).as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(state(&["a=1, b=2", "c@vendor=3"]).as_deref(), Some("a=1,b=2,c@vendor=3"));
        for bad in [
            &["!!!not a valid tracestate {}<>"][..],
            &["a=b\tc=d"],
            &["A=1"],
            &["a="],
            &["a=1,=2"],
            &["a@b@c=1"],
            &[""],
        ] {
            assert_eq!(state(bad), None, "{bad:?}");
        }
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert_eq!(state(&[many.join(",").as_str()]), None);
        let long = format!("a={}", "x".repeat(256));
        assert_eq!(state(&[long.as_str(), long.as_str()]), None, "over 512 characters");
    }

    #[test]
    fn the_sampler_follows_the_parent_and_the_ratio() {
        let sampled = Parent { trace: 7, span: 1, sampled: true };
        let unsampled = Parent { sampled: false, ..sampled };
        for ratio in [0.0, 0.5, 1.0] {
            let s = Sampler::ratio(ratio);
            assert!(s.sample(Some(&sampled), 7));
            assert!(!s.sample(Some(&unsampled), 7));
        }
        assert!(Sampler::ratio(1.0).sample(None, 0));
        assert!(!Sampler::ratio(0.0).sample(None, 0));
        assert!(!Sampler::ratio(f64::NAN).sample(None, 0));
        // About half of random trace ids at 0.5.
        let half = Sampler::ratio(0.5);
        let n = (0..10_000).filter(|_| half.sample(None, new_trace())).count();
        assert!((4_500..5_500).contains(&n), "{n}");
        // Not parent-based: the parent is ignored.
        let on = Sampler::from_env("always_on", None).unwrap();
        assert!(on.sample(Some(&unsampled), 7));
        let off = Sampler::from_env("parentbased_always_off", None).unwrap();
        assert!(!off.sample(None, 7) && off.sample(Some(&sampled), 7));
        let ratio = Sampler::from_env("parentbased_traceidratio", Some("0")).unwrap();
        assert_eq!(ratio, Sampler::ratio(0.0));
        assert!(Sampler::from_env("jaeger_remote", None).is_err());
    }
}
