//! The sidecar's part of fleet learning: what it remembers to credit later signals (answers
//! for `POST /v1/feedback`, session owners for the next turn), what it reports to the
//! operator (see [`report`]), and the answer scan that finds truncation and real usage.

mod feedback;
pub(crate) mod report;
pub(crate) mod scan;

use std::sync::Mutex;

use llmroute_router::{BoundedLru, RequestType};

pub(crate) use feedback::handle as feedback;

/// Answers remembered for feedback, at most (an id is at most 256 bytes: a few tens of MiB
/// at worst).
const ANSWERS: usize = 50_000;
/// How long an answer can get feedback, milliseconds.
const ANSWER_TTL_MS: u64 = 3_600_000;
/// Sessions whose owner is remembered, at most (a key is a 64-byte digest and a last turn at
/// most [`LAST_TURN_BYTES`]: about 30 MiB at worst).
const SESSIONS: usize = 50_000;
/// Bytes of a session's last user message kept for the repetition signal.
pub(crate) const LAST_TURN_BYTES: usize = 512;
/// How long a session owns its deployment after its last turn, milliseconds.
const SESSION_TTL_MS: u64 = 1_800_000;

/// What to credit: an adaptive cell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Credit {
    pub group: String,
    pub kind: RequestType,
    pub deployment: String,
    pub quality_tier: u32,
}

/// A session's owner and its last turn.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub credit: Credit,
    /// The last user message (bounded by the classifier's read).
    pub last_user: String,
    /// The last turn failed (the client got an error): if the session ends here, that is one
    /// more failure of its deployment.
    pub failed: bool,
    /// The answer of the last turn was already charged by a later turn (a repeated question or
    /// a correction counts once, however often it is sent).
    pub charged: bool,
}

impl Session {
    /// A session's turn, its text cut to [`LAST_TURN_BYTES`] (at a character boundary).
    pub fn new(credit: Credit, last_user: &str, failed: bool) -> Self {
        let mut end = last_user.len().min(LAST_TURN_BYTES);
        while !last_user.is_char_boundary(end) {
            end -= 1;
        }
        Self { credit, last_user: last_user[..end].to_owned(), failed, charged: false }
    }
}

/// The memory key of a session: a digest of its group and key, so that a client's huge
/// session id costs 64 bytes.
pub(crate) fn session_key(group: &str, key: &str) -> String {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(group.as_bytes());
    hasher.update([0]);
    hasher.update(key.as_bytes());
    hex::encode(hasher.finalize())
}

/// A signal for `credit` (ignored when its deployment left the view).
pub(crate) fn charge(routes: &crate::routes::Routes, credit: &Credit, reward: f64) {
    if let Some(idx) = routes.table.deployment_index(&credit.deployment) {
        routes.state.get(idx).observe_adaptive(&credit.group, credit.kind, credit.quality_tier, reward);
    }
}

/// Bounded memories of one sidecar.
pub(crate) struct Memory {
    answers: Mutex<BoundedLru<String, Credit>>,
    sessions: Mutex<BoundedLru<String, Session>>,
    /// `llmroute_adaptive_memory_evictions_total{memory}`.
    evictions: Option<prometheus::IntCounterVec>,
}

impl Default for Memory {
    fn default() -> Self {
        Self::new(ANSWERS, SESSIONS)
    }
}

impl Memory {
    pub fn new(answers: usize, sessions: usize) -> Self {
        Self {
            answers: Mutex::new(BoundedLru::new(answers, ANSWER_TTL_MS)),
            sessions: Mutex::new(BoundedLru::new(sessions, SESSION_TTL_MS)),
            evictions: None,
        }
    }

    /// Counts evictions in `counter` (label `memory`: answers, sessions).
    pub fn with_metric(mut self, counter: prometheus::IntCounterVec) -> Self {
        self.evictions = Some(counter);
        self
    }

    fn count(&self, memory: &str, before: u64, after: u64) {
        if let Some(c) = &self.evictions
            && after > before
        {
            c.with_label_values(&[memory]).inc_by(after - before);
        }
    }

    /// Remembers that answer `id` came from `credit` (an empty id is not remembered).
    pub fn answered(&self, id: String, credit: Credit, now_ms: u64) {
        if id.is_empty() {
            return;
        }
        if let Ok(mut answers) = self.answers.lock() {
            let before = answers.evicted();
            answers.insert(id, credit, now_ms);
            self.count("answers", before, answers.evicted());
        }
    }

    /// What answer `id` credits, if it is remembered; it is forgotten (one rating per answer).
    pub fn take_answer(&self, id: &str, now_ms: u64) -> Option<Credit> {
        self.answers.lock().ok()?.remove(&id.to_owned(), now_ms)
    }

    /// The session `key`'s owner and last turn.
    pub fn session(&self, key: &str, now_ms: u64) -> Option<Session> {
        self.sessions.lock().ok()?.get(&key.to_owned(), now_ms)
    }

    /// Sessions that ended (expired) right after a failed turn: their deployments' credits.
    pub fn abandoned(&self, now_ms: u64) -> Vec<Credit> {
        let Ok(mut sessions) = self.sessions.lock() else { return Vec::new() };
        sessions.drain_expired(now_ms).into_iter().filter(|(_, s)| s.failed).map(|(_, s)| s.credit).collect()
    }

    /// Records a turn of session `key`.
    pub fn turn(&self, key: String, session: Session, now_ms: u64) {
        if let Ok(mut sessions) = self.sessions.lock() {
            let before = sessions.evicted();
            sessions.insert(key, session, now_ms);
            self.count("sessions", before, sessions.evicted());
        }
    }
}

#[cfg(test)]
mod tests {
    use llmroute_router::RequestType;

    use super::*;

    fn credit(d: &str) -> Credit {
        Credit { group: "g".into(), kind: RequestType::Writing, deployment: d.into(), quality_tier: 3 }
    }

    #[test]
    fn memories_are_bounded_count_evictions_and_rate_an_answer_once() {
        let registry = prometheus::Registry::new();
        let counter = prometheus::IntCounterVec::new(prometheus::Opts::new("e", "e"), &["memory"]).unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        let memory = Memory::new(2, 1).with_metric(counter.clone());
        for i in 0..5 {
            memory.answered(format!("id-{i}"), credit("d"), 0);
        }
        assert_eq!(counter.with_label_values(&["answers"]).get(), 3);
        assert!(memory.take_answer("id-0", 0).is_none(), "evicted");
        assert_eq!(memory.take_answer("id-4", 0), Some(credit("d")));
        assert!(memory.take_answer("id-4", 0).is_none(), "rated once");
        assert!(memory.take_answer("id-3", ANSWER_TTL_MS + 1).is_none(), "expired");
        let session = |d: &str| Session::new(credit(d), "q", d == "d2");
        memory.turn("a".into(), session("d1"), 0);
        memory.turn("b".into(), session("d2"), 0);
        assert!(memory.session("a", 0).is_none());
        assert_eq!(memory.session("b", 0).map(|s| s.credit.deployment), Some("d2".into()));
        assert_eq!(counter.with_label_values(&["sessions"]).get(), 1);
        // Ended right after a failed turn: an abandonment, reported once.
        assert!(memory.abandoned(SESSION_TTL_MS - 1).is_empty());
        assert_eq!(memory.abandoned(SESSION_TTL_MS + 1), vec![credit("d2")]);
        assert!(memory.abandoned(u64::MAX).is_empty());
        memory.answered(String::new(), credit("d"), 0);
        assert!(memory.take_answer("", 0).is_none(), "an empty id is no id");
    }

    #[test]
    fn what_a_session_costs_is_bounded_whatever_the_client_sends() {
        let key = session_key("g", &"k".repeat(400_000));
        assert_eq!(key.len(), 64);
        assert_ne!(key, session_key("h", &"k".repeat(400_000)), "sessions are per group");
        let long = "é".repeat(1_000);
        let s = Session::new(credit("d"), &long, false);
        assert!(s.last_user.len() <= LAST_TURN_BYTES && !s.last_user.is_empty());
    }
}
