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

/// A gauge or counter a collector reads at scrape time: name, help text, value.
pub type Figure = (&'static str, &'static str, u64);

/// Encodes `figures` as unlabelled gauges (a collector's figures that go up and down).
pub fn encode_gauges(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    figures: &[Figure],
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::EncodeMetric;
    for (name, help, value) in figures {
        let gauge = prometheus_client::metrics::gauge::ConstGauge::new(
            i64::try_from(*value).unwrap_or(i64::MAX),
        );
        gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
    }
    Ok(())
}

/// Encodes `figures` as unlabelled counters (totals since the role started; `_total` added).
pub fn encode_counters(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    figures: &[Figure],
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::EncodeMetric;
    for (name, help, value) in figures {
        let counter = prometheus_client::metrics::counter::ConstCounter::new(*value);
        counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)?;
    }
    Ok(())
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

    /// The page: every metric family once (its `HELP` and `TYPE` from the first registry that
    /// has it, then the samples of every registry in the order added), then OpenMetrics'
    /// `# EOF`. Several roles of one process (`larder up`: three centers, the nodes and the
    /// proxy) report the same families with different `node` labels, and a family may appear
    /// only once in an exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let registries = self.registries.lock().expect("scrape lock");
        for registry in registries.iter() {
            // Writing to a String cannot fail; a collector that fails leaves its part out.
            let _ = prometheus_client::encoding::text::encode_registry(&mut text, registry);
        }
        drop(registries);
        merge_families(&text)
    }
}

/// One metric family of an exposition: its header lines and its samples.
#[derive(Default)]
struct Family<'a> {
    header: Vec<&'a str>,
    samples: Vec<&'a str>,
}

/// `text` (the concatenated expositions of several registries, without `# EOF`) with each
/// family's blocks merged into its first, and `# EOF` at the end.
fn merge_families(text: &str) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut families: std::collections::BTreeMap<&str, Family<'_>> = Default::default();
    let mut current: Option<&str> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            // `# HELP name …`, `# TYPE name …`, `# UNIT name …`: a family's header.
            let mut words = rest.split_whitespace();
            let (kind, name) = (words.next(), words.next().unwrap_or(""));
            if !families.contains_key(name) {
                order.push(name);
            }
            let family = families.entry(name).or_default();
            // A later registry's header repeats the first one's: each kind kept once.
            if !family
                .header
                .iter()
                .any(|header| header.split_whitespace().nth(1) == kind)
            {
                family.header.push(line);
            }
            current = Some(name);
        } else if let Some(name) = current {
            families.entry(name).or_default().samples.push(line);
        }
    }
    let mut page = String::with_capacity(text.len() + 8);
    for name in order {
        let family = &families[name];
        for line in family.header.iter().chain(&family.samples) {
            page.push_str(line);
            page.push('\n');
        }
    }
    page.push_str("# EOF\n");
    page
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

    #[test]
    fn a_family_reported_by_several_roles_appears_once() {
        let scrape = Scrape::new();
        for node in [1, 2, 3] {
            let mut registry = role_registry("node", node);
            let counter = Counter::<u64>::default();
            counter.inc_by(node * 10);
            registry.register("syncs", "Syncs", counter);
            let other = Counter::<u64>::default();
            registry.register("reads", "Reads", other);
            scrape.add(registry);
        }
        let page = scrape.render();
        assert_eq!(
            page.matches("# HELP larder_node_syncs ").count(),
            1,
            "{page}"
        );
        assert_eq!(
            page.matches("# TYPE larder_node_syncs ").count(),
            1,
            "{page}"
        );
        assert_eq!(
            page.matches("# HELP larder_node_reads ").count(),
            1,
            "{page}"
        );
        // The family's samples follow its header, every node's, in the order added.
        let syncs = page.find("# HELP larder_node_syncs").expect("syncs");
        let reads = page.find("# HELP larder_node_reads").expect("reads");
        let one = page
            .find("larder_node_syncs_total{node=\"1\"} 10")
            .expect("node 1");
        let three = page
            .find("larder_node_syncs_total{node=\"3\"} 30")
            .expect("node 3");
        assert!(syncs < one && one < three && three < reads, "{page}");
        assert_eq!(page.matches("# EOF").count(), 1, "{page}");
    }
}
