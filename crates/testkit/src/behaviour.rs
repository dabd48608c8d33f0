//! What one fake upstream instance does, and what it has seen.

use serde::{Deserialize, Serialize};

/// How an instance answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Answers like OpenAI.
    #[default]
    Normal,
    /// Writes bytes that are not HTTP, then closes.
    Garbage,
    /// Sends headers and the first stream chunk, then closes the connection.
    CloseMidStream,
    /// Reads the request and never answers.
    Hang,
    /// Sends a 200 head, then nothing: no body byte ever comes.
    StallAfterHeaders,
    /// Sends a 200 head and the first body bytes (first SSE event), then nothing.
    StallAfterFirstChunk,
    /// Sends a 200 head announcing a chunked body, then bytes that are not chunk framing.
    BadChunk,
    /// Answers 400 with an error body that echoes the credential it received.
    EchoKey,
}

/// Behaviour of one instance; every field can be changed at run time (partial updates).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Behaviour {
    /// Delay before the response headers, milliseconds.
    pub latency_ms: u64,
    /// Status of API answers (200 = success; others get an OpenAI error body).
    pub status: u16,
    /// The next N API requests answer 500, then `status` again.
    pub fail_next: u32,
    /// `GET .../models` answers 200 when true, 503 when false.
    pub healthy: bool,
    /// Prompt budget in tokens (4 request bytes each); larger requests get a 400
    /// `context_length_exceeded`. 0 = unlimited.
    pub context_window: u64,
    /// Chunks of a streamed answer.
    pub stream_chunks: u32,
    /// Delay between streamed chunks, milliseconds.
    pub chunk_delay_ms: u64,
    /// Transport-level behaviour.
    pub mode: Mode,
    /// When > 0, a successful answer is about this many bytes: a JSON answer padded with a
    /// `padding` string, or (streamed) one SSE event that large. Sent in 64 KiB chunks.
    pub huge_bytes: u64,
    /// `Retry-After` value sent with error statuses ("" = none).
    pub retry_after: String,
    /// Answer 400 to a request carrying `stream_options` (as some upstreams do).
    pub reject_stream_options: bool,
    /// Keep a prompt cache, as providers do: a chat answer reports the longest run of leading
    /// messages this instance has seen before as `usage.prompt_tokens_details.cached_tokens`
    /// (4 bytes a token).
    pub prompt_cache: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            latency_ms: 0,
            status: 200,
            fail_next: 0,
            healthy: true,
            context_window: 0,
            stream_chunks: 3,
            chunk_delay_ms: 0,
            mode: Mode::Normal,
            huge_bytes: 0,
            retry_after: String::new(),
            reject_stream_options: false,
            prompt_cache: false,
        }
    }
}

/// What an instance has received.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// API requests (not health probes).
    pub requests: u64,
    /// Health probes (`GET .../models`).
    pub probes: u64,
    /// `model` of the last API request.
    pub last_model: String,
    /// Path and query of the last API request.
    pub last_path: String,
    /// Credential of the last API request (`Authorization` or `api-key`).
    pub last_credential: String,
    /// `previous_response_id` of the last request, if any.
    pub last_previous_response_id: String,
    /// `Host` header of the last API request ("" when absent: HTTP/1.1 requires it).
    pub last_host: String,
    /// Whether the last request carried the client's own bearer token (it must not).
    pub saw_client_authorization: bool,
    /// Whether any request carried `stream_options`.
    pub saw_stream_options: bool,
    /// `traceparent` of the last API request ("" when none).
    pub last_traceparent: String,
    /// Whether an upstream that rejects `stream_options` (behaviour) was sent it.
    pub rejected_stream_options: bool,
    /// Chat requests answered with cached tokens (behaviour `prompt_cache`).
    pub cache_hits: u64,
}
