//! The optional access log (`--access-log`): one JSON line per request on standard output, as
//! Envoy's: when, which request, what was asked, where it went, how it ended, how long it
//! took, what it used. Never a credential or a prompt. Lines go through a bounded queue to a
//! writer thread; a full queue drops lines (counted) rather than slow a request.

use std::io::Write as _;
use std::sync::mpsc::{SyncSender, TrySendError};

use prometheus::IntCounter;
use serde_json::{Value, json};

/// Lines waiting for the writer, at most.
const QUEUE: usize = 8_192;
/// Longest client-given text kept in a line (model, request id), characters.
const MAX_TEXT: usize = 256;

/// The access log.
pub(crate) struct AccessLog {
    lines: SyncSender<String>,
    dropped: IntCounter,
}

/// One request, as logged.
#[derive(Debug, Default)]
pub(crate) struct Entry<'a> {
    pub start_unix_ms: u64,
    pub request_id: &'a str,
    pub method: &'a str,
    pub operation: &'a str,
    pub model: &'a str,
    pub model_group: &'a str,
    pub deployment: &'a str,
    pub attempts: usize,
    pub status: &'a str,
    pub duration_ms: f64,
    pub ttft_ms: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
}

/// Client text as logged: bounded, control characters replaced.
pub(crate) fn clean(text: &str) -> String {
    text.chars().take(MAX_TEXT).map(|c| if c.is_control() { '?' } else { c }).collect()
}

impl Entry<'_> {
    /// The JSON line.
    pub fn line(&self) -> String {
        let v: Value = json!({
            "start_time_unix_ms": self.start_unix_ms,
            "request_id": clean(self.request_id),
            "method": clean(self.method),
            "operation": self.operation,
            "model": clean(self.model),
            "model_group": self.model_group,
            "deployment": self.deployment,
            "attempts": self.attempts,
            "status": self.status,
            "duration_ms": (self.duration_ms * 1000.0).round() / 1000.0,
            "ttft_ms": self.ttft_ms.map(|t| (t * 1000.0).round() / 1000.0),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
        });
        v.to_string()
    }
}

impl AccessLog {
    /// A log writing to standard output from a thread of its own; `dropped` counts lines a
    /// full queue refused.
    pub fn stdout(dropped: IntCounter) -> std::io::Result<Self> {
        let (lines, receiver) = std::sync::mpsc::sync_channel::<String>(QUEUE);
        std::thread::Builder::new().name("llmroute-access-log".into()).spawn(move || {
            let stdout = std::io::stdout();
            while let Ok(line) = receiver.recv() {
                let mut out = stdout.lock();
                let _ = writeln!(out, "{line}");
                // Lines already queued go out together.
                while let Ok(more) = receiver.try_recv() {
                    let _ = writeln!(out, "{more}");
                }
                let _ = out.flush();
            }
        })?;
        Ok(Self { lines, dropped })
    }

    /// Logs `entry` (or counts it dropped).
    pub fn log(&self, entry: &Entry<'_>) {
        match self.lines.try_send(entry.line()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_bounded_clean_client_text() {
        let entry = Entry {
            request_id: "id\n2026 forged line",
            model: &"m".repeat(10_000),
            status: "200",
            attempts: 2,
            input_tokens: Some(5),
            ..Entry::default()
        };
        let line = entry.line();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["request_id"], "id?2026 forged line");
        assert_eq!(v["model"].as_str().unwrap().len(), MAX_TEXT);
        assert_eq!(
            (v["attempts"].as_u64(), v["input_tokens"].as_u64(), v["ttft_ms"].is_null()),
            (Some(2), Some(5), true)
        );
    }
}
