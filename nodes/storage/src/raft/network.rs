//! openraft's network for one slot group, over [`Net`].
//!
//! Sizes. Nothing here sends a message whose size grows with the group:
//! - An append carries at most [`TransferLimits::append_bytes_max`] bytes of entries (always
//!   at least one entry). When openraft hands over more, the first entries that fit are sent
//!   and the answer is `PartialSuccess` up to the last of them; openraft continues from there.
//! - A snapshot travels in chunks of [`TransferLimits::snapshot_chunk_bytes`]
//!   ([`SnapshotChunk`]), each its own call; the follower assembles them and installs the
//!   snapshot when the last arrives (`StorageNode::handle_raft`).
//! - Each call's timeout grows with its size ([`transfer_timeout`]), so a batch of large
//!   values is not cut off by the per-RPC timeout sized for heartbeats and then resent
//!   forever.

use std::future::Future;
use std::time::Duration;

use larder_core::bugs::{Bug, Bugs};
use larder_core::env::{Net, NetError, transfer_allowance};
use larder_core::{GroupId, NodeId};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{EmptyNode, OptionalSend};

use larder_protocol::{CallError, Encoded, RaftCall, call};

use super::wire::{self, ChunkAnswer, RaftPayload, SnapshotChunk};
use super::{Snapshot, SnapshotData, TypeConfig, Vote};

/// What one Raft message may carry (from `NodeConfig`).
#[derive(Debug, Clone)]
pub struct TransferLimits {
    pub append_bytes_max: usize,
    pub snapshot_chunk_bytes: usize,
    /// For [`Bug::AppendCutReportedWhole`].
    pub bugs: Bugs,
}

/// `base` plus the time `bytes` take to cross and be written ([`transfer_allowance`]).
pub fn transfer_timeout(base: Duration, bytes: usize) -> Duration {
    base + transfer_allowance(bytes)
}

/// Hands openraft one [`RaftPeer`] per target node of `group`.
#[derive(Clone)]
pub struct RaftNet<N: Net> {
    net: N,
    group: GroupId,
    limits: TransferLimits,
}

impl<N: Net> RaftNet<N> {
    pub fn new(net: N, group: GroupId, limits: TransferLimits) -> Self {
        RaftNet { net, group, limits }
    }
}

impl<N: Net> RaftNetworkFactory<TypeConfig> for RaftNet<N> {
    type Network = RaftPeer<N>;

    async fn new_client(&mut self, target: NodeId, _node: &EmptyNode) -> Self::Network {
        RaftPeer {
            net: self.net.clone(),
            group: self.group,
            target,
            limits: self.limits.clone(),
        }
    }
}

/// The connection from this node to `target` for `group`.
pub struct RaftPeer<N: Net> {
    net: N,
    group: GroupId,
    target: NodeId,
    limits: TransferLimits,
}

/// Keeps the first entries of `request` whose encoded size fits `budget` (at least one).
/// Returns the log id of the last entry kept when some were cut.
fn fit_entries(
    request: &mut AppendEntriesRequest<TypeConfig>,
    budget: usize,
) -> Option<super::LogId> {
    let mut used = 0usize;
    let mut keep = request.entries.len();
    for (index, entry) in request.entries.iter().enumerate() {
        let size = postcard::serialize_with_flavor(entry, postcard::ser_flavors::Size::default())
            .expect("a log entry serializes");
        if index > 0 && used + size > budget {
            keep = index;
            break;
        }
        used += size;
    }
    if keep == request.entries.len() {
        return None;
    }
    request.entries.truncate(keep);
    request.entries.last().map(|entry| entry.log_id)
}

/// Maps a transport failure onto openraft's categories: only `Unreachable` makes openraft
/// back off; the rest it retries at once.
fn rpc_error<E: std::error::Error>(error: NetError) -> RPCError<TypeConfig, E> {
    match error {
        NetError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
        _ => RPCError::Network(NetworkError::new(&error)),
    }
}

impl<N: Net> RaftPeer<N> {
    /// Sends `payload` as `call` and decodes openraft's response to it. The timeout is
    /// `timeout` plus the transfer time of the request ([`transfer_timeout`]).
    async fn call<P: RaftPayload>(
        &self,
        kind: RaftCall,
        payload: &P,
        timeout: Duration,
    ) -> Result<P::Response, NetError> {
        let request = Encoded::new(wire::request(self.group, kind, payload));
        let timeout = transfer_timeout(timeout, request.bytes().len());
        let answer = call(&self.net, self.target, &request, timeout)
            .await
            .map_err(|error| match error {
                CallError::Net(error) => error,
                CallError::BadResponse { from, reason } => NetError::Io {
                    to: from,
                    reason: format!("bad response: {reason}"),
                },
            })?;
        wire::response::<P>(&answer).map_err(|e| NetError::Io {
            to: self.target,
            reason: format!("bad response: {e}"),
        })
    }

    async fn raft_call<T, E, P>(
        &self,
        kind: RaftCall,
        payload: P,
        option: &RPCOption,
    ) -> Result<T, RPCError<TypeConfig>>
    where
        E: std::error::Error + 'static,
        P: RaftPayload<Response = Result<T, E>>,
    {
        let reply = self
            .call(kind, &payload, option.soft_ttl())
            .await
            .map_err(rpc_error)?;
        reply.map_err(|error| {
            // The remote node's Raft stopped: for openraft that is an unreachable peer.
            RPCError::Unreachable(Unreachable::new(&error))
        })
    }
}

impl<N: Net> RaftNetworkV2<TypeConfig> for RaftPeer<N> {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        mut request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let cut = fit_entries(&mut request, self.limits.append_bytes_max);
        let response = self.raft_call(RaftCall::Append, request, &option).await?;
        Ok(match (response, cut) {
            // The follower took what was sent: tell openraft how far, and it sends the rest.
            (AppendEntriesResponse::Success, Some(last))
                if !self.limits.bugs.is_planted(Bug::AppendCutReportedWhole) =>
            {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (response, _) => response,
        })
    }

    async fn vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.raft_call(RaftCall::Vote, request, &option).await
    }

    async fn pre_vote(
        &mut self,
        request: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.raft_call(RaftCall::PreVote, request, &option).await
    }

    /// Sends the snapshot in chunks, each a call of its own with its own timeout, and returns
    /// the follower's answer to the last one (the install). A follower that lost the chunks
    /// before (it restarted, or another leader's snapshot replaced them) answers `Restart`,
    /// and openraft sends the snapshot again from the start.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let data = snapshot.snapshot.into_inner();
        let total = data.len();
        let chunk = self.limits.snapshot_chunk_bytes.max(1);
        let send = async {
            let mut offset = 0;
            loop {
                let end = (offset + chunk).min(total);
                let payload = SnapshotChunk {
                    vote,
                    meta: snapshot.meta.clone(),
                    offset: offset as u64,
                    total: total as u64,
                    data: data[offset..end].to_vec(),
                };
                // The hard TTL per chunk: the last one also waits for the install.
                match self
                    .call(RaftCall::Snapshot, &payload, option.hard_ttl())
                    .await?
                {
                    Ok(ChunkAnswer::Installed(response)) => return Ok(Ok(response)),
                    Ok(ChunkAnswer::Continue) if end < total => offset = end,
                    Ok(answer) => {
                        return Err(NetError::Io {
                            to: self.target,
                            reason: format!("snapshot chunk at {offset} of {total}: {answer:?}"),
                        });
                    }
                    Err(fatal) => return Ok(Err(fatal)),
                }
            }
        };
        futures::pin_mut!(send, cancel);
        let outcome = futures::future::select(send, cancel).await;
        match outcome {
            futures::future::Either::Left((Ok(Ok(response)), _)) => Ok(response),
            futures::future::Either::Left((Ok(Err(fatal)), _)) => {
                Err(StreamingError::Unreachable(Unreachable::new(&fatal)))
            }
            futures::future::Either::Left((Err(NetError::Unreachable { to, reason }), _)) => {
                Err(StreamingError::Unreachable(Unreachable::new(
                    &NetError::Unreachable { to, reason },
                )))
            }
            futures::future::Either::Left((Err(error), _)) => {
                Err(StreamingError::Network(NetworkError::new(&error)))
            }
            futures::future::Either::Right((closed, _)) => Err(StreamingError::Closed(closed)),
        }
    }

    async fn transfer_leader(
        &mut self,
        request: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.raft_call(RaftCall::TransferLeader, request, &option)
            .await
    }
}
