//! Checking logs written by Jepsen and Porcupine, and `check_file` on every format.

// Writes history files to a temporary directory to test reading them back.
#![allow(clippy::disallowed_methods)]

use larder_workloads::{
    Budget, Error, Format, LoadError, Verdict, check_file, check_history, load_file, load_str,
};

fn verdict_of(text: &str) -> larder_workloads::Report {
    let loaded = load_str(text).unwrap();
    check_history(&loaded.history, &loaded.config, &Budget::unlimited()).unwrap()
}

/// A register history in the layout of Jepsen's etcd test logs.
const JEPSEN_OK: &str = "\
INFO  jepsen.core - Running test
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 3\t:invoke\t:read\tnil
INFO  jepsen.util - 2\t:invoke\t:write\t4
INFO  jepsen.util - 1\t:invoke\t:write\t2
INFO  jepsen.util - 3\t:ok\t:read\tnil
INFO  jepsen.util - 0\t:ok\t:read\tnil
INFO  jepsen.util - 1\t:ok\t:write\t2
INFO  jepsen.util - 2\t:ok\t:write\t4
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 0\t:ok\t:read\t4
INFO  jepsen.util - 1\t:invoke\t:cas\t[4 0]
INFO  jepsen.util - 1\t:ok\t:cas\t[4 0]
INFO  jepsen.util - 2\t:invoke\t:cas\t[4 1]
INFO  jepsen.util - 2\t:fail\t:cas\t[4 1]
INFO  jepsen.util - 3\t:invoke\t:write\t3
INFO  jepsen.util - 3\t:info\t:write\t:timed-out
INFO  jepsen.util - 8\t:invoke\t:read\tnil
INFO  jepsen.util - 8\t:ok\t:read\t3
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 0\t:fail\t:read\t:timed-out
";

#[test]
fn jepsen_log_linearizable() {
    let report = verdict_of(JEPSEN_OK);
    assert!(report.is_linearizable(), "{report}");
    assert_eq!(report.operations, 10);
}

#[test]
fn jepsen_log_stale_read() {
    // a read of 2 after the write of 4 completed after the write of 2 completed
    let text = format!(
        "{JEPSEN_OK}INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:ok\t:read\t2\n"
    );
    let report = verdict_of(&text);
    let Verdict::NotLinearizable {
        key,
        longest_linearizable_prefix,
        ..
    } = &report.verdict
    else {
        panic!("{report}");
    };
    assert_eq!(key, "");
    let prefix = longest_linearizable_prefix.as_ref().unwrap();
    assert_eq!(prefix.culprit.output, larder_workloads::Value::Int(2));
}

#[test]
fn jepsen_log_failed_compare_is_an_observation() {
    // the cas [4 1] failed although 4 was the value throughout its call
    let text = "\
INFO  jepsen.util - 0\t:invoke\t:write\t4
INFO  jepsen.util - 0\t:ok\t:write\t4
INFO  jepsen.util - 1\t:invoke\t:cas\t[4 1]
INFO  jepsen.util - 1\t:fail\t:cas\t[4 1]
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 0\t:ok\t:read\t4
";
    assert!(verdict_of(text).is_not_linearizable());
}

/// Porcupine's kv test data layout: keys start as "".
const PORCUPINE_OK: &str = r#"{:process 0, :type :invoke, :f :get, :key "6", :value nil}
{:process 1, :type :invoke, :f :put, :key "6", :value "x 1 0 y"}
{:process 0, :type :ok, :f :get, :key "6", :value ""}
{:process 1, :type :ok, :f :put, :key "6", :value "x 1 0 y"}
{:process 0, :type :invoke, :f :append, :key "6", :value "x 0 1 y"}
{:process 1, :type :invoke, :f :get, :key "6", :value nil}
{:process 1, :type :ok, :f :get, :key "6", :value "x 1 0 y"}
{:process 0, :type :ok, :f :append, :key "6", :value "x 0 1 y"}
{:process 2, :type :invoke, :f :get, :key "6", :value nil}
{:process 2, :type :ok, :f :get, :key "6", :value "x 1 0 yx 0 1 y"}
{:process 2, :type :invoke, :f :get, :key "7", :value nil}
{:process 2, :type :ok, :f :get, :key "7", :value ""}
"#;

#[test]
fn porcupine_kv_linearizable() {
    let report = verdict_of(PORCUPINE_OK);
    assert!(report.is_linearizable(), "{report}");
    assert_eq!(report.keys.len(), 2);
}

#[test]
fn porcupine_kv_lost_append() {
    let text = format!(
        "{PORCUPINE_OK}{}",
        r#"{:process 2, :type :invoke, :f :get, :key "6", :value nil}
{:process 2, :type :ok, :f :get, :key "6", :value "x 1 0 y"}
"#
    );
    let report = verdict_of(&text);
    let Verdict::NotLinearizable { key, .. } = &report.verdict else {
        panic!("{report}");
    };
    assert_eq!(key, "6");
}

#[test]
fn check_file_detects_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let jepsen = dir.path().join("etcd.log");
    std::fs::write(&jepsen, JEPSEN_OK).unwrap();
    assert!(check_file(&jepsen).unwrap().is_linearizable());
    assert_eq!(load_file(&jepsen).unwrap().format, Format::JepsenLog);

    let edn = dir.path().join("kv.edn");
    std::fs::write(&edn, PORCUPINE_OK).unwrap();
    assert!(check_file(&edn).unwrap().is_linearizable());
    assert_eq!(load_file(&edn).unwrap().format, Format::Edn);

    // the Jepsen log rewritten as history.jsonl checks the same (with the Jepsen reading of
    // a failed cas off, the history only loses a constraint)
    let jsonl = dir.path().join("history.jsonl");
    let loaded = load_str(JEPSEN_OK).unwrap();
    loaded.history.write_jsonl_file(&jsonl).unwrap();
    assert_eq!(load_file(&jsonl).unwrap().format, Format::Jsonl);
    assert_eq!(load_file(&jsonl).unwrap().history, loaded.history);
    assert!(check_file(&jsonl).unwrap().is_linearizable());

    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "hello\n").unwrap();
    assert!(matches!(
        check_file(&bad),
        Err(Error::Load {
            source: LoadError::UnknownFormat,
            ..
        })
    ));
    assert!(matches!(
        check_file(dir.path().join("missing.jsonl")),
        Err(Error::Io { .. })
    ));
    let malformed = dir.path().join("m.jsonl");
    std::fs::write(
        &malformed,
        "{\"process\":1,\"type\":\"ok\",\"f\":\"read\",\"key\":\"k\"}\n",
    )
    .unwrap();
    let err = check_file(&malformed).unwrap_err();
    assert!(matches!(err, Error::History { .. }), "{err}");
}
