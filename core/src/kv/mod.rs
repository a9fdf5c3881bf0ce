//! The KV model: commands, replies, stored records, and the pure state-machine step.
//!
//! A replica applies a committed command with [`execute`]: a plain function of the command, the
//! entry's timestamp and the current records of the keys it names, returning the reply and the
//! records to write. It does no I/O and reads no clock, so every replica computes the same result
//! from the same log, and the function can be tested exhaustively on its own.
//!
//! A few commands act on a whole slot group rather than on keys they name ([`Scope::Group`]:
//! `KEYS`, `DBSIZE`, `FLUSHALL`); the node folds its state through [`GroupRead`] page by page
//! ([`execute_group`] is the same fold over records in memory).

mod command;
mod execute;
mod glob;
mod group;
mod record;

pub use command::{Command, CommandError, Expiry, Scope, SetCondition};
pub use execute::{Outcome, execute};
pub use glob::{Glob, glob_match};
pub use group::{GroupRead, execute_group};
pub use record::{Record, RecordError, Value};

use bytes::Bytes;

/// A reply in the shape of the Redis protocol, so the proxy can write it as RESP unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Reply {
    /// `+OK`
    Ok,
    /// A simple status string (`+PONG`).
    Status(String),
    /// Null bulk string (missing key).
    #[default]
    Nil,
    Int(i64),
    Bulk(Bytes),
    Array(Vec<Reply>),
    /// An error reply; the text starts with its Redis error code (`ERR`, `WRONGTYPE`, …).
    Error(String),
    /// The group does not own `slot` (its ownership is from routing `epoch`): the command was
    /// not executed. Nodes answer it as a stale epoch, so clients refresh their table and
    /// retry where the slot lives now; on the wire it is `-TRYAGAIN`.
    NotOwner {
        slot: u16,
        epoch: u64,
    },
}

impl Reply {
    pub fn error(text: impl Into<String>) -> Self {
        Reply::Error(text.into())
    }
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const OVERFLOW: &str = "ERR increment or decrement would overflow";
pub const HASH_NOT_INTEGER: &str = "ERR hash value is not an integer";
