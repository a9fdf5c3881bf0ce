//! The client SDK: sends commands to a slot group's replicas over [`Net`], follows leader
//! hints, and never re-sends a write whose fate it cannot prove.

use std::time::Duration;

use larder_core::bugs::{Bug, Bugs};
use larder_core::env::{Clock, Net, NetError, transfer_allowance};
use larder_core::kv::{Command, Reply};
use larder_core::{GroupId, NodeId};
use larder_protocol::{
    CallError, ClientRequest, ClientResponse, Encoded, SESSION_EXPIRED, SessionSeq, call,
};

use crate::sessions::{ParkedSession, SessionPool};

/// Why a command produced no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The command certainly did not take effect (no replica executed it).
    #[error("unavailable: {reason}")]
    Unavailable { reason: String },
    /// A write that may or may not have taken effect (timeout or lost connection after it was
    /// sent). Re-sending it could apply it twice, so the client reports it instead.
    #[error("indeterminate: {reason}")]
    Indeterminate { reason: String },
}

/// Client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Per-attempt deadline for one request to one node.
    pub request_timeout: Duration,
    /// Attempts (across nodes) before giving up on a command.
    pub attempts_max: u32,
    /// Pause between attempts after a node said it could not serve.
    pub backoff: Duration,
    /// A connection whose group could not serve fetches a newer routing table, unless another
    /// connection of the process did less than this long ago.
    pub routing_refresh_gap: Duration,
    /// Bugs planted on purpose ([`larder_core::bugs`]; none without the `planted-bugs` feature).
    pub bugs: Bugs,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(3),
            // Enough to ride out one leader election (election timeout 400-800 ms plus the
            // vote round) before answering `Unavailable`.
            attempts_max: 20,
            backoff: Duration::from_millis(100),
            routing_refresh_gap: Duration::from_millis(250),
            bugs: Bugs::default(),
        }
    }
}

/// A client of one slot group.
pub struct Client<N: Net, C: Clock> {
    net: N,
    clock: C,
    group: GroupId,
    replicas: Vec<NodeId>,
    config: ClientConfig,
    leader: Option<NodeId>,
    next: usize,
    /// The session the group opened for this client (`SessionSeq::REGISTER`), once it has.
    session: Option<u64>,
    seq: u64,
    /// When the session's last write was sent (the clock's time), for [`Client::parked`].
    written_at: Duration,
    /// Where the first write takes a session from before it opens one of its own.
    pool: Option<SessionPool>,
    /// The routing epoch `replicas` came from (0: none), sent with every request.
    epoch: u64,
}

impl<N: Net, C: Clock> Client<N, C> {
    /// The client opens its session with the group (which deduplicates writes per session)
    /// before its first write.
    pub fn new(
        net: N,
        clock: C,
        group: GroupId,
        replicas: Vec<NodeId>,
        config: ClientConfig,
    ) -> Self {
        assert!(
            !replicas.is_empty(),
            "a client needs at least one replica to talk to"
        );
        Client {
            net,
            clock,
            group,
            replicas,
            config,
            leader: None,
            next: 0,
            session: None,
            seq: 0,
            written_at: Duration::ZERO,
            pool: None,
            epoch: 0,
        }
    }

    /// Names the routing epoch the replica list came from; nodes with a newer table use it to
    /// tell a misrouted request (see [`ClientResponse::StaleEpoch`]).
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// The routing epoch the replica list came from (0: a list given by hand).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The group this client sends to.
    pub fn group(&self) -> GroupId {
        self.group
    }

    /// The node the client believes leads the group.
    pub fn leader_hint(&self) -> Option<NodeId> {
        self.leader
    }

    /// Starts from `leader` (e.g. learned by another connection) instead of probing replicas.
    pub fn set_leader_hint(&mut self, leader: Option<NodeId>) {
        self.leader = leader.filter(|node| self.replicas.contains(node));
    }

    /// Carries on `old`'s session and write sequence, so a client rebuilt for a new replica
    /// list of the same group neither opens a needless session nor reuses a sequence number.
    pub fn continue_sequence_of(&mut self, old: &Client<N, C>) {
        debug_assert_eq!(self.group, old.group);
        self.session = old.session;
        self.seq = old.seq;
        self.written_at = old.written_at;
    }

    /// The client's session, the last sequence number it used and when, to hand to a later
    /// client of the group ([`crate::SessionPool`]); `None` before it had one.
    pub fn parked(&self) -> Option<ParkedSession> {
        self.session.map(|session| ParkedSession {
            session,
            seq: self.seq,
            written_at: self.written_at,
        })
    }

    /// The client's first write carries on a session from `pool` (one an earlier client of
    /// the group left, [`Client::parked`]) before it opens one of its own.
    pub fn set_session_pool(&mut self, pool: SessionPool) {
        self.pool = Some(pool);
    }

    /// The replicas this client talks to.
    pub fn replicas(&self) -> &[NodeId] {
        &self.replicas
    }

    fn target(&mut self) -> NodeId {
        if let Some(leader) = self.leader {
            return leader;
        }
        let node = self.replicas[self.next % self.replicas.len()];
        self.next = self.next.wrapping_add(1);
        node
    }

    fn forget_leader(&mut self) {
        self.leader = None;
    }

    /// Executes `command`, retrying where that is safe.
    pub async fn execute(&mut self, command: Command) -> Result<Reply, ClientError> {
        let outcome = self.attempt(command).await;
        match outcome {
            // Planted bug: an unknown outcome reported as a certain failure.
            Err(ClientError::Indeterminate { reason })
                if self.config.bugs.is_planted(Bug::IndeterminateAsUnavailable) =>
            {
                Err(ClientError::Unavailable { reason })
            }
            outcome => outcome,
        }
    }

    async fn attempt(&mut self, command: Command) -> Result<Reply, ClientError> {
        let is_write = command.is_write();
        if is_write
            && self.session.is_none()
            && let Some(parked) = self
                .pool
                .as_ref()
                .and_then(|pool| pool.take(self.group, self.clock.now()))
        {
            self.session = Some(parked.session);
            self.seq = parked.seq;
        }
        if is_write {
            self.written_at = self.clock.now();
        }
        let session = match (is_write, self.session) {
            (false, _) => None,
            (true, Some(session)) => {
                self.seq += 1;
                Some(SessionSeq {
                    session,
                    seq: self.seq,
                })
            }
            (true, None) => {
                let session = self.open_session().await?;
                self.seq = 1;
                Some(SessionSeq { session, seq: 1 })
            }
        };
        let body = ClientRequest {
            group: self.group,
            command,
            session,
            epoch: self.epoch,
        };
        let reply = self.send(body).await?;
        match reply {
            Reply::Error(text) if is_write && text.starts_with(SESSION_EXPIRED) => {
                // The group forgot the session: this delivery did nothing, an earlier copy of
                // the same write may have. The next write opens a new session.
                self.session = None;
                Err(ClientError::Indeterminate {
                    reason: format!("group {}: {text}", self.group),
                })
            }
            reply => Ok(reply),
        }
    }

    /// Opens a session with the group (see `SessionSeq`). Nothing of the caller's write has
    /// happened yet, so a failure is `Unavailable`, whatever became of the registration (an
    /// orphan session costs the group one table slot until it is evicted).
    async fn open_session(&mut self) -> Result<u64, ClientError> {
        let body = ClientRequest {
            group: self.group,
            // Any command: the state machine opens the session instead of executing it.
            command: Command::DbSize,
            session: Some(SessionSeq::REGISTER),
            epoch: self.epoch,
        };
        let group = self.group;
        let unavailable = |reason: String| ClientError::Unavailable {
            reason: format!("opening a session with group {group}: {reason}"),
        };
        match self.send(body).await {
            Ok(Reply::Int(id)) if id > 0 => {
                let id = id.unsigned_abs();
                self.session = Some(id);
                Ok(id)
            }
            Ok(other) => Err(unavailable(format!("unexpected reply {other:?}"))),
            Err(ClientError::Indeterminate { reason } | ClientError::Unavailable { reason }) => {
                Err(unavailable(reason))
            }
        }
    }

    /// Sends `body` to the group, retrying where that is safe: a write carries a session.
    async fn send(&mut self, mut body: ClientRequest) -> Result<Reply, ClientError> {
        let is_write = body.session.is_some();
        let mut request = Encoded::new(body.clone());
        let mut last_reason = String::from("no attempt made");
        for attempt in 0..self.config.attempts_max {
            if attempt > 0 {
                self.clock.sleep(self.config.backoff).await;
            }
            let target = self.target();
            // A large write takes longer to cross and to be stored than a small one.
            let limit = self.config.request_timeout + transfer_allowance(request.bytes().len());
            let response = call(&self.net, target, &request, limit).await;
            match response {
                Ok(ClientResponse::Reply(reply)) => {
                    self.leader = Some(target);
                    return Ok(reply);
                }
                Ok(ClientResponse::NotLeader { leader_hint }) => {
                    if let Some(hint) =
                        leader_hint.filter(|h| self.epoch > 0 && !self.replicas.contains(h))
                    {
                        // A leader outside a replica list that came from a routing table: the
                        // group's membership moved on (a replaced replica) and the table is
                        // stale. Nothing was done; the caller refreshes its routing
                        // (`ClusterClient` does) rather than this client cycling through
                        // replicas that may be gone. (A list given by hand, epoch 0, may be a
                        // deliberate subset: there the hint is only ignored.)
                        self.forget_leader();
                        return Err(ClientError::Unavailable {
                            reason: format!(
                                "node {target} names leader {hint}, which routing epoch {} does \
                                 not list as a replica",
                                self.epoch
                            ),
                        });
                    }
                    self.leader =
                        leader_hint.filter(|hint| *hint != target && self.replicas.contains(hint));
                    last_reason = format!("node {target} is not the leader");
                }
                Ok(ClientResponse::Unavailable { reason }) => {
                    self.forget_leader();
                    last_reason = format!("node {target}: {reason}");
                }
                Ok(ClientResponse::StaleEpoch { epoch }) => {
                    // No replica of this group serves the key any more: only a newer table
                    // helps, and fetching it is the caller's job (`ClusterClient`).
                    return Err(ClientError::Unavailable {
                        reason: format!(
                            "routing epoch {epoch} (newer than {}) maps the key to another group",
                            self.epoch
                        ),
                    });
                }
                Ok(ClientResponse::Indeterminate { reason }) => {
                    self.forget_leader();
                    if is_write {
                        return Err(ClientError::Indeterminate {
                            reason: format!("node {target}: {reason}"),
                        });
                    }
                    last_reason = reason;
                }
                Err(error @ CallError::BadResponse { .. }) => {
                    // Garbage back from the node: whatever it did is unknown.
                    self.forget_leader();
                    if is_write {
                        return Err(ClientError::Indeterminate {
                            reason: error.to_string(),
                        });
                    }
                    last_reason = error.to_string();
                }
                Err(CallError::Net(NetError::Unreachable { reason, .. })) => {
                    // Never delivered: safe to try another node, write or not.
                    self.forget_leader();
                    last_reason = format!("node {target} unreachable: {reason}");
                }
                Err(error @ CallError::Net(_)) => {
                    self.forget_leader();
                    if let Some(session) = body.session.filter(|s| !s.is_register())
                        && self.config.bugs.is_planted(Bug::RetryWithNewSequence)
                    {
                        // Planted bug: the retry looks like a new write to the group.
                        self.seq += 1;
                        body.session = Some(SessionSeq {
                            session: session.session,
                            seq: self.seq,
                        });
                        request = Encoded::new(body.clone());
                        last_reason = error.to_string();
                        continue;
                    }
                    if is_write {
                        return Err(ClientError::Indeterminate {
                            reason: error.to_string(),
                        });
                    }
                    last_reason = error.to_string();
                }
            }
        }
        Err(ClientError::Unavailable {
            reason: last_reason,
        })
    }
}
