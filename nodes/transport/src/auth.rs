//! Authentication of internal connections: a cluster-secret challenge-response handshake, then
//! a truncated HMAC on every frame.
//!
//! Why not mTLS (the etcd/TiKV norm): the same handshake must run inside the deterministic
//! simulator, bit for bit per seed, and TLS handshakes draw their randomness from the crypto
//! provider's OS generator, which the simulator cannot seed; it would also bring a C build
//! (ring or aws-lc) and per-node certificate management into every test. A shared secret with
//! HMAC-SHA256 costs two round trips per connection (connections are persistent and
//! multiplexed) and a keyed hash per frame, draws its nonces from a seedable generator, and proves
//! the two things the cluster needs: the peer holds the cluster secret, and the bytes of every
//! frame came from it, in order. What it does not give: confidentiality (frames travel in
//! clear), and identities that one member cannot claim for another (every holder of the
//! secret can claim any node id; the handlers bind the claimed id to what it may send, see
//! ARCHITECTURE.md, "Authenticated cluster traffic"). Per-node certificates would close the
//! second gap and are the next step if a deployment shares its network with untrusted hosts.
//!
//! The handshake (caller `C` connects to listener `S`, which must be node `to`):
//!
//! ```text
//! C -> S  MAGIC | from u64 | to u64 | nonce_c [16]
//! S -> C  MAGIC | status u8 | nonce_s [16] | proof_s [32]     status 0, else the reason and close
//! C -> S  proof_c [32]
//! S -> C  status u8                                           0: accepted; else close
//! proof_s = HMAC(key, "larder/server" | from | to | nonce_c | nonce_s)
//! proof_c = HMAC(key, "larder/client" | from | to | nonce_c | nonce_s)
//! ```
//!
//! Both sides then derive one key per direction (`"larder/c2s"`, `"larder/s2c"` over the same
//! transcript, HMAC-SHA256) and tag each frame with the keyed BLAKE3 hash of
//! `sequence | header | payload` under the direction's key, truncated to [`TAG_BYTES`]; the sequence counts frames per direction from 0, so a frame
//! replayed, dropped or reordered by someone on the path fails its tag and closes the
//! connection. The caller waits for the final status byte before sending a request, so a
//! refused handshake is an `Unreachable` error (nothing was sent), never an indeterminate one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use larder_core::NodeId;
use larder_core::env::{Rng, SeededRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

type HmacSha256 = Hmac<Sha256>;

/// The protocol and its version, first on every connection.
const MAGIC: [u8; 4] = *b"LDR1";
const NONCE_BYTES: usize = 16;
const PROOF_BYTES: usize = 32;
/// Bytes of each frame's tag: 128 bits, the usual truncation of HMAC-SHA256.
pub const TAG_BYTES: usize = 16;
/// Shortest cluster secret accepted: 128 bits as hex is 32 characters, but operators paste
/// passphrases too; 16 bytes is the floor below which guessing is practical.
pub const SECRET_BYTES_MIN: usize = 16;
/// How long a listener waits for a caller to finish the handshake: a connection that says
/// nothing (a port scanner, a stalled peer) is closed rather than held.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Ids at or above this name a listener by its address only (a tool given `HOST:PORT`
/// without the id): every listener accepts a handshake addressed to one, and the connection's
/// frames then carry that id for the listener. Such callers give up the check that an
/// address still belongs to the node they meant.
pub const UNNAMED_IDS_MIN: NodeId = NodeId::MAX - 0xffff;

/// Why a handshake was refused; the byte the listener sends before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// The caller asked for another node id than the listener's (a reused address).
    WrongDestination = 1,
    /// The first bytes were not a Larder handshake of this version.
    NotLarder = 2,
    /// The caller's proof did not verify: it does not hold the cluster secret.
    BadProof = 3,
    /// The listener is at its connection limit.
    Busy = 4,
}

impl Refusal {
    fn from_byte(byte: u8) -> Option<Refusal> {
        [
            Refusal::WrongDestination,
            Refusal::NotLarder,
            Refusal::BadProof,
            Refusal::Busy,
        ]
        .into_iter()
        .find(|r| *r as u8 == byte)
    }

    fn text(self) -> &'static str {
        match self {
            Refusal::WrongDestination => "the listener is another node",
            Refusal::NotLarder => "not a Larder handshake of this version",
            Refusal::BadProof => "the cluster secret does not match",
            Refusal::Busy => "the listener is at its connection limit",
        }
    }
}

/// Why a handshake failed, on either side.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake refused by the listener: {}", .0.text())]
    Refused(Refusal),
    #[error("the listener could not prove it holds the cluster secret")]
    BadListenerProof,
    #[error("handshake i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The cluster secret, as the key both proofs and frame tags are made with. Its `Debug` shows
/// a fingerprint, never the key.
#[derive(Clone)]
pub struct ClusterKey([u8; 32]);

/// A cluster secret too short to be a key.
#[derive(Debug, thiserror::Error)]
#[error("the cluster secret has {len} bytes; at least {SECRET_BYTES_MIN} are required")]
pub struct ShortSecret {
    pub len: usize,
}

impl ClusterKey {
    /// The key of a cluster secret (any bytes, at least [`SECRET_BYTES_MIN`]; surrounding
    /// whitespace, as a file's trailing newline, is not part of it).
    pub fn from_secret(secret: &[u8]) -> Result<ClusterKey, ShortSecret> {
        let secret = secret.trim_ascii();
        if secret.len() < SECRET_BYTES_MIN {
            return Err(ShortSecret { len: secret.len() });
        }
        let mut hash = Sha256::new();
        hash.update(b"larder cluster key v1\0");
        hash.update(secret);
        Ok(ClusterKey(hash.finalize().into()))
    }

    /// A short public name of the key, for logs: two processes with different fingerprints
    /// cannot talk to each other.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::new_with_prefix(b"larder fingerprint\0")
            .chain_update(self.0)
            .finalize();
        digest[..4].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterKey({})", self.fingerprint())
    }
}

/// What one endpoint authenticates with: the cluster key, and the generator of its handshake
/// nonces (seeded from the OS in a real process, from the run seed in the simulator, so a
/// seed replays its handshakes byte for byte).
#[derive(Clone)]
pub struct ClusterAuth {
    key: ClusterKey,
    nonces: Arc<Mutex<SeededRng>>,
}

impl std::fmt::Debug for ClusterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAuth")
            .field("key", &self.key)
            .finish()
    }
}

impl ClusterAuth {
    pub fn new(key: ClusterKey, nonce_seed: u64) -> ClusterAuth {
        ClusterAuth {
            key,
            nonces: Arc::new(Mutex::new(SeededRng::new(nonce_seed))),
        }
    }

    pub fn key(&self) -> &ClusterKey {
        &self.key
    }

    fn nonce(&self) -> [u8; NONCE_BYTES] {
        let mut rng = self.nonces.lock().expect("nonce lock");
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..8].copy_from_slice(&rng.next_u64().to_be_bytes());
        nonce[8..].copy_from_slice(&rng.next_u64().to_be_bytes());
        nonce
    }
}

/// Everything both proofs and both direction keys are computed over.
struct Transcript {
    from: NodeId,
    to: NodeId,
    nonce_c: [u8; NONCE_BYTES],
    nonce_s: [u8; NONCE_BYTES],
}

impl Transcript {
    fn mac(&self, key: &ClusterKey, label: &[u8]) -> HmacSha256 {
        let mut mac = key.mac();
        mac.update(label);
        mac.update(&self.from.to_be_bytes());
        mac.update(&self.to.to_be_bytes());
        mac.update(&self.nonce_c);
        mac.update(&self.nonce_s);
        mac
    }

    fn proof(&self, key: &ClusterKey, label: &[u8]) -> [u8; PROOF_BYTES] {
        self.mac(key, label).finalize().into_bytes().into()
    }

    fn verify(&self, key: &ClusterKey, label: &[u8], proof: &[u8]) -> bool {
        // Constant time: `verify_slice` compares without an early exit.
        self.mac(key, label).verify_slice(proof).is_ok()
    }

    fn direction(&self, key: &ClusterKey, label: &[u8]) -> FrameMac {
        FrameMac {
            key: self.proof(key, label),
            sequence: 0,
        }
    }

    /// (caller to listener, listener to caller).
    fn session(&self, key: &ClusterKey) -> (FrameMac, FrameMac) {
        (
            self.direction(key, b"larder/c2s"),
            self.direction(key, b"larder/s2c"),
        )
    }
}

/// One direction's frame tags: a keyed BLAKE3 hash under the direction's key, and the number
/// of frames tagged so far. BLAKE3 rather than HMAC-SHA256 here because a tag is computed on
/// every frame, most of them small: HMAC-SHA256 cost a pipelined GET benchmark 15-20% of its
/// throughput on this machine (no SHA extensions), keyed BLAKE3 is several times cheaper per
/// small message and as strong a MAC at 128 bits.
pub(crate) struct FrameMac {
    key: [u8; 32],
    sequence: u64,
}

impl FrameMac {
    fn hash_of(&self, parts: &[&[u8]]) -> [u8; TAG_BYTES] {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(&self.sequence.to_be_bytes());
        for part in parts {
            hasher.update(part);
        }
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&hasher.finalize().as_bytes()[..TAG_BYTES]);
        tag
    }

    /// The tag of the next frame sent, made of `parts` (its header, then its payload).
    pub(crate) fn tag(&mut self, parts: &[&[u8]]) -> [u8; TAG_BYTES] {
        let tag = self.hash_of(parts);
        self.sequence += 1;
        tag
    }

    /// Whether `tag` is that of the next frame received, made of `parts`; in constant time.
    pub(crate) fn check(&mut self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let expected = self.hash_of(parts);
        self.sequence += 1;
        // No early exit: the time does not say how many leading bytes matched.
        tag.len() == TAG_BYTES
            && expected
                .iter()
                .zip(tag)
                .fold(0u8, |differ, (a, b)| differ | (a ^ b))
                == 0
    }
}

/// The two directions of an authenticated connection, from one side's point of view.
pub(crate) struct Session {
    pub(crate) send: FrameMac,
    pub(crate) receive: FrameMac,
}

/// The caller's half of the handshake, as node `from` connecting to node `to`.
pub(crate) async fn handshake_as_caller<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    auth: &ClusterAuth,
    from: NodeId,
    to: NodeId,
) -> Result<Session, HandshakeError> {
    let nonce_c = auth.nonce();
    let mut hello = Vec::with_capacity(4 + 16 + NONCE_BYTES);
    hello.extend_from_slice(&MAGIC);
    hello.extend_from_slice(&from.to_be_bytes());
    hello.extend_from_slice(&to.to_be_bytes());
    hello.extend_from_slice(&nonce_c);
    stream.write_all(&hello).await?;
    stream.flush().await?;

    let mut answer = [0u8; 4 + 1 + NONCE_BYTES + PROOF_BYTES];
    // A refusal is MAGIC and a status byte, then the listener closes.
    stream.read_exact(&mut answer[..5]).await?;
    if answer[..4] != MAGIC {
        return Err(HandshakeError::Refused(Refusal::NotLarder));
    }
    if answer[4] != 0 {
        return Err(HandshakeError::Refused(
            Refusal::from_byte(answer[4]).unwrap_or(Refusal::NotLarder),
        ));
    }
    stream.read_exact(&mut answer[5..]).await?;
    let mut nonce_s = [0u8; NONCE_BYTES];
    nonce_s.copy_from_slice(&answer[5..5 + NONCE_BYTES]);
    let transcript = Transcript {
        from,
        to,
        nonce_c,
        nonce_s,
    };
    if !transcript.verify(&auth.key, b"larder/server", &answer[5 + NONCE_BYTES..]) {
        return Err(HandshakeError::BadListenerProof);
    }
    stream
        .write_all(&transcript.proof(&auth.key, b"larder/client"))
        .await?;
    stream.flush().await?;
    let status = stream.read_u8().await?;
    if status != 0 {
        return Err(HandshakeError::Refused(
            Refusal::from_byte(status).unwrap_or(Refusal::NotLarder),
        ));
    }
    let (send, receive) = transcript.session(&auth.key);
    Ok(Session { send, receive })
}

/// An accepted caller: its proven id, the id it dialed (the listener's, or an unnamed one), and
/// the session.
pub(crate) struct Accepted {
    pub(crate) caller: NodeId,
    pub(crate) dialed: NodeId,
    pub(crate) session: Session,
}

/// The listener's half, as node `me`: the accepted caller, or why it was refused (after
/// telling the caller, where the protocol allows).
pub(crate) async fn handshake_as_listener<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    auth: &ClusterAuth,
    me: NodeId,
) -> Result<Accepted, Refusal> {
    let mut hello = [0u8; 4 + 16 + NONCE_BYTES];
    stream
        .read_exact(&mut hello)
        .await
        .map_err(|_| Refusal::NotLarder)?;
    let refuse = async |stream: &mut S, why: Refusal| {
        let mut answer = MAGIC.to_vec();
        answer.push(why as u8);
        let _ = stream.write_all(&answer).await;
        let _ = stream.flush().await;
        why
    };
    if hello[..4] != MAGIC {
        return Err(refuse(stream, Refusal::NotLarder).await);
    }
    let from = u64::from_be_bytes(hello[4..12].try_into().expect("8 bytes"));
    let to = u64::from_be_bytes(hello[12..20].try_into().expect("8 bytes"));
    if to != me && to < UNNAMED_IDS_MIN {
        return Err(refuse(stream, Refusal::WrongDestination).await);
    }
    let mut nonce_c = [0u8; NONCE_BYTES];
    nonce_c.copy_from_slice(&hello[20..]);
    let transcript = Transcript {
        from,
        to,
        nonce_c,
        nonce_s: auth.nonce(),
    };
    let mut answer = Vec::with_capacity(4 + 1 + NONCE_BYTES + PROOF_BYTES);
    answer.extend_from_slice(&MAGIC);
    answer.push(0);
    answer.extend_from_slice(&transcript.nonce_s);
    answer.extend_from_slice(&transcript.proof(&auth.key, b"larder/server"));
    stream
        .write_all(&answer)
        .await
        .map_err(|_| Refusal::NotLarder)?;
    stream.flush().await.map_err(|_| Refusal::NotLarder)?;
    let mut proof = [0u8; PROOF_BYTES];
    stream
        .read_exact(&mut proof)
        .await
        .map_err(|_| Refusal::NotLarder)?;
    if !transcript.verify(&auth.key, b"larder/client", &proof) {
        let _ = stream.write_u8(Refusal::BadProof as u8).await;
        let _ = stream.flush().await;
        return Err(Refusal::BadProof);
    }
    stream.write_u8(0).await.map_err(|_| Refusal::NotLarder)?;
    stream.flush().await.map_err(|_| Refusal::NotLarder)?;
    let (receive, send) = transcript.session(&auth.key);
    Ok(Accepted {
        caller: from,
        dialed: to,
        session: Session { send, receive },
    })
}

/// Refuses a connection the listener will not serve (its limit reached), telling the caller why.
pub(crate) async fn refuse_busy<S: AsyncWrite + Unpin>(stream: &mut S) {
    let mut answer = MAGIC.to_vec();
    answer.push(Refusal::Busy as u8);
    let _ = stream.write_all(&answer).await;
    let _ = stream.flush().await;
}

/// A matching pair of direction keys, for the frame tests.
#[cfg(test)]
pub(crate) fn test_session() -> (FrameMac, FrameMac) {
    let transcript = Transcript {
        from: 1,
        to: 2,
        nonce_c: [1; NONCE_BYTES],
        nonce_s: [2; NONCE_BYTES],
    };
    let key = ClusterKey::from_secret(b"a test secret of enough bytes").expect("key");
    let (send, _) = transcript.session(&key);
    let (receive, _) = transcript.session(&key);
    (send, receive)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(secret: &str, seed: u64) -> ClusterAuth {
        ClusterAuth::new(
            ClusterKey::from_secret(secret.as_bytes()).expect("key"),
            seed,
        )
    }

    async fn pair(
        caller: ClusterAuth,
        listener: ClusterAuth,
        to: NodeId,
    ) -> (Result<Session, HandshakeError>, Result<Accepted, Refusal>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        // Each side drops its end when it is done, as a real connection closes.
        tokio::join!(
            async move { handshake_as_caller(&mut a, &caller, 7, to).await },
            async move { handshake_as_listener(&mut b, &listener, 2).await },
        )
    }

    #[tokio::test]
    async fn the_same_secret_authenticates_both_ways_and_tags_agree() {
        let (caller, listener) = pair(
            auth("correct horse battery", 1),
            auth("correct horse battery", 2),
            2,
        )
        .await;
        let mut caller = caller.expect("caller");
        let accepted = listener.expect("listener");
        assert_eq!((accepted.caller, accepted.dialed), (7, 2));
        let mut listener = accepted.session;
        for payload in [&b"one"[..], b"two", b""] {
            let tag = caller.send.tag(&[b"head", payload]);
            assert!(listener.receive.check(&[b"head", payload], &tag));
        }
        let tag = listener.send.tag(&[b"reply"]);
        assert!(caller.receive.check(&[b"reply"], &tag));
        // A replayed frame fails: the sequence moved on.
        assert!(!caller.receive.check(&[b"reply"], &tag));
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused_on_both_sides() {
        let (caller, listener) = pair(
            auth("correct horse battery", 1),
            auth("incorrect horse battery", 2),
            2,
        )
        .await;
        assert!(matches!(caller, Err(HandshakeError::BadListenerProof)));
        // The caller stopped before proving: the listener saw the stream end.
        assert!(listener.is_err());
    }

    #[tokio::test]
    async fn a_wrong_destination_is_refused() {
        let (caller, listener) = pair(
            auth("correct horse battery", 1),
            auth("correct horse battery", 2),
            3,
        )
        .await;
        assert!(matches!(
            caller,
            Err(HandshakeError::Refused(Refusal::WrongDestination))
        ));
        assert_eq!(listener.err(), Some(Refusal::WrongDestination));
        // An unnamed destination (a tool that knows only the address) is accepted.
        let (caller, listener) = pair(
            auth("correct horse battery", 1),
            auth("correct horse battery", 2),
            NodeId::MAX,
        )
        .await;
        assert!(caller.is_ok());
        assert_eq!(listener.expect("unnamed").dialed, NodeId::MAX);
    }

    #[tokio::test]
    async fn a_forged_proof_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let listener = auth("correct horse battery", 2);
        let forger = async {
            let mut hello = MAGIC.to_vec();
            hello.extend_from_slice(&7u64.to_be_bytes());
            hello.extend_from_slice(&2u64.to_be_bytes());
            hello.extend_from_slice(&[0u8; NONCE_BYTES]);
            a.write_all(&hello).await.expect("write");
            let mut answer = [0u8; 4 + 1 + NONCE_BYTES + PROOF_BYTES];
            a.read_exact(&mut answer).await.expect("answer");
            // Reflect the listener's own proof back: labels differ, so it must not verify.
            a.write_all(&answer[5 + NONCE_BYTES..])
                .await
                .expect("write");
            a.read_u8().await.expect("status")
        };
        let (status, result) = tokio::join!(forger, handshake_as_listener(&mut b, &listener, 2));
        assert_eq!(status, Refusal::BadProof as u8);
        assert_eq!(result.err(), Some(Refusal::BadProof));
    }

    #[test]
    fn short_secrets_are_refused_and_keys_never_print() {
        assert!(ClusterKey::from_secret(b"short\n").is_err());
        let key = ClusterKey::from_secret(b"0123456789abcdef\n").expect("key");
        let same = ClusterKey::from_secret(b"0123456789abcdef").expect("key");
        assert_eq!(key.fingerprint(), same.fingerprint());
        assert!(!format!("{key:?}").contains("0123"));
    }
}
