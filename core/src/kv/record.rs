use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::zset::ZSet;

/// What a key holds. Records store the variant index: new types go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    Str(Bytes),
    Hash(BTreeMap<Bytes, Bytes>),
    List(VecDeque<Bytes>),
    Set(BTreeSet<Bytes>),
    ZSet(ZSet),
    /// A lock with its fencing token (`kv::lock`).
    Lock(super::lock::Lock),
}

impl Value {
    /// The name `TYPE` answers and `SCAN ... TYPE` filters by.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::Hash(_) => "hash",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::Lock(_) => "lock",
        }
    }
}

/// A stored value with its expiry (absolute wall-clock milliseconds, taken from the log entry's
/// timestamp so every replica agrees on it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub value: Value,
    pub expires_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("undecodable record: {reason}")]
    Decode { reason: String },
}

/// Format version byte in front of every encoded record, so the layout can change later
/// without guessing.
const RECORD_FORMAT_V1: u8 = 1;

impl Record {
    pub fn string(value: impl Into<Bytes>) -> Self {
        Record {
            value: Value::Str(value.into()),
            expires_at_ms: None,
        }
    }

    /// True when the record has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }

    /// Whether time alone changes what the record reads between the group clock `from_ms` and
    /// a later `to_ms`: it expires, or the lease of the lock it holds ends, in between. A node
    /// that would answer at `to_ms` first moves the group clock there through the log, so that
    /// no later answer, on any replica, judges by an older clock and shows the record as it was
    /// (ARCHITECTURE.md, "Expiry").
    pub fn lapses_between(&self, from_ms: u64, to_ms: u64) -> bool {
        let expires = self.is_expired(to_ms) && !self.is_expired(from_ms);
        let lease_ends = matches!(
            &self.value,
            Value::Lock(lock) if lock.held_at(from_ms).is_some() && lock.held_at(to_ms).is_none()
        );
        expires || lease_ends
    }

    pub fn encode(&self) -> Bytes {
        let mut out = vec![RECORD_FORMAT_V1];
        // Serializing plain data into a Vec cannot fail.
        let body = postcard::to_allocvec(self).expect("record serializes");
        out.extend_from_slice(&body);
        Bytes::from(out)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        match bytes.split_first() {
            Some((&RECORD_FORMAT_V1, body)) => {
                postcard::from_bytes(body).map_err(|e| RecordError::Decode {
                    reason: e.to_string(),
                })
            }
            Some((version, _)) => Err(RecordError::Decode {
                reason: format!("unknown format {version}"),
            }),
            None => Err(RecordError::Decode {
                reason: "empty".into(),
            }),
        }
    }
}
