//! Node addresses learned from the center.
//!
//! Routing tables and Raft memberships name node ids; only the center's registry knows where
//! each storage node listens (its heartbeats report it). The center hands the registry's
//! addresses on with every heartbeat answer ([`HeartbeatAck::addresses`]) and routing answer
//! ([`RoutingAnswer::addresses`]); a process that wants them sets a hook
//! (`StorageNode::on_addresses`, `SharedRouting::on_addresses`) that makes the node reachable
//! on its network (the real network: `AddressBook::sink`). The simulator's network addresses
//! nodes by id and sets no hook: then nothing is called and nothing changes.
//!
//! [`HeartbeatAck::addresses`]: crate::HeartbeatAck::addresses
//! [`RoutingAnswer::addresses`]: crate::RoutingAnswer::addresses

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use larder_core::NodeId;

use crate::ADDRESSES_MAX;

/// Called with a node id and the address it listens at (opaque: `host:port` on the real
/// network).
pub type AddressHook = Arc<dyn Fn(NodeId, &str) + Send + Sync>;

#[derive(Default)]
struct Inner {
    hook: Option<AddressHook>,
    /// The addresses of the last delivery (at most [`ADDRESSES_MAX`]).
    latest: BTreeMap<NodeId, String>,
}

/// The addresses a process last learned, and the hook they are handed to: each (id, address)
/// once, and again only when the address changes, so a hook that logs is not called every
/// heartbeat with the same list.
#[derive(Default)]
pub struct LearnedAddresses {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for LearnedAddresses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock().expect("addresses lock");
        f.debug_struct("LearnedAddresses")
            .field("hook", &inner.hook.is_some())
            .field("latest", &inner.latest)
            .finish()
    }
}

impl LearnedAddresses {
    /// Sets the hook (replacing any earlier one) and hands it what was learned so far.
    pub fn set_hook(&self, hook: AddressHook) {
        let mut inner = self.inner.lock().expect("addresses lock");
        for (id, address) in &inner.latest {
            hook(*id, address);
        }
        inner.hook = Some(hook);
    }

    /// Records `addresses` (a whole list from the center, replacing the previous one; entries
    /// past [`ADDRESSES_MAX`] ignored) and calls the hook for every entry that is new or
    /// changed. The hook runs under this object's lock (so deliveries never overtake each
    /// other) and must not call back into it.
    pub fn learn(&self, addresses: &[(NodeId, String)]) {
        let mut inner = self.inner.lock().expect("addresses lock");
        let latest: BTreeMap<NodeId, String> =
            addresses.iter().take(ADDRESSES_MAX).cloned().collect();
        if let Some(hook) = &inner.hook {
            for (id, address) in &latest {
                if inner.latest.get(id) != Some(address) {
                    hook(*id, address);
                }
            }
        }
        inner.latest = latest;
    }

    /// The addresses of the last delivery, by id.
    pub fn latest(&self) -> Vec<(NodeId, String)> {
        let inner = self.inner.lock().expect("addresses lock");
        inner
            .latest
            .iter()
            .map(|(id, address)| (*id, address.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Calls = Arc<Mutex<Vec<(NodeId, String)>>>;

    fn recorder() -> (AddressHook, Calls) {
        let calls: Calls = Arc::default();
        let seen = calls.clone();
        let hook: AddressHook = Arc::new(move |id, address: &str| {
            seen.lock().expect("calls").push((id, address.to_string()));
        });
        (hook, calls)
    }

    fn list(entries: &[(NodeId, &str)]) -> Vec<(NodeId, String)> {
        entries
            .iter()
            .map(|(id, address)| (*id, address.to_string()))
            .collect()
    }

    #[test]
    fn without_a_hook_addresses_are_only_kept() {
        let learned = LearnedAddresses::default();
        learned.learn(&list(&[(2, "b:2"), (1, "a:1")]));
        assert_eq!(learned.latest(), list(&[(1, "a:1"), (2, "b:2")]));
    }

    #[test]
    fn the_hook_sees_new_and_changed_addresses_once() {
        let learned = LearnedAddresses::default();
        learned.learn(&list(&[(1, "a:1")]));
        let (hook, calls) = recorder();
        // Setting the hook hands it what is known already.
        learned.set_hook(hook);
        assert_eq!(*calls.lock().expect("calls"), list(&[(1, "a:1")]));
        calls.lock().expect("calls").clear();

        learned.learn(&list(&[(1, "a:1"), (2, "b:2")]));
        learned.learn(&list(&[(1, "a:1"), (2, "b:2")]));
        assert_eq!(*calls.lock().expect("calls"), list(&[(2, "b:2")]));
        calls.lock().expect("calls").clear();

        // A restarted node on a new port; a node left out of a list and back is handed on
        // again (the list is the center's whole registry, so it was gone meanwhile).
        learned.learn(&list(&[(1, "a:9")]));
        learned.learn(&list(&[(1, "a:9"), (2, "b:2")]));
        assert_eq!(
            *calls.lock().expect("calls"),
            list(&[(1, "a:9"), (2, "b:2")])
        );
        assert_eq!(learned.latest(), list(&[(1, "a:9"), (2, "b:2")]));
    }

    #[test]
    fn deliveries_are_bounded() {
        let learned = LearnedAddresses::default();
        let (hook, calls) = recorder();
        learned.set_hook(hook);
        let many: Vec<(NodeId, String)> = (0..ADDRESSES_MAX as NodeId + 10)
            .map(|id| (id, format!("h:{id}")))
            .collect();
        learned.learn(&many);
        assert_eq!(calls.lock().expect("calls").len(), ADDRESSES_MAX);
        assert_eq!(learned.latest().len(), ADDRESSES_MAX);
    }
}
