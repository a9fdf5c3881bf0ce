//! `ClusterClient`: a client of the whole cluster. It routes each command by slot to its slot
//! group (one [`Client`] per group, each with the session its group opened), and splits multi-key commands whose
//! keys live in different groups, merging the answers (`MGET`, `MSET` — atomic per group only,
//! as in Redis Cluster proxies —, `DEL`, `EXISTS`).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use larder_core::bugs::{Bug, Bugs};
use larder_core::env::{Clock, Net};
use larder_core::kv::{Command, Reply};
use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};

use larder_protocol::{ClientRequest, ClientResponse, Encoded, ReadBatch, ReadBatchAnswer, call};

use crate::group::{Client, ClientConfig, ClientError};
use crate::routing::SharedRouting;
use crate::sessions::SessionPool;

/// Times one command is retried after a newer routing table arrived (each retry follows a
/// table change, so this bounds a command's time while the center is repairing).
const ROUTING_RETRIES_MAX: usize = 3;

/// A client of every slot group of the cluster.
pub struct ClusterClient<N: Net, C: Clock> {
    net: N,
    clock: C,
    routing: SharedRouting,
    config: ClientConfig,
    /// Per group: the client and the routing epoch its replica list came from.
    groups: BTreeMap<GroupId, (u64, Client<N, C>)>,
    /// Where group clients take their sessions from and leave them when this client is
    /// dropped (`None`: each opens its own).
    sessions: Option<SessionPool>,
}

impl<N: Net, C: Clock> Drop for ClusterClient<N, C> {
    /// Leaves every group session in the pool, if there is one. A write still on its way is
    /// safe: the next owner's writes carry higher sequence numbers (see [`crate::sessions`]).
    fn drop(&mut self) {
        let Some(pool) = &self.sessions else {
            return;
        };
        for (group, (_, client)) in &self.groups {
            if let Some(mut parked) = client.parked() {
                if self
                    .config
                    .bugs
                    .is_planted(Bug::PooledSessionRepeatsSequence)
                {
                    // Planted bug: the next owner's first write repeats the last sequence
                    // number, and the group answers it with the earlier write's reply
                    // without applying it.
                    parked.seq = parked.seq.saturating_sub(1);
                }
                pool.park(*group, parked);
            }
        }
    }
}

impl<N: Net, C: Clock> ClusterClient<N, C> {
    /// Each group's client opens its own session with the group before its first write (or,
    /// with [`ClusterClient::with_session_pool`], carries on one a closed client left).
    pub fn new(net: N, clock: C, routing: SharedRouting, config: ClientConfig) -> Self {
        ClusterClient {
            net,
            clock,
            routing,
            config,
            groups: BTreeMap::new(),
            sessions: None,
        }
    }

    /// Group clients carry on sessions from `pool` instead of opening their own, and leave
    /// theirs there when this client is dropped (a proxy's connections share one pool).
    pub fn with_session_pool(mut self, pool: SessionPool) -> Self {
        self.sessions = Some(pool);
        self
    }

    pub fn routing(&self) -> &SharedRouting {
        &self.routing
    }

    fn client(&mut self, group: GroupId) -> Result<&mut Client<N, C>, ClientError> {
        let table = self.routing.current();
        let route = table.route(group).ok_or_else(|| ClientError::Unavailable {
            reason: format!("group {group} is not in routing epoch {}", table.epoch()),
        })?;
        let stale = self.groups.get(&group).is_none_or(|(epoch, client)| {
            *epoch != table.epoch() && client.replicas() != route.replicas
        });
        if stale {
            let mut client = Client::new(
                self.net.clone(),
                self.clock.clone(),
                group,
                route.replicas.clone(),
                self.config.clone(),
            );
            client.set_leader_hint(self.routing.leader_hint(group, &table));
            if let Some(pool) = &self.sessions {
                client.set_session_pool(pool.clone());
            }
            // A replaced client of a group carries on the old one's session and sequence.
            if let Some((_, old)) = self.groups.remove(&group) {
                client.continue_sequence_of(&old);
            }
            self.groups.insert(group, (table.epoch(), client));
        }
        let (epoch, client) = self.groups.get_mut(&group).expect("inserted above");
        // Same replicas under a newer epoch: keep the client (and its leader), send the epoch.
        *epoch = table.epoch();
        client.set_epoch(table.epoch());
        Ok(client)
    }

    /// Executes `command` on `group`. When the group cannot serve (nothing was done), fetches
    /// a newer routing table and, if one arrived and still puts the command's keys in `group`,
    /// tries again with its replicas: a replaced replica or a table the proxy has not
    /// caught up with costs a retry, not an error.
    pub async fn execute_in(
        &mut self,
        group: GroupId,
        command: Command,
    ) -> Result<Reply, ClientError> {
        let mut result = self.execute_once(group, command.clone()).await;
        for _ in 0..ROUTING_RETRIES_MAX {
            let Err(ClientError::Unavailable { .. }) = &result else {
                break;
            };
            if !self.refresh_routing().await {
                break;
            }
            let table = self.routing.current();
            let still_here = command
                .keys()
                .iter()
                .all(|key| table.group_of_key(key) == Some(group));
            if !still_here || table.route(group).is_none() {
                break;
            }
            result = self.execute_once(group, command.clone()).await;
        }
        result
    }

    /// [`ClusterClient::execute_in`] for a command whose keys all live in `group`; when the
    /// group refused it (nothing was done) and the newest table puts all its keys in another
    /// group (its slots moved: a migration's cutover), sends it there instead (bounded), so
    /// a slot moving under a client costs a short wait, not an error.
    async fn execute_following_moves(
        &mut self,
        mut group: GroupId,
        command: Command,
    ) -> Result<Reply, ClientError> {
        let mut result = self.execute_in(group, command.clone()).await;
        for _ in 0..ROUTING_RETRIES_MAX {
            let Err(ClientError::Unavailable { .. }) = &result else {
                break;
            };
            let table = self.routing.current();
            let keys = command.keys();
            let owners: BTreeSet<Option<GroupId>> =
                keys.iter().map(|key| table.group_of_key(key)).collect();
            match owners.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(moved)] if *moved != group => group = *moved,
                _ => break,
            }
            result = self.execute_in(group, command.clone()).await;
        }
        result
    }

    async fn execute_once(
        &mut self,
        group: GroupId,
        command: Command,
    ) -> Result<Reply, ClientError> {
        let client = self.client(group)?;
        let result = client.execute(command).await;
        if let Some(leader) = client.leader_hint() {
            self.routing.hint_leader(group, leader);
        }
        result
    }

    /// Fetches a newer routing table if the routing has sources; returns whether one arrived.
    pub async fn refresh_routing(&self) -> bool {
        let limit = self.config.request_timeout;
        match self
            .routing
            .refresh(
                &self.net,
                &self.clock,
                self.config.routing_refresh_gap,
                limit,
            )
            .await
        {
            Ok(newer) => newer,
            Err(error) => {
                tracing::debug!(%error, "refreshing the routing table");
                false
            }
        }
    }

    /// Executes a keyed command, splitting it across groups when its keys span several.
    /// Commands without keys are not routable here (see [`ClusterClient::execute_in`]).
    pub async fn execute(&mut self, command: Command) -> Result<Reply, ClientError> {
        if self.routing.current().epoch() == 0 {
            // Nothing known yet (a proxy that started before the center's first table).
            self.refresh_routing().await;
        }
        let table = self.routing.current();
        let (group, single) = {
            let keys = command.keys();
            let Some(first) = keys.first() else {
                return Err(ClientError::Unavailable {
                    reason: format!("'{}' has no key to route by", command.name()),
                });
            };
            let group = group_of(&table, first)?;
            let mut single = true;
            for key in &keys {
                single &= group_of(&table, key)? == group;
            }
            (group, single)
        };
        if single {
            return self.execute_following_moves(group, command).await;
        }
        match command {
            Command::MGet { keys } => {
                let mut by_group: BTreeMap<GroupId, Vec<(usize, Bytes)>> = BTreeMap::new();
                for (position, key) in keys.into_iter().enumerate() {
                    by_group
                        .entry(group_of(&table, &key)?)
                        .or_default()
                        .push((position, key));
                }
                let total = by_group.values().map(Vec::len).sum();
                let mut values = vec![Reply::Nil; total];
                for (group, keyed) in by_group {
                    let (positions, keys): (Vec<usize>, Vec<Bytes>) = keyed.into_iter().unzip();
                    match self.execute_in(group, Command::MGet { keys }).await? {
                        Reply::Array(found) if found.len() == positions.len() => {
                            for (position, value) in positions.into_iter().zip(found) {
                                values[position] = value;
                            }
                        }
                        other => return Ok(other),
                    }
                }
                Ok(Reply::Array(values))
            }
            Command::MSet { pairs } => {
                let mut by_group: BTreeMap<GroupId, Vec<(Bytes, Bytes)>> = BTreeMap::new();
                for (key, value) in pairs {
                    by_group
                        .entry(group_of(&table, &key)?)
                        .or_default()
                        .push((key, value));
                }
                for (group, pairs) in by_group {
                    let reply = self.execute_in(group, Command::MSet { pairs }).await?;
                    if reply != Reply::Ok {
                        return Ok(reply);
                    }
                }
                Ok(Reply::Ok)
            }
            Command::Del { keys } => {
                self.sum_over_groups(&table, keys, |keys| Command::Del { keys })
                    .await
            }
            Command::Exists { keys } => {
                self.sum_over_groups(&table, keys, |keys| Command::Exists { keys })
                    .await
            }
            // Redis Cluster's answer to keys of several slots; here the unit is the slot
            // group (keys of one group run together, in one log entry).
            _ => Ok(Reply::error(CROSSSLOT)),
        }
    }

    /// Executes commands a client sent together (a pipeline), each with every key in one slot
    /// group ([`single_group`]), and answers in their order.
    ///
    /// The commands of different groups run concurrently; those of one group travel as one
    /// [`Command::Transaction`] without watched keys, so they run in arrival order in one log
    /// entry (or after one read-index round when none writes) for one round trip. Redis runs a
    /// pipeline in order; here the order holds within a group, and across groups the commands
    /// are concurrent requests, each linearizable on its own (as a pipeline spanning the nodes
    /// of a Redis Cluster is). The commands of a group that could not serve them (nothing was
    /// done) run again one at a time the usual way, which follows routing changes; any other
    /// failure of a group's entry is every one of its commands' answer.
    pub async fn execute_pipeline(
        &mut self,
        commands: &[Command],
    ) -> Vec<Result<Reply, ClientError>> {
        let table = self.routing.current();
        let mut by_group: BTreeMap<GroupId, Vec<usize>> = BTreeMap::new();
        let mut one_by_one = Vec::new();
        for (index, command) in commands.iter().enumerate() {
            match single_group(&table, command) {
                Some(group) => by_group.entry(group).or_default().push(index),
                None => one_by_one.push(index),
            }
        }
        let mut lanes = Vec::with_capacity(by_group.len());
        for (group, indices) in by_group {
            if self.client(group).is_err() {
                one_by_one.extend(indices);
                continue;
            }
            let (epoch, client) = self.groups.remove(&group).expect("client() keeps it");
            let command = match indices.as_slice() {
                [only] => commands[*only].clone(),
                _ => Command::Transaction {
                    commands: indices.iter().map(|&i| commands[i].clone()).collect(),
                    watched: Vec::new(),
                },
            };
            lanes.push(Lane {
                group,
                epoch,
                client,
                indices,
                command,
            });
        }
        // Read-only lanes of groups one node is believed to lead go to it in one message
        // (`ReadBatch`); the rest, and any read a batch could not serve, go group by group.
        let mut alone = Vec::with_capacity(lanes.len());
        let mut by_node: BTreeMap<NodeId, Vec<Lane<N, C>>> = BTreeMap::new();
        for lane in lanes {
            match lane.client.leader_hint() {
                Some(leader) if !lane.command.is_write() => {
                    by_node.entry(leader).or_default().push(lane)
                }
                _ => alone.push(lane),
            }
        }
        let mut batches = Vec::new();
        for (node, lanes) in by_node {
            if lanes.len() >= 2 {
                batches.push((node, lanes));
            } else {
                alone.extend(lanes);
            }
        }
        let (net, limit) = (&self.net, self.config.request_timeout);
        let (mut outcomes, batched) = futures::future::join(
            futures::future::join_all(alone.into_iter().map(run_lane)),
            futures::future::join_all(
                batches
                    .into_iter()
                    .map(|(node, lanes)| read_batch(net, node, lanes, limit, &self.config.bugs)),
            ),
        )
        .await;
        let mut unserved = Vec::new();
        for (lane, answer) in batched.into_iter().flatten() {
            match answer {
                Some(reply) => outcomes.push(lane.answered(Ok(reply))),
                None => unserved.push(lane),
            }
        }
        outcomes.extend(futures::future::join_all(unserved.into_iter().map(run_lane)).await);
        let mut results: Vec<Option<Result<Reply, ClientError>>> = vec![None; commands.len()];
        for LaneOutcome {
            group,
            epoch,
            client,
            indices,
            result,
        } in outcomes
        {
            if let Some(leader) = client.leader_hint() {
                self.routing.hint_leader(group, leader);
            }
            self.groups.insert(group, (epoch, client));
            match (result, indices.as_slice()) {
                (Err(ClientError::Unavailable { .. }), _) => one_by_one.extend(indices),
                (result, [only]) => results[*only] = Some(result),
                (Ok(Reply::Array(mut replies)), _) if replies.len() == indices.len() => {
                    if self.config.bugs.is_planted(Bug::PipelineReplyOrder) {
                        replies.reverse();
                    }
                    for (index, reply) in indices.into_iter().zip(replies) {
                        results[index] = Some(Ok(reply));
                    }
                }
                (result, _) => {
                    for index in indices {
                        results[index] = Some(result.clone());
                    }
                }
            }
        }
        one_by_one.sort_unstable();
        for index in one_by_one {
            results[index] = Some(self.execute(commands[index].clone()).await);
        }
        results
            .into_iter()
            .map(|result| result.expect("every command of the pipeline is answered"))
            .collect()
    }

    async fn sum_over_groups(
        &mut self,
        table: &RoutingTable,
        keys: Vec<Bytes>,
        make: impl Fn(Vec<Bytes>) -> Command,
    ) -> Result<Reply, ClientError> {
        let mut by_group: BTreeMap<GroupId, Vec<Bytes>> = BTreeMap::new();
        for key in keys {
            by_group
                .entry(group_of(table, &key)?)
                .or_default()
                .push(key);
        }
        let mut total = 0i64;
        for (group, keys) in by_group {
            match self.execute_in(group, make(keys)).await? {
                Reply::Int(count) => total += count,
                other => return Ok(other),
            }
        }
        Ok(Reply::Int(total))
    }
}

/// Redis Cluster's error for a command whose keys cannot be served together.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// The slot group holding every key of `command`; `None` for a command without keys, with
/// keys in several groups, or with a key `table` maps to no group.
pub fn single_group(table: &RoutingTable, command: &Command) -> Option<GroupId> {
    let keys = command.keys();
    let group = table.group_of_key(keys.first()?)?;
    keys[1..]
        .iter()
        .all(|key| table.group_of_key(key) == Some(group))
        .then_some(group)
}

fn group_of(table: &RoutingTable, key: &[u8]) -> Result<GroupId, ClientError> {
    // A checked table maps every slot; an unmapped one is a routing bug, reported, not a panic.
    table
        .group_of_key(key)
        .ok_or_else(|| ClientError::Unavailable {
            reason: format!(
                "routing epoch {} maps no group for the key's slot",
                table.epoch()
            ),
        })
}

/// One group's share of a pipeline.
struct Lane<N: Net, C: Clock> {
    group: GroupId,
    /// The routing epoch of its client.
    epoch: u64,
    client: Client<N, C>,
    /// Where its commands are in the pipeline.
    indices: Vec<usize>,
    /// What is sent: one command, or a transaction of them.
    command: Command,
}

/// What a lane's request came back with: the lane without its command, and the result.
struct LaneOutcome<N: Net, C: Clock> {
    group: GroupId,
    epoch: u64,
    client: Client<N, C>,
    indices: Vec<usize>,
    result: Result<Reply, ClientError>,
}

impl<N: Net, C: Clock> Lane<N, C> {
    /// The lane answered `result` (its command went in a read batch).
    fn answered(self, result: Result<Reply, ClientError>) -> LaneOutcome<N, C> {
        LaneOutcome {
            group: self.group,
            epoch: self.epoch,
            client: self.client,
            indices: self.indices,
            result,
        }
    }
}

/// Sends a lane's command through its group's client (retries, leader changes, sessions).
async fn run_lane<N: Net, C: Clock>(lane: Lane<N, C>) -> LaneOutcome<N, C> {
    let Lane {
        group,
        epoch,
        mut client,
        indices,
        command,
    } = lane;
    let result = client.execute(command).await;
    LaneOutcome {
        group,
        epoch,
        client,
        indices,
        result,
    }
}

/// Sends read-only `lanes` to `node` in one [`ReadBatch`]. Each lane comes back with its
/// reply, or with `None` when the batch did not serve it (the node does not lead its group any
/// more, a failed call, a refused batch): the caller sends those through their own group's
/// client, which finds the leader; a read done twice changes nothing. After a failed call
/// the lanes' clients have forgotten `node` as their leader.
async fn read_batch<N: Net, C: Clock>(
    net: &N,
    node: NodeId,
    mut lanes: Vec<Lane<N, C>>,
    limit: std::time::Duration,
    bugs: &Bugs,
) -> Vec<(Lane<N, C>, Option<Reply>)> {
    let request = Encoded::new(ReadBatch {
        reads: lanes
            .iter()
            .map(|lane| ClientRequest {
                group: lane.group,
                command: lane.command.clone(),
                session: None,
                epoch: lane.client.epoch(),
            })
            .collect(),
    });
    let mut answers = match call(net, node, &request, limit).await {
        Ok(ReadBatchAnswer { answers }) if answers.len() == lanes.len() => answers,
        Ok(_) => Vec::new(),
        Err(_) => {
            // The node may be gone or cut off: each group's client looks for its leader
            // afresh, as after a failed request of its own, rather than waiting on the same
            // node a second time.
            for lane in &mut lanes {
                lane.client.set_leader_hint(None);
            }
            Vec::new()
        }
    };
    if bugs.is_planted(Bug::ReadBatchAnswersReversed) {
        // Planted bug: each read takes another read's answer.
        answers.reverse();
    }
    let mut answers = answers.into_iter();
    lanes
        .into_iter()
        .map(|lane| match answers.next() {
            Some(ClientResponse::Reply(reply)) => (lane, Some(reply)),
            _ => (lane, None),
        })
        .collect()
}
