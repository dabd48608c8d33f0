//! The operator's merge of what sidecars learned. Sidecars report posterior deltas (successes
//! and failures per cell) at most once a second, each report numbered; the operator merges them
//! exactly and in any order: sums in fixed point (millionths), so addition is associative and
//! no update is lost when many sidecars report at once; a report resent after a reconnect
//! (a sequence number already merged) counts once. One sidecar's and one team's evidence per
//! cell and epoch is capped, so no team can poison a global group. Once per epoch the operator
//! decays the merged posteriors (the only place decay happens).

use std::collections::{BTreeMap, HashMap};

use llmroute_router::adaptive::Posterior;

/// Fixed-point unit: one millionth of an observation.
const UNIT: f64 = 1_000_000.0;

/// A cell: (group, request type, deployment).
pub type Cell = (String, String, String);

/// One cell's change in a report.
#[derive(Clone, Debug, PartialEq)]
pub struct Delta {
    /// The cell.
    pub cell: Cell,
    /// Successes (rewards summed), >= 0.
    pub successes: f64,
    /// Failures (1 - reward summed), >= 0.
    pub failures: f64,
}

/// A sidecar's report.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The sidecar's unique id (its pod uid).
    pub sidecar: String,
    /// Its team.
    pub team: String,
    /// Increases by one with every report the sidecar makes.
    pub seq: u64,
    /// The changes.
    pub deltas: Vec<Delta>,
}

/// What happened to a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// Merged; `capped` deltas were cut to the per-epoch caps.
    Merged {
        /// Deltas reduced by a cap.
        capped: usize,
    },
    /// Its sequence number was merged already (a resend).
    Duplicate,
}

/// Per-epoch caps of evidence per cell, in observations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Caps {
    /// One sidecar.
    pub sidecar: f64,
    /// One team.
    pub team: f64,
}

impl Default for Caps {
    fn default() -> Self {
        Self { sidecar: 200.0, team: 2_000.0 }
    }
}

/// The merged state.
#[derive(Clone, Debug, Default)]
pub struct Learning {
    /// Per cell: (successes, failures) in millionths since the last epoch.
    pending: BTreeMap<Cell, (u64, u64)>,
    /// Per cell: the posterior after the last epoch.
    posteriors: BTreeMap<Cell, Posterior>,
    /// Per sidecar: the sequence numbers merged (the highest, and the ones above a gap).
    seen: HashMap<String, Seen>,
    /// Evidence merged this epoch per (sidecar, cell) and (team, cell), millionths.
    by_sidecar: HashMap<(String, Cell), u64>,
    by_team: HashMap<(String, Cell), u64>,
    caps: Caps,
}

#[derive(Clone, Debug, Default)]
struct Seen {
    /// Every sequence number up to this one is merged.
    through: u64,
    /// Merged numbers above `through` (reports that came after a gap).
    above: std::collections::BTreeSet<u64>,
    /// Epochs since the sidecar last reported.
    idle: u32,
}

impl Seen {
    fn insert(&mut self, seq: u64) -> bool {
        if seq <= self.through || !self.above.insert(seq) {
            return false;
        }
        while self.above.remove(&(self.through + 1)) {
            self.through += 1;
        }
        // Bounded: a sidecar that skips numbers forever cannot grow this without limit.
        while self.above.len() > 1_024 {
            if let Some(first) = self.above.pop_first() {
                self.through = first;
            }
        }
        true
    }
}

fn units(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 { (x * UNIT).round().min(u64::MAX as f64 / 4.0) as u64 } else { 0 }
}

impl Learning {
    /// An empty state with `caps`.
    pub fn new(caps: Caps) -> Self {
        Self { caps, ..Self::default() }
    }

    /// Merges `report` (any order, any thread holding the lock: sums commute exactly).
    pub fn merge(&mut self, report: &Report) -> Merge {
        let seen = self.seen.entry(report.sidecar.clone()).or_default();
        seen.idle = 0;
        if !seen.insert(report.seq) {
            return Merge::Duplicate;
        }
        let (sidecar_cap, team_cap) = (units(self.caps.sidecar), units(self.caps.team));
        let mut capped = 0;
        for delta in &report.deltas {
            let (mut s, mut f) = (units(delta.successes), units(delta.failures));
            let by_sidecar = self.by_sidecar.entry((report.sidecar.clone(), delta.cell.clone())).or_default();
            let by_team = self.by_team.entry((report.team.clone(), delta.cell.clone())).or_default();
            let room = sidecar_cap.saturating_sub(*by_sidecar).min(team_cap.saturating_sub(*by_team));
            if s + f > room {
                // Scaled down together: the mix of the report is kept, its weight capped.
                let total = (s + f) as f64;
                s = (s as f64 * room as f64 / total).floor() as u64;
                f = (f as f64 * room as f64 / total).floor() as u64;
                capped += 1;
            }
            *by_sidecar += s + f;
            *by_team += s + f;
            let cell = self.pending.entry(delta.cell.clone()).or_default();
            cell.0 += s;
            cell.1 += f;
        }
        Merge::Merged { capped }
    }

    /// Ends an epoch: pending evidence joins the posteriors, every posterior decays by
    /// `decay`, per-epoch caps reset, and sidecars silent for `forget_after` epochs are
    /// forgotten. `prior` gives a new cell's prior.
    pub fn end_epoch(&mut self, decay: f64, forget_after: u32, prior: impl Fn(&Cell) -> Posterior) {
        for (cell, (s, f)) in std::mem::take(&mut self.pending) {
            let p = self.posteriors.entry(cell.clone()).or_insert_with(|| prior(&cell));
            p.alpha += s as f64 / UNIT;
            p.beta += f as f64 / UNIT;
            p.decay(1.0); // re-applies the evidence cap and the floors
        }
        for p in self.posteriors.values_mut() {
            p.decay(decay);
        }
        self.by_sidecar.clear();
        self.by_team.clear();
        self.seen.retain(|_, s| {
            s.idle += 1;
            s.idle <= forget_after
        });
    }

    /// The merged posterior of `cell` including what is pending (`prior` when none).
    pub fn posterior(&self, cell: &Cell, prior: Posterior) -> Posterior {
        let mut p = self.posteriors.get(cell).copied().unwrap_or(prior);
        if let Some((s, f)) = self.pending.get(cell) {
            p.alpha += *s as f64 / UNIT;
            p.beta += *f as f64 / UNIT;
        }
        p
    }

    /// Every cell with a posterior or pending evidence, with its merged posterior (`prior`
    /// gives a new cell's prior).
    pub fn merged(&self, prior: impl Fn(&Cell) -> Posterior) -> Vec<(Cell, Posterior)> {
        let mut cells: Vec<&Cell> = self.posteriors.keys().chain(self.pending.keys()).collect();
        cells.sort();
        cells.dedup();
        cells.into_iter().map(|c| (c.clone(), self.posterior(c, prior(c)))).collect()
    }

    /// Takes the evidence merged since the last call or epoch, in millionths (a follower
    /// replica forwards it to the leader).
    pub fn take_pending(&mut self) -> Vec<(Cell, u64, u64)> {
        std::mem::take(&mut self.pending).into_iter().map(|(c, (s, f))| (c, s, f)).collect()
    }

    /// Adds evidence another replica merged (deduplicated and capped there), in millionths.
    pub fn add_units(&mut self, cell: Cell, successes: u64, failures: u64) {
        let p = self.pending.entry(cell).or_default();
        p.0 = p.0.saturating_add(successes);
        p.1 = p.1.saturating_add(failures);
    }

    /// Pending evidence of `cell`, exactly: (successes, failures) in millionths.
    pub fn pending_units(&self, cell: &Cell) -> (u64, u64) {
        self.pending.get(cell).copied().unwrap_or_default()
    }

    /// Every merged posterior (persisted by the operator, loaded at start with [`Self::restore`]).
    pub fn posteriors(&self) -> impl Iterator<Item = (&Cell, &Posterior)> {
        self.posteriors.iter()
    }

    /// Restores persisted posteriors (values that break the floors are clamped by the next
    /// epoch's decay; non-finite ones are dropped).
    pub fn restore(&mut self, saved: impl IntoIterator<Item = (Cell, Posterior)>) {
        for (cell, p) in saved {
            if p.alpha.is_finite() && p.beta.is_finite() {
                let mut p = p;
                p.decay(1.0);
                self.posteriors.insert(cell, p);
            }
        }
    }
}

#[cfg(test)]
mod tests;
