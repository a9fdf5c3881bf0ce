//! `ClusterClient`: a client of the whole cluster. It routes each command by slot to its slot
//! group (one [`Client`] per group, sharing one session id), and splits multi-key commands whose
//! keys live in different groups, merging the answers (`MGET`, `MSET` — atomic per group only,
//! as in Redis Cluster proxies —, `DEL`, `EXISTS`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use larder_core::GroupId;
use larder_core::env::{Clock, Net};
use larder_core::kv::{Command, Reply};
use larder_core::routing::RoutingTable;

use crate::client::{Client, ClientConfig, ClientError};

/// The routing table a process currently believes, shared by all its connections and replaced
/// whole when a newer epoch arrives.
#[derive(Debug, Clone)]
pub struct SharedRouting(Arc<RwLock<Arc<RoutingTable>>>);

impl SharedRouting {
    pub fn new(table: RoutingTable) -> Self {
        SharedRouting(Arc::new(RwLock::new(Arc::new(table))))
    }

    pub fn current(&self) -> Arc<RoutingTable> {
        self.0.read().expect("routing lock").clone()
    }

    /// Installs `table` if it is newer than the current one; returns whether it did.
    pub fn offer(&self, table: RoutingTable) -> bool {
        let mut current = self.0.write().expect("routing lock");
        if table.is_newer_than(&current) {
            *current = Arc::new(table);
            true
        } else {
            false
        }
    }

    /// Records that `node` leads `group` (a soft hint; the epoch does not change).
    pub fn hint_leader(&self, group: GroupId, node: larder_core::NodeId) {
        let known =
            |table: &RoutingTable| table.route(group).and_then(|r| r.leader_hint) == Some(node);
        // The common case (hint unchanged) takes only the read lock.
        if known(&self.current()) {
            return;
        }
        let mut current = self.0.write().expect("routing lock");
        if !known(&current) {
            let mut table = (**current).clone();
            if table.set_leader_hint(group, Some(node)).is_ok() {
                *current = Arc::new(table);
            }
        }
    }
}

/// A client of every slot group of the cluster.
pub struct ClusterClient<N: Net, C: Clock> {
    net: N,
    clock: C,
    routing: SharedRouting,
    config: ClientConfig,
    session: u64,
    /// Per group: the client and the routing epoch its replica list came from.
    groups: BTreeMap<GroupId, (u64, Client<N, C>)>,
}

impl<N: Net, C: Clock> ClusterClient<N, C> {
    /// `session` must be unique among all clients of the cluster and never reused (draw it at
    /// random): groups deduplicate writes by (session, sequence).
    pub fn new(
        net: N,
        clock: C,
        routing: SharedRouting,
        config: ClientConfig,
        session: u64,
    ) -> Self {
        ClusterClient {
            net,
            clock,
            routing,
            config,
            session,
            groups: BTreeMap::new(),
        }
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
                self.session,
            );
            client.set_leader_hint(route.leader_hint);
            // A fresh client restarts its sequence at 1; only safe with a fresh session, so a
            // replaced client of a group keeps the old one's sequence by reusing it.
            if let Some((_, old)) = self.groups.remove(&group) {
                client.continue_sequence_of(&old);
            }
            self.groups.insert(group, (table.epoch(), client));
        }
        Ok(&mut self.groups.get_mut(&group).expect("inserted above").1)
    }

    /// Executes `command` on `group`.
    pub async fn execute_in(
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

    /// Executes a keyed command, splitting it across groups when its keys span several.
    /// Commands without keys are not routable here (see [`ClusterClient::execute_in`]).
    pub async fn execute(&mut self, command: Command) -> Result<Reply, ClientError> {
        let table = self.routing.current();
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
        if single {
            return self.execute_in(group, command).await;
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
            other => Err(ClientError::Unavailable {
                reason: format!(
                    "'{}' keys span slot groups; use a {{hash tag}}",
                    other.name()
                ),
            }),
        }
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
