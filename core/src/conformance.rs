//! The conformance suite every environment implementation must pass, real or simulated.
//!
//! The suites are plain async functions so that each implementation runs them on its own
//! executor: the real environment under a tokio runtime (`nodes/real/tests/real/real_conformance.rs`), the
//! simulated one inside a turmoil host (`sim/tests/sim/conformance.rs`). They panic with a message
//! naming the broken rule, like any test assertion.
//!
//! What the suites cannot check from inside one process (that synced writes survive a crash,
//! that a crash loses only a suffix of unsynced writes) each implementation proves in its own
//! crash test, since "crash" means killing a child process for fjall and dropping memory for
//! the simulated disk.

use std::time::Duration;

use bytes::Bytes;

use crate::NodeId;
use crate::env::{
    Clock, Disk, DiskView, Elapsed, Handler, Net, NetError, Space, WriteBatch, log_key, timeout,
};

/// Checks the [`Clock`] contract: monotonic `now`, `sleep` waits at least as long as asked,
/// `wall_ms` is a plausible Unix time, and [`timeout`] fires on a slow future but not a fast one.
pub async fn clock_suite<C: Clock>(clock: &C) {
    // 2020-01-01T00:00:00Z: any wall clock before that is misconfigured, not skewed.
    const PLAUSIBLE_WALL_MS: u64 = 1_577_836_800_000;
    let wall = clock.wall_ms();
    assert!(
        wall > PLAUSIBLE_WALL_MS,
        "wall_ms {wall} is before 2020: not a Unix time in ms"
    );

    let mut previous = clock.now();
    for _ in 0..1000 {
        let now = clock.now();
        assert!(
            now >= previous,
            "now went back from {previous:?} to {now:?}"
        );
        previous = now;
    }

    for wait in [1u64, 10, 50] {
        let wait = Duration::from_millis(wait);
        let before = clock.now();
        clock.sleep(wait).await;
        let slept = clock.now() - before;
        assert!(
            slept >= wait,
            "sleep({wait:?}) returned after only {slept:?}"
        );
    }
    let before = clock.now();
    clock.sleep(Duration::ZERO).await;
    assert!(clock.now() >= before, "sleep(0) moved now backwards");

    let slow = clock.sleep(Duration::from_secs(10));
    let before = clock.now();
    let outcome = timeout(clock, Duration::from_millis(20), slow).await;
    assert_eq!(
        outcome,
        Err(Elapsed),
        "timeout did not fire on a slow future"
    );
    let waited = clock.now() - before;
    assert!(
        waited >= Duration::from_millis(20) && waited < Duration::from_secs(5),
        "timeout(20ms) fired after {waited:?}"
    );
    let fast = timeout(clock, Duration::from_millis(20), async { 7 }).await;
    assert_eq!(fast, Ok(7), "timeout rejected a ready future");

    let wall_after = clock.wall_ms();
    assert!(
        wall_after + 1_000 >= wall,
        "wall clock went back {} ms without a skew fault",
        wall - wall_after
    );
}

fn b(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

/// The indices of `group`'s log entries on `disk`.
async fn log_indices<D: Disk>(disk: &D, group: crate::GroupId) -> Vec<u64> {
    disk.log_read(group, 0, u64::MAX, usize::MAX)
        .await
        .expect("read")
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

async fn put<D: Disk>(disk: &D, space: Space, key: &[u8], value: &[u8], sync: bool) {
    let mut batch = WriteBatch::new();
    batch.put(space, b(key), b(value));
    disk.write(batch, sync).await.expect("write");
}

/// Checks the [`Disk`] contract on an **empty** disk: atomic ordered batches, reads see
/// unsynced writes, spaces are separate, scans are ordered and bounded, and the provided Raft
/// log operations (append, read, last, truncate, purge, vote, snapshot) keep their meaning.
pub async fn disk_suite<D: Disk>(disk: &D) {
    for space in Space::ALL {
        let all = disk.scan(space, b"", None, usize::MAX).await.expect("scan");
        assert!(
            all.is_empty(),
            "disk_suite needs an empty disk; {space:?} has data"
        );
    }

    // Basic put/get/overwrite/delete, synced and not.
    assert_eq!(disk.get(Space::State, b"k").await.expect("get"), None);
    put(disk, Space::State, b"k", b"v1", false).await;
    assert_eq!(
        disk.get(Space::State, b"k").await.expect("get"),
        Some(b(b"v1"))
    );
    put(disk, Space::State, b"k", b"v2", true).await;
    assert_eq!(
        disk.get(Space::State, b"k").await.expect("get"),
        Some(b(b"v2")),
        "an overwrite is not visible"
    );
    put(disk, Space::State, b"empty", b"", false).await;
    assert_eq!(
        disk.get(Space::State, b"empty").await.expect("get"),
        Some(Bytes::new()),
        "an empty value must read back as present and empty"
    );

    // Spaces are separate namespaces.
    assert_eq!(disk.get(Space::Meta, b"k").await.expect("get"), None);
    assert_eq!(disk.get(Space::Log, b"k").await.expect("get"), None);

    // A batch applies in order: put then delete of one key leaves it deleted; ops of
    // different spaces land together.
    let mut batch = WriteBatch::new();
    batch
        .put(Space::State, b(b"a"), b(b"1"))
        .put(Space::Meta, b(b"a"), b(b"meta"))
        .put(Space::State, b(b"gone"), b(b"x"))
        .delete(Space::State, b(b"gone"))
        .delete(Space::State, b(b"empty"))
        .put(Space::State, b(b"b"), b(b"first"))
        .put(Space::State, b(b"b"), b(b"second"));
    disk.write(batch, false).await.expect("batch");
    assert_eq!(
        disk.get(Space::State, b"a").await.expect("get"),
        Some(b(b"1"))
    );
    assert_eq!(
        disk.get(Space::Meta, b"a").await.expect("get"),
        Some(b(b"meta"))
    );
    assert_eq!(disk.get(Space::State, b"gone").await.expect("get"), None);
    assert_eq!(disk.get(Space::State, b"empty").await.expect("get"), None);
    assert_eq!(
        disk.get(Space::State, b"b").await.expect("get"),
        Some(b(b"second")),
        "later ops of a batch must win"
    );
    disk.write(WriteBatch::new(), true)
        .await
        .expect("an empty synced batch is a plain sync");

    // Scans: ascending byte order (0xff after ASCII, longer after prefix), bounds, limit.
    let keys: [&[u8]; 6] = [b"s/\xff", b"s/a", b"s/ab", b"s/b", b"s/\x00", b"t"];
    let mut batch = WriteBatch::new();
    for key in keys {
        batch.put(Space::State, b(key), b(key));
    }
    disk.write(batch, false).await.expect("scan keys");
    let rows = disk
        .scan(Space::State, b"s/", Some(b"s0"), usize::MAX)
        .await
        .expect("scan");
    let got: Vec<&[u8]> = rows.iter().map(|(k, _)| k.as_ref()).collect();
    let want: Vec<&[u8]> = vec![b"s/\x00", b"s/a", b"s/ab", b"s/b", b"s/\xff"];
    assert_eq!(
        got, want,
        "scan is not in ascending byte order within bounds"
    );
    assert!(
        rows.iter().all(|(k, v)| k == v),
        "scan paired a key with another key's value"
    );
    let keys_only = disk
        .scan_keys(Space::State, b"s/", Some(b"s0"), usize::MAX)
        .await
        .expect("scan keys");
    assert_eq!(
        keys_only.iter().map(|k| k.as_ref()).collect::<Vec<&[u8]>>(),
        want,
        "scan_keys lists other keys than scan"
    );
    let limited = disk
        .scan(Space::State, b"s/", Some(b"s0"), 2)
        .await
        .expect("scan");
    assert_eq!(limited.len(), 2, "scan ignored its limit");
    assert_eq!(limited[1].0, b(b"s/a"));
    let exclusive = disk
        .scan(Space::State, b"s/a", Some(b"s/b"), usize::MAX)
        .await
        .expect("scan");
    let got: Vec<&[u8]> = exclusive.iter().map(|(k, _)| k.as_ref()).collect();
    assert_eq!(
        got,
        vec![b"s/a".as_ref(), b"s/ab"],
        "scan end must be exclusive"
    );
    let unbounded = disk
        .scan(Space::State, b"s/b", None, usize::MAX)
        .await
        .expect("scan");
    assert_eq!(unbounded.len(), 3, "unbounded scan: s/b, s/\\xff, t");
    assert_eq!(
        disk.last(Space::State, b"s/", b"s0").await.expect("last"),
        Some((b(b"s/\xff"), b(b"s/\xff"))),
        "last must be the greatest key in range"
    );
    assert_eq!(
        disk.last(Space::State, b"u", b"v").await.expect("last"),
        None,
        "last of an empty range"
    );

    // Paged range delete across more than one page, with a trailing batch.
    let mut batch = WriteBatch::new();
    for i in 0u32..5000 {
        batch.put(
            Space::Meta,
            b(&[b"p/".as_ref(), &i.to_be_bytes()].concat()),
            b(b"x"),
        );
    }
    disk.write(batch, false).await.expect("many keys");
    // Walked in pages of 1,000: five full pages in key order, then the empty last one.
    let mut pages = crate::env::KeyPages::new(Space::Meta, b"p/", b"p0", 1000);
    let mut walked = Vec::new();
    let mut sizes = Vec::new();
    while let Some(page) = pages.next(disk).await.expect("page") {
        sizes.push(page.len());
        walked.extend(page);
    }
    assert_eq!(sizes, [1000, 1000, 1000, 1000, 1000, 0], "key pages");
    assert!(walked.windows(2).all(|w| w[0] < w[1]) && walked.len() == 5000);
    let mut empty = crate::env::KeyPages::new(Space::Meta, b"q/", b"q0", 10);
    assert_eq!(empty.next(disk).await.expect("page"), Some(Vec::new()));
    assert!(empty.is_done() && empty.next(disk).await.expect("page").is_none());
    let mut then = WriteBatch::new();
    then.put(Space::Meta, b(b"p-done"), b(b"yes"));
    disk.delete_range_paged(Space::Meta, b"p/", b"p0", Some(then))
        .await
        .expect("delete range");
    assert!(
        disk.scan(Space::Meta, b"p/", Some(b"p0"), usize::MAX)
            .await
            .expect("scan")
            .is_empty(),
        "delete_range_paged left keys behind"
    );
    assert_eq!(
        disk.get(Space::Meta, b"p-done").await.expect("get"),
        Some(b(b"yes")),
        "delete_range_paged dropped its trailing batch"
    );

    // A view shows the disk as it was when taken, whatever is written after.
    put(disk, Space::State, b"v/kept", b"old", false).await;
    put(disk, Space::State, b"v/gone", b"old", false).await;
    let view = disk.view();
    let mut later = WriteBatch::new();
    later
        .put(Space::State, b(b"v/kept"), b(b"new"))
        .delete(Space::State, b(b"v/gone"))
        .put(Space::State, b(b"v/added"), b(b"new"));
    disk.write(later, true).await.expect("write after the view");
    let seen = view
        .scan(Space::State, b"v/", Some(b"v0"), usize::MAX)
        .await
        .expect("view scan");
    assert_eq!(
        seen,
        vec![(b(b"v/gone"), b(b"old")), (b(b"v/kept"), b(b"old"))],
        "a view shows writes made after it was taken"
    );
    assert_eq!(
        view.scan(Space::State, b"v/", Some(b"v0"), 1)
            .await
            .expect("view scan")
            .len(),
        1,
        "a view's scan ignored its limit"
    );
    let now = disk
        .scan(Space::State, b"v/", Some(b"v0"), usize::MAX)
        .await
        .expect("scan");
    assert_eq!(
        now,
        vec![(b(b"v/added"), b(b"new")), (b(b"v/kept"), b(b"new"))],
        "the disk itself moved on"
    );
    drop(view);
    disk.delete_range_paged(Space::State, b"v/", b"v0", None)
        .await
        .expect("clean up");

    log_suite(disk).await;
}

async fn log_suite<D: Disk>(disk: &D) {
    let (g1, g2) = (1u64, 2u64);
    let entry = |i: u64| b(format!("entry-{i}").as_bytes());
    assert_eq!(disk.log_last(g1).await.expect("last"), None);
    disk.log_append(g1, (1..=10).map(|i| (i, entry(i))).collect(), true)
        .await
        .expect("append");
    disk.log_append(g2, (1..=3).map(|i| (i, b(b"other"))).collect(), false)
        .await
        .expect("append");
    let read = disk.log_read(g1, 1, 11, usize::MAX).await.expect("read");
    assert_eq!(read.len(), 10, "groups' logs must not mix");
    assert!(read.iter().all(|(i, payload)| *payload == entry(*i)));
    assert_eq!(
        disk.log_read(g1, 4, 7, usize::MAX)
            .await
            .expect("read")
            .len(),
        3,
        "log_read range is [from, to)"
    );
    assert_eq!(
        disk.log_read(g1, 7, 7, usize::MAX).await.expect("read"),
        vec![]
    );
    assert_eq!(disk.log_read(g1, 1, 11, 4).await.expect("read").len(), 4);
    assert_eq!(
        disk.log_last(g1).await.expect("last"),
        Some((10, entry(10)))
    );
    assert_eq!(
        disk.log_last(g2).await.expect("last"),
        Some((3, b(b"other")))
    );

    // Conflict truncation removes the suffix only; appends then overwrite.
    disk.log_truncate(g1, 8).await.expect("truncate");
    assert_eq!(
        disk.log_last(g1).await.expect("last").map(|(i, _)| i),
        Some(7)
    );
    disk.log_append(g1, vec![(8, b(b"new-8"))], false)
        .await
        .expect("append");
    assert_eq!(
        disk.log_last(g1).await.expect("last"),
        Some((8, b(b"new-8")))
    );

    // Purge removes the prefix and keeps its mark.
    assert_eq!(disk.log_purged_mark(g1).await.expect("mark"), None);
    disk.log_purge(g1, None, 5, b(b"mark-5"))
        .await
        .expect("purge");
    let left = log_indices(disk, g1).await;
    assert_eq!(
        left,
        vec![6, 7, 8],
        "purge must remove exactly index <= upto"
    );
    assert_eq!(
        disk.log_purged_mark(g1).await.expect("mark"),
        Some(b(b"mark-5"))
    );
    // A later purge that knows where the last one ended deletes blind, to the same effect.
    disk.log_purge(g1, Some(6), 7, b(b"mark-7"))
        .await
        .expect("purge from a known start");
    let left = log_indices(disk, g1).await;
    assert_eq!(
        left,
        vec![8],
        "a purge from a known start must remove 6..=7"
    );
    assert_eq!(
        disk.log_purged_mark(g1).await.expect("mark"),
        Some(b(b"mark-7"))
    );
    assert_eq!(disk.log_purged_mark(g2).await.expect("mark"), None);
    assert_eq!(
        disk.log_read(g2, 0, u64::MAX, usize::MAX)
            .await
            .expect("read")
            .len(),
        3,
        "purging one group touched another"
    );

    // Vote and snapshot are per group and overwrite.
    assert_eq!(disk.read_vote(g1).await.expect("vote"), None);
    disk.save_vote(g1, b(b"term-1")).await.expect("vote");
    disk.save_vote(g1, b(b"term-2")).await.expect("vote");
    assert_eq!(disk.read_vote(g1).await.expect("vote"), Some(b(b"term-2")));
    assert_eq!(disk.read_vote(g2).await.expect("vote"), None);
    disk.save_snapshot(g2, b(b"snap")).await.expect("snapshot");
    assert_eq!(
        disk.read_snapshot(g2).await.expect("snapshot"),
        Some(b(b"snap"))
    );
    assert_eq!(disk.read_snapshot(g1).await.expect("snapshot"), None);

    // Log keys sort by (group, index) even across byte boundaries.
    assert!(log_key(1, 255) < log_key(1, 256));
    assert!(log_key(1, u64::MAX) < log_key(2, 0));
}

/// A [`Handler`] for [`net_suite`]: answers `from` (8 bytes, big-endian) followed by the
/// request. A request `sleep:<ms>` first waits that long on the server's clock.
#[derive(Clone)]
pub struct EchoHandler<C> {
    pub clock: C,
}

impl<C: Clock> Handler for EchoHandler<C> {
    async fn handle(&self, from: NodeId, request: Bytes) -> Bytes {
        if let Some(ms) = request
            .strip_prefix(b"sleep:")
            .and_then(|ms| std::str::from_utf8(ms).ok())
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            self.clock.sleep(Duration::from_millis(ms)).await;
        }
        let mut response = Vec::with_capacity(8 + request.len());
        response.extend_from_slice(&from.to_be_bytes());
        response.extend_from_slice(&request);
        Bytes::from(response)
    }
}

fn echo_of(from: NodeId, request: &[u8]) -> Bytes {
    let mut response = from.to_be_bytes().to_vec();
    response.extend_from_slice(request);
    Bytes::from(response)
}

/// Checks the [`Net`] contract from the client side. `server` must be serving an
/// [`EchoHandler`]; `silent` must be a node id nothing answers for (unknown, or known but not
/// listening). Runs with a fault-free network.
pub async fn net_suite<N: Net, C: Clock>(net: &N, clock: &C, server: NodeId, silent: NodeId) {
    let me = net.local_id();
    let generous = Duration::from_secs(5);

    let response = net.call(server, b(b"hello"), generous).await.expect("echo");
    assert_eq!(
        response,
        echo_of(me, b"hello"),
        "echo must carry the caller's id"
    );
    let response = net
        .call(server, Bytes::new(), generous)
        .await
        .expect("empty echo");
    assert_eq!(
        response,
        echo_of(me, b""),
        "an empty payload must round-trip"
    );
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let response = net
        .call(server, b(&big), generous)
        .await
        .expect("1 MB echo");
    assert!(
        response == echo_of(me, &big),
        "a 1 MB payload did not round-trip intact"
    );

    // Concurrent calls are independent and each gets its own answer.
    let calls = (0..16u32).map(|i| {
        let payload = b(format!("call-{i}").as_bytes());
        async move { (i, net.call(server, payload, generous).await) }
    });
    for (i, result) in futures::future::join_all(calls).await {
        assert_eq!(
            result.expect("concurrent echo"),
            echo_of(me, format!("call-{i}").as_bytes()),
            "concurrent calls crossed their responses"
        );
    }

    // A slow request does not hold up a fast one to the same peer.
    let slow = net.call(server, b(b"sleep:500"), generous);
    let fast = net.call(server, b(b"fast"), generous);
    futures::pin_mut!(slow, fast);
    match futures::future::select(slow, fast).await {
        futures::future::Either::Right((fast, _)) => {
            assert_eq!(fast.expect("fast echo"), echo_of(me, b"fast"));
        }
        futures::future::Either::Left(_) => panic!("a slow call finished before a fast one"),
    }

    // A call's timeout bounds it.
    let before = clock.now();
    let outcome = net
        .call(server, b(b"sleep:3000"), Duration::from_millis(100))
        .await;
    let waited = clock.now() - before;
    assert!(
        matches!(outcome, Err(NetError::Timeout { to, .. }) if to == server),
        "a call past its deadline must time out, got {outcome:?}"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "a 100 ms call took {waited:?} to time out"
    );

    // Nobody answering is an error, never a hang.
    let outcome = timeout(
        clock,
        generous,
        net.call(silent, b(b"anyone?"), Duration::from_secs(1)),
    )
    .await
    .expect("a call to a silent node must fail within its own timeout");
    assert!(
        outcome.is_err(),
        "a call to a silent node succeeded: {outcome:?}"
    );

    // The server is still fine afterwards.
    let response = net.call(server, b(b"again"), generous).await.expect("echo");
    assert_eq!(response, echo_of(me, b"again"));
}
