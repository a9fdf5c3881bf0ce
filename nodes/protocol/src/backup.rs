//! The backup service: what `larder backup` reads from a replica of each slot group to archive
//! it (ARCHITECTURE.md, "Backups and point-in-time restore"): a **base**, the group's whole
//! state at one applied index, and the committed log **entries** after it, which the node
//! keeps for a while after its snapshots cover them (`NodeConfig::retain_log_ms`). Read-only,
//! so any process holding the cluster key may ask (every message is authenticated by it); a
//! backup holds every value of the cluster, so the key is what guards it.

use bytes::Bytes;
use larder_core::GroupId;
use serde::{Deserialize, Serialize};

use crate::{Request, Rpc};

/// Bytes of a base per [`BackupPart::Base`] answer.
pub const BACKUP_CHUNK_BYTES: u64 = 1 << 20;

/// A part of the backup of `group`, read from the replica asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRead {
    pub group: GroupId,
    pub part: BackupPart,
}

/// Which part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupPart {
    /// Bytes `offset..` of a base: `index: None` takes a new base now (and answers its first
    /// chunk); `Some(index)` continues the base of that applied index, which the replica keeps
    /// until the next base of the group is taken.
    Base { index: Option<u64>, offset: u64 },
    /// Committed entries from index `from` on.
    Entries { from: u64 },
}

/// How a replica answered a [`BackupRead`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupAnswer {
    Base(BaseChunk),
    Entries(EntriesChunk),
    /// Nothing is applied yet: there is no base to take.
    Empty,
    /// The base asked for is gone (another was taken, or the node restarted): start again.
    Restart,
    /// The node hosts no replica of the group, or its disk failed.
    Failed {
        reason: String,
    },
}

/// One chunk of a base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseChunk {
    /// The applied index the base is the state at.
    pub index: u64,
    /// The group clock at that index (the time a restore compares with).
    pub clock_ms: u64,
    /// The whole base's length in bytes.
    pub total: u64,
    pub offset: u64,
    pub data: Bytes,
}

/// One page of entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntriesChunk {
    /// The lowest index the replica can serve; asked below it, no entries come (a gap).
    pub first: u64,
    /// The replica's applied index: no entry above it is served (they may not be committed).
    pub applied: u64,
    /// `(index, encoded log entry)`, consecutive from the asked index.
    pub entries: Vec<(u64, Bytes)>,
}

impl Rpc for BackupRead {
    type Response = BackupAnswer;
}

impl From<BackupRead> for Request {
    fn from(read: BackupRead) -> Request {
        Request::Backup(read)
    }
}
