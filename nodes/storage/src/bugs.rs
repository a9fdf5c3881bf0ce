//! Bugs planted on purpose, to prove the simulator's checks catch them ("testing the tests").
//!
//! A [`Bugs`] set travels in [`crate::NodeConfig::bugs`] but can hold a bug only when the crate
//! is built with the `planted-bugs` feature: the production binary's default build has no
//! [`Bugs::plant`], and [`Bugs::is_planted`] is a constant `false` there, so the broken code
//! paths compile away. Tests enable the feature through a dev-dependency (cargo does not unify
//! dev-dependency features into a normal `cargo build`).

use serde::{Deserialize, Serialize};

/// One planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Bug {
    /// A node that believes it leads answers reads from its local state without the read-index
    /// round, so a deposed leader serves stale reads (`sim/tests/broken_variant.rs`).
    StaleLocalReads,
}

/// The bugs planted in one node (empty, always, without the `planted-bugs` feature).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bugs {
    #[cfg(feature = "planted-bugs")]
    planted: std::collections::BTreeSet<Bug>,
}

impl Bugs {
    /// Whether `bug` is planted.
    #[inline]
    pub fn is_planted(&self, bug: Bug) -> bool {
        #[cfg(feature = "planted-bugs")]
        {
            self.planted.contains(&bug)
        }
        #[cfg(not(feature = "planted-bugs"))]
        {
            let _ = bug;
            false
        }
    }

    /// Plants `bug`. Only in builds with the `planted-bugs` feature.
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, bug: Bug) {
        self.planted.insert(bug);
    }
}
