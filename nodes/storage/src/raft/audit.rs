//! Audits of what a node keeps on disk, run by the simulator from outside the node: the
//! properties Raft needs of its storage, checked on the bytes themselves rather than through
//! the client-visible history (which sees a storage mistake only when a rare interleaving
//! turns it into a lost write).
//!
//! - **Log order** ([`audit_log`]): a group's log is consecutive, and its log ids strictly
//!   increase, term (leader) first. A follower that kept a conflicting suffix after its
//!   leader overwrote the start of it holds an entry of an older term after a newer one: after
//!   a restart that older entry would be its "last log id" and hide the committed entries
//!   before it from elections (openraft's own comment on truncation says the same).
//! - **Recovery** is audited by the simulator itself: opening a replica's state machine from
//!   what its disk holds now must give the state it is serving (`DiskStateMachine::open` and
//!   `digest`).

use std::fmt;

use bytes::Bytes;
use larder_core::GroupId;
use larder_core::env::{Space, log_key_index, unseal};

use super::{Entry, decode};

/// Something wrong with what a node keeps on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageDefect {
    /// An index is missing in the middle of a group's log.
    LogGap {
        group: GroupId,
        expected: u64,
        found: u64,
    },
    /// A log id is not greater than the one before it.
    LogOutOfOrder {
        group: GroupId,
        index: u64,
        previous: String,
        this: String,
    },
    /// A log record does not decode.
    Undecodable {
        group: GroupId,
        key: String,
        reason: String,
    },
}

impl fmt::Display for StorageDefect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageDefect::LogGap {
                group,
                expected,
                found,
            } => write!(
                f,
                "group {group} log has a gap: index {expected} missing, next is {found}"
            ),
            StorageDefect::LogOutOfOrder {
                group,
                index,
                previous,
                this,
            } => write!(
                f,
                "group {group} log out of order at index {index}: {this} follows {previous}"
            ),
            StorageDefect::Undecodable { group, key, reason } => {
                write!(
                    f,
                    "group {group} log record {key} does not decode: {reason}"
                )
            }
        }
    }
}

/// Audits every group's log in `rows`: the `Space::Log` records of one disk as a node stores
/// them (sealed, see [`larder_core::env::Sealed`]), in key order (group, then index). A record
/// whose checksum fails is passed over: a corrupt record is the disk's fault, injected by the
/// simulator, and what the node does about it is the node's own check (it never reads one as
/// data); the records around it are audited separately.
pub fn audit_log(rows: impl IntoIterator<Item = (Bytes, Bytes)>) -> Vec<StorageDefect> {
    let mut defects = Vec::new();
    let mut previous: Option<(GroupId, u64, super::LogId)> = None;
    for (key, value) in rows {
        let group = key
            .get(..8)
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            .map(GroupId::from_be_bytes);
        let (Some(group), Some(index)) = (group, log_key_index(&key)) else {
            defects.push(StorageDefect::Undecodable {
                group: 0,
                key: format!("{key:?}"),
                reason: "not a log key".into(),
            });
            continue;
        };
        let Ok(value) = unseal(Space::Log, &key, value) else {
            previous = None;
            continue;
        };
        let log_id = match decode::<Entry>(&value) {
            Ok(entry) => entry.log_id,
            Err(error) => {
                defects.push(StorageDefect::Undecodable {
                    group,
                    key: format!("index {index}"),
                    reason: error.to_string(),
                });
                previous = None;
                continue;
            }
        };
        if let Some((last_group, last_index, last_id)) = &previous
            && *last_group == group
        {
            if index != last_index + 1 {
                defects.push(StorageDefect::LogGap {
                    group,
                    expected: last_index + 1,
                    found: index,
                });
            } else if log_id <= *last_id {
                defects.push(StorageDefect::LogOutOfOrder {
                    group,
                    index,
                    previous: last_id.to_string(),
                    this: log_id.to_string(),
                });
            }
        }
        previous = Some((group, index, log_id));
    }
    defects
}

#[cfg(test)]
mod tests {
    use larder_core::env::log_key;
    use openraft::entry::RaftEntry;
    use openraft::vote::RaftLeaderIdExt;

    use super::*;
    use crate::raft::{LogId, encode};

    fn row(group: GroupId, term: u64, index: u64) -> (Bytes, Bytes) {
        let leader = <openraft::alias::LeaderIdOf<crate::raft::TypeConfig> as RaftLeaderIdExt>::new_committed(term, 1);
        let log_id = LogId::new(leader, index);
        let entry = Entry::new_blank(log_id);
        let key = log_key(group, index);
        (
            Bytes::copy_from_slice(&key),
            larder_core::env::seal(Space::Log, &key, &encode(&entry)),
        )
    }

    #[test]
    fn a_log_in_order_has_no_defects_across_groups() {
        let rows = vec![row(1, 1, 1), row(1, 1, 2), row(1, 3, 3), row(2, 1, 7)];
        assert_eq!(audit_log(rows), vec![]);
    }

    #[test]
    fn an_older_term_after_a_newer_one_is_a_defect() {
        // A follower appended term 3 at index 3 over a term-2 tail it never truncated.
        let rows = vec![row(1, 1, 1), row(1, 3, 2), row(1, 2, 3), row(1, 2, 4)];
        let defects = audit_log(rows);
        assert_eq!(defects.len(), 1, "{defects:?}");
        assert!(matches!(
            defects[0],
            StorageDefect::LogOutOfOrder {
                group: 1,
                index: 3,
                ..
            }
        ));
    }

    #[test]
    fn a_corrupt_record_is_passed_over_not_reported() {
        let mut rows = vec![row(1, 1, 1), row(1, 1, 2), row(1, 1, 3)];
        let mut flipped = rows[1].1.to_vec();
        flipped[0] ^= 1;
        rows[1].1 = Bytes::from(flipped);
        assert_eq!(audit_log(rows), vec![]);
    }

    #[test]
    fn a_gap_is_a_defect() {
        let defects = audit_log(vec![row(4, 1, 1), row(4, 1, 3)]);
        assert_eq!(
            defects,
            vec![StorageDefect::LogGap {
                group: 4,
                expected: 2,
                found: 3
            }]
        );
    }
}
