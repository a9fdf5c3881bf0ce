//! `COMMAND`: what the proxy tells client libraries about the commands it answers, as Redis
//! 7.0 does (`COMMAND`, `COMMAND COUNT`, `COMMAND INFO`, `COMMAND LIST`, `COMMAND GETKEYS`).
//!
//! Cluster-aware clients read this at connect time: redis-py's `RedisCluster` refuses to send a
//! command that `COMMAND` did not list, and extracts its keys with the first/last/step positions
//! given here (or asks `COMMAND GETKEYS` for the `movablekeys` ones). The table
//! ([`crate::command_table::COMMANDS`]) is Redis 7.0.15's metadata for exactly the commands and
//! subcommands the proxy answers, written by `scripts/command_table.py`; the tests check it
//! against the proxy in both directions.
//!
//! `COMMAND DOCS` is answered as by a server that has none (Redis before 7.0): redis-cli then
//! builds its hints from its own table, which is better than from documents without arguments.

use bytes::Bytes;
use larder_core::kv::{Command, glob_match};
use larder_core::resp::Frame;

pub use crate::command_table::COMMANDS;
use crate::{bulk, error, lower};

/// One command's metadata, the ten fields of a `COMMAND INFO` entry (key specifications are
/// not published: an empty list).
#[derive(Debug)]
pub struct CommandInfo {
    /// Lower case; a subcommand's is `container|sub`.
    pub name: &'static str,
    /// Arguments including the name; negative: at least that many.
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
    pub acl_categories: &'static [&'static str],
    pub tips: &'static [&'static str],
    pub subcommands: &'static [CommandInfo],
}

impl CommandInfo {
    fn frame(&self) -> Frame {
        let simple =
            |items: &[&str]| Frame::Set(items.iter().map(|i| Frame::Simple((*i).into())).collect());
        Frame::Array(Some(vec![
            bulk(self.name),
            Frame::Integer(self.arity),
            simple(self.flags),
            Frame::Integer(self.first_key),
            Frame::Integer(self.last_key),
            Frame::Integer(self.step),
            simple(self.acl_categories),
            Frame::Set(self.tips.iter().map(bulk).collect()),
            Frame::Set(Vec::new()),
            Frame::Set(self.subcommands.iter().map(CommandInfo::frame).collect()),
        ]))
    }

    fn arity_fits(&self, args: usize) -> bool {
        let args = i64::try_from(args).unwrap_or(i64::MAX);
        if self.arity >= 0 {
            args == self.arity
        } else {
            args >= -self.arity
        }
    }
}

/// Longer than any command's name.
const NAME_BYTES_MAX: usize = 32;

/// The entry of a top-level command (any case). Looked up for every request (`CLIENT LIST`'s
/// `cmd`), so without an allocation.
pub fn lookup(name: &[u8]) -> Option<&'static CommandInfo> {
    let mut buffer = [0u8; NAME_BYTES_MAX];
    let lowered = buffer.get_mut(..name.len())?;
    lowered.copy_from_slice(name);
    lowered.make_ascii_lowercase();
    COMMANDS
        .binary_search_by(|info| info.name.as_bytes().cmp(lowered))
        .ok()
        .map(|at| &COMMANDS[at])
}

/// The entry a request runs under: a container's subcommand (`client|list`) when it has one
/// for `args[1]`, else the command's own.
pub fn entry_of(args: &[Bytes]) -> Option<&'static CommandInfo> {
    let info = lookup(args.first()?)?;
    if info.subcommands.is_empty() {
        return Some(info);
    }
    let Some(sub) = args.get(1) else {
        return Some(info);
    };
    let sub = lower(sub);
    let found = info
        .subcommands
        .iter()
        .find(|s| s.name.split_once('|').is_some_and(|(_, name)| name == sub));
    Some(found.unwrap_or(info))
}

/// Subcommands of Redis 7.2 that client libraries send when they connect (redis-py and
/// go-redis: `CLIENT SETINFO LIB-NAME …`; `CLIENT NO-TOUCH`), answered although Redis 7.0 has
/// none, with their arities. Not listed by `COMMAND`, whose table is Redis 7.0.15's.
const NEWER_SUBCOMMANDS: &[(&str, i64)] = &[("client|setinfo", 4), ("client|no-touch", 3)];

/// Redis 7.0's dispatcher checks for a container command (`CLIENT`, `CONFIG`, …): a
/// subcommand the table lists, with its arity. `None` when `args` may run (or is no container).
pub fn check_container(args: &[Bytes]) -> Option<Frame> {
    let info = lookup(args.first()?)?;
    if info.subcommands.is_empty() {
        return None;
    }
    let Some(sub) = args.get(1) else {
        // `COMMAND` alone is a command of its own.
        return (!info.arity_fits(1)).then(|| {
            error(format!(
                "ERR wrong number of arguments for '{}' command",
                info.name
            ))
        });
    };
    let entry = entry_of(args).expect("a listed command");
    if std::ptr::eq(entry, info) {
        let full = format!("{}|{}", info.name, lower(sub));
        if let Some((_, arity)) = NEWER_SUBCOMMANDS.iter().find(|(name, _)| *name == full) {
            return (args.len() as i64 != *arity).then(|| {
                error(format!(
                    "ERR wrong number of arguments for '{full}' command"
                ))
            });
        }
        return Some(error(format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(sub),
            info.name.to_ascii_uppercase()
        )));
    }
    (!entry.arity_fits(args.len())).then(|| {
        error(format!(
            "ERR wrong number of arguments for '{}' command",
            entry.name
        ))
    })
}

/// `COMMAND [subcommand ...]`: the subcommands and arities of the table ([`check_container`]).
pub fn answer(args: &[Bytes]) -> Frame {
    if let Some(refusal) = check_container(args) {
        return refusal;
    }
    let Some(sub) = args.get(1) else {
        return Frame::Array(Some(COMMANDS.iter().map(CommandInfo::frame).collect()));
    };
    match lower(sub).as_str() {
        "count" => Frame::Integer(COMMANDS.len() as i64),
        "info" if args.len() == 2 => {
            Frame::Array(Some(COMMANDS.iter().map(CommandInfo::frame).collect()))
        }
        "info" => Frame::Array(Some(
            args[2..]
                .iter()
                .map(|name| match find(&lower(name)) {
                    Some(info) => info.frame(),
                    None => Frame::Null,
                })
                .collect(),
        )),
        "list" => list(&args[2..]),
        "getkeys" => getkeys(&args[2..]),
        // `check_container` let through only the table's subcommands.
        _ => error("ERR unknown subcommand. Try COMMAND HELP."),
    }
}

/// A command or subcommand (`client|list`) by its full lower-case name.
fn find(name: &str) -> Option<&'static CommandInfo> {
    let (top, _) = name.split_once('|').unwrap_or((name, ""));
    let info = lookup(top.as_bytes())?;
    if top == name {
        return Some(info);
    }
    info.subcommands.iter().find(|s| s.name == name)
}

/// Every name, subcommands included, in table order.
fn all_names() -> impl Iterator<Item = &'static CommandInfo> {
    COMMANDS
        .iter()
        .flat_map(|info| std::iter::once(info).chain(info.subcommands.iter()))
}

/// `COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern]`.
fn list(rest: &[Bytes]) -> Frame {
    let names = |keep: &dyn Fn(&CommandInfo) -> bool| {
        Frame::Array(Some(
            all_names()
                .filter(|info| keep(info))
                .map(|info| bulk(info.name))
                .collect(),
        ))
    };
    match rest {
        [] => names(&|_| true),
        [filterby, kind, value] if filterby.eq_ignore_ascii_case(b"filterby") => {
            match lower(kind).as_str() {
                // Larder loads no modules.
                "module" => Frame::Array(Some(Vec::new())),
                "aclcat" => {
                    let category = format!("@{}", lower(value));
                    names(&|info| info.acl_categories.contains(&category.as_str()))
                }
                "pattern" => names(&|info| glob_match(value, info.name.as_bytes())),
                _ => error("ERR syntax error"),
            }
        }
        _ => error("ERR syntax error"),
    }
}

/// `COMMAND GETKEYS command arg ...`: the keys of a command as the proxy would route it.
fn getkeys(command: &[Bytes]) -> Frame {
    let Some(info) = entry_of(command) else {
        return error("ERR Invalid command specified");
    };
    let top = lookup(&command[0]).expect("entry_of found it");
    if !top.arity_fits(command.len()) || !info.arity_fits(command.len()) {
        return error("ERR Invalid number of arguments specified for command");
    }
    let keys: Vec<Bytes> = if info.flags.contains(&"movablekeys") {
        // Where the keys are depends on the arguments: the parser knows.
        let parsed = match Command::parse_blocking(command) {
            Some(parsed) => parsed.map(|(command, _)| command),
            None => Command::parse(command),
        };
        match parsed {
            Ok(parsed) => parsed.keys().into_iter().cloned().collect(),
            Err(_) => return error("ERR Invalid arguments specified for command"),
        }
    } else {
        positions(info, command.len())
            .map(|at| command[at].clone())
            .collect()
    };
    if keys.is_empty() {
        return error("ERR The command has no key arguments");
    }
    Frame::Array(Some(
        keys.into_iter().map(|k| Frame::Bulk(Some(k))).collect(),
    ))
}

/// The key positions of a command with fixed ones, for `len` arguments.
fn positions(info: &CommandInfo, len: usize) -> impl Iterator<Item = usize> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let first = info.first_key;
    let last = if info.last_key < 0 {
        len + info.last_key
    } else {
        info.last_key.min(len - 1)
    };
    let step = usize::try_from(info.step.max(1)).unwrap_or(1);
    // A first position of 0: the command has no keys.
    (first > 0)
        .then(|| (first..=last).step_by(step))
        .into_iter()
        .flatten()
        .filter_map(|at| usize::try_from(at).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split_args as args;

    fn names(frame: Frame) -> Vec<String> {
        match frame {
            Frame::Array(Some(items)) => items
                .into_iter()
                .map(|item| match item {
                    Frame::Bulk(Some(name)) => String::from_utf8(name.to_vec()).unwrap(),
                    other => panic!("not a name: {other:?}"),
                })
                .collect(),
            other => panic!("not an array: {other:?}"),
        }
    }

    #[test]
    fn the_table_is_sorted_and_its_subcommands_belong_to_their_container() {
        assert!(COMMANDS.iter().all(|info| info.name.len() < NAME_BYTES_MAX));
        assert_eq!(lookup(b"HGetAll").map(|info| info.name), Some("hgetall"));
        assert!(lookup(&[b'a'; 40]).is_none());
        for pair in COMMANDS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
        for info in COMMANDS {
            assert_eq!(info.name, info.name.to_ascii_lowercase());
            for sub in info.subcommands {
                let (container, _) = sub.name.split_once('|').expect("a subcommand name");
                assert_eq!(container, info.name);
                assert!(sub.subcommands.is_empty());
            }
        }
    }

    #[test]
    fn count_info_and_list_describe_the_table() {
        assert_eq!(
            answer(&args("COMMAND COUNT")),
            Frame::Integer(COMMANDS.len() as i64)
        );
        let Frame::Array(Some(infos)) = answer(&args("COMMAND INFO get client|list nosuch")) else {
            panic!("an array");
        };
        let Frame::Array(Some(get)) = &infos[0] else {
            panic!("an entry");
        };
        assert_eq!(get.len(), 10);
        assert_eq!(get[0], bulk("get"));
        assert_eq!(get[1], Frame::Integer(2));
        assert_eq!(
            get[2],
            Frame::Set(vec![
                Frame::Simple("readonly".into()),
                Frame::Simple("fast".into())
            ])
        );
        assert_eq!(
            &get[3..6],
            &[Frame::Integer(1), Frame::Integer(1), Frame::Integer(1)]
        );
        let Frame::Array(Some(list)) = &infos[1] else {
            panic!("an entry");
        };
        assert_eq!(list[0], bulk("client|list"));
        assert_eq!(infos[2], Frame::Null);
        let listed = names(answer(&args("COMMAND LIST")));
        assert!(
            listed.contains(&"zadd".to_string()) && listed.contains(&"cluster|slots".to_string())
        );
        assert!(!listed.contains(&"xadd".to_string()));
        assert_eq!(
            names(answer(&args("COMMAND LIST FILTERBY PATTERN hinc*"))),
            ["hincrby", "hincrbyfloat"]
        );
        let hashes = names(answer(&args("COMMAND LIST FILTERBY ACLCAT hash")));
        assert!(hashes.contains(&"hset".to_string()) && !hashes.contains(&"get".to_string()));
        assert!(names(answer(&args("COMMAND LIST FILTERBY MODULE search"))).is_empty());
    }

    #[test]
    fn getkeys_finds_fixed_and_movable_keys_and_refuses_as_redis_does() {
        assert_eq!(names(answer(&args("COMMAND GETKEYS get k"))), ["k"]);
        assert_eq!(
            names(answer(&args("COMMAND GETKEYS mset a 1 b 2"))),
            ["a", "b"]
        );
        assert_eq!(
            names(answer(&args(
                "COMMAND GETKEYS zunionstore d 2 a b WEIGHTS 1 2"
            ))),
            ["d", "a", "b"]
        );
        assert_eq!(
            names(answer(&args("COMMAND GETKEYS blmpop 0 2 l1 l2 LEFT"))),
            ["l1", "l2"]
        );
        assert_eq!(
            names(answer(&args("COMMAND GETKEYS object encoding k"))),
            ["k"]
        );
        assert_eq!(
            names(answer(&args("COMMAND GETKEYS watch a b"))),
            ["a", "b"]
        );
        let refused = [
            ("COMMAND GETKEYS nosuch x", "ERR Invalid command specified"),
            (
                "COMMAND GETKEYS get a b",
                "ERR Invalid number of arguments specified for command",
            ),
            (
                "COMMAND GETKEYS ping x",
                "ERR The command has no key arguments",
            ),
            (
                "COMMAND GETKEYS zunionstore d x a",
                "ERR Invalid arguments specified for command",
            ),
            (
                "COMMAND GETKEYS get",
                "ERR wrong number of arguments for 'command|getkeys' command",
            ),
            (
                "COMMAND COUNT x",
                "ERR wrong number of arguments for 'command|count' command",
            ),
            (
                "COMMAND DOCS",
                "ERR unknown subcommand 'DOCS'. Try COMMAND HELP.",
            ),
        ];
        for (line, want) in refused {
            assert_eq!(answer(&args(line)), Frame::Error(want.into()), "{line}");
        }
    }

    #[test]
    fn a_newer_clients_connect_time_subcommands_pass_the_container_check() {
        assert_eq!(
            check_container(&args("CLIENT SETINFO LIB-NAME redis-py")),
            None
        );
        assert_eq!(check_container(&args("client no-touch on")), None);
        assert_eq!(
            check_container(&args("CLIENT SETINFO LIB-NAME")),
            Some(Frame::Error(
                "ERR wrong number of arguments for 'client|setinfo' command".into()
            ))
        );
        assert_eq!(
            check_container(&args("CLIENT NOSUCH")),
            Some(Frame::Error(
                "ERR unknown subcommand 'NOSUCH'. Try CLIENT HELP.".into()
            ))
        );
    }

    #[test]
    fn a_request_runs_under_its_subcommands_entry() {
        assert_eq!(entry_of(&args("CLIENT LIST")).unwrap().name, "client|list");
        assert_eq!(entry_of(&args("client nosuch")).unwrap().name, "client");
        assert_eq!(entry_of(&args("GET k")).unwrap().name, "get");
        assert!(entry_of(&args("XADD s * a b")).is_none());
    }
}
