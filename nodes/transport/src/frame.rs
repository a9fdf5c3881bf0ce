//! The wire frame of [`crate::StreamNet`], after the handshake ([`crate::auth`]):
//! `u32` big-endian length of the rest, `u64` sender node id, `u64` destination node id,
//! `u64` request id, payload, then a [`TAG_BYTES`] tag over everything before it.

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::FRAME_BYTES_MAX;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::auth::{FrameMac, TAG_BYTES};

/// Sender id, destination id and request id, after the length.
pub const HEADER_BYTES: usize = 24;

/// How much of a frame's body is allocated before its bytes arrive: a peer that announces
/// 64 MiB and sends nothing costs this much, not 64 MiB.
const BODY_PREALLOCATED_MAX: usize = 64 << 10;

/// A frame ready to write: the length prefix and header, then the payload (not copied); the
/// writer appends the tag.
pub(crate) struct Frame {
    pub(crate) head: [u8; 4 + HEADER_BYTES],
    pub(crate) payload: Bytes,
}

/// One frame read and verified.
#[derive(Debug)]
pub(crate) struct Incoming {
    pub(crate) from: NodeId,
    pub(crate) to: NodeId,
    pub(crate) request: u64,
    pub(crate) payload: Bytes,
}

/// Frames `payload`. The caller has checked it against [`FRAME_BYTES_MAX`].
pub(crate) fn frame(from: NodeId, to: NodeId, request: u64, payload: Bytes) -> Frame {
    debug_assert!(
        payload.len() <= FRAME_BYTES_MAX,
        "frame limit checked before"
    );
    let length =
        u32::try_from(HEADER_BYTES + payload.len() + TAG_BYTES).expect("frame limit fits a u32");
    let mut head = [0u8; 4 + HEADER_BYTES];
    head[..4].copy_from_slice(&length.to_be_bytes());
    head[4..12].copy_from_slice(&from.to_be_bytes());
    head[12..20].copy_from_slice(&to.to_be_bytes());
    head[20..].copy_from_slice(&request.to_be_bytes());
    Frame { head, payload }
}

fn invalid(text: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, text)
}

/// Reads one frame and checks its tag with `mac`. A length outside the frame limit, or a tag
/// that does not verify, is `InvalidData` (the caller closes the connection: a peer that sends
/// it is broken or hostile, and nothing after it can be trusted to be a frame boundary). The
/// body is allocated as it arrives, never all at once from the announced length.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
    mac: &mut FrameMac,
) -> std::io::Result<Incoming> {
    let mut head = [0u8; 4 + HEADER_BYTES];
    stream.read_exact(&mut head).await?;
    let length = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let bounds = HEADER_BYTES + TAG_BYTES..=HEADER_BYTES + FRAME_BYTES_MAX + TAG_BYTES;
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
    Ok(Incoming {
        from: u64::from_be_bytes(head[4..12].try_into().expect("8 bytes")),
        to: u64::from_be_bytes(head[12..20].try_into().expect("8 bytes")),
        request: u64::from_be_bytes(head[20..].try_into().expect("8 bytes")),
        payload: Bytes::from(payload),
    })
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
        let f = frame(7, 8, 9, Bytes::from_static(b"payload"));
        let wire = wire(&f, &mut send);
        let incoming = read_frame(&mut &wire[..], &mut receive)
            .await
            .expect("frame");
        assert_eq!((incoming.from, incoming.to, incoming.request), (7, 8, 9));
        assert_eq!(&incoming.payload[..], b"payload");
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
        let f = frame(7, 8, 9, Bytes::from_static(b"payload"));
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
        // 64 MiB announced, 10 bytes sent: the read ends at EOF without reserving 64 MiB.
        let (_, mut receive) = test_session();
        let mut wire = ((HEADER_BYTES + FRAME_BYTES_MAX + TAG_BYTES) as u32)
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
                    let f = frame(1, 2, 3, Bytes::from(payload));
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
