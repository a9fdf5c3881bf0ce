//! The routing table a process believes ([`SharedRouting`]), shared by all its connections,
//! and how newer tables are fetched from the center's replicas, observers or storage nodes
//! ([`fetch_routing_answer`]).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use larder_core::env::{Clock, Net};
use larder_core::routing::RoutingTable;
use larder_core::{GroupId, NodeId};
use larder_protocol::addresses::LearnedAddresses;
use larder_protocol::{ADDRESSES_MAX, CenterResponse, Encoded, GetRouting, call};

/// Why no routing table could be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingFetchError {
    #[error("no routing source answered: {reasons}")]
    NoSource { reasons: String },
}

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
    /// The source the last answer named as the center leader: asked first, since it applies
    /// a new table before any follower does (found measuring client pauses at migration
    /// cutovers: a proxy asking a lagging follower first kept an old table for up to 1.4 s).
    leader: std::sync::Mutex<Option<NodeId>>,
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
                leader: std::sync::Mutex::new(None),
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
            // Invariant: the epoch a process routes by only grows.
            debug_assert!(table.epoch() > current.epoch());
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

    /// Fetches a newer table from the sources ([`fetch_routing_answer`]) unless another
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
    ) -> Result<bool, RoutingFetchError> {
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
        let preferred = *self.refresh.leader.lock().expect("leader lock");
        let mut sources = self.refresh.sources.clone();
        if let Some(at) = preferred.and_then(|leader| sources.iter().position(|s| *s == leader)) {
            let leader = sources.remove(at);
            sources.insert(0, leader);
        }
        let fetched = fetch_routing_answer(net, &sources, known, limit).await?;
        if let Some(leader) = fetched
            .center_leader
            .filter(|leader| self.refresh.sources.contains(leader))
        {
            *self.refresh.leader.lock().expect("leader lock") = Some(leader);
        }
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
    ) -> Result<Arc<RoutingTable>, RoutingFetchError> {
        loop {
            let outcome = self
                .refresh(net, clock, Duration::ZERO, Duration::from_secs(1))
                .await;
            let table = self.current();
            if table.epoch() > 0 {
                return Ok(table);
            }
            if clock.now() >= deadline {
                return Err(outcome.err().unwrap_or(RoutingFetchError::NoSource {
                    reasons: "no routing table yet".into(),
                }));
            }
            clock.sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Asks `sources` in order (center replicas, observers — or storage nodes, which answer from
/// the table their heartbeats brought) for a routing table newer than `known_epoch`, trying
/// each once. `Ok(None)`: the first source that answered has nothing newer. The table is
/// validated before it is returned. [`fetch_routing_answer`] also returns the node addresses.
///
/// Eventually consistent (see [`GetRouting`]): put observers first so route lookups
/// stay off the center leader.
pub async fn fetch_routing<N: Net>(
    net: &N,
    sources: &[NodeId],
    known_epoch: u64,
    limit: Duration,
) -> Result<Option<RoutingTable>, RoutingFetchError> {
    Ok(fetch_routing_answer(net, sources, known_epoch, limit)
        .await?
        .table)
}

/// What [`fetch_routing_answer`] got from the first source that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The table, if newer than the `known_epoch` asked with (validated).
    pub table: Option<RoutingTable>,
    /// The registered nodes' addresses ([`RoutingAnswer::addresses`]), newer table or not.
    pub addresses: Vec<(NodeId, String)>,
    /// Who the answering source believes leads the center ([`RoutingAnswer::center_leader`]).
    pub center_leader: Option<NodeId>,
}

/// [`fetch_routing`], returning the answering source's node addresses too: they can change
/// without a routing epoch (a node restarted on another port), so they count even when the
/// table is not newer.
pub async fn fetch_routing_answer<N: Net>(
    net: &N,
    sources: &[NodeId],
    known_epoch: u64,
    limit: Duration,
) -> Result<Fetched, RoutingFetchError> {
    let request = Encoded::new(GetRouting { known_epoch });
    let mut reasons = Vec::new();
    for source in sources {
        match call(net, *source, &request, limit).await {
            Ok(CenterResponse::Ok(mut answer)) => {
                answer.addresses.truncate(ADDRESSES_MAX);
                match answer.table {
                    Some(table) => match table.check() {
                        Ok(()) => {
                            return Ok(Fetched {
                                table: Some(table),
                                addresses: answer.addresses,
                                center_leader: answer.center_leader,
                            });
                        }
                        Err(error) => reasons.push(format!("{source}: invalid table: {error}")),
                    },
                    None => {
                        return Ok(Fetched {
                            table: None,
                            addresses: answer.addresses,
                            center_leader: answer.center_leader,
                        });
                    }
                }
            }
            Ok(CenterResponse::NotLeader { .. }) => reasons.push(format!("{source}: not leader")),
            Ok(CenterResponse::Unavailable { reason } | CenterResponse::Refused { reason }) => {
                reasons.push(format!("{source}: {reason}"))
            }
            Err(error) => reasons.push(format!("{source}: {error}")),
        }
    }
    Err(RoutingFetchError::NoSource {
        reasons: reasons.join("; "),
    })
}
