//! Sorted-set commands and the sorted set itself ([`ZSet`]). Each family of collection commands
//! lives in its own module with the same shape: an enum of its commands (stored in the log
//! inside [`Command`](super::Command), so variants are only ever added at the end), parsing
//! from Redis arguments, classification, and execution over a [`View`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::execute::View;
use super::{CommandError, Reply};

/// A member's score: a finite or infinite `f64`, never NaN (Redis refuses NaN scores and
/// results). Ordered by value with `-0.0` stored as `0.0`, so the order is total and agrees
/// with Redis's `<` on doubles.
#[derive(Debug, Clone, Copy)]
pub struct Score(f64);

impl Score {
    /// `None` for NaN.
    pub fn new(value: f64) -> Option<Score> {
        if value.is_nan() {
            None
        } else {
            // `-0.0 + 0.0` is `0.0`: one zero, so equal scores compare equal bit for bit.
            Some(Score(value + 0.0))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A sorted set: members with scores, iterated by (score, member) as Redis orders them.
/// Stored as its member list; the order index is rebuilt when a record is decoded.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "Vec<(Bytes, f64)>", into = "Vec<(Bytes, f64)>")]
pub struct ZSet {
    scores: BTreeMap<Bytes, Score>,
    order: BTreeSet<(Score, Bytes)>,
}

impl ZSet {
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    pub fn score(&self, member: &[u8]) -> Option<Score> {
        self.scores.get(member).copied()
    }

    /// Sets `member`'s score; answers the previous one.
    pub fn insert(&mut self, member: Bytes, score: Score) -> Option<Score> {
        let previous = self.scores.insert(member.clone(), score);
        if let Some(previous) = previous {
            self.order.remove(&(previous, member.clone()));
        }
        self.order.insert((score, member));
        previous
    }

    /// Removes `member`; answers its score.
    pub fn remove(&mut self, member: &[u8]) -> Option<Score> {
        let (member, score) = self.scores.remove_entry(member)?;
        self.order.remove(&(score, member));
        Some(score)
    }

    /// Members in ascending (score, member) order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&Bytes, Score)> + '_ {
        self.order.iter().map(|(score, member)| (member, *score))
    }

    /// The 0-based position of `member` in ascending order (linear in the rank).
    pub fn rank(&self, member: &[u8]) -> Option<usize> {
        let score = self.score(member)?;
        Some(
            self.order
                .range(..(score, Bytes::copy_from_slice(member)))
                .count(),
        )
    }
}

impl From<Vec<(Bytes, f64)>> for ZSet {
    fn from(members: Vec<(Bytes, f64)>) -> ZSet {
        let mut set = ZSet::default();
        for (member, score) in members {
            // A NaN cannot have been stored; a corrupt one decodes as 0 rather than panicking.
            set.insert(member, Score::new(score).unwrap_or(Score(0.0)));
        }
        set
    }
}

impl From<ZSet> for Vec<(Bytes, f64)> {
    fn from(set: ZSet) -> Vec<(Bytes, f64)> {
        set.scores
            .into_iter()
            .map(|(member, score)| (member, score.get()))
            .collect()
    }
}

/// A sorted-set command as replicas execute it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ZSetCommand {}

impl ZSetCommand {
    /// Parses the command named `name` (lower case) from its arguments after the name;
    /// `None` when `name` is not a sorted-set command.
    pub(super) fn parse(name: &str, rest: &[Bytes]) -> Option<Result<ZSetCommand, CommandError>> {
        let _ = (name, rest);
        None
    }

    /// True for commands that change state (they go through the Raft log).
    pub fn is_write(&self) -> bool {
        match *self {}
    }

    /// Every key the command reads or writes, in argument order.
    pub fn keys(&self) -> Vec<&Bytes> {
        match *self {}
    }

    /// The command's name as clients spell it.
    pub fn name(&self) -> &'static str {
        match *self {}
    }

    /// Applies the command to `view` (pure: the same view gives the same reply and writes).
    pub(super) fn execute(&self, view: &mut View<'_>) -> Reply {
        let _ = view;
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zset_orders_by_score_then_member_and_survives_encoding() {
        let mut set = ZSet::default();
        let score = |v: f64| Score::new(v).expect("not NaN");
        set.insert(Bytes::from_static(b"b"), score(1.0));
        set.insert(Bytes::from_static(b"a"), score(1.0));
        set.insert(Bytes::from_static(b"c"), score(-0.0));
        set.insert(Bytes::from_static(b"d"), score(f64::NEG_INFINITY));
        assert_eq!(
            set.insert(Bytes::from_static(b"a"), score(0.0)),
            Some(score(1.0))
        );
        let order: Vec<_> = set.iter().map(|(m, s)| (m.clone(), s.get())).collect();
        assert_eq!(
            order,
            vec![
                (Bytes::from_static(b"d"), f64::NEG_INFINITY),
                (Bytes::from_static(b"a"), 0.0),
                (Bytes::from_static(b"c"), 0.0),
                (Bytes::from_static(b"b"), 1.0),
            ]
        );
        assert_eq!(set.rank(b"c"), Some(2));
        assert!(Score::new(f64::NAN).is_none());
        let decoded: ZSet =
            postcard::from_bytes(&postcard::to_allocvec(&set).expect("encodes")).expect("decodes");
        assert_eq!(decoded, set);
        assert_eq!(set.remove(b"a"), Some(score(0.0)));
        assert_eq!(set.len(), 3);
    }
}
