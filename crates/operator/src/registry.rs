//! Who is subscribed, for which team, and what each has applied: the operator's knowledge of
//! the fleet, read by `/status` and the metrics.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// One connected sidecar stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscriber {
    /// Its team.
    pub team: String,
    /// `namespace/pod` it said it was.
    pub pod: String,
    /// Version acknowledged last.
    pub acked: Option<String>,
    /// The last rejected version and why.
    pub nacked: Option<(String, String)>,
    /// The protocol revision it speaks.
    pub protocol: i32,
}

/// Per team: connected streams and how many acknowledged each version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TeamCounts {
    /// Streams connected.
    pub connected: u64,
    /// Acknowledgements by version.
    pub acked: BTreeMap<String, u64>,
    /// Rejections: pod, version, error.
    pub nacks: Vec<(String, String, String)>,
    /// Streams by the protocol revision they speak (version skew at a glance).
    pub protocols: BTreeMap<i32, u64>,
}

/// Every connected stream.
#[derive(Debug, Default)]
pub struct Registry {
    next: AtomicU64,
    streams: Mutex<HashMap<u64, Subscriber>>,
}

impl Registry {
    /// Adds a stream; its id.
    pub fn register(&self, team: &str, pod: String, protocol: i32) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let subscriber = Subscriber { team: team.to_owned(), pod, protocol, ..Subscriber::default() };
        if let Ok(mut streams) = self.streams.lock() {
            streams.insert(id, subscriber);
        }
        id
    }

    /// Streams held.
    pub fn len(&self) -> usize {
        self.streams.lock().map_or(0, |s| s.len())
    }

    /// Whether no stream is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A stream acknowledged `version`.
    pub fn ack(&self, id: u64, version: &str) {
        self.update(id, |s| {
            s.acked = Some(version.to_owned());
            s.nacked = None;
        });
    }

    /// A stream rejected `version`.
    pub fn nack(&self, id: u64, version: &str, error: &str) {
        self.update(id, |s| s.nacked = Some((version.to_owned(), error.to_owned())));
    }

    /// A stream ended; its team when that was the team's last stream.
    pub fn remove(&self, id: u64) -> Option<String> {
        let mut streams = self.streams.lock().ok()?;
        let gone = streams.remove(&id)?;
        (!streams.values().any(|s| s.team == gone.team)).then_some(gone.team)
    }

    fn update(&self, id: u64, change: impl FnOnce(&mut Subscriber)) {
        if let Ok(mut streams) = self.streams.lock()
            && let Some(s) = streams.get_mut(&id)
        {
            change(s);
        }
    }

    /// Counts per team.
    pub fn teams(&self) -> BTreeMap<String, TeamCounts> {
        let mut teams: BTreeMap<String, TeamCounts> = BTreeMap::new();
        let Ok(streams) = self.streams.lock() else { return teams };
        for s in streams.values() {
            let counts = teams.entry(s.team.clone()).or_default();
            counts.connected += 1;
            *counts.protocols.entry(s.protocol).or_default() += 1;
            if let Some(v) = &s.acked {
                *counts.acked.entry(v.clone()).or_default() += 1;
            }
            if let Some((version, error)) = &s.nacked {
                counts.nacks.push((s.pod.clone(), version.clone(), error.clone()));
            }
        }
        teams
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_acks_nacks_and_disconnects() {
        let r = Registry::default();
        let a = r.register("t", "ns/a".into(), 1);
        let b = r.register("t", "ns/b".into(), 1);
        r.ack(a, "v1");
        r.nack(b, "v1", "bad");
        let t = &r.teams()["t"];
        assert_eq!((t.connected, t.acked.get("v1").copied()), (2, Some(1)));
        assert_eq!(t.nacks, vec![("ns/b".to_string(), "v1".to_string(), "bad".to_string())]);
        r.ack(b, "v2");
        assert!(r.teams()["t"].nacks.is_empty(), "an ack clears the rejection");
        assert_eq!(r.remove(a), None, "b is still connected");
        assert_eq!(r.remove(b), Some("t".to_string()), "the team's last stream");
        assert!(r.teams().is_empty());
    }
}
