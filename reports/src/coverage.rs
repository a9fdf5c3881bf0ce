//! What a sweep exercised: how many seeds applied each fault kind, and which kinds no seed
//! applied at all. A fault kind that never fires is a blind spot: every bug that needs it
//! passes the whole sweep.

use std::collections::BTreeMap;
use std::fmt;

use larder_faults::FaultKind;
use serde::Serialize;

/// Fault-kind coverage of a sweep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Seeds added.
    pub seeds: u64,
    /// Per kind: (faults applied over all seeds, seeds that applied at least one).
    pub applied: BTreeMap<FaultKind, (u64, u64)>,
}

impl Coverage {
    /// Adds one run's faults by kind.
    pub fn add(&mut self, faults: &BTreeMap<FaultKind, u64>) {
        self.seeds += 1;
        for (kind, count) in faults.iter().filter(|(_, count)| **count > 0) {
            let entry = self.applied.entry(*kind).or_default();
            entry.0 += count;
            entry.1 += 1;
        }
    }

    /// The kinds no seed applied. `heal_all` is left out: every run heals once at its heal
    /// point, which goes to the fault log but not into the counts by kind.
    pub fn never_applied(&self) -> Vec<FaultKind> {
        let mut never: Vec<FaultKind> = FaultKind::ALL
            .into_iter()
            .filter(|kind| *kind != FaultKind::HealAll && !self.applied.contains_key(kind))
            .collect();
        never.sort();
        never
    }
}

impl fmt::Display for Coverage {
    /// `coverage over N seeds: kind seeds/N (faults), …` then `never applied: …`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "coverage over {} seeds:", self.seeds)?;
        for (kind, (faults, seeds)) in &self.applied {
            write!(f, " {kind} {seeds}/{} ({faults})", self.seeds)?;
        }
        let never = self.never_applied();
        if never.is_empty() {
            write!(f, "\nnever applied: none")
        } else {
            let names: Vec<&str> = never.iter().map(|kind| kind.as_str()).collect();
            write!(f, "\nnever applied: {}", names.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_seeds_and_faults_and_names_the_kinds_never_applied() {
        let mut coverage = Coverage::default();
        coverage.add(&BTreeMap::from([
            (FaultKind::Crash, 3),
            (FaultKind::Restart, 3),
            (FaultKind::Pause, 0),
        ]));
        coverage.add(&BTreeMap::from([(FaultKind::Crash, 1)]));
        assert_eq!(coverage.seeds, 2);
        assert_eq!(coverage.applied[&FaultKind::Crash], (4, 2));
        assert_eq!(coverage.applied[&FaultKind::Restart], (3, 1));
        let never = coverage.never_applied();
        assert!(
            never.contains(&FaultKind::Pause),
            "a zero count is not an application"
        );
        assert!(!never.contains(&FaultKind::Crash));
        assert!(!never.contains(&FaultKind::HealAll), "every run heals");
        assert_eq!(never.len(), FaultKind::ALL.len() - 3);
        let text = coverage.to_string();
        assert!(text.starts_with("coverage over 2 seeds: crash 2/2 (4) restart 1/2 (3)"));
        assert!(text.contains("never applied: "));
        assert!(text.contains("pause"));
    }
}
