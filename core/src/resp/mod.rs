//! The Redis protocol (RESP2 and RESP3) as pure functions over byte slices: no I/O, no state.
//!
//! - [`parse_request`] reads one client command (multibulk or inline, as Redis accepts them).
//! - [`parse_frame`] reads one server reply of any RESP2/RESP3 type (for clients and tests).
//! - [`encode_frame`] writes a reply for a connection's negotiated [`Protocol`], degrading RESP3
//!   types to their RESP2 equivalents the way Redis does for `HELLO 2` clients.
//!
//! Parsers return `Ok(None)` while the input is incomplete and never consume a partial message,
//! so a caller appends what it reads to its buffer and calls again. Every declared length is
//! checked against [`Limits`] *before* waiting for the data, and nothing is preallocated from an
//! attacker-controlled count beyond a small cap, so a hostile client cannot make the proxy
//! reserve memory by merely announcing a large value. Any error is final for the connection:
//! answer with [`RespError::to_frame`] and close, as Redis does.
//!
//! # Layout
//!
//! This file owns the types every part shares: [`Frame`], [`Protocol`], [`Limits`] and the
//! errors. The codec itself is split by direction and by what is read, so the hostile-input
//! side (parsing) can be reviewed apart from the trusted side (encoding):
//!
//! - `scan`: the byte-level readers both parsers are built from (lines, numbers, blobs) and
//!   the checks of declared lengths against [`Limits`].
//! - `request`: client commands ([`parse_request`], the resumable [`RequestParser`],
//!   [`split_inline`]).
//! - `frame`: server replies of any type ([`parse_frame`], [`parse_frame_with`]).
//! - `encode`: writing replies and requests ([`encode_frame`], [`encode_request`]).

use bytes::Bytes;

use crate::kv::Reply;

mod encode;
mod frame;
mod request;
mod scan;

pub use encode::{encode_frame, encode_request, format_double};
pub use frame::{parse_frame, parse_frame_with};
pub use request::{RequestParser, parse_request, split_inline};

/// One RESP value.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+text` (never contains CR or LF; the encoder replaces them with spaces).
    Simple(String),
    /// `-CODE text`; the text starts with the Redis error code (`ERR`, `WRONGTYPE`, …).
    Error(String),
    /// `:n`
    Integer(i64),
    /// `$len` data; `None` is the RESP2 null bulk string `$-1`.
    Bulk(Option<Bytes>),
    /// `*n` elements; `None` is the RESP2 null array `*-1`.
    Array(Option<Vec<Frame>>),
    /// RESP3 `_`; `$-1` in RESP2.
    Null,
    /// RESP3 `%n` pairs; a flat array of `2n` elements in RESP2.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `,`; a bulk string in RESP2.
    Double(f64),
    /// RESP3 `#t`/`#f`; `:1`/`:0` in RESP2.
    Boolean(bool),
    /// RESP3 `~n`; an array in RESP2.
    Set(Vec<Frame>),
    /// RESP3 `>n` out-of-band data (pub/sub, tracking); an array in RESP2.
    Push(Vec<Frame>),
    /// RESP3 `=len fmt:text` (`fmt` is `txt` or `mkd`); a bulk string of `text` in RESP2.
    Verbatim { format: [u8; 3], text: Bytes },
    /// RESP3 `(digits`, an integer of any size, as its decimal text; a bulk string in RESP2.
    BigNumber(String),
    /// Pairs (`WITHSCORES`, `WITHVALUES`): an array of two-element arrays in RESP3, one flat
    /// array in RESP2. Never produced by the parsers, which see what the wire holds.
    Pairs(Vec<(Frame, Frame)>),
}

impl Frame {
    /// `+OK`
    pub fn ok() -> Frame {
        Frame::Simple("OK".to_owned())
    }

    /// An error reply; `text` should start with its error code (`ERR …`).
    pub fn error(text: impl Into<String>) -> Frame {
        Frame::Error(text.into())
    }

    /// A bulk string.
    pub fn bulk(data: impl Into<Bytes>) -> Frame {
        Frame::Bulk(Some(data.into()))
    }
}

impl From<&Reply> for Frame {
    fn from(reply: &Reply) -> Frame {
        match reply {
            Reply::Ok => Frame::ok(),
            Reply::Status(s) => Frame::Simple(s.clone()),
            // `Null` rather than `Bulk(None)` so a RESP3 client sees `_`, as Redis sends it.
            Reply::Nil => Frame::Null,
            Reply::Int(n) => Frame::Integer(*n),
            Reply::Bulk(b) => Frame::Bulk(Some(b.clone())),
            Reply::Array(items) => Frame::Array(Some(items.iter().map(Frame::from).collect())),
            Reply::Error(e) => Frame::Error(e.clone()),
            Reply::NilArray => Frame::Array(None),
            Reply::Double(bits) => Frame::Double(f64::from_bits(*bits)),
            Reply::Pairs(items) => Frame::Pairs(
                items
                    .chunks(2)
                    .map(|pair| {
                        let value = pair.get(1).map_or(Frame::Null, Frame::from);
                        (Frame::from(&pair[0]), value)
                    })
                    .collect(),
            ),
            // Redis Cluster's answer while a slot moves: retry shortly.
            Reply::NotOwner { slot, epoch } => Frame::Error(format!(
                "TRYAGAIN slot {slot} moved to another group (routing epoch {epoch})"
            )),
        }
    }
}

impl From<Reply> for Frame {
    fn from(reply: Reply) -> Frame {
        Frame::from(&reply)
    }
}

/// The protocol a connection speaks (`HELLO 2` / `HELLO 3`; RESP2 until the client says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Resp2,
    Resp3,
}

/// Bounds on what the parsers accept. Construct with `Limits { field: x, ..Limits::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string: Redis's `proto-max-bulk-len`, 512 MiB by default.
    pub bulk_bytes_max: u64,
    /// Most arguments in one request, and most elements in one reply aggregate.
    pub args_max: u64,
    /// Longest inline command line (Redis's `PROTO_INLINE_MAX_SIZE`), and longest simple-string
    /// or error line in a reply.
    pub inline_bytes_max: u64,
    /// Largest whole multibulk request, summed over its declared lengths, so many large
    /// arguments cannot add up to an unbounded buffer (Redis bounds this with
    /// `client-query-buffer-limit`).
    pub request_bytes_max: u64,
    /// Deepest nesting of aggregates in a reply; the parser recurses, so this bounds its stack.
    pub depth_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            bulk_bytes_max: crate::kv::STRING_BYTES_MAX as u64,
            args_max: 1024 * 1024,
            inline_bytes_max: 64 * 1024,
            // Redis's `client-query-buffer-limit`; a request this large still fits one
            // internal message (`env::MESSAGE_BYTES_MAX`).
            request_bytes_max: 1024 * 1024 * 1024,
            depth_max: 64,
        }
    }
}

impl Limits {
    /// Redis 7's bounds for a connection that has not authenticated yet (when a password is
    /// set): at most 10 arguments and 16 KiB per argument, so an anonymous peer cannot make
    /// the server buffer a large request before proving it may. Redis answers
    /// `-ERR Protocol error: unauthenticated multibulk length` / `… bulk length` for a request
    /// beyond them ([`RespError::unauthenticated_text`] gives that text). The whole request is
    /// bounded to what 10 such arguments take, and an inline command to 16 KiB as well.
    pub fn unauthenticated() -> Limits {
        const ARGS: u64 = 10;
        const BULK: u64 = 16 * 1024;
        Limits {
            bulk_bytes_max: BULK,
            args_max: ARGS,
            inline_bytes_max: BULK,
            // `*10\r\n` and ten `$16384\r\n…\r\n`, with room for the headers.
            request_bytes_max: ARGS * (BULK + 16) + 16,
            depth_max: Limits::default().depth_max,
        }
    }
}

/// Which limit a message broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    BulkLength,
    MultibulkLength,
    InlineRequest,
    RequestSize,
    LineLength,
    Depth,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitKind::BulkLength => "bulk length",
            LimitKind::MultibulkLength => "multibulk length",
            LimitKind::InlineRequest => "inline request size",
            LimitKind::RequestSize => "request size",
            LimitKind::LineLength => "line length",
            LimitKind::Depth => "nesting depth",
        })
    }
}

/// A malformed or oversized message. The `Display` text is what Redis would put after `-ERR `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    /// The bytes are not RESP (`invalid bulk length`, `unbalanced quotes in request`, …).
    #[error("Protocol error: {0}")]
    Protocol(String),
    /// A declared or observed size is above its limit. `len` is a lower bound when the message
    /// was still incomplete.
    /// The text starts as Redis's (`invalid bulk length`, `invalid multibulk length`), which
    /// clients and Redis's own suite match on.
    #[error("Protocol error: invalid {what} ({len} is above the limit of {max})")]
    TooLarge { what: LimitKind, len: u64, max: u64 },
}

impl RespError {
    /// The reply to send before closing the connection: `-ERR Protocol error: …`.
    pub fn to_frame(&self) -> Frame {
        Frame::Error(format!("ERR {self}"))
    }

    /// The text Redis 7 sends an unauthenticated client whose request broke
    /// [`Limits::unauthenticated`] (`Protocol error: unauthenticated multibulk length`), or
    /// `None` for errors Redis words the same either way.
    pub fn unauthenticated_text(&self) -> Option<String> {
        let what = match self {
            RespError::TooLarge {
                what: LimitKind::MultibulkLength,
                ..
            } => "multibulk length",
            RespError::TooLarge {
                what: LimitKind::BulkLength | LimitKind::RequestSize | LimitKind::InlineRequest,
                ..
            } => "bulk length",
            _ => return None,
        };
        Some(format!("Protocol error: unauthenticated {what}"))
    }

    fn protocol(msg: impl Into<String>) -> RespError {
        RespError::Protocol(msg.into())
    }
}

fn u64_len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
