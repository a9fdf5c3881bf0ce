//! End-to-end: a local cluster (three center replicas, three storage nodes on loopback TCP and
//! fjall that get their slot groups from the center, every group replicated three ways, a RESP
//! proxy that gets its routing from the center) driven by a real Redis client library and
//! `redis-cli`; and a restart of the whole cluster from its data directory.

use std::net::SocketAddr;
use std::time::Duration;

use larder::local::{LocalCluster, LocalConfig};
use redis::{Commands, Value};

struct Running {
    runtime: tokio::runtime::Runtime,
    cluster: Option<LocalCluster>,
    address: SocketAddr,
}

impl Running {
    fn start(groups: u64, requirepass: Option<&str>) -> Running {
        Self::start_in(None, groups, requirepass)
    }

    /// [`Self::start`] with the proxy's coalescing of single commands off
    /// (`coalesce_runners: 0`): every command runs on its own connection's client.
    fn start_uncoalesced(groups: u64) -> Running {
        Self::start_config(None, groups, None, 0)
    }

    fn start_in(dir: Option<&std::path::Path>, groups: u64, requirepass: Option<&str>) -> Running {
        Self::start_config(dir, groups, requirepass, larder_proxy::coalesce::RUNNERS)
    }

    fn start_config(
        dir: Option<&std::path::Path>,
        groups: u64,
        requirepass: Option<&str>,
        coalesce_runners: usize,
    ) -> Running {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let config = LocalConfig {
            dir: dir.map(std::path::Path::to_path_buf),
            listen: "127.0.0.1:0".parse().expect("address"),
            center_port: 0,
            nodes: larder::local::NODES_MIN,
            groups,
            requirepass: requirepass.map(str::to_string),
            metrics: None,
            hot_key_writes_per_sec_max: None,
            hot_key_share_reads_min_per_sec: larder_proxy::HotKeyConfig::default()
                .share_reads_min_per_sec,
            hot_slot_requests_per_sec_max: 0,
            groups_per_node_min: 0,
            retain_log_ms: 0,
            coalesce_runners,
            read_rounds: true,
        };
        let cluster = runtime
            .block_on(LocalCluster::start(&config))
            .expect("local cluster");
        let address = cluster.proxy_address;
        Running {
            runtime,
            cluster: Some(cluster),
            address,
        }
    }

    fn cluster(&self) -> &LocalCluster {
        self.cluster.as_ref().expect("running")
    }

    fn url(&self) -> String {
        format!("redis://{}/", self.address)
    }

    fn connection(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("client");
        // Groups elect their first leaders just after start: the first commands may see
        // TRYAGAIN, so wait until a write goes through.
        let mut connection = client.get_connection().expect("connect to proxy");
        for attempt in 0.. {
            match redis::cmd("SET")
                .arg("__warmup")
                .arg("1")
                .query::<String>(&mut connection)
            {
                Ok(_) => break,
                Err(error) if attempt < 50 => {
                    let _ = error;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(error) => panic!("cluster never accepted a write: {error}"),
            }
        }
        let _: i64 = connection.del("__warmup").expect("del warmup");
        connection
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            let _data = self.runtime.block_on(cluster.stop());
        }
    }
}

/// A whole iteration of `command` (`SCAN`, or `HSCAN key` and the like) in steps of `COUNT
/// count`: every item the steps returned, and how many steps it took. No step returns more
/// than `count` elements (`width` items each: 2 for a field and its value).
fn scan_in_steps(
    c: &mut redis::Connection,
    command: &[&str],
    count: usize,
    width: usize,
) -> (Vec<String>, usize) {
    let mut cursor = 0u64;
    let mut items = Vec::new();
    for steps in 1..=100_000 {
        let mut step = redis::cmd(command[0]);
        step.arg(&command[1..]).arg(cursor).arg("COUNT").arg(count);
        let (next, found): (u64, Vec<String>) = step.query(c).expect("a scan step");
        assert!(found.len() <= count * width, "{command:?}: {found:?}");
        items.extend(found);
        if next == 0 {
            return (items, steps);
        }
        cursor = next;
    }
    panic!("{command:?} did not end in 100,000 steps");
}

#[test]
fn strings_hashes_and_keyspace_commands_through_the_proxy() {
    let running = Running::start(8, None);
    let mut c = running.connection();

    let pong: String = redis::cmd("PING").query(&mut c).expect("ping");
    assert_eq!(pong, "PONG");
    let echoed: String = redis::cmd("ECHO").arg("hi").query(&mut c).expect("echo");
    assert_eq!(echoed, "hi");

    // Strings.
    let () = c.set("greeting", "hello").expect("set");
    assert_eq!(c.get::<_, String>("greeting").expect("get"), "hello");
    assert_eq!(c.get::<_, Option<String>>("missing").expect("get"), None);
    let nx: Option<String> = redis::cmd("SET")
        .arg("greeting")
        .arg("other")
        .arg("NX")
        .query(&mut c)
        .expect("set nx");
    assert_eq!(nx, None, "SET NX on an existing key does nothing");
    let xx: Option<String> = redis::cmd("SET")
        .arg("absent")
        .arg("v")
        .arg("XX")
        .query(&mut c)
        .expect("set xx");
    assert_eq!(xx, None);
    let () = redis::cmd("SET")
        .arg("temp")
        .arg("v")
        .arg("EX")
        .arg(100)
        .query(&mut c)
        .expect("set ex");
    let ttl: i64 = c.ttl("temp").expect("ttl");
    assert!((1..=100).contains(&ttl), "ttl {ttl}");
    assert_eq!(c.incr::<_, _, i64>("counter", 1).expect("incr"), 1);
    assert_eq!(c.incr::<_, _, i64>("counter", 41).expect("incrby"), 42);

    // Multi-key commands spanning slot groups are split and merged.
    let keys: Vec<String> = (0..20).map(|i| format!("multi-{i}")).collect();
    let pairs: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), format!("v-{k}"))).collect();
    let () = c.mset(&pairs).expect("mset");
    let mut asked = keys.clone();
    asked.insert(3, "nobody".into());
    let values: Vec<Option<String>> = c.mget(&asked).expect("mget");
    assert_eq!(values.len(), 21);
    assert_eq!(values[3], None);
    assert_eq!(values[0].as_deref(), Some("v-multi-0"));
    assert_eq!(values[20].as_deref(), Some("v-multi-19"));
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&keys)
        .arg("nobody")
        .query(&mut c)
        .expect("exists");
    assert_eq!(exists, 20);
    let deleted: i64 = c.del(&keys[..10]).expect("del");
    assert_eq!(deleted, 10);

    // Hashes.
    let added: i64 = redis::cmd("HSET")
        .arg("user:1")
        .arg("name")
        .arg("ada")
        .arg("visits")
        .arg("1")
        .query(&mut c)
        .expect("hset");
    assert_eq!(added, 2);
    assert_eq!(
        c.hget::<_, _, String>("user:1", "name").expect("hget"),
        "ada"
    );
    assert_eq!(
        c.hincr::<_, _, _, i64>("user:1", "visits", 5)
            .expect("hincrby"),
        6
    );
    assert_eq!(c.hlen::<_, i64>("user:1").expect("hlen"), 2);
    assert!(c.hexists::<_, _, bool>("user:1", "name").expect("hexists"));
    let all: std::collections::BTreeMap<String, String> = c.hgetall("user:1").expect("hgetall");
    assert_eq!(all.get("visits").map(String::as_str), Some("6"));
    let kind: String = redis::cmd("TYPE")
        .arg("user:1")
        .query(&mut c)
        .expect("type");
    assert_eq!(kind, "hash");
    let wrong = c.get::<_, String>("user:1").expect_err("GET on a hash");
    assert!(wrong.to_string().contains("WRONGTYPE"), "{wrong}");

    // Keyspace commands fan out over every group.
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).expect("dbsize");
    assert_eq!(
        size,
        1 + 1 + 10 + 1 + 1,
        "greeting, temp, counter, 10 multi-*, user:1"
    );
    let mut found: Vec<String> = redis::cmd("KEYS")
        .arg("multi-*")
        .query(&mut c)
        .expect("keys");
    found.sort();
    assert_eq!(found.len(), 10);
    let mut scanned: Vec<String> = c
        .scan_match::<_, String>("multi-*")
        .expect("scan")
        .collect::<Result<_, _>>()
        .expect("scan items");
    scanned.sort();
    assert_eq!(scanned, found, "SCAN must visit the same keys as KEYS");
    // `SCAN ... TYPE`: only the hash, though every key matches the pattern.
    let mut cursor = 0u64;
    let mut hashes: Vec<String> = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("TYPE")
            .arg("hash")
            .query(&mut c)
            .expect("scan type");
        hashes.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(hashes, ["user:1"]);
    // `SCAN … COUNT 1`: each step looks at one key of one group, so no step returns more than
    // one, and the whole iteration sees every key once.
    let (mut every, steps) = scan_in_steps(&mut c, &["SCAN"], 1, 1);
    every.sort();
    assert_eq!(every.len(), size as usize, "{every:?}");
    assert!(steps as i64 > size, "{steps} steps for {size} keys");
    // A count past the database: every group in one call, which ends the iteration.
    let (next, mut all): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(1000)
        .query(&mut c)
        .expect("scan all");
    all.sort();
    assert_eq!((next, all), (0, every.clone()));
    // A step may be repeated (its cursor is not used up); a cursor never handed out is refused.
    let (first, _): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(1)
        .query(&mut c)
        .expect("scan");
    let once: (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(first)
        .query(&mut c)
        .expect("scan again");
    let twice: (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(first)
        .query(&mut c)
        .expect("scan again");
    assert_eq!(once.1, twice.1);
    let invalid = redis::cmd("SCAN")
        .arg(12345)
        .query::<Value>(&mut c)
        .expect_err("unknown cursor");
    assert!(invalid.to_string().contains("invalid cursor"), "{invalid}");
    let zero = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(0)
        .query::<Value>(&mut c)
        .expect_err("COUNT 0");
    assert!(zero.to_string().contains("syntax error"), "{zero}");
    // An option without its value is a syntax error, as from Redis (not an arity error).
    let dangling = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .query::<Value>(&mut c)
        .expect_err("COUNT without a value");
    assert!(dangling.to_string().contains("syntax error"), "{dangling}");
    // The empty string is a key: a step that stops at it goes on past it (it was once the
    // mark for "from the start", and a `COUNT 1` iteration came back to it forever).
    let _: () = c.set("", "empty").expect("set the empty key");
    let (mut with_empty, _) = scan_in_steps(&mut c, &["SCAN"], 1, 1);
    with_empty.sort();
    let mut expected = vec![String::new()];
    expected.extend(every.iter().cloned());
    assert_eq!(with_empty, expected);
    let _: i64 = c.del("").expect("del the empty key");

    // HSCAN, SSCAN, ZSCAN step through a collection from past the last element a step looked
    // at: no step looks at more than COUNT elements, and every element comes once.
    let fields: Vec<(String, String)> = (0..300)
        .map(|i| (format!("f{i:03}"), format!("v{i}")))
        .collect();
    let _: () = c.hset_multiple("{big}h", &fields).expect("hset");
    let members: Vec<String> = (0..300).map(|i| format!("m{i:03}")).collect();
    let _: i64 = c.sadd("{big}s", &members).expect("sadd");
    let scored: Vec<(i64, String)> = (0..300).map(|i| (i, format!("m{i:03}"))).collect();
    let _: i64 = c.zadd_multiple("{big}z", &scored).expect("zadd");
    for (command, key, width) in [
        ("HSCAN", "{big}h", 2),
        ("SSCAN", "{big}s", 1),
        ("ZSCAN", "{big}z", 2),
    ] {
        let (items, steps) = scan_in_steps(&mut c, &[command, key], 7, width);
        assert_eq!(items.len(), 300 * width, "{command}");
        assert!(steps > 300 / 7, "{command}: {steps} steps");
        let mut elements: Vec<&String> = items.iter().step_by(width).collect();
        elements.dedup();
        assert_eq!(elements.len(), 300, "{command}: each element once");
    }
    let (next, pairs): (u64, Vec<String>) = redis::cmd("ZSCAN")
        .arg("{big}z")
        .arg(0)
        .arg("MATCH")
        .arg("m29?")
        .arg("COUNT")
        .arg(1000)
        .query(&mut c)
        .expect("zscan");
    assert_eq!(next, 0);
    assert_eq!(pairs[..2], ["m290".to_string(), "290".to_string()]);
    // A small collection comes in one step whatever the COUNT, as from Redis.
    let (next, small): (u64, Vec<String>) = redis::cmd("HSCAN")
        .arg("user:1")
        .arg(0)
        .arg("COUNT")
        .arg(1)
        .query(&mut c)
        .expect("hscan small");
    assert_eq!((next, small.len()), (0, 4));
    // A cursor of another key's iteration is refused; a missing key answers an empty scan
    // whatever its options, as Redis reads them only once it found the key; another type is
    // WRONGTYPE.
    let (cursor, _): (u64, Vec<String>) = redis::cmd("SSCAN")
        .arg("{big}s")
        .arg(0)
        .query(&mut c)
        .expect("sscan");
    let other = redis::cmd("SSCAN")
        .arg("{big}t")
        .arg(cursor)
        .query::<Value>(&mut c)
        .expect_err("another key's cursor");
    assert!(other.to_string().contains("invalid cursor"), "{other}");
    let (next, none): (u64, Vec<String>) = redis::cmd("HSCAN")
        .arg("nothing-here")
        .arg(0)
        .arg("COUNT")
        .arg(0)
        .query(&mut c)
        .expect("a missing key");
    assert_eq!((next, none.len()), (0, 0));
    let wrong = redis::cmd("HSCAN")
        .arg("{big}s")
        .arg(0)
        .arg("COUNT")
        .arg(0)
        .query::<Value>(&mut c)
        .expect_err("a set");
    assert!(wrong.to_string().contains("WRONGTYPE"), "{wrong}");
    // Inside MULTI a step is answered in its place at EXEC.
    let (in_multi,): ((u64, Vec<String>),) = redis::pipe()
        .atomic()
        .cmd("SSCAN")
        .arg("{big}s")
        .arg(0)
        .arg("COUNT")
        .arg(1000)
        .query(&mut c)
        .expect("sscan in multi");
    assert_eq!((in_multi.0, in_multi.1.len()), (0, 300));
    let _: i64 = c.del(&["{big}h", "{big}s", "{big}z"]).expect("del");

    // Server commands clients use.
    let info: String = redis::cmd("INFO").query(&mut c).expect("info");
    assert!(info.contains("redis_version:"), "{info}");
    let (seconds, _micros): (String, String) = redis::cmd("TIME").query(&mut c).expect("time");
    assert!(seconds.parse::<u64>().expect("seconds") > 1_600_000_000);

    // Errors keep the connection usable.
    let unknown = redis::cmd("NOSUCHCOMMAND")
        .arg("x")
        .query::<Value>(&mut c)
        .expect_err("unknown");
    assert!(unknown.to_string().contains("unknown command"), "{unknown}");
    let arity = redis::cmd("GET").query::<Value>(&mut c).expect_err("arity");
    assert!(
        arity.to_string().contains("wrong number of arguments"),
        "{arity}"
    );
    assert_eq!(
        c.get::<_, String>("greeting").expect("still serving"),
        "hello"
    );

    // Pipelines come back in order.
    let (a, b, n): (String, Option<String>, i64) = redis::pipe()
        .set("p1", "one")
        .ignore()
        .get("p1")
        .get("nobody")
        .incr("counter", 1)
        .query(&mut c)
        .expect("pipeline");
    assert_eq!((a.as_str(), b, n), ("one", None, 43));

    let () = redis::cmd("FLUSHDB").query(&mut c).expect("flushdb");
    let size: i64 = redis::cmd("DBSIZE").query(&mut c).expect("dbsize");
    assert_eq!(size, 0);
}

#[test]
// A real-process test: it waits for a retry in real time.
#[allow(clippy::disallowed_methods)]
fn values_over_the_old_64_mib_limit_go_through_the_proxy() {
    let running = Running::start(4, None);
    let mut c = running.connection();
    // 100 MiB: before messages were fragmented this was refused at 64 MiB (and the proxy's
    // default bulk limit was 64 MiB); now Redis's 512 MiB is the default.
    let value: Vec<u8> = (0..100usize << 20).map(|i| (i % 253) as u8).collect();
    let () = c.set("large", value.as_slice()).expect("set 100 MiB");
    let back: Vec<u8> = c.get("large").expect("get 100 MiB");
    assert!(back == value, "the value came back intact");
    let length: usize = c.append("large", "tail").expect("append");
    assert_eq!(length, value.len() + 4);
    // Small commands are served after it. Right after a 100 MiB write every replica is still
    // syncing it (one journal and one fsync per node, shared by all its groups), and on a
    // loaded machine a small write to another group on the same node can pass the leader's
    // 2 s limit: the proxy then answers TRYAGAIN, Redis Cluster's "retry later", as a
    // cluster client would be told. The cluster must serve it within a few retries.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match c.set::<_, _, ()>("small", "s") {
            Ok(()) => break,
            Err(error)
                if error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain)
                    && std::time::Instant::now() < deadline =>
            {
                eprintln!("set small: {error}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(error) => panic!("set small: {error}"),
        }
    }
    assert_eq!(c.get::<_, String>("small").expect("get small"), "s");
}

#[test]
fn resp3_hello_and_auth() {
    let running = Running::start(4, Some("sesame"));
    let client = redis::Client::open(format!("redis://{}/", running.address)).expect("client");
    let refused = client
        .get_connection()
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("NOAUTH")),
        "unauthenticated PING must be refused: {refused:?}"
    );
    let url = format!("redis://:sesame@{}/?protocol=resp3", running.address);
    let mut c = redis::Client::open(url)
        .expect("client")
        .get_connection()
        .expect("authenticated resp3 connection");
    let pong: String = redis::cmd("PING").query(&mut c).expect("ping");
    assert_eq!(pong, "PONG");
    let hello: Value = redis::cmd("HELLO").arg(3).query(&mut c).expect("hello");
    assert!(
        matches!(hello, Value::Map(_)),
        "HELLO 3 answers a map: {hello:?}"
    );
}

#[test]
fn redis_cli_talks_to_the_proxy() {
    let running = Running::start(4, None);
    drop(running.connection());
    let port = running.address.port().to_string();
    let cli = |args: &[&str]| -> String {
        let output = std::process::Command::new("redis-cli")
            .args(["-p", &port])
            .args(args)
            .output()
            .expect("redis-cli must be installed (apt-get install redis-tools; .ci/run does)");
        assert!(output.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(cli(&["ping"]), "PONG");
    assert_eq!(cli(&["set", "cli-key", "cli-value"]), "OK");
    assert_eq!(cli(&["get", "cli-key"]), "cli-value");
    assert_eq!(cli(&["-3", "hset", "h", "f", "v"]), "1");
    assert!(cli(&["info", "server"]).contains("redis_version"));
    // In cluster mode too: one master holding every slot, where the client connected.
    assert_eq!(cli(&["-c", "get", "cli-key"]), "cli-value");
    let slots = cli(&["cluster", "slots"]);
    assert!(
        slots.starts_with(&format!("0\n16383\n127.0.0.1\n{port}\n")),
        "{slots}"
    );
    let check = std::process::Command::new("redis-cli")
        .args(["--cluster", "check", &running.address.to_string()])
        .output()
        .expect("redis-cli");
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{report}");
    assert!(report.contains("[OK] All 16384 slots covered."), "{report}");
    // COMMAND describes the commands: `GET` with its key at position 1.
    assert_eq!(
        cli(&["command", "info", "get"]),
        "get\n2\nreadonly\nfast\n1\n1\n1\n@read\n@string\n@fast"
    );
    assert_eq!(
        cli(&["command", "getkeys", "mset", "a", "1", "b", "2"]),
        "a\nb"
    );
}

#[test]
// A real-process test: it times its phases in real time.
#[allow(clippy::disallowed_methods)]
fn a_restart_from_the_same_directory_keeps_data_and_routing() {
    let dir = tempfile::tempdir().expect("dir");
    let started = std::time::Instant::now();
    let running = Running::start_in(Some(dir.path()), 4, None);
    eprintln!("fresh start ready after {:?}", started.elapsed());
    let (groups, epoch) = (
        running.cluster().groups(),
        running.cluster().routing_epoch(),
    );
    assert_eq!(groups, 4);
    assert!(epoch >= 1, "the center wrote a routing table");
    let mut c = running.connection();
    let pairs: Vec<(String, String)> = (0..50)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    let () = c.mset(&pairs).expect("mset");
    drop(c);
    drop(running);

    // Same directory, a different --groups: the center keeps its table and does not
    // bootstrap again; the nodes reopen their groups.
    let started = std::time::Instant::now();
    let running = Running::start_in(Some(dir.path()), 16, None);
    eprintln!("restart ready after {:?}", started.elapsed());
    assert_eq!(
        running.cluster().groups(),
        groups,
        "the table survived the restart"
    );
    assert!(running.cluster().routing_epoch() >= epoch);
    let mut c = running.connection();
    let keys: Vec<&String> = pairs.iter().map(|(k, _)| k).collect();
    let values: Vec<Option<String>> = c.mget(&keys).expect("mget");
    let expected: Vec<Option<String>> = pairs.iter().map(|(_, v)| Some(v.clone())).collect();
    assert_eq!(values, expected);
    let () = c
        .set("after-restart", "yes")
        .expect("a write after the restart");
}

#[test]
// A test on real processes: a second client pushes from its own thread while the first blocks.
#[allow(clippy::disallowed_methods)]
fn collections_transactions_and_blocking_pops_through_the_proxy() {
    let running = Running::start(4, None);
    let mut c = running.connection();
    let cmd = |name: &str| redis::cmd(name);

    // Lists, sets and sorted sets, one command each way.
    let pushed: i64 = cmd("RPUSH")
        .arg("l{t}")
        .arg(&["a", "b", "c"])
        .query(&mut c)
        .expect("rpush");
    assert_eq!(pushed, 3);
    let range: Vec<String> = cmd("LRANGE")
        .arg("l{t}")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .expect("lrange");
    assert_eq!(range, ["a", "b", "c"]);
    let added: i64 = cmd("SADD")
        .arg("s{t}")
        .arg(&["x", "y"])
        .query(&mut c)
        .expect("sadd");
    assert_eq!(added, 2);
    let scores: Vec<String> = cmd("ZADD")
        .arg("z{t}")
        .arg(&["1.5", "m", "0.1", "n"])
        .query::<i64>(&mut c)
        .and_then(|_| {
            cmd("ZRANGE")
                .arg("z{t}")
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(&mut c)
        })
        .expect("zadd, zrange");
    assert_eq!(scores, ["n", "0.10000000000000001", "m", "1.5"]);

    // MULTI/EXEC in one group applies as one entry and answers each command.
    let replies: (i64, i64, Vec<String>) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("n{t}")
        .cmd("LPUSH")
        .arg("l{t}")
        .arg("z")
        .cmd("LRANGE")
        .arg("l{t}")
        .arg(0)
        .arg(0)
        .query(&mut c)
        .expect("exec");
    assert_eq!(replies, (1, 4, vec!["z".to_string()]));

    // A watched key changed by another client: EXEC answers nil and nothing runs.
    let mut other = running.connection();
    let () = cmd("WATCH").arg("n{t}").query(&mut c).expect("watch");
    let _: i64 = cmd("INCR")
        .arg("n{t}")
        .query(&mut other)
        .expect("incr elsewhere");
    let () = cmd("MULTI").query(&mut c).expect("multi");
    let queued: String = cmd("SET")
        .arg("n{t}")
        .arg("0")
        .query(&mut c)
        .expect("queued");
    assert_eq!(queued, "QUEUED");
    let aborted: Option<Vec<String>> = cmd("EXEC").query(&mut c).expect("exec");
    assert_eq!(aborted, None);
    assert_eq!(c.get::<_, i64>("n{t}").expect("get"), 2);

    // Keys of different groups cannot run together.
    let crossslot = cmd("RENAME").arg("a").arg("b").query::<String>(&mut c);
    assert!(
        crossslot
            .as_ref()
            .is_err_and(|e| e.to_string().contains("same slot")
                || e.to_string().contains("same slot")
                || e.to_string().contains("no such key")),
        "{crossslot:?}"
    );
    let keys_in_groups = (0..64).map(|i| format!("k{i}")).collect::<Vec<_>>();
    let spread = cmd("SINTER")
        .arg(&keys_in_groups)
        .query::<Vec<String>>(&mut c);
    assert!(
        spread
            .as_ref()
            .is_err_and(|e| e.to_string().contains("same slot")),
        "{spread:?}"
    );

    // A blocked BLPOP is woken by a push from another connection.
    let address = running.address;
    let pusher = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let client = redis::Client::open(format!("redis://{address}/")).expect("client");
        let mut c = client.get_connection().expect("connection");
        let _: i64 = redis::cmd("RPUSH")
            .arg("q")
            .arg("job")
            .query(&mut c)
            .expect("push");
    });
    let popped: (String, String) = cmd("BLPOP").arg("q").arg(5).query(&mut c).expect("blpop");
    assert_eq!(popped, ("q".to_string(), "job".to_string()));
    pusher.join().expect("pusher");
    // And one that waits in vain times out with the null array.
    let timed_out: Option<(String, String)> = cmd("BLPOP")
        .arg("q")
        .arg("0.2")
        .query(&mut c)
        .expect("blpop timeout");
    assert_eq!(timed_out, None);

    // Replies to commands pipelined before a blocking one arrive before it blocks; a client
    // that closes while blocked leaves `blocked_clients` (and stops its polling) at once.
    let blocked = |c: &mut redis::Connection| -> i64 {
        let info: String = cmd("INFO").arg("clients").query(c).expect("info");
        info.lines()
            .find_map(|line| line.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("blocked_clients")
    };
    let mut raw = std::net::TcpStream::connect(running.address).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    std::io::Write::write_all(
        &mut raw,
        b"*3\r\n$5\r\nLPUSH\r\n$5\r\nother\r\n$1\r\nx\r\n*3\r\n$5\r\nBLPOP\r\n$5\r\nempty\r\n$1\r\n0\r\n",
    )
    .expect("pipeline");
    let mut first = [0u8; 4];
    std::io::Read::read_exact(&mut raw, &mut first).expect("the LPUSH reply before the block");
    assert_eq!(&first, b":1\r\n");
    let until = |want: i64, c: &mut redis::Connection| {
        for _ in 0..200 {
            if blocked(c) == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("blocked_clients never reached {want}");
    };
    until(1, &mut c);
    drop(raw);
    until(0, &mut c);

    // Linked BLMOVEs: a push through the proxy serves the chain of clients blocked behind it
    // before the pusher's reply, so the pusher's next command sees the element at the end.
    let blmove = |from: &'static str, to: &'static str| {
        let address = running.address;
        std::thread::spawn(move || {
            let client = redis::Client::open(format!("redis://{address}/")).expect("client");
            let mut c = client.get_connection().expect("connection");
            redis::cmd("BLMOVE")
                .arg(from)
                .arg(to)
                .arg("RIGHT")
                .arg("LEFT")
                .arg(10)
                .query::<Option<String>>(&mut c)
                .expect("blmove")
        })
    };
    let first = blmove("l1{c}", "l2{c}");
    until(1, &mut c);
    let second = blmove("l2{c}", "l3{c}");
    until(2, &mut c);
    let _: i64 = cmd("RPUSH")
        .arg("l1{c}")
        .arg("foo")
        .query(&mut c)
        .expect("rpush");
    let ends: (Vec<String>, Vec<String>, Vec<String>) = redis::pipe()
        .cmd("LRANGE")
        .arg("l1{c}")
        .arg(0)
        .arg(-1)
        .cmd("LRANGE")
        .arg("l2{c}")
        .arg(0)
        .arg(-1)
        .cmd("LRANGE")
        .arg("l3{c}")
        .arg(0)
        .arg(-1)
        .query(&mut c)
        .expect("lranges");
    assert_eq!(ends, (vec![], vec![], vec!["foo".to_string()]));
    assert_eq!(first.join().expect("first"), Some("foo".to_string()));
    assert_eq!(second.join().expect("second"), Some("foo".to_string()));

    // CLIENT UNBLOCK ends a block with the timeout's answer or an error.
    let (id_sender, id_receiver) = std::sync::mpsc::channel();
    let address = running.address;
    let blocked_one = std::thread::spawn(move || {
        let client = redis::Client::open(format!("redis://{address}/")).expect("client");
        let mut c = client.get_connection().expect("connection");
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query(&mut c)
            .expect("client id");
        id_sender.send(id).expect("send id");
        redis::cmd("BLPOP")
            .arg("never{c}")
            .arg(0)
            .query::<Option<(String, String)>>(&mut c)
            .map_err(|e| e.to_string())
    });
    let id = id_receiver.recv().expect("id");
    until(1, &mut c);
    let unblocked: i64 = cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(id)
        .arg("ERROR")
        .query(&mut c)
        .expect("client unblock");
    assert_eq!(unblocked, 1);
    let answer = blocked_one.join().expect("blocked client");
    assert!(
        answer.as_ref().is_err_and(|e| e.contains("UNBLOCKED")),
        "{answer:?}"
    );
    let again: i64 = cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(id)
        .query(&mut c)
        .expect("unblock");
    assert_eq!(again, 0, "a client no longer blocked");
}

/// The proxy's `larder_proxy_sessions_resumed_total` from the cluster's metrics registry.
/// Locks with fencing tokens through the proxy: a holder paused past its lease (here: asleep)
/// believes it still holds the lock while another has taken it; its fenced write is refused,
/// the new holder's runs.
#[test]
// A test on real processes: the paused holder sleeps past its lease in real time.
#[allow(clippy::disallowed_methods)]
fn a_holder_paused_past_its_lease_is_fenced_off() {
    let running = Running::start(4, None);
    let mut a = running.connection();
    let mut b = running.connection();
    let acquire = |connection: &mut redis::Connection, holder: &str, lease_ms: u64| {
        redis::cmd("LOCK.ACQUIRE")
            .arg("{job}lock")
            .arg(holder)
            .arg(lease_ms)
            .query::<Option<i64>>(connection)
            .expect("lock.acquire")
    };
    // MULTI, LOCK.FENCE, SET, EXEC: the SET's reply, or the text of the refusal (EXEC answers
    // each command with a `FENCED` error, which the client library reports together).
    let fenced_set = |connection: &mut redis::Connection, token: i64, value: &str| {
        redis::pipe()
            .atomic()
            .cmd("LOCK.FENCE")
            .arg("{job}lock")
            .arg(token)
            .cmd("SET")
            .arg("{job}data")
            .arg(value)
            .query::<(String, String)>(connection)
            .map(|(_, set)| set)
            .map_err(|error| error.to_string())
    };
    let ta = acquire(&mut a, "a", 800).expect("a takes the free lock");
    assert_eq!(
        acquire(&mut b, "b", 800),
        None,
        "b must wait while a holds it"
    );
    // A retried acquisition by the holder answers the same token.
    assert_eq!(acquire(&mut a, "a", 800), Some(ta));
    assert_eq!(fenced_set(&mut a, ta, "from a"), Ok("OK".to_string()));

    // a is paused past its lease; b takes the lock with a larger token.
    std::thread::sleep(Duration::from_millis(1_200));
    let tb = acquire(&mut b, "b", 10_000).expect("b takes the lock once a's lease ended");
    assert!(tb > ta, "token {tb} after {ta}");
    // a wakes up and writes as if it still held the lock: refused, nothing written.
    let text = fenced_set(&mut a, ta, "stale").expect_err("the stale write ran");
    assert!(
        text.contains(&format!(
            "\"FENCED\": lock '{{job}}lock' is held with token {tb}, not {ta}"
        )),
        "{text}"
    );
    assert!(text.contains("\"FENCED\": not run"), "{text}");
    // Nor does a command of the transaction that names no key (answered by the proxy itself):
    // EXEC's array holds a `FENCED` error for each (read raw: a client library reports only
    // the first error of the array).
    let mut raw = std::net::TcpStream::connect(running.address).expect("connect");
    raw.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let fence = format!("LOCK.FENCE {{job}}lock {ta}");
    std::io::Write::write_all(
        &mut raw,
        format!("MULTI\r\n{fence}\r\nECHO hello\r\nEXEC\r\n").as_bytes(),
    )
    .expect("send");
    let mut replies = Vec::new();
    let mut buffer = [0u8; 4096];
    while !replies.ends_with(b"transaction failed\r\n") {
        let read = std::io::Read::read(&mut raw, &mut buffer).expect("a reply to EXEC");
        assert!(read > 0, "closed: {}", String::from_utf8_lossy(&replies));
        replies.extend_from_slice(&buffer[..read]);
    }
    let replies = String::from_utf8_lossy(&replies);
    assert_eq!(
        replies,
        format!(
            "+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n-FENCED lock '{{job}}lock' is held with token \
             {tb}, not {ta}\r\n-FENCED not run: a fence of this transaction failed\r\n"
        )
    );
    let data: String = a.get("{job}data").expect("get");
    assert_eq!(data, "from a");
    assert_eq!(fenced_set(&mut b, tb, "from b"), Ok("OK".to_string()));

    // What a client sees of the lock; a's old token releases nothing, b's does.
    let info: (Option<String>, i64, i64) = redis::cmd("LOCK.INFO")
        .arg("{job}lock")
        .query(&mut a)
        .expect("lock.info");
    assert_eq!((info.0.as_deref(), info.1), (Some("b"), tb));
    assert!(info.2 > 0 && info.2 <= 10_000, "{info:?}");
    let kind: String = redis::cmd("TYPE")
        .arg("{job}lock")
        .query(&mut a)
        .expect("type");
    assert_eq!(kind, "lock");
    let release = |connection: &mut redis::Connection, token: i64| {
        redis::cmd("LOCK.RELEASE")
            .arg("{job}lock")
            .arg(token)
            .query::<i64>(connection)
            .expect("lock.release")
    };
    assert_eq!(release(&mut a, ta), 0);
    assert_eq!(release(&mut b, tb), 1);
    let text = fenced_set(&mut b, tb, "released").expect_err("a released lock fenced");
    assert!(text.contains("lock '{job}lock' is not held"), "{text}");
    // Released, its counter kept: the next grant is larger still.
    let tc = acquire(&mut a, "a", 800).expect("a takes the released lock");
    assert!(tc > tb, "token {tc} after {tb}");

    // A fence and a write of keys in different slots cannot be one entry.
    let queued: Vec<String> = [
        redis::cmd("MULTI"),
        redis::cmd("LOCK.FENCE").arg("{job}lock").arg(tc).clone(),
        redis::cmd("SET").arg("elsewhere").arg("x").clone(),
    ]
    .iter()
    .map(|command| command.query(&mut a).expect("queued"))
    .collect();
    assert_eq!(queued, ["OK", "QUEUED", "QUEUED"]);
    let crossed = redis::cmd("EXEC")
        .query::<Value>(&mut a)
        .expect_err("a cross-slot fenced transaction ran");
    assert_eq!(crossed.code(), Some("CROSSSLOT"), "{crossed}");
    // Bad arguments get Redis-style errors.
    let bad = redis::cmd("LOCK.ACQUIRE")
        .arg("{job}lock")
        .arg("a")
        .arg(0)
        .query::<Option<i64>>(&mut a)
        .expect_err("a zero lease");
    assert!(bad.to_string().contains("invalid lease"), "{bad}");
}

fn sessions_resumed(running: &Running) -> u64 {
    let page = running.cluster().scrape.render();
    let line = page
        .lines()
        .find(|line| line.starts_with("larder_proxy_sessions_resumed_total"))
        .unwrap_or_else(|| panic!("no sessions_resumed counter in:\n{page}"));
    line.rsplit(' ')
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("unreadable sample: {line}"))
}

/// A connection closed after writing leaves its group session to the next one (the proxy's
/// `SessionPool`), but only a write takes it: connections that only read (here, three in a
/// row) leave it in the pool, and the next connection that writes carries it on instead of
/// registering one of its own. With coalescing on, a connection's single writes go in the
/// coalescer's batches under the runner's session, so a pooled session is carried on only by
/// pipelined writes: the test runs without it.
#[test]
fn a_connection_that_only_reads_takes_no_pooled_session() {
    let running = Running::start_uncoalesced(1);
    let client = redis::Client::open(running.url()).expect("client");
    {
        // Writes (the warm-up's SET and DEL), then closes: its session is parked.
        let mut writer = running.connection();
        let _: () = writer.set("k", "v").expect("set");
    }
    // The proxy parks the session once it has seen the close.
    std::thread::sleep(Duration::from_millis(500));
    let before = sessions_resumed(&running);
    for _ in 0..3 {
        let mut reader = client.get_connection().expect("connect");
        let value: String = reader.get("k").expect("get");
        assert_eq!(value, "v");
        // A session taken by this read would have been counted before its answer.
        assert_eq!(sessions_resumed(&running), before, "a read took a session");
    }
    // The next write carries a parked session on. (Should the first writer's session not be
    // parked yet on a slow machine, the second try takes the one the first try left.)
    for attempt in 0.. {
        let mut writer = client.get_connection().expect("connect");
        let _: () = writer.set("k", "w").expect("set");
        if sessions_resumed(&running) > before {
            break;
        }
        assert!(attempt < 20, "no write ever carried a parked session on");
        drop(writer);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A redis-server on a free loopback port, without persistence (its RDB file is written only
/// when a test asks it to `SAVE`), stopped on drop.
struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        Self::start_in(None)
    }

    /// One whose `SAVE` writes `dump.rdb` in `dir` (the directory is protected configuration
    /// in Redis 7: it cannot be set once the server runs).
    // A real process on a real port, beside the cluster: no simulation here.
    #[allow(clippy::disallowed_methods)]
    fn start_in(dir: Option<&std::path::Path>) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(
                dir.map(|dir| ["--dir".into(), dir.as_os_str().to_owned()])
                    .into_iter()
                    .flatten(),
            )
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server; .ci/run does)");
        let server = RedisServer { child, port };
        for _ in 0..100 {
            if let Ok(mut connection) = server.try_connection()
                && redis::cmd("PING").query::<String>(&mut connection).is_ok()
            {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not start on port {port}");
    }

    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?.get_connection()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `args` on `connection`, whose answer must not be an error.
fn run_command(connection: &mut redis::Connection, args: &[&str]) -> redis::Value {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query::<redis::Value>(connection)
        .unwrap_or_else(|error| panic!("{args:?}: {error}"))
}

/// A key's type and contents as a client reads them, in an order neither server's encoding
/// decides (members, fields and their values sorted; a sorted set's scores as numbers).
fn contents(connection: &mut redis::Connection, key: &str) -> (String, Vec<Vec<u8>>) {
    let kind: String = redis::cmd("TYPE").arg(key).query(connection).expect("TYPE");
    let query = |connection: &mut redis::Connection, args: &[&str]| -> Vec<Vec<u8>> {
        redis::cmd(args[0])
            .arg(&args[1..])
            .query(connection)
            .unwrap_or_else(|error| panic!("{args:?}: {error}"))
    };
    let mut items = match kind.as_str() {
        "string" => vec![
            redis::cmd("GET")
                .arg(key)
                .query::<Vec<u8>>(connection)
                .expect("GET"),
        ],
        "list" => return (kind, query(connection, &["LRANGE", key, "0", "-1"])),
        "set" => query(connection, &["SMEMBERS", key]),
        "hash" | "zset" => {
            let flat = if kind == "hash" {
                query(connection, &["HGETALL", key])
            } else {
                query(connection, &["ZRANGE", key, "0", "-1", "WITHSCORES"])
            };
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = flat
                .chunks(2)
                .map(|pair| {
                    let second = if kind == "zset" {
                        let score: f64 = String::from_utf8_lossy(&pair[1]).parse().expect("score");
                        score.to_bits().to_le_bytes().to_vec()
                    } else {
                        pair[1].clone()
                    };
                    (pair[0].clone(), second)
                })
                .collect();
            pairs.sort();
            pairs.into_iter().flat_map(|(a, b)| [a, b]).collect()
        }
        "none" => Vec::new(),
        other => panic!("type {other}"),
    };
    items.sort();
    (kind, items)
}

/// Keys move between a real redis-server (7.0.15 on this machine and in CI) and Larder in
/// Redis's own payload format, both ways: redis-server's `MIGRATE`, which sends `RESTORE`
/// with its own `DUMP` payloads (listpacks, intsets, quicklists, LZF-compressed strings), into
/// the proxy; then each key's `DUMP` from Larder restored on redis-server.
#[test]
fn keys_move_between_redis_server_and_larder_with_migrate_dump_and_restore() {
    let redis = RedisServer::start();
    let running = Running::start(4, None);
    let mut source = redis.try_connection().expect("redis-server");
    let mut larder = running.connection();
    let run = run_command;
    // Every encoding redis-server 7.0 has for the five types Larder has.
    let long_text = "larder ".repeat(200);
    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    run(&mut source, &["SET", "s:int", "-12345"]);
    run(&mut source, &["SET", "s:short", "hello"]);
    run(&mut source, &["SET", "s:compressible", &long_text]);
    redis::cmd("SET")
        .arg("s:binary")
        .arg(&binary)
        .query::<()>(&mut source)
        .expect("SET");
    run(&mut source, &["RPUSH", "l:small", "a", "-1", "300000", "b"]);
    for chunk in 0..10 {
        let items: Vec<String> = (0..100)
            .map(|i| format!("item-{}", chunk * 100 + i))
            .collect();
        let mut args = vec!["RPUSH", "l:long"];
        args.extend(items.iter().map(String::as_str));
        run(&mut source, &args);
    }
    run(
        &mut source,
        &["SADD", "set:ints", "1", "-2", "70000", "9000000000"],
    );
    run(&mut source, &["SADD", "set:text", "apple", "banana"]);
    run(
        &mut source,
        &[
            "ZADD", "z:small", "1", "a", "2.5", "b", "-inf", "c", "inf", "d",
        ],
    );
    for i in 0..200 {
        let score = format!("{}", f64::from(i) / 7.0);
        let member = format!("m{i}");
        run(&mut source, &["ZADD", "z:big", &score, &member]);
        run(&mut source, &["HSET", "h:big", &member, &score]);
    }
    run(
        &mut source,
        &["HSET", "h:small", "f", "v", "n", "42", "e", ""],
    );
    run(&mut source, &["PEXPIRE", "h:small", "600000"]);
    let keys = [
        "s:int",
        "s:short",
        "s:compressible",
        "s:binary",
        "l:small",
        "l:long",
        "set:ints",
        "set:text",
        "z:small",
        "z:big",
        "h:big",
        "h:small",
    ];
    let port = running.address.port().to_string();
    let mut migrate = vec![
        "MIGRATE",
        "127.0.0.1",
        &port,
        "",
        "0",
        "10000",
        "COPY",
        "KEYS",
    ];
    migrate.extend(keys);
    assert_eq!(
        run(&mut source, &migrate),
        redis::Value::Okay,
        "MIGRATE into Larder"
    );
    for key in keys {
        let want = contents(&mut source, key);
        assert_ne!(want.0, "none", "{key} on redis-server");
        assert_eq!(
            contents(&mut larder, key),
            want,
            "{key} as Larder restored it"
        );
    }
    let ttl: i64 = redis::cmd("PTTL")
        .arg("h:small")
        .query(&mut larder)
        .expect("PTTL");
    assert!((1..=600_000).contains(&ttl), "the TTL came along: {ttl}");

    // Back: each key's DUMP from Larder, restored on redis-server under another name.
    for key in keys {
        let payload: Vec<u8> = redis::cmd("DUMP")
            .arg(key)
            .query(&mut larder)
            .expect("DUMP");
        let copy = format!("back:{key}");
        let restored: redis::Value = redis::cmd("RESTORE")
            .arg(&copy)
            .arg(0)
            .arg(&payload)
            .query(&mut source)
            .unwrap_or_else(|error| panic!("redis-server refused Larder's DUMP of {key}: {error}"));
        assert_eq!(restored, redis::Value::Okay);
        assert_eq!(
            contents(&mut source, &copy),
            contents(&mut source, key),
            "{key} back on redis-server"
        );
    }

    // What Larder cannot hold is refused with Redis's answer and changes nothing.
    run(&mut source, &["XADD", "stream", "*", "f", "v"]);
    let stream: Vec<u8> = redis::cmd("DUMP")
        .arg("stream")
        .query(&mut source)
        .expect("DUMP");
    let refused = redis::cmd("RESTORE")
        .arg("stream")
        .arg(0)
        .arg(&stream)
        .query::<redis::Value>(&mut larder)
        .expect_err("a stream has no place in Larder");
    assert!(refused.to_string().contains("Bad data format"), "{refused}");
    assert_eq!(contents(&mut larder, "stream").0, "none");
}

/// A dataset moves from Redis into Larder as teams move it: redis-server saves its RDB file,
/// `larder import` reads it and restores every key through the proxy. Every key of the five
/// types reads the same on both, TTLs come along, what Larder has no type for (a stream) or no
/// place for (database 1, a function library) is counted and not imported, a key the cluster
/// already had is kept unless `--replace`, and a second import changes nothing.
#[test]
// Real processes and a real file beside the cluster (redis-server, the binary reading the
// file on its standard input): no simulation here.
#[allow(clippy::disallowed_methods)]
fn a_redis_rdb_file_imports_through_the_proxy() {
    let dir = tempfile::tempdir().expect("a directory");
    let redis = RedisServer::start_in(Some(dir.path()));
    let running = Running::start(4, None);
    let mut source = redis.try_connection().expect("redis-server");
    let mut larder = running.connection();
    let run = run_command;
    let long_text = "larder ".repeat(300);
    let mut keys: Vec<String> = Vec::new();
    // Writes `args[0] key args[1..]` on redis-server and notes the key.
    let put =
        |connection: &mut redis::Connection, keys: &mut Vec<String>, key: &str, args: &[&str]| {
            let mut command = vec![args[0], key];
            command.extend(&args[1..]);
            run(connection, &command);
            keys.push(key.to_string());
        };
    put(&mut source, &mut keys, "s:int", &["SET", "-12345"]);
    put(&mut source, &mut keys, "s:text", &["SET", "hello"]);
    put(
        &mut source,
        &mut keys,
        "s:compressible",
        &["SET", &long_text],
    );
    put(
        &mut source,
        &mut keys,
        "l:small",
        &["RPUSH", "a", "-1", "300000"],
    );
    put(
        &mut source,
        &mut keys,
        "set:ints",
        &["SADD", "1", "-2", "70000"],
    );
    put(
        &mut source,
        &mut keys,
        "set:text",
        &["SADD", "apple", "banana"],
    );
    put(
        &mut source,
        &mut keys,
        "z:small",
        &["ZADD", "1", "a", "2.5", "b", "-inf", "c"],
    );
    put(
        &mut source,
        &mut keys,
        "h:small",
        &["HSET", "f", "v", "n", "42"],
    );
    put(
        &mut source,
        &mut keys,
        "s:ttl",
        &["SET", "later", "PX", "600000"],
    );
    // Large collections (hashtable, skiplist and quicklist encodings) and many small keys,
    // so batches fill and every group gets some.
    for i in 0..300 {
        let (member, score) = (format!("m{i}"), format!("{}", f64::from(i) / 3.0));
        run(&mut source, &["ZADD", "z:big", &score, &member]);
        run(&mut source, &["HSET", "h:big", &member, &score]);
        run(&mut source, &["SADD", "set:big", &member]);
        run(&mut source, &["RPUSH", "l:big", &member]);
    }
    keys.extend(["z:big", "h:big", "set:big", "l:big"].map(String::from));
    for i in 0..1_000 {
        put(
            &mut source,
            &mut keys,
            &format!("k:{i}"),
            &["SET", &format!("value {i}")],
        );
    }
    // What Larder does not import: a stream, a key of database 1, a function library.
    run(&mut source, &["XADD", "stream", "*", "f", "v"]);
    run(&mut source, &["SELECT", "1"]);
    run(&mut source, &["SET", "db1:key", "x"]);
    run(&mut source, &["SELECT", "0"]);
    run(
        &mut source,
        &[
            "FUNCTION",
            "LOAD",
            "#!lua name=lib\nredis.register_function('f', function() return 1 end)",
        ],
    );
    // A key the cluster already has, with another value.
    run(&mut larder, &["SET", "s:text", "larder's own"]);

    run(&mut source, &["SAVE"]);
    let mut config = larder::import::ImportConfig {
        file: dir.path().join("dump.rdb"),
        to: running.address.to_string(),
        password: None,
        replace: false,
        db: 0,
        batch: 100,
        connections: 3,
    };
    let mut batches = 0;
    let report = larder::import::import(&config, |_| batches += 1).expect("import");
    assert!(report.complete(), "{report:#?}");
    assert_eq!(report.rdb_version, 10);
    assert_eq!(report.redis_version.as_deref(), Some("7.0.15"));
    assert_eq!(report.imported as usize, keys.len() - 1, "{report:#?}");
    assert_eq!(report.kept, 1, "s:text was Larder's already");
    assert_eq!(report.other_db, 1);
    assert_eq!(report.skipped.get("stream"), Some(&1));
    assert_eq!(report.functions, 1);
    assert!(batches > 10, "{batches} batches of at most 100");
    let value: String = larder.get("s:text").expect("GET");
    assert_eq!(value, "larder's own", "kept without --replace");
    for key in keys.iter().filter(|key| *key != "s:text") {
        let want = contents(&mut source, key);
        assert_eq!(contents(&mut larder, key), want, "{key} imported");
    }
    let ttl: i64 = larder.pttl("s:ttl").expect("PTTL");
    assert!((1..=600_000).contains(&ttl), "the TTL came along: {ttl}");
    for absent in ["stream", "db1:key"] {
        assert_eq!(contents(&mut larder, absent).0, "none", "{absent}");
    }
    let size: u64 = redis::cmd("DBSIZE").query(&mut larder).expect("DBSIZE");
    assert_eq!(size as usize, keys.len());

    // Again: nothing changes without --replace; with it the file's value wins.
    let again = larder::import::import(&config, |_| {}).expect("import again");
    assert_eq!((again.imported, again.kept as usize), (0, keys.len()));
    // The binary, reading the file from standard input as `redis-cli --rdb - | larder import -`
    // would give it: every key is there already.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(["import", "-", "--to", &running.address.to_string()])
        .stdin(std::fs::File::open(&config.file).expect("the file"))
        .output()
        .expect("larder import runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{printed}");
    assert!(
        printed.contains(&format!("kept (existed)    {}", keys.len())),
        "{printed}"
    );
    config.replace = true;
    let replaced = larder::import::import(&config, |_| {}).expect("import with replace");
    assert_eq!(replaced.imported as usize, keys.len());
    assert_eq!(
        contents(&mut larder, "s:text"),
        contents(&mut source, "s:text")
    );
    let size: u64 = redis::cmd("DBSIZE").query(&mut larder).expect("DBSIZE");
    assert_eq!(size as usize, keys.len());
}
