//! The proxy's Prometheus metrics (`larder_proxy_…`): commands, errors and latency per command
//! family, and the connection figures of [`crate::ProxyStats`].

use std::sync::Weak;

use larder_core::env::{Clock, Net};
use larder_core::metrics::{
    Registry, batch_histogram, encode_counters, encode_gauges, latency_histogram, role_registry,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::Proxy;

/// The families commands are counted under: Redis's own groups of commands (`COMMAND DOCS`'
/// `group`), so a dashboard can tell a slow hash workload from a slow string one without a
/// series per command name.
pub const FAMILIES: [&str; 9] = [
    "string",
    "hash",
    "list",
    "set",
    "sorted_set",
    "generic",
    "transactions",
    "connection",
    "server",
];

/// The index into [`FAMILIES`] of lower-case command `name`.
pub fn family(name: &str) -> usize {
    let family = match name {
        "hello" | "auth" | "ping" | "echo" | "quit" | "select" | "client" | "reset" => "connection",
        "multi" | "exec" | "discard" | "watch" | "unwatch" => "transactions",
        "del" | "unlink" | "exists" | "expire" | "pexpire" | "expireat" | "pexpireat" | "ttl"
        | "pttl" | "expiretime" | "pexpiretime" | "persist" | "type" | "rename" | "renamenx"
        | "copy" | "randomkey" | "touch" | "object" | "scan" | "keys" | "dump" | "restore"
        | "move" | "sort" | "sort_ro" | "wait" => "generic",
        "lcs" => "string",
        "lastsave" | "latency" | "lolwut" => "server",
        "blpop" | "brpop" | "blmove" | "brpoplpush" | "blmpop" | "rpush" | "rpushx" | "rpop"
        | "rpoplpush" => "list",
        "bzpopmin" | "bzpopmax" | "bzmpop" => "sorted_set",
        "sadd" | "srem" | "smembers" | "sismember" | "smismember" | "scard" | "spop"
        | "srandmember" | "smove" | "sinter" | "sunion" | "sdiff" | "sinterstore"
        | "sunionstore" | "sdiffstore" | "sintercard" | "sscan" => "set",
        _ if name.starts_with('h') => "hash",
        _ if name.starts_with('l') => "list",
        _ if name.starts_with('z') => "sorted_set",
        "get" | "set" | "setnx" | "setex" | "psetex" | "mget" | "mset" | "msetnx" | "getset"
        | "getdel" | "getex" | "append" | "strlen" | "setrange" | "getrange" | "substr"
        | "incr" | "decr" | "incrby" | "decrby" | "incrbyfloat" | "bitcount" | "bitpos"
        | "getbit" | "setbit" | "bitop" | "bitfield" | "bitfield_ro" => "string",
        _ => "server",
    };
    FAMILIES
        .iter()
        .position(|known| *known == family)
        .expect("every family is listed")
}

/// The handles the proxy updates as it answers: one series per family, kept in arrays (no
/// lookup by label on the data path).
pub(crate) struct ProxyMetrics {
    pub commands: [Counter; FAMILIES.len()],
    pub errors: [Counter; FAMILIES.len()],
    pub latency: [Histogram; FAMILIES.len()],
    /// Commands in each pipeline run of several (one request per slot group of the run).
    pub pipeline_run: Histogram,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics {
            commands: Default::default(),
            errors: Default::default(),
            latency: std::array::from_fn(|_| latency_histogram()),
            pipeline_run: batch_histogram(),
        }
    }
}

impl ProxyMetrics {
    /// One answered command of family `family` (an index into [`FAMILIES`]).
    pub fn record(&self, family: usize, seconds: f64, failed: bool) {
        self.commands[family].inc();
        if failed {
            self.errors[family].inc();
        }
        self.latency[family].observe(seconds);
    }
}

impl<N: Net + 'static, C: Clock + 'static> Proxy<N, C> {
    /// This proxy's metrics, labelled `node` = `id` (the proxy's id on the cluster network).
    pub fn metrics_registry(self: &std::sync::Arc<Self>, id: u64) -> Registry {
        let mut registry = role_registry("proxy", id);
        for (index, family) in FAMILIES.iter().enumerate() {
            let labelled = registry.sub_registry_with_label((
                std::borrow::Cow::Borrowed("family"),
                std::borrow::Cow::Borrowed(*family),
            ));
            labelled.register(
                "commands",
                "Commands answered",
                self.metrics.commands[index].clone(),
            );
            labelled.register(
                "command_errors",
                "Commands answered with an error",
                self.metrics.errors[index].clone(),
            );
            labelled.register(
                "command_duration_seconds",
                "Time from a command's parse to its reply",
                self.metrics.latency[index].clone(),
            );
        }
        registry.register(
            "pipeline_run_commands",
            "Pipelined commands sent to the groups together, per run of several",
            self.metrics.pipeline_run.clone(),
        );
        registry.register_collector(Box::new(StatsCollector(std::sync::Arc::downgrade(self))));
        registry
    }
}

/// Reads [`Proxy::stats`] at scrape time.
struct StatsCollector<N: Net, C: Clock>(Weak<Proxy<N, C>>);

impl<N: Net, C: Clock> std::fmt::Debug for StatsCollector<N, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsCollector")
    }
}

impl<N: Net + 'static, C: Clock + 'static> Collector for StatsCollector<N, C> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(proxy) = self.0.upgrade() else {
            return Ok(());
        };
        let stats = proxy.stats();
        let gauges = [
            (
                "connections",
                "Client connections being served",
                stats.connections,
            ),
            (
                "buffered_bytes",
                "Request and reply bytes held for all connections",
                stats.buffered_bytes,
            ),
        ];
        encode_gauges(&mut encoder, &gauges)?;
        // The hottest key's rate (no key label: keys are client data, and one series per key
        // would be unbounded; `INFO hotkeys` names them).
        let (hottest, _) = proxy.hot.hottest(proxy.clock.now(), 1);
        encode_gauges(
            &mut encoder,
            &[(
                "hottest_key_requests_per_second",
                "Requests per second to the proxy's hottest key over its window",
                hottest.first().map_or(0, |hot| hot.per_sec),
            )],
        )?;
        let counters = [
            (
                "connections_rejected",
                "Connections refused because max_clients were connected",
                stats.rejected_connections,
            ),
            (
                "auth_failures",
                "AUTH attempts with a wrong password",
                stats.auth_failures,
            ),
            (
                "idle_closed",
                "Connections closed by the idle timeout",
                stats.idle_closed,
            ),
            (
                "slow_reader_closed",
                "Connections closed because their client did not read",
                stats.slow_reader_closed,
            ),
            (
                "output_limit_closed",
                "Connections closed by the output buffer limit",
                stats.output_limit_closed,
            ),
            ("accept_errors", "Failed accepts", stats.accept_errors),
            (
                "handovers_cut_short",
                "Writes whose handovers to blocked clients stopped at the per-write limit",
                stats.handovers_cut_short,
            ),
            (
                "pipeline_runs",
                "Pipelined commands sent to the groups together (runs of several)",
                stats.pipeline_runs,
            ),
            (
                "hot_key_refused_writes",
                "Writes refused because their key passed the per-key write limit",
                stats.hot_key_refused_writes,
            ),
            (
                "shared_reads",
                "Reads of hot keys answered by an equal read's fetch instead of their own",
                stats.shared_reads,
            ),
            (
                "coalesced_batches",
                "Batches of single commands of several connections sent to the groups together",
                stats.coalesced_batches,
            ),
            (
                "coalesced_commands",
                "Single commands of connections sent in batches with other connections' commands",
                stats.coalesced_commands,
            ),
            (
                "costly_reads_alone",
                "Single reads of keys whose last read answered a large reply, run alone rather than in a coalesced batch",
                stats.costly_reads_alone,
            ),
            (
                "sessions_resumed",
                "Group sessions connections carried on from closed ones instead of opening their own",
                stats.sessions_resumed,
            ),
        ];
        encode_counters(&mut encoder, &counters)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_fall_into_redis_families() {
        let of = |name: &str| FAMILIES[family(name)];
        assert_eq!(of("set"), "string");
        assert_eq!(of("hincrbyfloat"), "hash");
        assert_eq!(of("hello"), "connection");
        assert_eq!(of("lpush"), "list");
        assert_eq!(of("rpoplpush"), "list");
        assert_eq!(of("brpop"), "list");
        assert_eq!(of("smembers"), "set");
        assert_eq!(of("zadd"), "sorted_set");
        assert_eq!(of("bzpopmin"), "sorted_set");
        assert_eq!(of("expire"), "generic");
        assert_eq!(of("exec"), "transactions");
        assert_eq!(of("lcs"), "string");
        assert_eq!(of("info"), "server");
        assert_eq!(of("nosuchcommand"), "server");
    }
}
