//! openraft's network for one slot group, over [`Net`].

use std::future::Future;
use std::time::Duration;

use larder_core::env::{Net, NetError};
use larder_core::{GroupId, NodeId};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{EmptyNode, OptionalSend};

use larder_protocol::{CallError, Encoded, RaftCall, call};

use super::wire::{self, InstallSnapshot, RaftPayload};
use super::{Snapshot, SnapshotData, TypeConfig, Vote};

/// Hands openraft one [`RaftPeer`] per target node of `group`.
#[derive(Clone)]
pub struct RaftNet<N: Net> {
    net: N,
    group: GroupId,
}

impl<N: Net> RaftNet<N> {
    pub fn new(net: N, group: GroupId) -> Self {
        RaftNet { net, group }
    }
}

impl<N: Net> RaftNetworkFactory<TypeConfig> for RaftNet<N> {
    type Network = RaftPeer<N>;

    async fn new_client(&mut self, target: NodeId, _node: &EmptyNode) -> Self::Network {
        RaftPeer {
            net: self.net.clone(),
            group: self.group,
            target,
        }
    }
}

/// The connection from this node to `target` for `group`.
pub struct RaftPeer<N: Net> {
    net: N,
    group: GroupId,
    target: NodeId,
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
    /// Sends `payload` as `call` and decodes openraft's response to it.
    async fn call<P: RaftPayload>(
        &self,
        kind: RaftCall,
        payload: &P,
        timeout: Duration,
    ) -> Result<P::Response, NetError> {
        let request = Encoded::new(wire::request(self.group, kind, payload));
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
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.raft_call(RaftCall::Append, request, &option).await
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

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let payload = InstallSnapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        // Snapshots are large: allow the hard TTL rather than the per-RPC soft one.
        let send = self.call(RaftCall::Snapshot, &payload, option.hard_ttl());
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
