//! `ClusterClient`: a client of the whole cluster. It routes each command by slot to its slot
//! group (one [`Client`] per group, sharing one session id), and splits multi-key commands whose
//! keys live in different groups, merging the answers (`MGET`, `MSET` — atomic per group only,
//! as in Redis Cluster proxies —, `DEL`, `EXISTS`).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use larder_core::env::{Clock, Net};
use larder_core::kv::{Command, Reply};
use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};

use crate::addresses::LearnedAddresses;
use crate::center::{self, CenterError};
use crate::client::{Client, ClientConfig, ClientError};

/// The routing table a process currently believes, shared by all its connections and replaced
/// whole when a newer epoch arrives, plus the leader hints its connections learned and where a
/// newer table comes from.
#[derive(Debug, Clone)]
pub struct SharedRouting {
    table: Arc<RwLock<Arc<RoutingTable>>>,
    /// Soft hints by group; kept beside the table (not in it) so a leader change costs a map
    /// insert, not a copy of the 16384-slot table, and survives a table refresh.
    hints: Arc<RwLock<BTreeMap<GroupId, NodeId>>>,
    refresh: Arc<Refresh>,
}

#[derive(Debug)]
struct Refresh {
    /// Where newer tables come from: observers first, then center replicas. Empty: the table
    /// is static (tests, the single-group simulator).
    sources: Vec<NodeId>,
    /// Serialises fetches and remembers when the last one started, so a burst of failing
    /// requests costs one fetch.
    last: futures::lock::Mutex<Option<Duration>>,
    /// The node addresses the last fetch brought, and the hook they go to
    /// ([`SharedRouting::on_addresses`]).
    addresses: LearnedAddresses,
}

impl SharedRouting {
    /// A fixed table nobody refreshes.
    pub fn new(table: RoutingTable) -> Self {
        Self::build(table, Vec::new())
    }

    /// No table yet ([`RoutingTable::unknown`]): the first [`SharedRouting::refresh`] fetches
    /// one from `sources` (observers first, then center replicas).
    pub fn from_sources(sources: Vec<NodeId>) -> Self {
        Self::build(RoutingTable::unknown(), sources)
    }

    fn build(table: RoutingTable, sources: Vec<NodeId>) -> Self {
        SharedRouting {
            table: Arc::new(RwLock::new(Arc::new(table))),
            hints: Arc::new(RwLock::new(BTreeMap::new())),
            refresh: Arc::new(Refresh {
                sources,
                last: futures::lock::Mutex::new(None),
                addresses: LearnedAddresses::default(),
            }),
        }
    }

    pub fn current(&self) -> Arc<RoutingTable> {
        self.table.read().expect("routing lock").clone()
    }

    /// Where newer tables come from (empty: a static table).
    pub fn sources(&self) -> &[NodeId] {
        &self.refresh.sources
    }

    /// Calls `hook(node, address)` with the storage nodes' addresses each
    /// [`SharedRouting::refresh`] brings (from the center's registry): every one that is new or
    /// changed, before a newer table is installed, so the nodes a table names are reachable
    /// once connections route by it. The real processes insert them into their `AddressBook`
    /// (`AddressBook::sink`). Without a hook (the simulator, whose network needs no addresses)
    /// they are only kept. Shared by every clone of this routing; a later call replaces the
    /// hook.
    pub fn on_addresses(&self, hook: impl Fn(NodeId, &str) + Send + Sync + 'static) {
        self.refresh.addresses.set_hook(Arc::new(hook));
    }

    /// The node addresses the last refresh brought, by id.
    pub fn addresses(&self) -> Vec<(NodeId, String)> {
        self.refresh.addresses.latest()
    }

    /// Installs `table` if it is newer than the current one; returns whether it did.
    pub fn offer(&self, table: RoutingTable) -> bool {
        let mut current = self.table.write().expect("routing lock");
        if table.is_newer_than(&current) {
            *current = Arc::new(table);
            true
        } else {
            false
        }
    }

    /// Records that `node` leads `group` (a soft hint; the epoch does not change).
    pub fn hint_leader(&self, group: GroupId, node: NodeId) {
        // The common case (hint unchanged) takes only the read lock.
        if self.hints.read().expect("hints lock").get(&group) == Some(&node) {
            return;
        }
        self.hints.write().expect("hints lock").insert(group, node);
    }

    /// The node believed to lead `group`: the last one a connection found, else the table's.
    pub fn leader_hint(&self, group: GroupId, table: &RoutingTable) -> Option<NodeId> {
        let route = table.route(group)?;
        self.hints
            .read()
            .expect("hints lock")
            .get(&group)
            .copied()
            .filter(|node| route.replicas.contains(node))
            .or(route.leader_hint)
    }

    /// Fetches a newer table from the sources ([`center::fetch_routing_answer`]) unless another
    /// fetch started less than `gap` ago (then this waits for it and returns `false`); returns
    /// whether a newer table was installed. The node addresses that came with the answer go to
    /// the [`SharedRouting::on_addresses`] hook whether or not the table was newer. A static
    /// table is never refreshed.
    pub async fn refresh<N: Net, C: Clock>(
        &self,
        net: &N,
        clock: &C,
        gap: Duration,
        limit: Duration,
    ) -> Result<bool, CenterError> {
        if self.refresh.sources.is_empty() {
            return Ok(false);
        }
        let mut last = self.refresh.last.lock().await;
        let now = clock.now();
        if last.is_some_and(|at| now.saturating_sub(at) < gap) {
            return Ok(false);
        }
        *last = Some(now);
        let known = self.current().epoch();
        let fetched =
            center::fetch_routing_answer(net, &self.refresh.sources, known, limit).await?;
        // Addresses first: a connection routing by the new table can reach its nodes.
        self.refresh.addresses.learn(&fetched.addresses);
        match fetched.table {
            Some(table) => Ok(self.offer(table)),
            None => Ok(false),
        }
    }

    /// Fetches until a table arrives or `deadline` (on `clock`) passes; for processes that
    /// start before the center has written its first table.
    pub async fn wait_for_table<N: Net, C: Clock>(
        &self,
        net: &N,
        clock: &C,
        deadline: Duration,
    ) -> Result<Arc<RoutingTable>, CenterError> {
        loop {
            let outcome = self
                .refresh(net, clock, Duration::ZERO, Duration::from_secs(1))
                .await;
            let table = self.current();
            if table.epoch() > 0 {
                return Ok(table);
            }
            if clock.now() >= deadline {
                return Err(outcome.err().unwrap_or(CenterError::NoRoutingSource {
                    reasons: "no routing table yet".into(),
                }));
            }
            clock.sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Times one command is retried after a newer routing table arrived (each retry follows a
/// table change, so this bounds a command's time while the center is repairing).
const ROUTING_RETRIES_MAX: usize = 3;

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
            client.set_leader_hint(self.routing.leader_hint(group, &table));
            // A fresh client restarts its sequence at 1; only safe with a fresh session, so a
            // replaced client of a group keeps the old one's sequence by reusing it.
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
