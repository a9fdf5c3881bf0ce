//! Prometheus metrics: the pieces every role shares.
//!
//! Each role (proxy, storage node, center) builds its own [`Registry`] of metrics, named
//! `larder_<role>_…` and labelled with the process's `node` id, from handles it keeps and
//! updates as it works (relaxed atomics: nothing in the data path waits on a scrape). A
//! process hands its roles' registries to one [`Scrape`], which renders them as one page in the
//! OpenMetrics text format; the real environment serves that page over HTTP
//! (`larder_real::metrics_http`). In a simulation the handles are updated the same way and never
//! read: no metric feeds back into behaviour, so they cannot break determinism.
//!
//! Gauges of things the role already tracks (a group's Raft term, the routing epoch) are read
//! at scrape time by a [`prometheus_client::collector::Collector`] instead of being copied on
//! every change.

use std::sync::{Arc, Mutex};

pub use prometheus_client::registry::Registry;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Buckets for request and operation latencies, in seconds: 50 µs doubling to about 6.5 s, so
/// a fsync-bound write (a millisecond or two) and a stalled one (seconds) both land in a
/// bucket of their own.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 18))
}

/// Buckets for batch sizes (writes merged into one fsync, appends flushed together, commands
/// in one pipeline run): 1, 2, 4 … 4096.
pub fn batch_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// A role's registry: metric names prefixed `larder_<role>`, every sample labelled with the
/// process's `node` id (so the roles of one `larder up`, which share a page, stay apart).
pub fn role_registry(role: &str, node: u64) -> Registry {
    Registry::with_prefix_and_labels(
        format!("larder_{role}"),
        [(
            std::borrow::Cow::Borrowed("node"),
            std::borrow::Cow::Owned(node.to_string()),
        )]
        .into_iter(),
    )
}

/// The registries of one process, rendered together as one scrape.
#[derive(Default, Clone)]
pub struct Scrape {
    registries: Arc<Mutex<Vec<Registry>>>,
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape")
            .field("registries", &self.registries.lock().map_or(0, |r| r.len()))
            .finish()
    }
}

impl Scrape {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a role's registry to the page.
    pub fn add(&self, registry: Registry) {
        self.registries.lock().expect("scrape lock").push(registry);
    }

    /// The page: every registry in the order added, then OpenMetrics' `# EOF`.
    pub fn render(&self) -> String {
        let mut page = String::new();
        let registries = self.registries.lock().expect("scrape lock");
        for registry in registries.iter() {
            // Writing to a String cannot fail; a collector that fails leaves its part out.
            let _ = prometheus_client::encoding::text::encode_registry(&mut page, registry);
        }
        let _ = prometheus_client::encoding::text::encode_eof(&mut page);
        page
    }
}

/// The content type of [`Scrape::render`]'s page.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn a_scrape_renders_every_role_labelled_with_its_node() {
        let scrape = Scrape::new();
        for (role, node) in [("proxy", 1000), ("node", 4)] {
            let mut registry = role_registry(role, node);
            let counter = Counter::<u64>::default();
            registry.register("things", "Things done", counter.clone());
            counter.inc_by(node);
            let latency = latency_histogram();
            registry.register("latency_seconds", "How long", latency.clone());
            latency.observe(0.0015);
            scrape.add(registry);
        }
        let page = scrape.render();
        assert!(
            page.contains("larder_proxy_things_total{node=\"1000\"} 1000"),
            "{page}"
        );
        assert!(
            page.contains("larder_node_things_total{node=\"4\"} 4"),
            "{page}"
        );
        // 1.5 ms is above the 1.6 ms bucket's lower neighbour (0.8 ms) and within 1.6 ms.
        assert!(
            page.contains("larder_node_latency_seconds_bucket{le=\"0.0016\",node=\"4\"} 1")
                || page.contains("larder_node_latency_seconds_bucket{node=\"4\",le=\"0.0016\"} 1"),
            "{page}"
        );
        assert!(page.ends_with("# EOF\n"), "{page}");
    }
}
