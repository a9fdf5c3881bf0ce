//! The wire frame of [`crate::StreamNet`], after the handshake ([`crate::auth`]):
//! `u32` big-endian length of the rest, `u64` sender node id, `u64` destination node id,
//! `u64` request id, a flags byte, payload, then a [`TAG_BYTES`] tag over everything before it.
//!
//! Fragments. A message (up to [`MESSAGE_BYTES_MAX`]) larger than [`FRAGMENT_BYTES_MAX`]
//! travels as consecutive frames of the same request id, each but the last flagged
//! [`MORE_FRAGMENTS`]. A 512 MiB value thus never sits in one frame: the writer sends one
//! fragment, then whatever small messages queued meanwhile, then the next fragment, so a
//! large transfer does not hold up the heartbeats and appends of every other group sharing
//! the connection. At most one fragmented message is open per direction of a connection (the
//! writer finishes one before it starts the next), which bounds what the reader assembles.

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::MESSAGE_BYTES_MAX;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::auth::{FrameMac, TAG_BYTES};

/// Sender id, destination id, request id and flags, after the length.
pub const HEADER_BYTES: usize = 25;

/// Largest payload of one frame: a message larger than this is fragmented. Small enough that
/// a fragment ahead of a heartbeat delays it by about a millisecond on a gigabit link.
pub const FRAGMENT_BYTES_MAX: usize = 1 << 20;

/// The flag of every fragment of a message but its last.
pub(crate) const MORE_FRAGMENTS: u8 = 1;

/// How much of a frame's body is allocated before its bytes arrive: a peer that announces
/// a full fragment and sends nothing costs this much, not the fragment.
const BODY_PREALLOCATED_MAX: usize = 64 << 10;

/// A frame ready to write: the length prefix and header, then the payload (not copied); the
/// writer appends the tag.
pub(crate) struct Frame {
    pub(crate) head: [u8; 4 + HEADER_BYTES],
    pub(crate) payload: Bytes,
}

/// One frame read and verified, or (from [`Assembler::push`]) one whole message.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) from: NodeId,
    pub(crate) to: NodeId,
    pub(crate) request: u64,
    /// More fragments of this message follow.
    pub(crate) more: bool,
    pub(crate) payload: Bytes,
}

/// Frames `payload` (at most [`FRAGMENT_BYTES_MAX`]: [`fragments`] cuts a message).
pub(crate) fn frame(from: NodeId, to: NodeId, request: u64, payload: Bytes, more: bool) -> Frame {
    debug_assert!(payload.len() <= FRAGMENT_BYTES_MAX, "fragmented before");
    let length = u32::try_from(HEADER_BYTES + payload.len() + TAG_BYTES)
        .expect("a fragment's length fits a u32");
    let mut head = [0u8; 4 + HEADER_BYTES];
    head[..4].copy_from_slice(&length.to_be_bytes());
    head[4..12].copy_from_slice(&from.to_be_bytes());
    head[12..20].copy_from_slice(&to.to_be_bytes());
    head[20..28].copy_from_slice(&request.to_be_bytes());
    head[28] = if more { MORE_FRAGMENTS } else { 0 };
    Frame { head, payload }
}

/// How many frames `length` bytes of message take.
pub(crate) fn fragment_count(length: usize) -> usize {
    length.div_ceil(FRAGMENT_BYTES_MAX).max(1)
}

/// Fragment `index` (of [`fragment_count`]) of `message`, framed; a slice, not a copy.
pub(crate) fn fragment(
    (from, to, request): (NodeId, NodeId, u64),
    message: &Bytes,
    index: usize,
) -> Frame {
    let start = index * FRAGMENT_BYTES_MAX;
    let end = (start + FRAGMENT_BYTES_MAX).min(message.len());
    let more = end < message.len();
    frame(from, to, request, message.slice(start..end), more)
}

fn invalid(text: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, text)
}

/// Reads one frame and checks its tag with `mac`. A length outside the fragment limit, an
/// unknown flag, or a tag that does not verify, is `InvalidData` (the caller closes the
/// connection: a peer that sends it is broken or hostile, and nothing after it can be trusted
/// to be a frame boundary). The body is allocated as it arrives, never all at once from the
/// announced length.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
    mac: &mut FrameMac,
) -> std::io::Result<Incoming> {
    let mut head = [0u8; 4 + HEADER_BYTES];
    stream.read_exact(&mut head).await?;
    let length = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let bounds = HEADER_BYTES + TAG_BYTES..=HEADER_BYTES + FRAGMENT_BYTES_MAX + TAG_BYTES;
    if !bounds.contains(&length) {
        return Err(invalid(format!("frame of {length} bytes")));
    }
    let payload_length = length - HEADER_BYTES - TAG_BYTES;
    let mut payload = Vec::with_capacity(payload_length.min(BODY_PREALLOCATED_MAX));
    (&mut *stream)
        .take(payload_length as u64)
        .read_to_end(&mut payload)
        .await?;
    if payload.len() < payload_length {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let mut tag = [0u8; TAG_BYTES];
    stream.read_exact(&mut tag).await?;
    if !mac.check(&[&head, &payload], &tag) {
        return Err(invalid("frame tag does not verify".into()));
    }
    let flags = head[28];
    if flags & !MORE_FRAGMENTS != 0 {
        return Err(invalid(format!("unknown frame flags {flags:#x}")));
    }
    Ok(Incoming {
        from: u64::from_be_bytes(head[4..12].try_into().expect("8 bytes")),
        to: u64::from_be_bytes(head[12..20].try_into().expect("8 bytes")),
        request: u64::from_be_bytes(head[20..28].try_into().expect("8 bytes")),
        more: flags & MORE_FRAGMENTS != 0,
        payload: Bytes::from(payload),
    })
}

/// The fragmented message being assembled on one direction of a connection.
struct Partial {
    from: NodeId,
    to: NodeId,
    request: u64,
    bytes: Vec<u8>,
}

/// Reassembles fragmented messages from one direction of a connection. Frames of whole small
/// messages may arrive between the fragments of one large message; a second fragmented
/// message may not begin before the first ends, and no message may outgrow
/// its limit, [`MESSAGE_BYTES_MAX`] (either is `InvalidData`: the peer is broken or hostile).
pub(crate) struct Assembler {
    partial: Option<Partial>,
    limit: usize,
}

impl Default for Assembler {
    fn default() -> Self {
        Assembler::with_limit(MESSAGE_BYTES_MAX)
    }
}

impl Assembler {
    /// An assembler of messages up to `limit` bytes (tests lower it).
    pub(crate) fn with_limit(limit: usize) -> Self {
        Assembler {
            partial: None,
            limit,
        }
    }

    /// The request id of the message being assembled (0: none).
    pub(crate) fn open_request(&self) -> u64 {
        self.partial.as_ref().map_or(0, |partial| partial.request)
    }

    /// Takes one verified frame; returns a whole message once its last fragment is in.
    pub(crate) fn push(&mut self, frame: Incoming) -> std::io::Result<Option<Incoming>> {
        let continues = self
            .partial
            .as_ref()
            .is_some_and(|partial| partial.request == frame.request);
        if !continues {
            if !frame.more {
                // A whole message in one frame, maybe between another's fragments.
                return Ok(Some(frame));
            }
            if let Some(open) = &self.partial {
                return Err(invalid(format!(
                    "fragmented message {} began while {} was open",
                    frame.request, open.request
                )));
            }
            self.partial = Some(Partial {
                from: frame.from,
                to: frame.to,
                request: frame.request,
                bytes: Vec::new(),
            });
        }
        let partial = self.partial.as_mut().expect("open or just opened");
        if (partial.from, partial.to) != (frame.from, frame.to) {
            return Err(invalid(format!(
                "a fragment of message {} changed its addresses",
                frame.request
            )));
        }
        if partial.bytes.len() + frame.payload.len() > self.limit {
            return Err(invalid(format!(
                "fragmented message {} outgrew {} bytes",
                frame.request, self.limit
            )));
        }
        partial.bytes.extend_from_slice(&frame.payload);
        if frame.more {
            return Ok(None);
        }
        let whole = self.partial.take().expect("open");
        Ok(Some(Incoming {
            from: whole.from,
            to: whole.to,
            request: whole.request,
            more: false,
            payload: Bytes::from(whole.bytes),
        }))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::auth::test_session;

    fn wire(f: &Frame, mac: &mut FrameMac) -> Vec<u8> {
        let mut wire = f.head.to_vec();
        wire.extend_from_slice(&f.payload);
        wire.extend_from_slice(&mac.tag(&[&f.head, &f.payload]));
        wire
    }

    #[tokio::test]
    async fn a_frame_reads_back_as_written() {
        let (mut send, mut receive) = test_session();
        let f = frame(7, 8, 9, Bytes::from_static(b"payload"), false);
        let wire = wire(&f, &mut send);
        let incoming = read_frame(&mut &wire[..], &mut receive)
            .await
            .expect("frame");
        assert_eq!((incoming.from, incoming.to, incoming.request), (7, 8, 9));
        assert_eq!(&incoming.payload[..], b"payload");
    }

    fn incoming(request: u64, more: bool, payload: &'static [u8]) -> Incoming {
        Incoming {
            from: 7,
            to: 8,
            request,
            more,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn fragments_reassemble_around_whole_small_messages() {
        let message = Bytes::from(
            (0..(2 * FRAGMENT_BYTES_MAX + 5))
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        let count = fragment_count(message.len());
        assert_eq!(count, 3);
        let mut assembler = Assembler::default();
        for index in 0..count {
            let Frame { head, payload } = fragment((7, 8, 9), &message, index);
            assert_eq!(
                head[28] == MORE_FRAGMENTS,
                index + 1 < count,
                "fragment {index}"
            );
            let part = Incoming {
                from: 7,
                to: 8,
                request: 9,
                more: head[28] == MORE_FRAGMENTS,
                payload,
            };
            let whole = assembler.push(part).expect("in order");
            if index + 1 < count {
                assert!(whole.is_none());
                // A small message of another request slips in between fragments.
                let small = assembler.push(incoming(10, false, b"ping")).expect("small");
                assert_eq!(small.expect("whole at once").payload, &b"ping"[..]);
            } else {
                let whole = whole.expect("the last fragment completes it");
                assert_eq!((whole.request, whole.payload), (9, message.clone()));
            }
        }
        // A message of exactly one frame is one fragment, flagged as the last.
        assert_eq!(fragment_count(0), 1);
        assert_eq!(fragment_count(FRAGMENT_BYTES_MAX), 1);
        assert_eq!(fragment((1, 2, 3), &Bytes::new(), 0).head[28], 0);
    }

    #[test]
    fn broken_fragment_sequences_are_invalid_data() {
        let invalid = |result: std::io::Result<Option<Incoming>>| {
            assert_eq!(
                result.map(|_| ()).expect_err("refused").kind(),
                std::io::ErrorKind::InvalidData
            )
        };
        // A second fragmented message before the first ended.
        let mut assembler = Assembler::default();
        assert!(
            assembler
                .push(incoming(1, true, b"a"))
                .expect("open")
                .is_none()
        );
        invalid(assembler.push(incoming(2, true, b"b")));
        // A fragment with other addresses than its message's first.
        let mut assembler = Assembler::default();
        assembler.push(incoming(1, true, b"a")).expect("open");
        let mut moved = incoming(1, false, b"b");
        moved.from = 99;
        invalid(assembler.push(moved));
        // A message outgrowing the limit.
        let mut assembler = Assembler::with_limit(3);
        assembler.push(incoming(1, true, b"ab")).expect("open");
        invalid(assembler.push(incoming(1, false, b"cd")));
        // At the limit it is whole.
        let mut assembler = Assembler::with_limit(4);
        assembler.push(incoming(1, true, b"ab")).expect("open");
        let whole = assembler
            .push(incoming(1, false, b"cd"))
            .expect("at the limit");
        assert_eq!(whole.expect("whole").payload, &b"abcd"[..]);
    }

    #[tokio::test]
    async fn unknown_flags_are_invalid_data() {
        let (mut send, mut receive) = test_session();
        let mut f = frame(7, 8, 9, Bytes::from_static(b"payload"), false);
        f.head[28] = 0x80;
        let wire = wire(&f, &mut send);
        let error = read_frame(&mut &wire[..], &mut receive)
            .await
            .expect_err("unknown flag");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_bad_length_is_invalid_data() {
        let (_, mut receive) = test_session();
        for length in [0u32, (HEADER_BYTES + TAG_BYTES - 1) as u32, u32::MAX] {
            let mut wire = length.to_be_bytes().to_vec();
            wire.extend_from_slice(&[0u8; HEADER_BYTES]);
            let error = read_frame(&mut &wire[..], &mut receive)
                .await
                .expect_err("bad length");
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{length}");
        }
    }

    #[tokio::test]
    async fn a_changed_byte_or_a_replay_fails_the_tag() {
        let (mut send, mut receive) = test_session();
        let f = frame(7, 8, 9, Bytes::from_static(b"payload"), false);
        let good = wire(&f, &mut send);
        for at in 0..good.len() {
            // Byte 3 is the low byte of the length: a changed one misframes (EOF or length).
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            let (_, mut fresh) = test_session();
            assert!(
                read_frame(&mut &bad[..], &mut fresh).await.is_err(),
                "byte {at} changed"
            );
        }
        read_frame(&mut &good[..], &mut receive)
            .await
            .expect("good");
        let replay = read_frame(&mut &good[..], &mut receive).await;
        assert_eq!(
            replay.expect_err("replay").kind(),
            std::io::ErrorKind::InvalidData
        );
    }

    #[tokio::test]
    async fn an_announced_length_is_not_allocated_before_it_arrives() {
        // A full fragment announced, 10 bytes sent: the read ends at EOF without reserving it.
        let (_, mut receive) = test_session();
        let mut wire = ((HEADER_BYTES + FRAGMENT_BYTES_MAX + TAG_BYTES) as u32)
            .to_be_bytes()
            .to_vec();
        wire.extend_from_slice(&[0u8; HEADER_BYTES + 10]);
        let error = read_frame(&mut &wire[..], &mut receive)
            .await
            .expect_err("short");
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    /// The decoder and the listener's handshake fuzzed with `arbitrary` over a fixed seed and a
    /// fixed budget (CI runs it every time): hostile bytes never panic, never yield a frame
    /// without a valid tag, and never get past the handshake without the secret.
    #[tokio::test]
    async fn fuzzed_frames_and_handshakes_never_panic_or_pass() {
        use arbitrary::{Arbitrary, Unstructured};
        use larder_core::env::{Rng, SeededRng};

        #[derive(Arbitrary, Debug)]
        enum Input {
            /// Bytes from nowhere.
            Raw(Vec<u8>),
            /// A valid frame with some bytes changed, cut short, or with bytes after it.
            Mutated {
                payload: Vec<u8>,
                flips: Vec<(u16, u8)>,
                cut: Option<u16>,
                tail: Vec<u8>,
            },
            /// A header announcing `length`, then `body`.
            Announced { length: u32, body: Vec<u8> },
        }

        const INPUTS: usize = 20_000;
        let mut rng = SeededRng::new(11);
        let mut entropy = vec![0u8; 4096];
        let (mut decoded, mut refused) = (0, 0);
        for _ in 0..INPUTS {
            for chunk in entropy.chunks_mut(8) {
                let word = rng.next_u64().to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
            let size = (rng.next_u64() % 512) as usize + 1;
            let mut source = Unstructured::new(&entropy[..size]);
            let Ok(input) = Input::arbitrary(&mut source) else {
                continue;
            };
            let (mut send, mut receive) = test_session();
            let (wire_bytes, intact) = match input {
                Input::Raw(bytes) => (bytes, false),
                Input::Mutated {
                    payload,
                    flips,
                    cut,
                    tail,
                } => {
                    let f = frame(1, 2, 3, Bytes::from(payload), false);
                    let mut bytes = wire(&f, &mut send);
                    let mut changed = false;
                    for (at, mask) in flips {
                        let at = at as usize % bytes.len();
                        changed |= mask != 0;
                        bytes[at] ^= mask;
                    }
                    if let Some(cut) = cut.map(|c| c as usize).filter(|c| *c < bytes.len()) {
                        bytes.truncate(cut);
                        changed = true;
                    }
                    bytes.extend_from_slice(&tail);
                    (bytes, !changed)
                }
                Input::Announced { length, body } => {
                    let mut bytes = length.to_be_bytes().to_vec();
                    bytes.extend_from_slice(&body);
                    (bytes, false)
                }
            };
            match read_frame(&mut &wire_bytes[..], &mut receive).await {
                Ok(incoming) => {
                    assert!(intact, "a changed frame decoded: {wire_bytes:?}");
                    assert_eq!((incoming.from, incoming.to, incoming.request), (1, 2, 3));
                    decoded += 1;
                }
                Err(_) => {
                    assert!(!intact, "an intact frame was refused");
                    refused += 1;
                }
            }
            // The same bytes as a caller's handshake: never accepted.
            let listener = crate::auth::ClusterAuth::new(
                crate::auth::ClusterKey::from_secret(b"a listener's secret key").expect("key"),
                1,
            );
            let (mut near, mut far) = tokio::io::duplex(1 << 16);
            let writer = async move {
                use tokio::io::AsyncWriteExt;
                let _ = near.write_all(&wire_bytes).await;
                let _ = near.shutdown().await;
                // Read whatever the listener answers, until it closes.
                let mut sink = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut near, &mut sink).await;
            };
            let listening = async move {
                let accepted = crate::auth::handshake_as_listener(&mut far, &listener, 2).await;
                // Closing ends the writer's read.
                drop(far);
                accepted
            };
            let (_, accepted) = tokio::join!(writer, listening);
            assert!(accepted.is_err(), "a fuzzed caller passed the handshake");
        }
        // Both outcomes were exercised, many times.
        assert!(
            decoded > 1_000 && refused > 1_000,
            "{decoded} decoded, {refused} refused"
        );
    }
}
