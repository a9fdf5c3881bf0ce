//! The environment seam: everything a Larder process needs from the outside world.
//!
//! Nodes, centers, proxies and clients are generic over [`Env`]; the real environment lives in
//! `larder_real` (tokio clock, tokio TCP, fjall), the simulated one in `larder_sim`
//! (turmoil time and network, an in-memory disk with crash semantics). Nothing in between may
//! reach around these traits for time, randomness, sockets or files: that is what makes a
//! seeded simulation reproducible bit for bit.

mod clock;
mod disk;
mod listener;
mod net;
mod points;
mod rng;
mod sealed;

pub use clock::{Clock, Elapsed, timeout};
pub use disk::{
    BlockingSyncWriter, Disk, DiskError, DiskView, KeyPages, Space, WriteBatch, WriteOp, log_key,
    log_key_index, vote_key,
};
pub use listener::{Endpoints, Listener};
pub use net::{
    Handler, MESSAGE_BYTES_MAX, Net, NetError, TRANSFER_BYTES_PER_SECOND_MIN, transfer_allowance,
};
pub use points::{FaultPoint, FaultPoints, PointDelay, PointHook};
pub use rng::{Rng, SeededRng, derive_seed};
pub use sealed::{CorruptionHook, SEAL_BYTES, Sealed, SealedView, seal, unseal};

/// One process's environment: a clock, a network endpoint and a disk.
///
/// Randomness is handed out separately ([`SeededRng`]) because each task owns its generator
/// (sharing one behind a lock would make draw order depend on scheduling).
pub trait Env: Clone + Send + Sync + 'static {
    type Clock: Clock;
    type Net: Net;
    type Disk: Disk;

    fn clock(&self) -> &Self::Clock;
    fn net(&self) -> &Self::Net;
    fn disk(&self) -> &Self::Disk;
    /// Seed for this process's random streams; derive per-purpose generators from it with
    /// [`derive_seed`] so adding a consumer does not shift another consumer's draws.
    fn seed(&self) -> u64;
    /// This process's fault points (see [`FaultPoints`]): none in production; the simulator
    /// hooks them to crash or delay the process at a named place.
    fn fault_points(&self) -> FaultPoints {
        FaultPoints::none()
    }
}
