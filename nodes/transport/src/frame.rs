//! The wire frame of [`crate::StreamNet`]:
//! `u32` big-endian length of the rest, `u64` sender node id, `u64` request id, payload.

use bytes::Bytes;
use larder_core::NodeId;
use larder_core::env::FRAME_BYTES_MAX;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Sender id and request id, after the length.
pub const HEADER_BYTES: usize = 16;

/// A frame ready to write: the length prefix and header, then the payload (not copied).
pub(crate) struct Frame {
    pub(crate) head: [u8; 4 + HEADER_BYTES],
    pub(crate) payload: Bytes,
}

/// Frames `payload`. The caller has checked it against [`FRAME_BYTES_MAX`].
pub(crate) fn frame(from: NodeId, request: u64, payload: Bytes) -> Frame {
    debug_assert!(
        payload.len() <= FRAME_BYTES_MAX,
        "frame limit checked before"
    );
    let length = u32::try_from(HEADER_BYTES + payload.len()).expect("frame limit fits a u32");
    let mut head = [0u8; 4 + HEADER_BYTES];
    head[..4].copy_from_slice(&length.to_be_bytes());
    head[4..12].copy_from_slice(&from.to_be_bytes());
    head[12..].copy_from_slice(&request.to_be_bytes());
    Frame { head, payload }
}

/// Reads one frame. A length outside `HEADER_BYTES..=HEADER_BYTES + FRAME_BYTES_MAX` is
/// `InvalidData` (the caller closes the connection: a peer that sends it is broken or
/// hostile, and nothing after it can be trusted to be a frame boundary).
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> std::io::Result<(NodeId, u64, Bytes)> {
    let length = stream.read_u32().await? as usize;
    if !(HEADER_BYTES..=HEADER_BYTES + FRAME_BYTES_MAX).contains(&length) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {length} bytes"),
        ));
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    let from = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
    let request = u64::from_be_bytes(body[8..16].try_into().expect("8 bytes"));
    Ok((from, request, Bytes::from(body).slice(HEADER_BYTES..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_reads_back_as_written() {
        let f = frame(7, 9, Bytes::from_static(b"payload"));
        let mut wire = f.head.to_vec();
        wire.extend_from_slice(&f.payload);
        let (from, request, payload) = read_frame(&mut &wire[..]).await.expect("frame");
        assert_eq!((from, request, &payload[..]), (7, 9, &b"payload"[..]));
    }

    #[tokio::test]
    async fn a_bad_length_is_invalid_data() {
        for length in [0u32, (HEADER_BYTES - 1) as u32, u32::MAX] {
            let wire = length.to_be_bytes();
            let error = read_frame(&mut &wire[..]).await.expect_err("bad length");
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidData, "{length}");
        }
    }
}
