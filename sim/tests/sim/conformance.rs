//! The shared conformance suite (`larder_core::conformance`) on the simulated environment, and
//! the simulated disk's crash rules.

use std::time::Duration;

use larder_core::conformance::{EchoHandler, clock_suite, disk_suite, net_suite};
use larder_core::env::{Clock, Disk, DiskError, Net, SeededRng, Space, WriteBatch};
use larder_sim::net::{NetFaults, host_name};
use larder_sim::trace::Trace;
use larder_sim::{SimClock, SimDisk, SimNet};
use proptest::prelude::*;

fn sim() -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(7)
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(600))
        .build()
}

#[test]
fn sim_clock_passes_the_clock_suite() {
    let mut sim = sim();
    sim.client("c", async {
        clock_suite(&SimClock::new()).await;
        Ok(())
    });
    sim.run().expect("clock suite");
}

#[test]
fn skewed_sim_clock_passes_the_clock_suite() {
    let mut sim = sim();
    sim.client("c", async {
        for (drift_ppm, offset_ms) in [(50_000, 3_600_000), (-50_000, -3_600_000)] {
            let clock = SimClock::new();
            clock.set_drift_ppm(drift_ppm);
            clock.set_offset_ms(offset_ms);
            clock_suite(&clock).await;
        }
        // A wall-clock jump moves wall time only; monotonic time keeps going forwards.
        let clock = SimClock::new();
        let (now, wall) = (
            larder_core::env::Clock::now(&clock),
            larder_core::env::Clock::wall_ms(&clock),
        );
        clock.jump_wall_ms(-60_000);
        assert!(larder_core::env::Clock::wall_ms(&clock) + 59_000 < wall);
        assert!(larder_core::env::Clock::now(&clock) >= now);
        Ok(())
    });
    sim.run().expect("skewed clock suite");
}

#[test]
fn sim_disk_passes_the_disk_suite() {
    let mut sim = sim();
    sim.client("c", async {
        disk_suite(&SimDisk::new(1)).await;
        // Also with latency: slow disks must keep the same meaning.
        let slow = SimDisk::new(2);
        slow.set_latency(Duration::from_micros(100), Duration::from_millis(3));
        disk_suite(&slow).await;
        // And sealed, as every node uses it (record checksums change values, not meaning).
        let sealed = larder_core::env::Sealed::new(SimDisk::new(3), Default::default());
        disk_suite(&sealed).await;
        Ok(())
    });
    sim.run().expect("disk suite");
}

#[test]
fn sim_net_passes_the_net_suite() {
    let mut sim = sim();
    let faults = NetFaults::default();
    let trace = Trace::default();
    let (f, t) = (faults.clone(), trace.clone());
    sim.host(host_name(1), move || {
        let net = SimNet::new(1, f.clone(), 11, t.clone());
        async move {
            net.serve(EchoHandler {
                clock: SimClock::new(),
            })
            .await?;
            Ok(())
        }
    });
    // Host 3 exists but never listens: calls to it must fail, not hang.
    sim.host(host_name(3), || async {
        std::future::pending::<()>().await;
        Ok(())
    });
    sim.client(host_name(100), async move {
        let net = SimNet::new(100, faults, 12, trace);
        net_suite(&net, &SimClock::new(), 1, 3).await;
        Ok(())
    });
    sim.run().expect("net suite");
}

#[test]
fn sim_transport_passes_the_transport_suite() {
    use larder_sim::net::{SIM_PORT, SimTransport};
    use larder_transport::Transport;
    use larder_transport::conformance::{serve_echo_streams, transport_suite};
    let mut sim = sim();
    sim.host(host_name(1), || async {
        serve_echo_streams(SimTransport.bind(SIM_PORT).await?).await;
        Ok(())
    });
    // Host 3 exists but never listens; node 42 has no host at all.
    sim.host(host_name(3), || async {
        std::future::pending::<()>().await;
        Ok(())
    });
    sim.client(host_name(100), async {
        transport_suite(&SimTransport, 1, 3).await;
        transport_suite(&SimTransport, 1, 42).await;
        Ok(())
    });
    sim.run().expect("transport suite");
}

/// A peer that crashes and restarts leaves the caller's persistent connection dead: calls
/// fail within their timeout, never hang, and reach the restarted peer on a new connection;
/// also when the crash's close was lost to a partition (a half-open connection).
#[test]
// tokio's time is turmoil's simulated time here: the test measures the calls' deadlines on it.
#[allow(clippy::disallowed_methods)]
fn sim_net_reconnects_after_the_peer_restarts() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut sim = sim();
    let (faults, trace) = (NetFaults::default(), Trace::default());
    let (f, t) = (faults.clone(), trace.clone());
    sim.host(host_name(1), move || {
        let net = SimNet::new(1, f.clone(), 11, t.clone());
        async move {
            net.serve(EchoHandler {
                clock: SimClock::new(),
            })
            .await?;
            Ok(())
        }
    });
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (a, x) = (answered.clone(), failed.clone());
    sim.client(host_name(100), async move {
        let net = SimNet::new(100, faults, 12, trace);
        loop {
            let started = tokio::time::Instant::now();
            let outcome = net
                .call(
                    1,
                    bytes::Bytes::from_static(b"ping"),
                    Duration::from_millis(300),
                )
                .await;
            assert!(
                started.elapsed() < Duration::from_millis(350),
                "a call outlived its timeout: {:?}",
                started.elapsed()
            );
            match outcome {
                Ok(_) => a.fetch_add(1, Ordering::SeqCst),
                Err(_) => x.fetch_add(1, Ordering::SeqCst),
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let step_until = |sim: &mut turmoil::Sim<'_>, done: &dyn Fn() -> bool, what: &str| {
        for _ in 0..20_000 {
            if done() {
                return;
            }
            sim.step().expect("step");
        }
        panic!("{what} never happened");
    };
    step_until(
        &mut sim,
        &|| answered.load(Ordering::SeqCst) >= 3,
        "first answers",
    );
    for half_open in [false, true] {
        if half_open {
            // The crash's FIN is lost: the caller's connection is left half-open.
            sim.partition(host_name(1), host_name(100));
        }
        sim.crash(host_name(1));
        let before = failed.load(Ordering::SeqCst);
        step_until(
            &mut sim,
            &|| failed.load(Ordering::SeqCst) >= before + 2,
            "calls failing while the peer is down",
        );
        if half_open {
            sim.repair(host_name(1), host_name(100));
        }
        sim.bounce(host_name(1));
        let after = answered.load(Ordering::SeqCst);
        step_until(
            &mut sim,
            &|| answered.load(Ordering::SeqCst) >= after + 3,
            "answers from the restarted peer",
        );
    }
}

#[test]
fn group_commit_disk_passes_the_disk_suite_over_sim_disk() {
    use larder_core::bugs::Bugs;
    use larder_storage::raft::group_commit::GroupCommitDisk;
    let mut sim = sim();
    sim.client("c", async {
        disk_suite(&GroupCommitDisk::new(SimDisk::new(1), Bugs::default())).await;
        let slow = SimDisk::new(2);
        slow.set_latency(Duration::from_micros(100), Duration::from_millis(3));
        disk_suite(&GroupCommitDisk::new(slow, Bugs::default())).await;
        Ok(())
    });
    sim.run().expect("group commit disk suite");
}

/// Group commit merges concurrent synced writes into shared syncs: every one of them is
/// durable once it returns, whatever else was in flight (unsynced writes, other callers), so a
/// power loss right after keeps them all.
#[test]
fn group_commit_disk_keeps_every_returned_synced_write_across_power_loss() {
    use larder_core::bugs::Bugs;
    use larder_storage::raft::group_commit::GroupCommitDisk;
    let mut sim = sim();
    sim.client("c", async {
        for seed in 0..8u64 {
            let inner = SimDisk::new(seed);
            inner.set_latency(Duration::from_micros(50), Duration::from_millis(2));
            let disk = GroupCommitDisk::new(inner.clone(), Bugs::default());
            let writes = (0..64u32).map(|i| {
                let disk = disk.clone();
                async move {
                    let mut batch = WriteBatch::new();
                    let key = format!("k{i:03}");
                    batch.put(
                        Space::State,
                        key.clone().into_bytes(),
                        i.to_be_bytes().to_vec(),
                    );
                    // Every third write unsynced: it may or may not survive.
                    let sync = i % 3 != 0;
                    disk.write(batch, sync).await.expect("write");
                    (key, sync)
                }
            });
            let done = futures::future::join_all(writes).await;
            inner.power_loss(&mut SeededRng::new(seed));
            for (key, sync) in done {
                let value = inner.get(Space::State, key.as_bytes()).await.expect("get");
                if sync {
                    assert!(
                        value.is_some(),
                        "seed {seed}: synced write {key} returned but did not survive"
                    );
                }
            }
        }
        Ok(())
    });
    sim.run().expect("group commit durability");
}

/// The committer's queue is bounded: with the disk slower than the writers, at most
/// `queue_max` synced writes wait in it and the rest wait for room before they queue. None is
/// refused or lost: every one returns, in a round of its own or merged, and is durable.
#[test]
fn group_commit_disk_bounds_its_queue_and_loses_no_write_at_the_bound() {
    use larder_core::bugs::Bugs;
    use larder_storage::raft::group_commit::GroupCommitDisk;
    let mut sim = sim();
    sim.client("c", async {
        let inner = SimDisk::new(7);
        inner.set_latency(Duration::from_millis(5), Duration::from_millis(5));
        let disk = GroupCommitDisk::with_queue_max(inner.clone(), Bugs::default(), 2);
        let clock = SimClock::new();
        let started = clock.now();
        let writers: Vec<_> = (0..10u32)
            .map(|i| {
                let disk = disk.clone();
                tokio::spawn(async move {
                    let mut batch = WriteBatch::new();
                    batch.put(Space::State, format!("k{i}").into_bytes(), vec![1]);
                    disk.write(batch, true).await
                })
            })
            .collect();
        // Inside the first round's sync: the queue is full, eight writers wait for room.
        clock.sleep(Duration::from_millis(1)).await;
        assert_eq!(disk.queued(), 2, "the queue holds exactly its bound");
        for writer in writers {
            writer.await.expect("writer task").expect("synced write");
        }
        assert_eq!(disk.queued(), 0);
        // Each round takes at most three writes (the committer's first and the two queued),
        // so ten take at least four rounds of 5 ms; unbounded, two rounds would do.
        assert!(
            (clock.now() - started) >= Duration::from_millis(20),
            "the bound limits what one round merges: {:?}",
            (clock.now() - started)
        );
        inner.power_loss(&mut SeededRng::new(7));
        for i in 0..10u32 {
            let key = format!("k{i}");
            let value = inner.get(Space::State, key.as_bytes()).await.expect("get");
            assert!(
                value.is_some(),
                "synced write {key} returned but did not survive"
            );
        }
        Ok(())
    });
    sim.run().expect("bounded group commit");
}

/// One write of the crash property: a batch of puts, synced or not.
#[derive(Debug, Clone)]
struct Step {
    keys: Vec<u8>,
    sync: bool,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (
            prop::collection::vec(0u8..8, 1..4),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(keys, sync)| Step { keys, sync }),
        1..40,
    )
}

/// The state of the disk after the first `n` steps plus the first `torn` ops of step `n`.
fn model(steps: &[Step], n: usize, torn: usize) -> Vec<(u8, u32)> {
    let mut state = std::collections::BTreeMap::new();
    for (i, step) in steps.iter().enumerate().take(n + 1) {
        let ops = if i < n {
            step.keys.len()
        } else {
            torn.min(step.keys.len())
        };
        for &key in &step.keys[..ops] {
            state.insert(key, i as u32);
        }
    }
    state.into_iter().collect()
}

proptest! {
    /// After a crash the disk holds exactly a prefix of the writes (optionally with a torn
    /// last batch), and that prefix contains every write up to the last synced one.
    #[test]
    fn sim_disk_crash_keeps_a_prefix_with_every_synced_write(
        steps in steps(),
        crash_seed in any::<u64>(),
        tear in any::<bool>(),
    ) {
        let disk = SimDisk::new(crash_seed);
        disk.set_tear_last_batch(tear);
        futures::executor::block_on(async {
            for (i, step) in steps.iter().enumerate() {
                let mut batch = WriteBatch::new();
                for &key in &step.keys {
                    batch.put(Space::State, vec![key], (i as u32).to_be_bytes().to_vec());
                }
                disk.write(batch, step.sync).await.expect("write");
            }
        });
        disk.crash(&mut SeededRng::new(crash_seed));
        let rows = futures::executor::block_on(disk.scan(Space::State, b"", None, usize::MAX))
            .expect("scan");
        let got: Vec<(u8, u32)> = rows
            .iter()
            .map(|(k, v)| (k[0], u32::from_be_bytes(v[..].try_into().expect("u32"))))
            .collect();
        let last_synced = steps.iter().rposition(|s| s.sync).map_or(0, |i| i + 1);
        let explained = (last_synced..=steps.len()).any(|n| {
            let max_torn = if tear && n < steps.len() { steps[n].keys.len() } else { 0 };
            (0..=max_torn).any(|torn| model(&steps, n, torn) == got)
        });
        prop_assert!(explained, "crash state {got:?} is not a prefix containing every synced write");
    }
}

/// A failed sync on `SimDisk` is a failed fsync as Linux and fjall have it: the unsynced
/// writes it was to persist are lost, and every later write fails until the restart (fjall
/// poisons its database). The group committer passes the failure to every caller of the
/// round; with `Bug::IgnoredSyncError` planted it answers "done" to that round and to every
/// synced write after it, though none of them reached the disk.
#[test]
fn a_failed_sync_loses_the_unsynced_writes_and_fails_every_later_write_until_the_restart() {
    use larder_core::bugs::{Bug, Bugs};
    use larder_storage::raft::group_commit::GroupCommitDisk;
    let put = |key: &str| {
        let mut batch = WriteBatch::new();
        batch.put(Space::State, key.as_bytes().to_vec(), b"v".to_vec());
        batch
    };
    let mut sim = sim();
    sim.client("c", async move {
        for planted in [false, true] {
            let inner = SimDisk::new(1);
            let mut bugs = Bugs::default();
            // Builds without the `planted-bugs` feature check only the correct committer.
            if planted && bugs.try_plant(Bug::IgnoredSyncError).is_err() {
                continue;
            }
            let disk = GroupCommitDisk::new(inner.clone(), bugs);
            disk.write(put("before"), true).await.expect("healthy sync");
            disk.write(put("pending"), false).await.expect("unsynced write");
            inner.set_error_rate(1.0);
            let failed = disk.write(put("failing"), true).await;
            inner.set_error_rate(0.0);
            assert_eq!(failed.is_ok(), planted, "{failed:?}");
            let poisoned = |result: Result<(), DiskError>| {
                matches!(result, Err(DiskError::Io { reason }) if reason.contains("poisoned"))
            };
            // The planted bug answers "done" for the synced write the disk refused.
            let after = disk.write(put("after"), true).await;
            assert_eq!(poisoned(after.clone()), !planted, "{after:?}");
            assert!(poisoned(disk.write(put("after"), false).await));
            assert!(inner.get(Space::State, b"after").await.expect("get").is_none());
            // Reads still see the unsynced write (the page cache), until the crash.
            assert!(inner.get(Space::State, b"pending").await.expect("get").is_some());
            assert!(inner.get(Space::State, b"failing").await.expect("get").is_none());
            inner.crash(&mut SeededRng::new(7));
            let survived = async |key: &str| {
                inner.get(Space::State, key.as_bytes()).await.expect("get").is_some()
            };
            assert!(survived("before").await, "synced before the failure");
            assert!(!survived("pending").await, "lost with the failed sync");
            // The restart heals the disk.
            let restarted = GroupCommitDisk::new(inner.clone(), Bugs::default());
            restarted.write(put("restarted"), true).await.expect("sync after the restart");
            inner.power_loss(&mut SeededRng::new(8));
            assert!(survived("restarted").await);
        }
        Ok(())
    });
    sim.run().expect("failed sync");
}
