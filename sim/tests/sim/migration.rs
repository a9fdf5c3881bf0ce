//! Slots moving between groups while clients write and read them (the center's migration,
//! `larder_center::migrate`, asked for by the simulator's operator): every key's history stays
//! linearizable across the change of owner, every invariant holds, and the migration ends done.

use std::time::Duration;

use larder_protocol::MigrationPhase;
use larder_sim::{PlannedMove, PlannedSteer, SimConfig, SteerAction};

/// Every slot of group 1 moves to group 2 at 3 s, so all of group 1's keys change owner.
fn move_all_of_group_1() -> PlannedMove {
    PlannedMove {
        at_ms: 3_000,
        from: 1,
        to: 2,
        slots: u16::MAX,
        split: false,
        aim_keys: false,
        steer: None,
    }
}

fn run_with_move(seed: u64, faults: bool) -> larder_sim::RunReport {
    run_with(seed, faults, move_all_of_group_1())
}

/// The whole simulated cluster these tests run: 5 storage nodes, 8 groups, 2 proxies, 15 s.
fn cluster(seed: u64, faults: bool) -> SimConfig {
    let mut config = SimConfig::cluster(seed, Duration::from_secs(15), 5, 8, 2);
    config.faults = faults;
    config
}

fn run_with(seed: u64, faults: bool, planned: PlannedMove) -> larder_sim::RunReport {
    let mut config = cluster(seed, faults);
    config.moves = vec![planned];
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

/// Cancelled while copying: it rolls back, the source keeps every slot, and the end-of-run
/// audit finds none of the target's copy left (nothing lost, nothing stray).
#[test]
fn a_cancelled_move_rolls_back_with_nothing_lost() {
    let report = run_with(
        4,
        false,
        PlannedMove {
            steer: Some(PlannedSteer {
                after_ms: 0,
                action: SteerAction::Cancel,
            }),
            ..move_all_of_group_1()
        },
    );
    let log = &report.migrations;
    assert_eq!(log.steered.len(), 1, "{log:?}");
    let migration = log.last_seen.first().expect("reported");
    assert!(
        matches!(&migration.phase, MigrationPhase::RolledBack { reason } if reason.contains("cancelled")),
        "{log:?}"
    );
    assert!(log.settled, "{log:?}");
}

/// Paused for two seconds and resumed: the pause is recorded, and the move then ends done.
#[test]
fn a_paused_move_resumes_and_ends_done() {
    let report = run_with(
        5,
        false,
        PlannedMove {
            steer: Some(PlannedSteer {
                after_ms: 0,
                action: SteerAction::Pause { for_ms: 2_000 },
            }),
            ..move_all_of_group_1()
        },
    );
    let log = &report.migrations;
    assert_eq!(log.steered.len(), 2, "{log:?}");
    assert!(
        matches!(&log.steered[0], (_, what, Ok(phase)) if what == "Pause" && phase.contains("paused")),
        "{log:?}"
    );
    let migration = log.last_seen.first().expect("reported");
    assert!(
        matches!(migration.phase, MigrationPhase::Done { .. }),
        "{log:?}"
    );
    assert!(!migration.paused, "{migration:?}");
}

/// A split: a new group joins the table, is formed on the least loaded nodes and takes the
/// upper half of group 1's slots while clients run, under faults.
#[test]
fn a_group_splits_while_clients_run() {
    let report = run_with(
        6,
        true,
        PlannedMove {
            split: true,
            ..move_all_of_group_1()
        },
    );
    let log = &report.migrations;
    let migration = log.last_seen.first().expect("reported");
    assert_eq!(migration.from, 1, "{log:?}");
    assert_eq!(migration.to, 9, "a new group: {log:?}");
    assert!(!migration.phase.is_active(), "{log:?}");
}

/// A node drained while clients run: its leaderships move, its replicas are replaced one by
/// one, and it ends removed holding none (else `DrainUnfinished`); with faults too.
#[test]
fn a_drained_node_hands_everything_over_and_is_removed() {
    for (seed, faults) in [(7, false), (8, true)] {
        let mut config = cluster(seed, faults);
        config.drains = vec![(3_000, 1)];
        let report = larder_sim::run(&config).expect("run");
        assert!(
            report.passed(),
            "seed {seed}: {:?}\n{:?}",
            report.violations,
            report.migrations
        );
        let log = &report.migrations;
        assert_eq!(log.drained.len(), 1, "{log:?}");
        assert!(log.drained[0].1.is_ok(), "{log:?}");
        assert!(log.settled && log.draining.is_empty(), "{log:?}");
    }
}

/// Automatic splits: with a threshold of a few records, the center counts the busiest group
/// (its heartbeats' estimate picks it, `DBSIZE` confirms) and splits it through the migration
/// path, by itself, while clients run; every check holds and the split ends done.
#[test]
fn a_group_past_the_record_threshold_splits_by_itself() {
    let mut config = cluster(9, false);
    config.split_records_max = 2;
    let report = larder_sim::run(&config).expect("run");
    assert!(
        report.passed(),
        "{:?}\n{:?}",
        report.violations,
        report.migrations
    );
    let log = &report.migrations;
    assert!(
        log.started.is_empty(),
        "the operator asked nothing: {log:?}"
    );
    assert!(!log.last_seen.is_empty(), "no automatic split: {log:?}");
    for migration in &log.last_seen {
        assert!(migration.to > 8, "each split makes a new group: {log:?}");
        assert!(
            matches!(migration.phase, MigrationPhase::Done { .. }),
            "{log:?}"
        );
    }
}

/// Groups follow nodes: a cluster of five storage nodes whose first table has three groups
/// (`groups_per_node_min` 1) gets two more by itself, each split of the group with the most
/// slots through the migration path while clients run, so every node can lead one; every
/// check holds and both splits end done, with and without faults.
#[test]
fn a_cluster_with_fewer_groups_than_nodes_splits_until_each_node_can_lead_one() {
    for (seed, faults) in [(11, false), (12, true)] {
        let mut config = SimConfig::cluster(seed, Duration::from_secs(20), 5, 3, 2);
        config.faults = faults;
        config.groups_per_node_min = 1;
        let report = larder_sim::run(&config).expect("run");
        assert!(
            report.passed(),
            "seed {seed}: {:?}\n{:?}",
            report.violations,
            report.migrations
        );
        let log = &report.migrations;
        assert!(
            log.started.is_empty(),
            "the operator asked nothing: {log:?}"
        );
        let mut new_groups: Vec<_> = log.last_seen.iter().map(|m| m.to).collect();
        new_groups.sort();
        assert_eq!(new_groups, [4, 5], "seed {seed}: two new groups: {log:?}");
        for migration in &log.last_seen {
            assert!(
                matches!(migration.phase, MigrationPhase::Done { .. }),
                "seed {seed}: {log:?}"
            );
        }
    }
}
