//! Fixed seeds of the multi-group cluster behind RESP proxies (5 storage nodes, 8 slot groups
//! of three replicas, 2 proxies, clients speaking RESP), under each seed's fault plan, each run
//! twice with identical trace hashes and every invariant holding.

use std::time::Duration;

use larder_sim::SimConfig;

fn check_seed(seed: u64) {
    let replay = format!("larder sim --seed {seed} --duration 15s --cluster --check-determinism");
    let config = SimConfig::cluster(seed, Duration::from_secs(15), 5, 8, 2);
    larder_sim::check_seed(&config, &replay).unwrap_or_else(|e| panic!("{e}"));
}

macro_rules! seeds {
    ($($name:ident = $seed:expr),* $(,)?) => {
        $(#[test] fn $name() { check_seed($seed); })*
    };
}

seeds! {
    cluster_seed_01 = 1, cluster_seed_02 = 2, cluster_seed_03 = 3, cluster_seed_04 = 4,
    cluster_seed_05 = 5, cluster_seed_06 = 6, cluster_seed_07 = 7, cluster_seed_08 = 8,
}
