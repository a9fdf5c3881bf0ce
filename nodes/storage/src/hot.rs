//! A leader's hot keys: the keys of every request a node serves as a group leader go through a
//! sliding-window Space-Saving summary ([`larder_core::hotkeys`]); the heartbeat carries the
//! hottest to the center ([`HotReport`]), where `larder admin hotkeys` reads them.
//!
//! The leader's view is the cluster's: every write and every linearizable read of a group
//! passes its leader, whichever proxy or client sent it. Nothing here changes what a request
//! does; the per-key write limit is the proxy's (`larder_proxy::hot` says why).

use std::time::Duration;

use larder_core::env::{Clock, Env};
use larder_core::hotkeys::HotKeys;
use larder_core::kv::Command;
use larder_protocol::{HOT_KEY_BYTES_MAX, HOT_REPORTED_MAX, HotReport};

use crate::node::StorageNode;

/// Keys counted per window: a key taking more than 1/64 of a node's led requests is always
/// among them.
const CAPACITY: usize = 64;

/// The window rates are measured over.
pub const WINDOW: Duration = Duration::from_secs(1);

/// A fresh summary starting at `now`.
pub(crate) fn sketch(now: Duration) -> HotKeys {
    HotKeys::new(CAPACITY, WINDOW, now)
}

impl<E: Env> StorageNode<E> {
    /// Counts `command`'s keys, served as a group's leader (a follower's requests are answered
    /// `NotLeader` and counted where they land next).
    pub(crate) fn count_keys(&self, command: &Command) {
        let keys = command.keys();
        if keys.is_empty() {
            return;
        }
        let now = self.env.clock().now();
        let write = command.is_write();
        let mut hot = self.hot.lock().expect("hot-key lock");
        for key in keys {
            hot.record(now, key, write);
        }
    }

    /// The hottest keys and slots now, for the heartbeat: at least one request per second,
    /// keys cut to [`HOT_KEY_BYTES_MAX`].
    pub fn hot_report(&self) -> HotReport {
        let now = self.env.clock().now();
        let mut hot = self.hot.lock().expect("hot-key lock");
        let mut keys = hot.hot_keys(now, HOT_REPORTED_MAX, 1);
        for hot in &mut keys {
            if hot.key.len() > HOT_KEY_BYTES_MAX {
                hot.key.truncate(HOT_KEY_BYTES_MAX);
            }
        }
        HotReport {
            keys,
            slots: hot.hot_slots(now, HOT_REPORTED_MAX, 1),
        }
    }
}
