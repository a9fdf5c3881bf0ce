//! The client service: a command for one slot group, from the client SDK to a storage node.

use larder_core::GroupId;
use larder_core::NodeId;
use larder_core::kv::{Command, Reply};
use serde::{Deserialize, Serialize};

use crate::{Request, Rpc};

/// Identifies one write of one client session, so a write delivered twice (a duplicated
/// message, a retry) is applied once: the state machine remembers each session's last
/// sequence number and reply (Raft thesis, section 6.3).
///
/// A group hands out its own session ids: a client opens a session with a write carrying
/// [`SessionSeq::REGISTER`], and the id is the log index of that entry, so no two sessions of
/// a group ever share one, and a session the group forgot (it keeps a bounded number) can never
/// come back: a later delivery for it is answered [`SESSION_EXPIRED`], not applied again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSeq {
    pub session: u64,
    pub seq: u64,
}

impl SessionSeq {
    /// Opens a session: the group answers `Reply::Int(id)`, and the session's writes follow
    /// with sequence numbers from 1.
    pub const REGISTER: SessionSeq = SessionSeq { session: 0, seq: 0 };

    /// A registration (session 0, which no session has: ids are log indexes, from 1), as the
    /// client sends it ([`SessionSeq::REGISTER`]) or as the leader logs it
    /// ([`SessionSeq::register_bounded`]).
    pub fn is_register(&self) -> bool {
        self.session == 0
    }

    /// A registration as the leader puts it in the log: its `seq` carries the number of
    /// sessions the group keeps (the leader's `NodeConfig::sessions_max`), so every replica,
    /// and every replay of the log, evicts by the same bound whatever its own configuration.
    /// A bound of 0 is logged as 1 (0 is a registration logged before the bound travelled
    /// with it: [`SessionSeq::register_bound`]).
    pub fn register_bounded(sessions_max: usize) -> SessionSeq {
        SessionSeq {
            session: 0,
            seq: (sessions_max as u64).max(1),
        }
    }

    /// The bound a logged registration carries; `None` for one that carries none (logged
    /// before the bound travelled with registrations) and for anything not a registration.
    pub fn register_bound(&self) -> Option<usize> {
        (self.is_register() && self.seq > 0)
            .then(|| usize::try_from(self.seq).unwrap_or(usize::MAX))
    }
}

/// How a group answers a write of a session it does not remember (it evicted the least
/// recently used one): this delivery did nothing, but an earlier one of the same write may
/// have, so the client reports the write's outcome as unknown and opens a new session.
pub const SESSION_EXPIRED: &str = "LARDERSESSION session expired; open a new one";

/// How a node answers a copy of a session's write older than the session's last: its client
/// has moved on and nobody waits for the answer; the copy did nothing.
pub const STALE_DUPLICATE: &str = "ERR stale duplicate of an earlier request";

/// A client's command for one slot group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRequest {
    pub group: GroupId,
    pub command: Command,
    /// Set on writes: lets the group apply a duplicated delivery once.
    pub session: Option<SessionSeq>,
    /// The routing epoch the client routed by (0: none). A node holding a newer table that
    /// maps a key elsewhere answers [`ClientResponse::StaleEpoch`]; a node holding an older one
    /// fetches the newer table at once.
    pub epoch: u64,
}

/// How a node answered a [`ClientRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    /// The command was executed (a write: committed on a quorum and applied).
    Reply(Reply),
    /// This node does not lead the group; nothing was done. Safe to retry elsewhere.
    NotLeader { leader_hint: Option<NodeId> },
    /// The node could not start the command (unknown group, stopped group, no quorum for a
    /// read). Nothing was done; safe to retry.
    Unavailable { reason: String },
    /// A write whose fate is unknown: it may or may not have been committed (the leader
    /// changed or stopped after appending it). Retrying could apply it twice.
    Indeterminate { reason: String },
    /// The client routed by an older table than the node's, which maps one of the command's
    /// keys to another group: nothing was done. Refresh the routing table (to at least
    /// `epoch`) and route again.
    StaleEpoch { epoch: u64 },
}

impl Rpc for ClientRequest {
    type Response = ClientResponse;
}

impl From<ClientRequest> for Request {
    fn from(request: ClientRequest) -> Request {
        Request::Client(request)
    }
}

/// Most reads one [`ReadBatch`] may carry. A pipeline of the proxy holds at most its run of
/// commands, each group's share already one read; a batch past the bound is refused whole
/// (answered with no answers), and the client asks each group on its own.
pub const READ_BATCH_MAX: usize = 1024;

/// Reads of several slot groups that the sender believes this node leads, in one message:
/// a proxy running a pipeline over many groups sends each node one batch instead of one
/// request per group. Each read is served exactly as a [`ClientRequest`] of its own would be
/// (confirmed by its group's read round, executed in its lane); writes are never batched (a
/// write carries its own session and retry rules).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadBatch {
    pub reads: Vec<ClientRequest>,
}

/// The answer to a [`ReadBatch`]: one [`ClientResponse`] per read, in order; none when the
/// batch was refused whole (past [`READ_BATCH_MAX`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadBatchAnswer {
    pub answers: Vec<ClientResponse>,
}

impl Rpc for ReadBatch {
    type Response = ReadBatchAnswer;
}

impl From<ReadBatch> for Request {
    fn from(batch: ReadBatch) -> Request {
        Request::ReadBatch(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::SessionSeq;

    /// A registration is any session-0 pair: as the client sends it (no bound) and as the
    /// leader logs it (its bound, at least 1); a session's own writes are never one.
    #[test]
    fn registrations_carry_their_bound_and_nothing_else_is_one() {
        assert!(SessionSeq::REGISTER.is_register());
        assert_eq!(SessionSeq::REGISTER.register_bound(), None);
        let logged = SessionSeq::register_bounded(4096);
        assert!(logged.is_register());
        assert_eq!(logged.register_bound(), Some(4096));
        assert_eq!(SessionSeq::register_bounded(0).register_bound(), Some(1));
        let write = SessionSeq { session: 7, seq: 3 };
        assert!(!write.is_register());
        assert_eq!(write.register_bound(), None);
    }
}
