use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// `SET` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
pub enum SetCondition {
    Always,
    /// `NX`: only if the key does not exist.
    IfAbsent,
    /// `XX`: only if the key exists.
    IfPresent,
}

/// A relative expiry as the client gave it; turned into an absolute time with the entry's
/// timestamp when applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
pub enum Expiry {
    Seconds(i64),
    Millis(i64),
}

impl Expiry {
    /// Milliseconds, saturating (a huge `EX` must not wrap around into the past).
    pub fn as_millis(self) -> i64 {
        match self {
            Expiry::Seconds(s) => s.saturating_mul(1000),
            Expiry::Millis(ms) => ms,
        }
    }
}

/// A KV command as replicas execute it. Parsing from Redis arguments is [`Command::parse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Get {
        key: Bytes,
    },
    Set {
        key: Bytes,
        value: Bytes,
        condition: SetCondition,
        expiry: Option<Expiry>,
        keep_ttl: bool,
    },
    Del {
        keys: Vec<Bytes>,
    },
    Exists {
        keys: Vec<Bytes>,
    },
    IncrBy {
        key: Bytes,
        delta: i64,
    },
    MGet {
        keys: Vec<Bytes>,
    },
    MSet {
        pairs: Vec<(Bytes, Bytes)>,
    },
    /// `EXPIRE`/`PEXPIRE`: replace the key's expiry.
    Expire {
        key: Bytes,
        expiry: Expiry,
    },
    /// `TTL` (`millis: false`) or `PTTL`.
    Ttl {
        key: Bytes,
        millis: bool,
    },
}

/// A command that cannot be executed as given. The texts follow Redis, since clients match on
/// them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("ERR unknown command '{name}'")]
    Unknown { name: String },
    #[error("ERR wrong number of arguments for '{name}' command")]
    Arity { name: String },
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    #[error("ERR invalid expire time in '{name}' command")]
    InvalidExpire { name: String },
}

fn parse_i64(arg: &[u8]) -> Result<i64, CommandError> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(CommandError::NotInteger)
}

impl Command {
    /// `SET key value` with no condition or expiry.
    pub fn set(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Command {
        Command::Set {
            key: Bytes::copy_from_slice(key.as_ref()),
            value: Bytes::copy_from_slice(value.as_ref()),
            condition: SetCondition::Always,
            expiry: None,
            keep_ttl: false,
        }
    }

    /// `GET key`.
    pub fn get(key: impl AsRef<[u8]>) -> Command {
        Command::Get {
            key: Bytes::copy_from_slice(key.as_ref()),
        }
    }

    /// Parses a command from its Redis arguments (`args[0]` is the name, any case).
    pub fn parse(args: &[Bytes]) -> Result<Command, CommandError> {
        let Some(name) = args.first() else {
            return Err(CommandError::Syntax);
        };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let rest = &args[1..];
        let arity = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(CommandError::Arity { name: name.clone() })
            }
        };
        match name.as_str() {
            "get" => {
                arity(rest.len() == 1)?;
                Ok(Command::Get {
                    key: rest[0].clone(),
                })
            }
            "set" => {
                arity(rest.len() >= 2)?;
                Self::parse_set(&name, rest)
            }
            "del" | "unlink" => {
                arity(!rest.is_empty())?;
                Ok(Command::Del {
                    keys: rest.to_vec(),
                })
            }
            "exists" => {
                arity(!rest.is_empty())?;
                Ok(Command::Exists {
                    keys: rest.to_vec(),
                })
            }
            "incr" | "decr" => {
                arity(rest.len() == 1)?;
                let delta = if name == "incr" { 1 } else { -1 };
                Ok(Command::IncrBy {
                    key: rest[0].clone(),
                    delta,
                })
            }
            "incrby" | "decrby" => {
                arity(rest.len() == 2)?;
                let delta = parse_i64(&rest[1])?;
                let delta = if name == "incrby" {
                    delta
                } else {
                    delta.checked_neg().ok_or(CommandError::NotInteger)?
                };
                Ok(Command::IncrBy {
                    key: rest[0].clone(),
                    delta,
                })
            }
            "mget" => {
                arity(!rest.is_empty())?;
                Ok(Command::MGet {
                    keys: rest.to_vec(),
                })
            }
            "mset" => {
                arity(!rest.is_empty() && rest.len().is_multiple_of(2))?;
                let pairs = rest
                    .chunks_exact(2)
                    .map(|pair| (pair[0].clone(), pair[1].clone()))
                    .collect();
                Ok(Command::MSet { pairs })
            }
            "expire" | "pexpire" => {
                arity(rest.len() == 2)?;
                let amount = parse_i64(&rest[1])?;
                let expiry = if name == "expire" {
                    Expiry::Seconds(amount)
                } else {
                    Expiry::Millis(amount)
                };
                Ok(Command::Expire {
                    key: rest[0].clone(),
                    expiry,
                })
            }
            "ttl" | "pttl" => {
                arity(rest.len() == 1)?;
                Ok(Command::Ttl {
                    key: rest[0].clone(),
                    millis: name == "pttl",
                })
            }
            _ => Err(CommandError::Unknown { name }),
        }
    }

    fn parse_set(name: &str, rest: &[Bytes]) -> Result<Command, CommandError> {
        let mut condition = SetCondition::Always;
        let mut expiry = None;
        let mut keep_ttl = false;
        let mut options = rest[2..].iter();
        while let Some(option) = options.next() {
            let option = String::from_utf8_lossy(option).to_ascii_lowercase();
            match option.as_str() {
                "nx" if condition == SetCondition::Always => condition = SetCondition::IfAbsent,
                "xx" if condition == SetCondition::Always => condition = SetCondition::IfPresent,
                "keepttl" if expiry.is_none() => keep_ttl = true,
                "ex" | "px" if expiry.is_none() && !keep_ttl => {
                    let amount = parse_i64(options.next().ok_or(CommandError::Syntax)?)?;
                    if amount <= 0 {
                        return Err(CommandError::InvalidExpire {
                            name: name.to_string(),
                        });
                    }
                    expiry = Some(if option == "ex" {
                        Expiry::Seconds(amount)
                    } else {
                        Expiry::Millis(amount)
                    });
                }
                _ => return Err(CommandError::Syntax),
            }
        }
        Ok(Command::Set {
            key: rest[0].clone(),
            value: rest[1].clone(),
            condition,
            expiry,
            keep_ttl,
        })
    }

    /// True for commands that change state and so go through the Raft log; the rest are served
    /// by a linearizable read on the leader.
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            Command::Get { .. }
                | Command::Exists { .. }
                | Command::MGet { .. }
                | Command::Ttl { .. }
        )
    }

    /// Every key the command reads or writes, in argument order (duplicates kept).
    pub fn keys(&self) -> Vec<&Bytes> {
        match self {
            Command::Get { key }
            | Command::Set { key, .. }
            | Command::IncrBy { key, .. }
            | Command::Expire { key, .. }
            | Command::Ttl { key, .. } => vec![key],
            Command::Del { keys } | Command::Exists { keys } | Command::MGet { keys } => {
                keys.iter().collect()
            }
            Command::MSet { pairs } => pairs.iter().map(|(key, _)| key).collect(),
        }
    }

    /// The command's name as clients spell it, for errors and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get { .. } => "get",
            Command::Set { .. } => "set",
            Command::Del { .. } => "del",
            Command::Exists { .. } => "exists",
            Command::IncrBy { .. } => "incrby",
            Command::MGet { .. } => "mget",
            Command::MSet { .. } => "mset",
            Command::Expire { .. } => "expire",
            Command::Ttl { .. } => "ttl",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<Bytes> {
        line.split_whitespace()
            .map(|word| Bytes::copy_from_slice(word.as_bytes()))
            .collect()
    }

    fn check(line: &str, expected: Result<Command, CommandError>) {
        assert_eq!(Command::parse(&args(line)), expected, "parsing {line:?}");
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn parses_the_string_commands() {
        check("GET k", Ok(Command::Get { key: b("k") }));
        check(
            "set k v nx px 250",
            Ok(Command::Set {
                key: b("k"),
                value: b("v"),
                condition: SetCondition::IfAbsent,
                expiry: Some(Expiry::Millis(250)),
                keep_ttl: false,
            }),
        );
        check(
            "decrby k 5",
            Ok(Command::IncrBy {
                key: b("k"),
                delta: -5,
            }),
        );
        check(
            "mset a 1 b 2",
            Ok(Command::MSet {
                pairs: vec![(b("a"), b("1")), (b("b"), b("2"))],
            }),
        );
        check(
            "pttl k",
            Ok(Command::Ttl {
                key: b("k"),
                millis: true,
            }),
        );
    }

    #[test]
    fn rejects_bad_input_with_redis_errors() {
        check("get", Err(CommandError::Arity { name: "get".into() }));
        check("set k v nx xx", Err(CommandError::Syntax));
        check(
            "set k v ex 0",
            Err(CommandError::InvalidExpire { name: "set".into() }),
        );
        check("set k v ex", Err(CommandError::Syntax));
        check("set k v ex ten", Err(CommandError::NotInteger));
        check("set k v ex 1 px 1", Err(CommandError::Syntax));
        check(
            "mset a 1 b",
            Err(CommandError::Arity {
                name: "mset".into(),
            }),
        );
        check(
            "decrby k -9223372036854775808",
            Err(CommandError::NotInteger),
        );
        check(
            "flyto moon",
            Err(CommandError::Unknown {
                name: "flyto".into(),
            }),
        );
        assert_eq!(Command::parse(&[]), Err(CommandError::Syntax));
    }
}
