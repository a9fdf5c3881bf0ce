//! Serving requests: client commands (writes through the Raft log, reads after a read-index
//! round, writes that would change nothing like reads: `crate::unchanged`), openraft's RPCs,
//! routing fetches, and the dispatch of every [`Request`] a node answers ([`NodeHandler`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use larder_core::env::{Clock, Env, Handler, MESSAGE_BYTES_MAX, Net, timeout};
use larder_core::kv::{Command, Reply};
use larder_core::{GroupId, NodeId};
use larder_protocol::{
    BackupRead, CENTER_GROUP, CenterRequest, CenterResponse, ClientRequest, ClientResponse,
    DrainNode, GetMigrations, GetRouting, GetStatus, Heartbeat, LeaderBeacon, MoveSlots,
    READ_BATCH_MAX, RaftCall, RaftRequest, RaftResponse, ReadBatch, ReadBatchAnswer, ReadConfirm,
    Request, RoutingAnswer, SessionSeq, SplitGroup, SteerMigration, decode_request, respond,
    undecodable,
};
use openraft::error::{ClientWriteError, Fatal, LinearizableReadError, RaftError};
use openraft::raft::{AppendEntriesRequest, TransferLeaderRequest, VoteRequest};
use openraft::vote::RaftLeaderId;

use crate::config::NodeError;
use crate::lanes::{Admission, Lane, Running};
use crate::node::{Group, NodeDisk, StorageNode};
use crate::raft::state_machine::ReadOutcome;
use crate::raft::wire::{self, ChunkAnswer, SnapshotChunk};
use crate::raft::{Request as LogEntry, Snapshot, TypeConfig};
use crate::unchanged;
use larder_core::bugs::Bug;

impl<E: Env> StorageNode<E> {
    /// Serves peers and clients on the node's [`Net`] until listening fails.
    pub async fn serve(self: &Arc<Self>) -> Result<(), NodeError> {
        self.env.net().serve(NodeHandler::new(self.clone())).await?;
        Ok(())
    }

    /// The stamp of a new log entry: the leader's wall clock, never below the previous stamp.
    pub(crate) fn stamp(&self) -> u64 {
        let wall = self.env.clock().wall_ms();
        let previous = self.last_stamp_ms.fetch_max(wall, Ordering::SeqCst);
        let stamp = previous.max(wall);
        // Invariant: one node's entry stamps only grow, even when its wall clock jumps back.
        debug_assert!(stamp >= previous && self.last_stamp_ms.load(Ordering::SeqCst) >= stamp);
        stamp
    }

    /// Executes a client command on `group`: writes through the Raft log, reads after a
    /// read-index round (see ARCHITECTURE.md for why read-index and not a lease).
    pub async fn execute(
        &self,
        group: GroupId,
        command: Command,
        session: Option<SessionSeq>,
    ) -> ClientResponse {
        if self.is_broken(group) {
            self.retire_broken().await;
            return ClientResponse::Unavailable {
                reason: format!(
                    "node {}'s replica of group {group} is retired: a record on its disk is corrupt",
                    self.id()
                ),
            };
        }
        let Ok(handle) = self.group(group) else {
            return ClientResponse::Unavailable {
                reason: format!("group {group} is not hosted on node {}", self.id()),
            };
        };
        if self.is_leader(group) {
            self.count_keys(&command);
        }
        let mut limit = Duration::from_millis(self.config.request_timeout_ms);
        let write = command.is_write() || session.is_some();
        // A quiet leader wakes before a write (`crate::quiet`); a read only when it takes
        // openraft's read index (`Self::confirmed`).
        // A session marks a write (the client sets one on writes only), also one whose command
        // reads: opening a session (`SessionSeq::REGISTER`) goes through the log.
        if write {
            // A large value takes longer to replicate and to be stored on a quorum.
            let size =
                postcard::serialize_with_flavor(&command, postcard::ser_flavors::Size::default())
                    .unwrap_or(0);
            limit += larder_core::env::transfer_allowance(size);
            let commands = match &command {
                Command::Transaction { commands, .. } => commands.len().max(1),
                _ => 1,
            };
            // Queued before the entry is stamped: a write refused here was never proposed.
            let lane = self.lanes.classify_write(size);
            let running = match self.enter_lane(lane, limit).await {
                Ok(running) => running,
                Err(refused) => return refused,
            };
            // A write that would change nothing is answered by a confirmed read
            // (`crate::unchanged`). The copy's guard is held until the write is answered.
            let _serving = match session.filter(|s| !s.is_register()) {
                Some(session) if command.may_be_unchanged() && self.is_leader(group) => {
                    match self.unchanged.admit(group, session) {
                        unchanged::Admission::Answered(reply) => {
                            running.finish().await;
                            return self.answer(reply);
                        }
                        unchanged::Admission::Busy => {
                            running.finish().await;
                            return ClientResponse::Unavailable {
                                reason: "another copy of this write is being served".into(),
                            };
                        }
                        unchanged::Admission::Stale => {
                            running.finish().await;
                            return self.answer(Reply::error(larder_protocol::STALE_DUPLICATE));
                        }
                        unchanged::Admission::Log => None,
                        unchanged::Admission::Serve(serving) => {
                            let look =
                                self.unchanged_reply(group, &handle, &command, session, limit);
                            match Box::pin(look).await {
                                Ok(Some(reply)) => {
                                    serving.answered(&reply);
                                    running.finish().await;
                                    return self.answer(reply);
                                }
                                Ok(None) => serving.logged(),
                                Err(refused) => {
                                    running.finish().await;
                                    return refused;
                                }
                            }
                            Some(serving)
                        }
                    }
                }
                _ => None,
            };
            let planted_early_ack = lane == Lane::WriteSlow
                && matches!(command, Command::Set { .. })
                && self.config.bugs.is_planted(Bug::SlowWriteAckedEarly);
            // A registration carries the group's bound on sessions, this leader's, so that
            // replicas configured with other bounds still evict the same sessions
            // ([`SessionSeq::register_bounded`]).
            let session = match session {
                Some(register) if register.is_register() => {
                    Some(SessionSeq::register_bounded(self.config.sessions_max))
                }
                other => other,
            };
            let request = LogEntry {
                now_ms: self.stamp(),
                command,
                session,
            };
            if planted_early_ack {
                // Planted bug: acknowledged once handed to Raft, not once committed.
                let raft = handle.raft.clone();
                tokio::spawn(async move {
                    let _ = raft.client_write(request).await;
                });
                return ClientResponse::Reply(Reply::Ok);
            }
            let write = self.propose(group, &handle.raft, request);
            // Boxed here and below: openraft's futures are kilobytes each, and inline they
            // sized `execute`'s own future to 26 KiB, which the transport copies as it boxes
            // and spawns every request (measured: 4 % of a GET's CPU in memcpy).
            let response = match timeout(self.env.clock(), limit, Box::pin(write)).await {
                Ok(Ok(response)) => {
                    self.entry_commands.observe(commands as f64);
                    self.answer(response.data)
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                    ClientResponse::NotLeader {
                        leader_hint: forward.leader_id,
                    }
                }
                Ok(Err(error)) => ClientResponse::Indeterminate {
                    reason: error.to_string(),
                },
                // The entry may already be in the log and commit later.
                Err(_) => ClientResponse::Indeterminate {
                    reason: "write timed out on the leader".into(),
                },
            };
            running.finish().await;
            response
        } else {
            let stale_ok =
                self.config.bugs.is_planted(Bug::StaleLocalReads) && self.is_leader(group);
            if !stale_ok && let Err(refused) = self.confirmed(group, &handle, limit).await {
                return refused;
            }
            // The lane after the read index: the wait for the quorum costs no work, and a
            // state read later than its read index is still linearizable.
            let lane = self.lanes.classify_read(group, &command);
            let running = match self.enter_lane(lane, limit).await {
                Ok(running) => running,
                Err(refused) => return refused,
            };
            let response =
                Box::pin(self.read_applied_after_index(group, &handle, &command, limit)).await;
            if let ClientResponse::Reply(reply) = &response {
                self.lanes.measured(group, &command, reply);
            }
            running.finish().await;
            response
        }
    }

    /// Confirms this node's leadership of `group` for a linearizable read and waits until its
    /// state has applied the read index, within `limit`. A refusal says nothing was done.
    async fn confirmed(
        &self,
        group: GroupId,
        handle: &Group<NodeDisk<E>>,
        limit: Duration,
    ) -> Result<(), ClientResponse> {
        // A quiet leader (`crate::quiet`) wakes for openraft's read index, whose rounds ride
        // the group's heartbeats (here with `read_rounds` off; `confirm_read` when a round
        // steps aside). A read round needs none of openraft's timers, so a group that is only
        // read from settles and stops its ticks and heartbeats (measured: 5 % of a GET's CPU
        // at 64 groups was the Raft cores' ticks and heartbeats of groups kept awake by reads).
        if !self.config.read_rounds {
            self.wake(group, &handle.raft, false).await;
        }
        let read = self.confirm_read(group, &handle.raft, &handle.state);
        match timeout(self.env.clock(), limit, Box::pin(read)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(forward)))) => {
                Err(ClientResponse::NotLeader {
                    leader_hint: forward.leader_id,
                })
            }
            Ok(Err(error)) => Err(ClientResponse::Unavailable {
                reason: error.to_string(),
            }),
            Err(_) => Err(ClientResponse::Unavailable {
                reason: "read index not confirmed in time".into(),
            }),
        }
    }

    /// The reply of a write that would change nothing, answered without a log entry
    /// (`crate::unchanged`): `None` when it would change something (it goes to the log). A
    /// first look at the state as it is sends a write that changes something to the log at
    /// once; only one that looks unchanged pays for a confirmation, after which it is
    /// executed again on the confirmed state. A refusal says nothing was done.
    async fn unchanged_reply(
        &self,
        group: GroupId,
        handle: &Group<NodeDisk<E>>,
        command: &Command,
        session: SessionSeq,
        limit: Duration,
    ) -> Result<Option<Reply>, ClientResponse> {
        let look = |wall_ms| {
            handle
                .state
                .unchanged_reply(command, wall_ms, Some(session))
        };
        // A failed look leaves the decision to the log, which reads the same rows.
        let first = look(self.env.clock().wall_ms()).await.ok().flatten();
        if first.is_none() {
            return Ok(None);
        }
        if self.config.bugs.is_planted(Bug::UnchangedWriteUnconfirmed) {
            return Ok(first);
        }
        self.confirmed(group, handle, limit).await?;
        look(self.env.clock().wall_ms())
            .await
            .map_err(|error| ClientResponse::Unavailable {
                reason: error.to_string(),
            })
    }

    /// A place in `lane` ([`crate::lanes`]), waiting at most `limit`. A full lane, or one that
    /// gives no place in time, is `Unavailable`: the command has not run.
    async fn enter_lane(
        &self,
        lane: Lane,
        limit: Duration,
    ) -> Result<Running<'_, E::Clock>, ClientResponse> {
        let full = |full: crate::lanes::LaneFull| ClientResponse::Unavailable {
            reason: full.to_string(),
        };
        match self.lanes.admit(lane) {
            Admission::Running(running) => Ok(running),
            Admission::Full(refused) => Err(full(refused)),
            Admission::Queued(waiter) => {
                match timeout(self.env.clock(), limit, waiter.granted()).await {
                    Ok(Ok(running)) => Ok(running),
                    Ok(Err(refused)) => Err(full(refused)),
                    Err(_) => Err(ClientResponse::Unavailable {
                        reason: format!("no place in the node's {} lane in time", lane.name()),
                    }),
                }
            }
        }
    }

    /// A command's reply as a response: a refusal because the group does not own the key's
    /// slot (checked at apply time, and on reads after the read index) is a stale epoch, so
    /// the client refreshes its table and retries where the slot lives; this node fetches the
    /// newer table too.
    fn answer(&self, reply: Reply) -> ClientResponse {
        match reply {
            Reply::NotOwner { epoch, .. } => {
                self.heartbeat_now.notify_one();
                ClientResponse::StaleEpoch { epoch }
            }
            reply => ClientResponse::Reply(reply),
        }
    }

    /// Answers a read once the read index is applied. If the read would show a key expired by
    /// this node's clock but not by the group clock, the node first proposes
    /// [`Command::AdvanceClock`] stamped with its clock and waits until it is applied, then
    /// answers at the group clock: so once a client has seen a key expire, every later read
    /// on every replica sees it expired (ARCHITECTURE.md, "Expiry").
    async fn read_applied_after_index(
        &self,
        group: GroupId,
        handle: &Group<NodeDisk<E>>,
        command: &Command,
        limit: Duration,
    ) -> ClientResponse {
        let unavailable = |reason: String| ClientResponse::Unavailable { reason };
        match handle.state.read(command, self.env.clock().wall_ms()).await {
            Ok(ReadOutcome::Reply(reply)) => return self.answer(reply),
            Ok(ReadOutcome::AdvanceClock { .. }) => {}
            Err(error) => return unavailable(error.to_string()),
        }
        let advance = LogEntry {
            // Not below the wall time the read was judged at: `stamp` never is.
            now_ms: self.stamp(),
            command: Command::AdvanceClock,
            session: None,
        };
        // A read has no effect whatever becomes of the advance, so every failure here is
        // `Unavailable` (safe to retry); an advance that commits later only moves the clock.
        // The advance is a write: a quiet leader must wake for it as for any (its lease ran
        // out while the group slept, and openraft refuses a write without one as "not the
        // leader"). Without the wake, a key read the first time after it expired in a quiet
        // group answered `TRYAGAIN` for as long as the group stayed quiet (Redis's
        // `unit/expire`: "After 2.1 seconds the key should no longer be here").
        let advance_write = async {
            if self.config.bugs.is_planted(Bug::AdvanceSkipsWake) {
                handle.raft.client_write(advance).await
            } else {
                self.propose(group, &handle.raft, advance).await
            }
        };
        match timeout(self.env.clock(), limit, Box::pin(advance_write)).await {
            Ok(Ok(_)) => {}
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                return ClientResponse::NotLeader {
                    leader_hint: forward.leader_id,
                };
            }
            Ok(Err(error)) => return unavailable(error.to_string()),
            Err(_) => return unavailable("clock advance not applied in time".into()),
        }
        // At the group clock, which is now at least the time the read was judged at.
        match handle.state.read(command, 0).await {
            Ok(ReadOutcome::Reply(reply)) => self.answer(reply),
            Ok(ReadOutcome::AdvanceClock { to_ms }) => unavailable(format!(
                "group clock still behind {to_ms} ms after advancing"
            )),
            Err(error) => unavailable(error.to_string()),
        }
    }

    /// Whether a request for `group`, routed by a client at routing `epoch`, names a key this
    /// node's newer table maps to another group; returns that table's epoch. A client ahead of
    /// this node makes it fetch the newer table (and is served: only a table at least as new
    /// as the client's may overrule it).
    fn misrouted(&self, group: GroupId, command: &Command, epoch: u64) -> Option<u64> {
        let table = self.routing()?;
        if table.epoch() < epoch {
            self.heartbeat_now.notify_one();
            return None;
        }
        // Groups the table does not know (the center's own group) are not judged.
        table.route(group)?;
        command
            .keys()
            .iter()
            .any(|key| table.group_of_key(key) != Some(group))
            .then_some(table.epoch())
    }

    /// Answers one of openraft's RPCs from peer `from` (the id its connection proved). A group
    /// this node does not host, a payload that does not decode, or a sender that is not the
    /// leader or candidate the message names ([`raft_sender_refused`]), is answered as a
    /// stopped Raft: openraft treats the peer as unreachable and backs off.
    async fn handle_raft(&self, from: NodeId, request: RaftRequest) -> RaftResponse {
        // A node shutting down answers as a stopped Raft without handing the message to a
        // group whose Raft is (being) shut down: openraft would log each as an error.
        if self.is_stopped() {
            return stopped(request.call);
        }
        let group = request.group;
        let hosted = match self.group(group) {
            Ok(hosted) => hosted,
            Err(error) => {
                tracing::debug!(%error, "raft message for a group this node does not host");
                return stopped(request.call);
            }
        };
        macro_rules! serve {
            ($payload:ty, |$p:ident| $claimed:expr, $call:expr) => {
                match wire::payload::<$payload>(&request) {
                    Ok($p) => {
                        if let Some(why) = raft_sender_refused(from, $claimed) {
                            self.refused.raft.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(group, from, why, "refused a raft message");
                            return stopped(request.call);
                        }
                        wire::answer::<$payload>(&$call.await)
                    }
                    Err(error) => {
                        tracing::warn!(group, %error, "undecodable raft payload");
                        stopped(request.call)
                    }
                }
            };
        }
        match request.call {
            RaftCall::Append => {
                self.appends_served.fetch_add(1, Ordering::Relaxed);
                serve!(
                    AppendEntriesRequest<TypeConfig>,
                    |p| *p.vote.leader_id().node_id(),
                    hosted.raft.append_entries(p)
                )
            }
            RaftCall::Vote => {
                serve!(
                    VoteRequest<TypeConfig>,
                    |p| *p.vote.leader_id().node_id(),
                    hosted.raft.vote(p)
                )
            }
            RaftCall::PreVote => {
                serve!(
                    VoteRequest<TypeConfig>,
                    |p| *p.vote.leader_id().node_id(),
                    hosted.raft.pre_vote(p)
                )
            }
            RaftCall::TransferLeader => {
                serve!(
                    TransferLeaderRequest<TypeConfig>,
                    |p| *p.from_leader().leader_id().node_id(),
                    hosted.raft.handle_transfer_leader(p)
                )
            }
            RaftCall::Snapshot => serve!(
                SnapshotChunk,
                |p| *p.vote.leader_id().node_id(),
                take_snapshot_chunk(group, &hosted, p)
            ),
        }
    }

    /// How this node answers one client command.
    async fn client_response(&self, from: NodeId, request: ClientRequest) -> ClientResponse {
        let ClientRequest {
            group,
            command,
            session,
            epoch,
        } = request;
        if group == CENTER_GROUP {
            // The center writes its group through its own node, never through a client
            // request: one would let any process rewrite routing tables and the registry.
            self.refused.center_group.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(from, "refused a client command for the center's group");
            return ClientResponse::Reply(Reply::error(
                "ERR the center's group takes no client commands",
            ));
        }
        if command.is_internal() {
            // Only a node proposes internal commands; a client cannot move a group clock.
            return ClientResponse::Reply(Reply::error(format!(
                "ERR unknown command '{}'",
                command.name()
            )));
        }
        match self.misrouted(group, &command, epoch) {
            Some(epoch) => ClientResponse::StaleEpoch { epoch },
            None => Box::pin(self.execute(group, command, session)).await,
        }
    }

    /// Serves every read of `batch` at once, each as a client request of its own would be,
    /// and answers them in order in one message. A write in a batch is not executed (answered
    /// `Unavailable`: the client sends it on its own, with its session). An answer too large
    /// for one message turns every answer into `Unavailable`, and the client asks each group
    /// on its own, where an oversized reply gets its own error.
    async fn answer_read_batch(&self, from: NodeId, batch: ReadBatch) -> Bytes {
        if batch.reads.len() > READ_BATCH_MAX {
            self.refused.read_batches.fetch_add(1, Ordering::Relaxed);
            return respond::<ReadBatch>(&ReadBatchAnswer {
                answers: Vec::new(),
            });
        }
        let count = batch.reads.len();
        self.read_batches.batches.fetch_add(1, Ordering::Relaxed);
        self.read_batches
            .reads
            .fetch_add(count as u64, Ordering::Relaxed);
        let answers = futures::future::join_all(batch.reads.into_iter().map(|read| async move {
            if read.command.is_write() || read.session.is_some() {
                return ClientResponse::Unavailable {
                    reason: "a read batch carries no writes".to_string(),
                };
            }
            self.client_response(from, read).await
        }))
        .await;
        batch_answer(answers, MESSAGE_BYTES_MAX)
    }

    /// Answers one request from `from` (the id its connection proved). Center replicas pass
    /// the requests they do not handle themselves here too.
    pub async fn handle_request(&self, from: NodeId, request: Request) -> Bytes {
        // A replica found corrupt since the last request stops here, before it serves again.
        self.retire_broken().await;
        match request {
            // Each arm's future is boxed: inline, the largest one would size the future of
            // every request, and the transport moves that future several times as it spawns
            // it (a measured few per cent of a GET's CPU in memcpy).
            Request::Raft(request) => {
                respond::<RaftRequest>(&Box::pin(self.handle_raft(from, request)).await)
            }
            Request::Client(request) => {
                let response =
                    respond::<ClientRequest>(&Box::pin(self.client_response(from, request)).await);
                if response.len() <= MESSAGE_BYTES_MAX {
                    response
                } else {
                    // The transport would drop it and the client would time out; say why.
                    respond::<ClientRequest>(&ClientResponse::Reply(Reply::error(format!(
                        "ERR reply of {} bytes exceeds the internal message limit of \
                         {MESSAGE_BYTES_MAX} bytes; read fewer or smaller keys at once",
                        response.len()
                    ))))
                }
            }
            Request::ReadBatch(batch) => Box::pin(self.answer_read_batch(from, batch)).await,
            Request::Backup(read) => {
                respond::<BackupRead>(&Box::pin(self.answer_backup(read)).await)
            }
            Request::Center(CenterRequest::Heartbeat(_)) => {
                respond::<Heartbeat>(&CenterResponse::Unavailable {
                    reason: format!("node {} is not a center replica", self.id()),
                })
            }
            Request::Center(CenterRequest::MoveSlots(_)) => {
                respond::<MoveSlots>(&CenterResponse::Unavailable {
                    reason: format!("node {} is not a center replica", self.id()),
                })
            }
            Request::Center(CenterRequest::GetMigrations(_)) => {
                respond::<GetMigrations>(&CenterResponse::Unavailable {
                    reason: format!("node {} is not a center replica", self.id()),
                })
            }
            Request::Center(CenterRequest::SteerMigration(_)) => {
                respond::<SteerMigration>(&CenterResponse::Unavailable {
                    reason: format!("node {} is not a center replica", self.id()),
                })
            }
            Request::Center(CenterRequest::SplitGroup(_)) => {
                respond::<SplitGroup>(&CenterResponse::Unavailable {
                    reason: format!("node {} is not a center replica", self.id()),
                })
            }
            Request::Center(CenterRequest::DrainNode(_)) => {
                respond::<DrainNode>(&CenterResponse::Unavailable {
                    reason: format!("node {} is not a center replica", self.id()),
                })
            }
            Request::Center(CenterRequest::GetRouting(GetRouting { known_epoch })) => {
                respond::<GetRouting>(&self.routing_answer(known_epoch))
            }
            Request::Center(CenterRequest::GetStatus(GetStatus)) => {
                respond::<GetStatus>(&CenterResponse::Unavailable {
                    reason: format!("node {} is not a center replica", self.id()),
                })
            }
            Request::Admin(request) if !self.config.centers.contains(&from) => {
                // Only a center instructs a node (adds and removes replicas, moves slots).
                self.refused.admin.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    from,
                    "refused an admin request from a process that is no center"
                );
                crate::admin::refused(
                    &request,
                    format!("node {from} is not a center of node {}", self.id()),
                )
            }
            Request::Admin(request) => Box::pin(self.handle_admin(request)).await,
            Request::Beacon(beacon) => respond::<LeaderBeacon>(&self.hear_beacon(from, &beacon)),
            Request::ReadConfirm(confirm) => {
                respond::<ReadConfirm>(&self.answer_read_confirm(from, &confirm))
            }
        }
    }

    /// A storage node is an observer too: it answers routing fetches from the table it learned
    /// through its heartbeats (eventually consistent, like every observer; see [`GetRouting`]).
    fn routing_answer(&self, known_epoch: u64) -> CenterResponse<RoutingAnswer> {
        match self.routing() {
            Some(table) => CenterResponse::Ok(RoutingAnswer {
                epoch: table.epoch(),
                table: (table.epoch() > known_epoch).then(|| (*table).clone()),
                addresses: self.addresses(),
                center_leader: None,
            }),
            None => CenterResponse::Unavailable {
                reason: format!("node {} has no routing table", self.id()),
            },
        }
    }
}

/// Takes one chunk of a snapshot `group`'s leader is sending (see [`crate::raft::network`]):
/// the first chunk (offset 0) starts a new incoming snapshot, replacing any other; each next
/// one must continue it (same snapshot, same vote, next offset) or the leader is told to start
/// again. The last chunk installs the snapshot, which is checked before it is stored. The
/// sender was checked against the vote before this is called.
async fn take_snapshot_chunk<D: larder_core::env::Disk>(
    group: GroupId,
    hosted: &crate::node::Group<D>,
    chunk: SnapshotChunk,
) -> Result<ChunkAnswer, openraft::error::Fatal<TypeConfig>> {
    let SnapshotChunk {
        vote,
        meta,
        offset,
        total,
        data,
    } = chunk;
    let complete = {
        let mut incoming = hosted.incoming_snapshot.lock().expect("snapshot lock");
        if offset == 0 {
            *incoming = Some(crate::node::IncomingSnapshot {
                vote,
                meta: meta.clone(),
                total,
                bytes: Vec::new(),
            });
        }
        let continues = incoming.as_ref().is_some_and(|open| {
            open.vote == vote
                && open.meta == meta
                && open.total == total
                && open.bytes.len() as u64 == offset
                && offset + data.len() as u64 <= total
        });
        if !continues {
            tracing::debug!(
                group,
                offset,
                total,
                "snapshot chunk out of order; restarting"
            );
            *incoming = None;
            return Ok(ChunkAnswer::Restart);
        }
        let open = incoming.as_mut().expect("checked");
        open.bytes.extend_from_slice(&data);
        if (open.bytes.len() as u64) < total {
            return Ok(ChunkAnswer::Continue);
        }
        incoming.take().expect("checked")
    };
    // Checked here too, before openraft sees it: a snapshot the state machine refused would
    // stop the group's Raft. The leader is asked to send it again.
    if let Err(error) = crate::raft::state_machine::check_snapshot(&complete.bytes) {
        tracing::warn!(group, %error, "refused a received snapshot");
        return Ok(ChunkAnswer::Restart);
    }
    let response = hosted
        .raft
        .install_full_snapshot(
            complete.vote,
            Snapshot {
                meta: complete.meta,
                snapshot: std::io::Cursor::new(complete.bytes),
            },
        )
        .await?;
    Ok(ChunkAnswer::Installed(response))
}

/// Why a Raft message from `from` that names `claimed` as its leader or candidate is
/// refused, if it is: every node holds the cluster secret, so the transport proves only
/// that the sender is a cluster process with the id it gave; this binds that id to the
/// Raft role it claims, so no node can append, vote or install a snapshot as another.
///
/// Membership is deliberately not checked: a replica's view of its group's membership can
/// be stale (a replica formed with another voter set, or one lagging behind a
/// reconfiguration), and Raft requires it to accept the current leader's appends to catch
/// up; refusing them left a replica stuck for good (cluster seed 6).
fn raft_sender_refused(from: NodeId, claimed: NodeId) -> Option<String> {
    (claimed != from).then(|| format!("node {from} sent a message as node {claimed}"))
}

/// The answer of a stopped Raft to `call`.
fn stopped(call: RaftCall) -> RaftResponse {
    let fatal = || RaftError::<TypeConfig>::Fatal(Fatal::Stopped);
    match call {
        RaftCall::Append => wire::answer::<AppendEntriesRequest<TypeConfig>>(&Err(fatal())),
        RaftCall::Vote | RaftCall::PreVote => {
            wire::answer::<VoteRequest<TypeConfig>>(&Err(fatal()))
        }
        RaftCall::TransferLeader => {
            wire::answer::<TransferLeaderRequest<TypeConfig>>(&Err(Fatal::Stopped))
        }
        RaftCall::Snapshot => wire::answer::<SnapshotChunk>(&Err(Fatal::Stopped)),
    }
}

/// The [`Handler`] a node serves on its `Net`.
pub struct NodeHandler<E: Env> {
    node: Arc<StorageNode<E>>,
}

impl<E: Env> NodeHandler<E> {
    pub fn new(node: Arc<StorageNode<E>>) -> Self {
        NodeHandler { node }
    }
}

impl<E: Env> Clone for NodeHandler<E> {
    fn clone(&self) -> Self {
        NodeHandler {
            node: self.node.clone(),
        }
    }
}

impl<E: Env> Handler for NodeHandler<E> {
    async fn handle(&self, from: NodeId, request: Bytes) -> Bytes {
        match decode_request(&request) {
            Ok(request) => self.node.handle_request(from, request).await,
            Err(error) => undecodable(&error),
        }
    }
}

/// A read batch's answer as sent: the answers in order, or, when that would pass `limit`
/// bytes, `Unavailable` for each of them (as many), so the client asks each group on its own.
fn batch_answer(answers: Vec<ClientResponse>, limit: usize) -> Bytes {
    let count = answers.len();
    let answer = respond::<ReadBatch>(&ReadBatchAnswer { answers });
    if answer.len() <= limit {
        return answer;
    }
    respond::<ReadBatch>(&ReadBatchAnswer {
        answers: vec![
            ClientResponse::Unavailable {
                reason: "the batch's answer exceeds the internal message limit".to_string(),
            };
            count
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(bytes: &[u8]) -> Vec<ClientResponse> {
        larder_protocol::decode_response::<ReadBatch>(bytes)
            .expect("an answer")
            .answers
    }

    #[test]
    fn a_batch_answer_past_the_limit_turns_every_answer_unavailable() {
        let answers = vec![
            ClientResponse::Reply(Reply::Bulk(Bytes::from(vec![b'x'; 4096]))),
            ClientResponse::Reply(Reply::Int(7)),
        ];
        let whole = batch_answer(answers.clone(), MESSAGE_BYTES_MAX);
        assert_eq!(decoded(&whole), answers);
        // One byte short of the whole answer: none of it goes, and each read learns to ask
        // again on its own.
        let refused = decoded(&batch_answer(answers, whole.len() - 1));
        assert_eq!(refused.len(), 2);
        assert!(
            refused
                .iter()
                .all(|answer| matches!(answer, ClientResponse::Unavailable { .. }))
        );
    }
}
