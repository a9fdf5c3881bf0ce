//! Slots moving between groups while clients write and read them (the center's migration,
//! `larder_center::migrate`, asked for by the simulator's operator): every key's history stays
//! linearizable across the change of owner, every invariant holds, and the migration ends done.

use std::time::Duration;

use larder_protocol::MigrationPhase;
use larder_sim::{PlannedMove, SimConfig};

fn run_with_move(seed: u64, faults: bool) -> larder_sim::RunReport {
    let mut config = SimConfig::cluster(seed, Duration::from_secs(15), 5, 8, 2);
    config.faults = faults;
    // Every slot of group 1 moves to group 2, so all of group 1's keys change owner.
    config.moves = vec![PlannedMove {
        at_ms: 3_000,
        from: 1,
        to: 2,
        slots: u16::MAX,
    }];
    let report = larder_sim::run(&config).expect("run");
    assert!(
        report.passed(),
        "seed {seed}: {:?}\n{:?}",
        report.violations,
        report.migrations
    );
    assert!(
        report.linearizability.is_linearizable(),
        "{}",
        report.linearizability
    );
    report
}

#[test]
fn a_group_moves_all_its_slots_to_another_while_clients_run() {
    let report = run_with_move(1, false);
    let log = &report.migrations;
    assert_eq!(log.started.len(), 1, "{log:?}");
    assert!(log.started[0].is_ok(), "{log:?}");
    let migration = log.last_seen.first().expect("the center reports it");
    assert!(
        matches!(migration.phase, MigrationPhase::Done { .. }),
        "{migration:?}"
    );
    assert_eq!((migration.from, migration.to), (1, 2));
    assert!(migration.moved_records > 0, "{migration:?}");
}

/// The same move under each seed's default fault plan (partitions, crashes, clock faults, disk
/// faults, center-leader kills): the migration may be resumed by a new center leader, and may
/// end rolled back only with a reason; either way nothing is lost.
#[test]
fn the_move_survives_faults() {
    for seed in 1..=3 {
        let report = run_with_move(seed, true);
        let migration = report.migrations.last_seen.first().expect("reported");
        assert!(!migration.phase.is_active(), "seed {seed}: {migration:?}");
    }
}
