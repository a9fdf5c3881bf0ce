//! What a sweep exercised: how many seeds applied each fault kind and passed each fault point,
//! and which kinds no seed applied and which points no process passed. A fault kind that never
//! fires, or a point never reached, is a blind spot: every bug that needs it passes the whole
//! sweep.

use std::collections::BTreeMap;
use std::fmt;

use larder_core::env::FaultPoint;
use larder_faults::FaultKind;
use serde::Serialize;

/// Fault-kind coverage of a sweep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Seeds added.
    pub seeds: u64,
    /// Per kind: (faults applied over all seeds, seeds that applied at least one).
    pub applied: BTreeMap<FaultKind, (u64, u64)>,
    /// Per fault point: (passes over all seeds, seeds that passed it at least once).
    pub points: BTreeMap<FaultPoint, (u64, u64)>,
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

    /// Adds one run's fault-point passes.
    pub fn add_points(&mut self, points: &BTreeMap<FaultPoint, u64>) {
        for (point, hits) in points.iter().filter(|(_, hits)| **hits > 0) {
            let entry = self.points.entry(*point).or_default();
            entry.0 += hits;
            entry.1 += 1;
        }
    }

    /// The fault points no process of any seed passed.
    pub fn never_hit(&self) -> Vec<FaultPoint> {
        let mut never: Vec<FaultPoint> = FaultPoint::ALL
            .into_iter()
            .filter(|point| !self.points.contains_key(point))
            .collect();
        never.sort();
        never
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
            write!(f, "\nnever applied: none")?;
        } else {
            let names: Vec<&str> = never.iter().map(|kind| kind.as_str()).collect();
            write!(f, "\nnever applied: {}", names.join(", "))?;
        }
        write!(f, "\nfault points:")?;
        for (point, (hits, seeds)) in &self.points {
            write!(f, " {point} {seeds}/{} ({hits})", self.seeds)?;
        }
        let never = self.never_hit();
        if never.is_empty() {
            write!(f, "\nnever hit: none")
        } else {
            let names: Vec<&str> = never.iter().map(|point| point.as_str()).collect();
            write!(f, "\nnever hit: {}", names.join(", "))
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
        assert!(
            text.contains(
                "never hit: apply_written, hand_over_pop, hand_over_starting, log_appended"
            ),
            "{text}"
        );
    }

    #[test]
    fn counts_fault_points_and_names_those_never_hit() {
        let mut coverage = Coverage::default();
        coverage.add(&BTreeMap::new());
        coverage.add_points(&BTreeMap::from([
            (FaultPoint::VoteSaved, 4),
            (FaultPoint::LogTruncated, 0),
        ]));
        coverage.add(&BTreeMap::new());
        coverage.add_points(&BTreeMap::from([(FaultPoint::VoteSaved, 1)]));
        assert_eq!(coverage.points[&FaultPoint::VoteSaved], (5, 2));
        let never = coverage.never_hit();
        assert!(never.contains(&FaultPoint::LogTruncated), "zero passes");
        assert!(!never.contains(&FaultPoint::VoteSaved));
        assert_eq!(never.len(), FaultPoint::ALL.len() - 1);
        assert!(
            coverage
                .to_string()
                .contains("fault points: vote_saved 2/2 (5)")
        );
    }
}
