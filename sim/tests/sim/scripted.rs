//! Scripted scenarios with exact expectations (`larder_sim::scenario`).

use bytes::Bytes;
use larder_core::kv::Reply;
use larder_sim::scenario::{
    DeposedRequest, deposed_leader, deposed_leader_replace, deposed_leader_request, replace_voter,
};

fn check_deposed_leader(seed: u64) -> String {
    let outcome = deposed_leader(seed).expect("scenario ran");
    let old = outcome.old_leader.expect("a leader before the partition");
    let new = outcome
        .new_leader
        .expect("the majority side elected a leader");
    assert_ne!(new, old, "the cut-off leader cannot lead the majority");
    let minority = outcome.minority_write.clone().expect("minority write ran");
    assert!(
        !matches!(minority, Ok(Reply::Ok)),
        "the deposed leader acknowledged a write: {minority:?}"
    );
    assert_eq!(
        outcome.majority_write.clone().expect("majority write ran"),
        Ok(Reply::Ok),
        "the majority side must accept writes"
    );
    assert_eq!(
        outcome.final_value.clone().expect("read after healing"),
        Ok(Reply::Bulk(Bytes::from_static(b"majority"))),
        "after healing the majority's write must be the value"
    );
    outcome.trace_hash
}

#[test]
fn majority_partition_elects_a_new_leader_and_the_old_one_cannot_acknowledge() {
    for seed in [1, 2, 3] {
        let first = check_deposed_leader(seed);
        let second = check_deposed_leader(seed);
        assert_eq!(first, second, "seed {seed}: scenario is not deterministic");
    }
}

#[test]
fn replacing_a_voter_goes_through_a_learner_and_keeps_serving() {
    for seed in [1, 2] {
        let outcome = replace_voter(seed).expect("scenario ran");
        assert_eq!(
            outcome.replaced,
            Some(Ok(())),
            "seed {seed}: membership change failed"
        );
        assert_eq!(
            outcome.voters,
            vec![1, 2, 4],
            "seed {seed}: voters after the change"
        );
        assert_eq!(
            outcome.writes_after_crash, 50,
            "seed {seed}: the group must serve every write with node 3 gone"
        );
        let live: Vec<_> = [1u64, 2, 4]
            .iter()
            .map(|id| outcome.digests.get(id).copied())
            .collect();
        assert!(
            live.iter().all(|d| d.is_some() && *d == live[0]),
            "seed {seed}: replicas 1, 2 and 4 disagree: {:?}",
            outcome.digests
        );
    }
}

#[test]
fn a_forgotten_session_gets_an_unknown_outcome_and_never_a_second_apply() {
    use larder_client::ClientError;
    use larder_sim::scenario::forgotten_session;

    let outcome = forgotten_session(1, false, Default::default()).expect("scenario ran");
    let steps: Vec<&str> = outcome
        .steps
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(steps.len(), 7, "{steps:?}");
    let result = |index: usize| &outcome.steps[index].1;
    for index in [0, 1, 2, 5] {
        assert_eq!(result(index), &Ok(Reply::Ok), "{:?}", outcome.steps[index]);
    }
    match result(3) {
        Err(ClientError::Indeterminate { reason }) => {
            assert!(reason.contains("session expired"), "{reason}")
        }
        other => panic!("a write of a forgotten session must be indeterminate: {other:?}"),
    }
    assert_eq!(
        result(4),
        &Ok(Reply::Nil),
        "the forgotten session's write was not applied"
    );
    assert_eq!(
        result(6),
        &Ok(Reply::Bulk(Bytes::from_static(b"3"))),
        "the client opened a new session and wrote"
    );
}

/// Replicas configured with different bounds on sessions forget the same ones: the
/// registrations carry the leader's bound. With `session-bound-local` planted (each replica
/// evicts by its own bound), node 2, which keeps more, applies the forgotten session's write
/// its peers refuse, and the replicas diverge.
#[test]
fn replicas_with_different_session_bounds_forget_the_same_sessions() {
    use larder_core::bugs::{Bug, Bugs};
    use larder_sim::scenario::forgotten_session;

    for seed in [1, 2] {
        let outcome = forgotten_session(seed, true, Bugs::default()).expect("scenario ran");
        assert_eq!(outcome.digests.len(), 3, "{:?}", outcome.digests);
        let distinct: std::collections::BTreeSet<_> = outcome.digests.values().collect();
        assert_eq!(distinct.len(), 1, "seed {seed}: {:?}", outcome.digests);
        assert!(
            matches!(
                &outcome.steps[3].1,
                Err(larder_client::ClientError::Indeterminate { .. })
            ),
            "seed {seed}: the forgotten session's write: {:?}",
            outcome.steps[3]
        );
        let mut bugs = Bugs::default();
        if bugs.try_plant(Bug::SessionBoundLocal).is_ok() {
            let planted = forgotten_session(seed, true, bugs).expect("scenario ran");
            let distinct: std::collections::BTreeSet<_> = planted.digests.values().collect();
            assert!(
                distinct.len() > 1,
                "seed {seed}: with session-bound-local the replicas must diverge: {:?}",
                planted.digests
            );
        }
    }
}

#[test]
fn a_pipeline_across_groups_answers_as_its_commands_one_at_a_time() {
    use larder_core::bugs::{Bug, Bugs};
    use larder_sim::scenario::pipelined_burst;
    for seed in [1, 2] {
        let outcome = pipelined_burst(seed, Bugs::default()).expect("scenario ran");
        assert_eq!(outcome.pipelined.len(), outcome.one_by_one.len());
        assert!(
            outcome.pipelined.len() > 100,
            "the burst is a long pipeline"
        );
        for (index, (pipelined, alone)) in outcome
            .pipelined
            .iter()
            .zip(&outcome.one_by_one)
            .enumerate()
        {
            assert_eq!(
                pipelined, alone,
                "seed {seed}: reply {index} of the pipeline differs from the same command alone"
            );
        }
        let again = pipelined_burst(seed, Bugs::default()).expect("scenario ran");
        assert_eq!(
            outcome.trace_hash, again.trace_hash,
            "seed {seed}: scenario is not deterministic"
        );
    }
    // The planted bug hands a group's replies back reversed: the comparison above must see it.
    let mut bugs = Bugs::default();
    if bugs.try_plant(Bug::PipelineReplyOrder).is_ok() {
        let outcome = pipelined_burst(1, bugs).expect("scenario ran");
        assert_ne!(
            outcome.pipelined, outcome.one_by_one,
            "pipeline-reply-order went unnoticed"
        );
    }
}

#[test]
fn a_group_only_read_from_sends_no_heartbeats_yet_writes_at_once_and_replaces_a_lost_leader() {
    use larder_core::bugs::{Bug, Bugs};
    use larder_sim::scenario::quiet_group;
    for seed in [1, 2] {
        let outcome = quiet_group(seed, Bugs::default()).expect("scenario ran");
        outcome.leader.expect("a leader before the idle window");
        assert_eq!(
            outcome.idle_appends, 0,
            "seed {seed}: the followers of a group only read from were still sent appends: \
             {outcome:?}"
        );
        // About 55 reads from 2 s to 8 s, each answered while the group went quiet.
        assert!(
            outcome.idle_reads >= 40,
            "seed {seed}: too few reads answered while the group was quiet: {outcome:?}"
        );
        // 15 writes over the window, two followers each, and the heartbeats a used group
        // keeps: the count that proves the idle window's zero is not a broken counter.
        assert!(
            outcome.busy_appends >= 30,
            "seed {seed}: too few appends while busy: {outcome:?}"
        );
        let (reply, took) = outcome
            .write_after_idle
            .clone()
            .expect("the write after the idle window ran");
        assert_eq!(reply, Ok(Reply::Ok), "seed {seed}: {outcome:?}");
        assert!(
            took < std::time::Duration::from_millis(500),
            "seed {seed}: waking the quiet group took {took:?}"
        );
        let elected = outcome
            .elected_after
            .unwrap_or_else(|| panic!("seed {seed}: no follower replaced the leader: {outcome:?}"));
        assert!(
            elected < std::time::Duration::from_secs(3),
            "seed {seed}: the followers took {elected:?} to replace the leader"
        );
        let again = quiet_group(seed, Bugs::default()).expect("scenario ran");
        assert_eq!(
            outcome.trace_hash, again.trace_hash,
            "seed {seed}: scenario is not deterministic"
        );
    }
    // Beacons that name every hosted group keep the followers of a lost leader from ever
    // electing: the election check above must see it.
    let mut bugs = Bugs::default();
    if bugs.try_plant(Bug::QuietClaimsEveryGroup).is_ok() {
        let outcome = quiet_group(1, bugs).expect("scenario ran");
        assert_eq!(
            outcome.elected_after, None,
            "quiet-claims-every-group went unnoticed: {outcome:?}"
        );
    }
}

/// A follower that lost the one message telling it that its new leader's first entry
/// committed, as the group went quiet, still learns it: it says so when it answers the leader's
/// beacon, and the leader keeps heartbeating until it knows. The planted bug
/// `quiet-ignores-lag` (the leader settles anyway) leaves it an entry behind for as long as
/// nobody writes: the convergence failure of cluster swarm seed 157 (with the planted bug
/// `unchanged-write-unconfirmed`, which only moved its schedule). Each seed twice, with equal
/// traces.
#[test]
fn a_follower_that_lost_the_commit_of_an_idle_group_learns_it_from_the_quiet_leader() {
    use larder_core::bugs::{Bug, Bugs};
    use larder_sim::scenario::lost_commit;
    let checked = |seed: u64, bugs: Bugs| {
        let outcome = lost_commit(seed, bugs).expect("scenario ran");
        assert!(
            outcome.first_entry.is_some(),
            "seed {seed}: the new leader's first entry never reached the follower: {outcome:?}"
        );
        assert!(
            outcome.leader_kept,
            "seed {seed}: the new leader lost its office: {outcome:?}"
        );
        let (leader, follower) = outcome.applied_at_heal.expect("healed");
        assert!(
            follower < leader,
            "seed {seed}: the follower learned the commit while cut off: {outcome:?}"
        );
        outcome
    };
    for seed in [1, 2, 3] {
        let outcome = checked(seed, Bugs::default());
        let (leader, follower) = outcome.applied_after.expect("ran past the heal");
        assert_eq!(
            follower, leader,
            "seed {seed}: the follower never learned the commit: {outcome:?}"
        );
        assert_eq!(
            checked(seed, Bugs::default()).trace_hash,
            outcome.trace_hash,
            "seed {seed}: not deterministic"
        );
    }
    let mut bugs = Bugs::default();
    if bugs.try_plant(Bug::QuietIgnoresLag).is_ok() {
        let outcome = checked(1, bugs);
        let (leader, follower) = outcome.applied_after.expect("ran past the heal");
        assert!(
            follower < leader,
            "quiet-ignores-lag went unnoticed: {outcome:?}"
        );
    }
}

#[test]
fn a_push_into_a_blmove_chain_replies_after_the_whole_chain_even_when_a_poll_wins_a_link() {
    use larder_core::bugs::{Bug, Bugs};
    use larder_core::env::FaultPoint;
    use larder_core::resp::Frame;
    use larder_sim::scenario::blocking_chain;

    let element = || Frame::Array(Some(vec![Frame::Bulk(Some(Bytes::from_static(b"x")))]));
    for (seed, aimed) in [(1, false), (1, true), (2, true)] {
        let outcome = blocking_chain(seed, Bugs::default(), aimed).expect("scenario ran");
        let context = format!("seed {seed}, aimed {aimed}: {outcome:?}");
        assert_eq!(outcome.push, Some(Frame::Integer(1)), "{context}");
        assert_eq!(
            outcome.middle,
            Some(Frame::Array(Some(vec![]))),
            "{context}"
        );
        assert_eq!(outcome.last, Some(element()), "{context}");
        for link in [&outcome.first_link, &outcome.second_link] {
            assert_eq!(
                link,
                &Some(Frame::Bulk(Some(Bytes::from_static(b"x")))),
                "{context}"
            );
        }
        if aimed {
            // The delays were passed, so the poll did win the first link.
            for point in [FaultPoint::HandOverStarting, FaultPoint::HandOverPop] {
                assert!(
                    outcome.hits.get(&point).copied().unwrap_or(0) > 0,
                    "{point} never passed: {context}"
                );
            }
            let again = blocking_chain(seed, Bugs::default(), aimed).expect("scenario ran");
            assert_eq!(
                outcome.trace_hash, again.trace_hash,
                "seed {seed}: scenario is not deterministic"
            );
        }
    }
    // A writer that replies without waiting for the poll's handover: the pusher finds the
    // element still in the middle list.
    let mut bugs = Bugs::default();
    if bugs.try_plant(Bug::BlockedChainReplyEarly).is_ok() {
        let outcome = blocking_chain(1, bugs, true).expect("scenario ran");
        assert_eq!(
            outcome.middle,
            Some(element()),
            "blocked-chain-reply-early went unnoticed: {outcome:?}"
        );
    }
}

/// A deposed leader's answer to one request on seeds 1 and 2 is a refusal (each seed run
/// twice, with equal answers and traces), and with `bug` planted (when this build can plant
/// bugs) seed 1's answer is `with_bug`.
fn refused_by_a_deposed_leader_unless<T, E>(
    run: impl Fn(u64, larder_core::bugs::Bugs) -> (Result<T, E>, String),
    bug: larder_core::bugs::Bug,
    with_bug: Result<T, E>,
) where
    T: std::fmt::Debug + PartialEq,
    E: std::fmt::Debug + PartialEq,
{
    for seed in [1, 2] {
        let (answer, hash) = run(seed, larder_core::bugs::Bugs::default());
        println!("seed {seed}: the deposed leader answered {answer:?}");
        assert!(
            answer.is_err(),
            "seed {seed}: the deposed leader answered {answer:?}"
        );
        assert_eq!(
            run(seed, larder_core::bugs::Bugs::default()),
            (answer, hash),
            "seed {seed}: not deterministic"
        );
    }
    let mut bugs = larder_core::bugs::Bugs::default();
    if bugs.try_plant(bug).is_ok() {
        let (answer, _) = run(1, bugs);
        println!("with the bug: {answer:?}");
        assert_eq!(answer, with_bug, "the planted bug must be caught");
    }
}

/// A read sent to a deposed leader as its partition heals is never answered with the value
/// from before the majority's acknowledged write: its read round finds the majority's votes
/// moved on. The planted bug `read-confirm-ignores-vote` (replicas confirm whatever vote they
/// hold) serves that stale value. Each seed twice, with equal traces.
#[test]
fn a_deposed_leader_read_round_is_refused_by_replicas_that_voted_for_its_successor() {
    let request = DeposedRequest::Read;
    let run = |seed: u64, bugs: larder_core::bugs::Bugs| {
        let outcome = deposed_leader_request(seed, bugs, request).expect("scenario ran");
        let old = outcome.old_leader.expect("a leader before the partition");
        let new = outcome
            .new_leader
            .expect("the majority side elected a leader");
        assert_ne!(old, new);
        assert_eq!(
            outcome.first_write.clone().expect("first write ran"),
            Ok(Reply::Ok)
        );
        assert_eq!(
            outcome.majority_write.clone().expect("majority write ran"),
            Ok(Reply::Ok),
            "seed {seed}: the majority side must accept the write before the heal"
        );
        (
            outcome.deposed_read.clone().expect("the read ran"),
            outcome.trace_hash,
        )
    };
    // Refused: the read steps aside to openraft, which finds the higher term.
    let stale = Ok(Reply::Bulk(Bytes::from_static(b"before")));
    refused_by_a_deposed_leader_unless(run, larder_core::bugs::Bug::ReadConfirmIgnoresVote, stale);
}

/// A write that changes nothing on a deposed leader's state (`SET k before` where its `k` is
/// still `before`), sent to it as its partition heals, is refused as a read would be: its
/// confirmation is a read's. The planted bug `unchanged-write-unconfirmed` answers it `OK`
/// from the deposed leader's state, after the majority's `SET k after` was acknowledged: a
/// write acknowledged last that never takes effect. Each seed twice, with equal traces.
#[test]
fn a_deposed_leader_answers_no_write_as_unchanged_without_confirming_it_leads() {
    let run = |seed: u64, bugs: larder_core::bugs::Bugs| {
        let outcome = deposed_leader_request(seed, bugs, DeposedRequest::UnchangedWrite)
            .expect("scenario ran");
        assert_ne!(outcome.old_leader, outcome.new_leader);
        assert_eq!(outcome.first_write.clone().expect("ran"), Ok(Reply::Ok));
        assert_eq!(
            outcome.majority_write.clone().expect("ran"),
            Ok(Reply::Ok),
            "seed {seed}: the majority side must accept the write before the heal"
        );
        (
            outcome.deposed_read.clone().expect("the write ran"),
            outcome.trace_hash,
        )
    };
    refused_by_a_deposed_leader_unless(
        run,
        larder_core::bugs::Bug::UnchangedWriteUnconfirmed,
        Ok(Reply::Ok),
    );
}

/// A key that expires while its group is quiet reads as missing: the first read proposes a
/// group-clock advance, a write the quiet leader wakes for (stop 51: it did not, and the read
/// failed as "not the leader" for as long as the group stayed quiet; Redis's `unit/expire`
/// found it). Seeds 1-3 twice each, with equal traces; the planted bug `advance-skips-wake`
/// (the advance without the wake) on seed 1 must fail the read.
#[test]
fn a_key_that_expired_while_its_group_was_quiet_reads_as_missing() {
    use larder_core::bugs::{Bug, Bugs};
    use larder_core::kv::Reply;
    use larder_sim::scenario::quiet_expiry;
    let gets = |outcome: &larder_sim::scenario::QuietExpiryOutcome| {
        assert_eq!(outcome.steps.len(), 3, "{outcome:?}");
        assert_eq!(outcome.steps[0].1, Ok(Reply::Ok), "{outcome:?}");
        outcome.steps[1..]
            .iter()
            .map(|(_, result)| result.clone())
            .collect::<Vec<_>>()
    };
    for seed in [1, 2, 3] {
        let outcome = quiet_expiry(seed, Bugs::default()).expect("scenario ran");
        assert_eq!(
            gets(&outcome),
            [Ok(Reply::Nil), Ok(Reply::Nil)],
            "seed {seed}: {outcome:?}"
        );
        assert_eq!(
            quiet_expiry(seed, Bugs::default())
                .expect("scenario ran")
                .trace_hash,
            outcome.trace_hash,
            "seed {seed}: not deterministic"
        );
    }
    let mut bugs = Bugs::default();
    if bugs.try_plant(Bug::AdvanceSkipsWake).is_ok() {
        let outcome = quiet_expiry(1, bugs).expect("scenario ran");
        assert!(
            gets(&outcome).iter().all(Result::is_err),
            "advance-skips-wake went unnoticed: {outcome:?}"
        );
    }
}

/// A lock a client saw free stays free: its leader, whose wall clock jumped 20 s ahead, answers
/// `LOCK.INFO` with the lease ended, which puts the lease's end in the log first; after a leader
/// change to a node whose clock is right, the grant's token no longer fences. Seeds 1-3 twice
/// each, with equal traces; the planted bug `lease-end-unlogged` (the answer by the fast clock
/// alone) on seeds 1-3 must let the stale fence pass.
#[test]
fn a_lease_a_client_saw_end_stays_ended_after_a_leader_change() {
    use larder_core::bugs::{Bug, Bugs};
    use larder_core::kv::Reply;
    use larder_sim::scenario::{LeaseSeenEndedOutcome, lease_seen_ended};
    let answers = |outcome: &LeaseSeenEndedOutcome| {
        let token = outcome.token.expect("granted");
        let Some(Ok(Reply::Array(info))) = &outcome.info else {
            panic!("no LOCK.INFO answer: {outcome:?}");
        };
        // Free by the fast clock: no holder, the token kept, no time left.
        assert_eq!(
            info,
            &vec![Reply::Nil, Reply::Int(token), Reply::Int(0)],
            "{outcome:?}"
        );
        assert!(outcome.new_leader.is_some(), "{outcome:?}");
        assert_ne!(outcome.new_leader, outcome.fast_leader, "{outcome:?}");
        outcome.fence_after.clone().expect("the fence was sent")
    };
    for seed in [1, 2, 3] {
        let outcome = lease_seen_ended(seed, Bugs::default()).expect("scenario ran");
        let fence = answers(&outcome);
        assert!(
            matches!(&fence, Ok(Reply::Error(text)) if text.starts_with("FENCED lock 'l' is not held")),
            "seed {seed}: {fence:?}"
        );
        assert_eq!(
            lease_seen_ended(seed, Bugs::default())
                .expect("scenario ran")
                .trace_hash,
            outcome.trace_hash,
            "seed {seed}: not deterministic"
        );
    }
    for seed in [1, 2, 3] {
        let mut bugs = Bugs::default();
        if bugs.try_plant(Bug::LeaseEndUnlogged).is_ok() {
            let outcome = lease_seen_ended(seed, bugs).expect("scenario ran");
            assert_eq!(
                answers(&outcome),
                Ok(Reply::Ok),
                "seed {seed}: lease-end-unlogged went unnoticed"
            );
        }
    }
}

/// A deposed leader asked to replace a voter must not answer from its own committed membership
/// ("4 is not a voter, I am: done") while its group has moved on: cluster swarm seed 34's
/// center wrote such an answer into its routing table. Without the planted bug
/// `replace-done-unconfirmed` the deposed leader cannot confirm it leads and answers no; the
/// majority's replacement stands. Each seed twice, with equal traces.
#[test]
fn a_deposed_leader_asked_to_replace_a_voter_does_not_answer_from_its_own_membership() {
    let run = |seed: u64, bugs: larder_core::bugs::Bugs| {
        let outcome = deposed_leader_replace(seed, bugs).expect("scenario ran");
        let old = outcome.old_leader.expect("a leader before the partition");
        assert_ne!(Some(old), outcome.new_leader, "seed {seed}");
        assert_eq!(
            outcome
                .majority_replace
                .clone()
                .expect("the majority's replace ran"),
            Ok(()),
            "seed {seed}: the majority side replaces the cut-off leader"
        );
        let mut expected: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&id| id != old).collect();
        expected.sort_unstable();
        assert_eq!(outcome.voters, expected, "seed {seed}: the group's voters");
        (
            outcome
                .deposed_replace
                .clone()
                .expect("the deposed leader was asked"),
            outcome.trace_hash,
        )
    };
    refused_by_a_deposed_leader_unless(run, larder_core::bugs::Bug::ReplaceDoneUnconfirmed, Ok(()));
}
