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
