//! Cross-check against published verdicts: Porcupine's test data (Jepsen etcd logs from
//! ahorn/linearizability-checker, and its kv logs). The data is not vendored: point
//! `LARDER_PORCUPINE_DATA` at a checkout's `test_data` directory and run
//! `cargo nextest run -p larder-workloads --run-ignored only -E 'binary(published)'`.

use std::path::PathBuf;

use larder_workloads::{Budget, check_file_with};

/// Logs Porcupine's tests expect to be linearizable; the other 79 of 0..=102 are not
/// (`etcd_095.log` is empty and has no verdict).
const ETCD_LINEARIZABLE: [u32; 23] = [
    2, 5, 7, 18, 25, 31, 38, 45, 48, 49, 51, 53, 56, 67, 75, 76, 80, 87, 92, 98, 100, 101, 102,
];

fn data() -> Option<PathBuf> {
    std::env::var_os("LARDER_PORCUPINE_DATA").map(PathBuf::from)
}

// A check of published data must not hang a run: 60 s per file, then `Unknown` fails the test.
#[allow(clippy::disallowed_methods)]
fn budget() -> Budget {
    Budget::until(std::time::Instant::now() + std::time::Duration::from_secs(60))
}

#[test]
#[ignore = "needs LARDER_PORCUPINE_DATA"]
fn jepsen_etcd_logs_match_published_verdicts() {
    let dir = data().expect("LARDER_PORCUPINE_DATA").join("jepsen");
    let mut mismatches = Vec::new();
    for n in (0..=102u32).filter(|&n| n != 95) {
        let path = dir.join(format!("etcd_{n:03}.log"));
        let report = check_file_with(&path, &budget()).unwrap();
        let expected = ETCD_LINEARIZABLE.contains(&n);
        if report.is_unknown() || report.is_linearizable() != expected {
            mismatches.push(format!("etcd_{n:03}: expected {expected}, got {report}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
#[ignore = "needs LARDER_PORCUPINE_DATA"]
fn porcupine_kv_logs_match_published_verdicts() {
    let dir = data().expect("LARDER_PORCUPINE_DATA").join("kv");
    for (name, expected) in [
        ("c01-ok", true),
        ("c01-bad", false),
        ("c10-ok", true),
        ("c10-bad", false),
        ("c50-ok", true),
        ("c50-bad", false),
    ] {
        let report = check_file_with(dir.join(format!("{name}.txt")), &budget()).unwrap();
        assert!(!report.is_unknown(), "{name}: {report}");
        assert_eq!(report.is_linearizable(), expected, "{name}: {report}");
    }
}
