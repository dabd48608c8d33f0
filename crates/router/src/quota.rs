//! A sidecar's admission under a fleet-wide limit: a token bucket refilled at the rate the
//! operator assigned, falling back to a share of the reserve when the assignment expires (the
//! operator being away included). Instants are seconds, passed in.

/// Share of a limit set aside for sidecars that hold no assignment; also what a sidecar uses
/// before its first assignment arrives (a conservative default).
pub const RESERVE_SHARE: f64 = 0.05;

/// A sidecar's admission at a rate: a token bucket refilled continuously.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    /// Holding a grant (else on the reserve).
    granted: bool,
    per_minute: f64,
    tokens: f64,
    at: f64,
    /// When the rate stops being valid (seconds), after which `fallback` applies.
    expires: f64,
    fallback: f64,
}

impl Bucket {
    /// A bucket on the reserve (`fallback` per minute), empty.
    pub fn reserve(fallback: f64, now: f64) -> Self {
        Self { granted: false, per_minute: fallback, tokens: 0.0, at: now, expires: f64::INFINITY, fallback }
    }

    /// One second of the rate, at least one unit (so that a slow rate still admits).
    fn capacity(&self) -> f64 {
        (self.per_minute / 60.0).max(1.0)
    }

    /// Applies an assignment of `per_minute` valid until `expires`; the reserve share
    /// `fallback` applies after. A new grant starts with one second of its rate.
    pub fn grant(&mut self, per_minute: f64, expires: f64, fallback: f64, now: f64) {
        self.refill(now);
        let fresh = !self.granted;
        self.granted = true;
        self.per_minute = per_minute.max(0.0);
        self.expires = expires;
        self.fallback = fallback.max(0.0);
        if fresh {
            self.tokens = self.tokens.max(self.capacity());
        }
        self.tokens = self.tokens.min(self.capacity());
    }

    /// Moves to the reserve at `per_minute` now (no grant), keeping what tokens are left.
    pub fn set_reserve(&mut self, per_minute: f64, now: f64) {
        self.refill(now);
        self.granted = false;
        self.per_minute = per_minute.max(0.0);
        self.fallback = self.per_minute;
        self.expires = f64::INFINITY;
        self.tokens = self.tokens.min(self.capacity());
    }

    fn refill(&mut self, now: f64) {
        if now > self.expires {
            // Tokens earned at the granted rate up to the expiry, then the fallback.
            let granted = (self.expires - self.at).max(0.0);
            self.tokens = (self.tokens + granted * self.per_minute / 60.0).min(self.capacity());
            self.at = self.expires;
            self.per_minute = self.fallback;
            self.granted = false;
            self.expires = f64::INFINITY;
            self.tokens = self.tokens.min(self.capacity());
        }
        let elapsed = (now - self.at).max(0.0);
        self.tokens = (self.tokens + elapsed * self.per_minute / 60.0).min(self.capacity());
        self.at = now.max(self.at);
    }

    /// Whether one request (or `cost` tokens) may go now.
    pub fn admit(&mut self, cost: f64, now: f64) -> bool {
        if self.allows(cost, now) {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }

    /// Whether `cost` could be admitted now (nothing is taken).
    pub fn allows(&mut self, cost: f64, now: f64) -> bool {
        self.refill(now);
        self.tokens + 1e-9 >= cost
    }

    /// Takes `cost` whatever is left (usage learned after the fact, e.g. the real tokens of an
    /// answer): the bucket may go into debt, at most one minute of its rate, and repays it
    /// before admitting again. A negative `cost` gives back (an estimate that was too high).
    pub fn charge(&mut self, cost: f64, now: f64) {
        if !cost.is_finite() {
            return;
        }
        self.refill(now);
        self.tokens = (self.tokens - cost).clamp(-self.per_minute.max(1.0), self.capacity());
    }

    /// The rate in force, per minute.
    pub fn per_minute(&self) -> f64 {
        self.per_minute
    }

    /// Whether a grant (not the reserve) is in force at `now`.
    pub fn granted(&self, now: f64) -> bool {
        self.granted && now <= self.expires
    }
}
