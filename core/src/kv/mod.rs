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
pub mod elements;
mod execute;
mod glob;
mod group;
mod keyspace;
mod list;
pub mod lock;
pub mod rdb;
mod record;
mod set;
mod string;
mod zset;

pub use command::{Command, CommandError, Expiry, Scope, SetCondition, StepStamp, past};
pub use execute::{Outcome, execute, execute_elements};
pub use glob::{Glob, glob_match};
pub use group::{Descend, GroupRead, RandomDescent, SCAN_COUNT_MAX, execute_group, prefix_end};
pub use keyspace::{Deadline, ExpireCondition, KeyCommand};
pub use list::{BlockTimeout, End, ListCommand, PopShape};
pub use record::{Record, RecordError, Value};
pub use set::SetCommand;
pub use string::{
    BitOperation, BitRange, ExpiryChange, LcsAnswer, SetAnswer, SetName, StringCommand,
};
pub use zset::{Score, ZSet, ZSetCommand};

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
    /// Decoded at most [`REPLY_DEPTH_MAX`] deep.
    Array(#[serde(deserialize_with = "bounded::replies")] Vec<Reply>),
    /// An error reply; the text starts with its Redis error code (`ERR`, `WRONGTYPE`, …).
    Error(String),
    /// The group does not own `slot` (its ownership is from routing `epoch`): the command was
    /// not executed. Nodes answer it as a stale epoch, so clients refresh their table and
    /// retry where the slot lives now; on the wire it is `-TRYAGAIN`.
    NotOwner {
        slot: u16,
        epoch: u64,
    },
    /// The null array (`*-1` in RESP2): a blocking pop that timed out, an `EXEC` whose watched
    /// keys changed. Replies are stored by variant index: new variants go at the end.
    NilArray,
    /// A double (`addReplyDouble`), kept as its IEEE-754 bits so replies stay `Eq`: a bulk
    /// string of its `%.17g` text in RESP2, RESP3's `,` type otherwise. Scores and float
    /// increments answer with it.
    Double(u64),
    /// Pairs flattened `[k1, v1, k2, v2, …]`: a flat array in RESP2 and an array of
    /// two-element arrays in RESP3, as Redis answers `WITHSCORES` and `WITHVALUES`.
    Pairs(#[serde(deserialize_with = "bounded::replies")] Vec<Reply>),
}

impl Reply {
    /// A [`Reply::Double`] of `value`.
    pub fn double(value: f64) -> Reply {
        Reply::Double(value.to_bits())
    }

    /// The reply as a RESP2 client sees it: doubles as bulk strings of their text, pairs
    /// flattened. Tests compare in this shape; the proxy encodes per connection instead.
    pub fn resp2(self) -> Reply {
        match self {
            Reply::Double(bits) => Reply::Bulk(Bytes::from(crate::resp::format_double(
                f64::from_bits(bits),
            ))),
            Reply::Pairs(items) | Reply::Array(items) => {
                Reply::Array(items.into_iter().map(Reply::resp2).collect())
            }
            other => other,
        }
    }
}

/// Deepest nesting of [`Reply::Array`] a decoder accepts. Replies are persisted (a session's
/// last reply) and travel between processes, and serde decodes nested arrays by recursion: an
/// encoding nested a million deep, crafted or corrupt, would overflow the stack and abort the
/// process, on every restart if it is on disk. Redis's own replies nest a few levels.
pub const REPLY_DEPTH_MAX: u32 = 128;

/// The depth-bounded decoding of [`Reply::Array`]. A thread-local counter works because serde
/// decodes one value synchronously on one thread; the guard restores it on every exit, errors
/// included.
mod bounded {
    use std::cell::Cell;

    use serde::{Deserialize, Deserializer, de::Error};

    use super::{REPLY_DEPTH_MAX, Reply};

    thread_local! {
        static DEPTH: Cell<u32> = const { Cell::new(0) };
    }

    struct Level;

    impl Level {
        fn enter() -> Option<Level> {
            DEPTH.with(|depth| {
                (depth.get() < REPLY_DEPTH_MAX).then(|| {
                    depth.set(depth.get() + 1);
                    Level
                })
            })
        }
    }

    impl Drop for Level {
        fn drop(&mut self) {
            DEPTH.with(|depth| depth.set(depth.get() - 1));
        }
    }

    pub(super) fn replies<'de, D: Deserializer<'de>>(decoder: D) -> Result<Vec<Reply>, D::Error> {
        nested(decoder)
    }

    /// A transaction's commands: the same bound (a transaction never holds one, but a crafted
    /// or corrupt entry could nest them).
    pub(super) fn commands<'de, D: Deserializer<'de>>(
        decoder: D,
    ) -> Result<Vec<super::Command>, D::Error> {
        nested(decoder)
    }

    fn nested<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        decoder: D,
    ) -> Result<Vec<T>, D::Error> {
        let _level = Level::enter().ok_or_else(|| {
            D::Error::custom(format!("values nested deeper than {REPLY_DEPTH_MAX}"))
        })?;
        Vec::<T>::deserialize(decoder)
    }
}

impl Reply {
    pub fn error(text: impl Into<String>) -> Self {
        Reply::Error(text.into())
    }
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

/// Longest string value, and longest a string may grow by `APPEND`: Redis's default
/// `proto-max-bulk-len`, 512 MiB. A constant, not a setting, because replicas apply it and
/// must agree (a proxy may be configured to refuse smaller values, not larger ones).
pub const STRING_BYTES_MAX: usize = 512 << 20;
/// Most picks a negative count may ask of `SRANDMEMBER`, `HRANDFIELD` and `ZRANDMEMBER` (picks
/// with repeats, so not bounded by the collection): past it the reply alone could exhaust a
/// replica's memory, so it is refused as out of range. Redis has no such bound and relies on
/// the client's output buffer limit, after the reply is built.
pub const RANDOM_PICKS_MAX: i64 = 1 << 24;
/// The error for a count past [`RANDOM_PICKS_MAX`].
pub const RANDOM_PICKS_TOO_MANY: &str =
    "ERR value is out of range, a negative count asks for at most 16777216 picks";
/// Redis's answer to a string that would outgrow [`STRING_BYTES_MAX`].
pub const STRING_TOO_LONG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";
pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
pub const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
pub const OVERFLOW: &str = "ERR increment or decrement would overflow";
pub const HASH_NOT_INTEGER: &str = "ERR hash value is not an integer";

#[cfg(test)]
mod depth_tests {
    use super::*;

    /// postcard's encoding of `depth` nested one-element arrays around a nil, built by hand:
    /// serializing such a value would itself recurse that deep.
    fn nested(depth: usize) -> Vec<u8> {
        // Variant 5 is `Array`, then the length 1; variant 2 is `Nil`.
        let mut bytes = [5u8, 1].repeat(depth);
        bytes.push(2);
        bytes
    }

    #[test]
    fn deep_reply_arrays_are_refused_not_a_stack_overflow() {
        let shallow: Reply = postcard::from_bytes(&nested(3)).expect("three deep");
        assert_eq!(
            shallow,
            Reply::Array(vec![Reply::Array(vec![Reply::Array(vec![Reply::Nil])])])
        );
        assert!(postcard::from_bytes::<Reply>(&nested(REPLY_DEPTH_MAX as usize)).is_ok());
        for depth in [REPLY_DEPTH_MAX as usize + 1, 1_000_000] {
            let error = postcard::from_bytes::<Reply>(&nested(depth)).expect_err("too deep");
            // The counter is back to zero after the error: a shallow reply decodes again.
            assert!(postcard::from_bytes::<Reply>(&nested(3)).is_ok(), "{error}");
        }
    }
}
