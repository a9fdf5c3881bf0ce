//! Readers for histories recorded by other tools, to cross-check the checker against their
//! published verdicts:
//!
//! - **Jepsen text logs** (`jepsen.util` lines of a test's log):
//!   `INFO  jepsen.util - 3<TAB>:invoke<TAB>:write<TAB>4`: tab-separated process, type, function and
//!   value (`nil`, an integer, `[from to]` for `:cas`, `:timed-out` on an `:info`). Lines
//!   of other loggers and of the `:nemesis` process are skipped. A log is one register, checked
//!   under the key `""`. Event times are line numbers, so file order is real-time order.
//! - **EDN histories**: one map per event, as Porcupine's kv test data
//!   (`{:process 0, :type :invoke, :f :get, :key "6", :value nil}`) and Jepsen's
//!   `history.edn` write them (`:time` in nanoseconds and `:index` are used when present;
//!   a top-level vector of maps is accepted too). `:get`/`:put`/`:append` are Porcupine's kv
//!   functions: histories using them are checked with Porcupine's kv model, where every key
//!   starts as the empty string.
//!
//! Jepsen's etcd tests record a cas whose compare failed as `:fail`; [`load_str`] checks
//! Jepsen text logs with [`CheckConfig::fail_cas_observes_mismatch`] set, as Porcupine does.

use std::fmt;

use crate::checker::CheckConfig;
use crate::edn::{self, Edn};
use crate::history::{Function, History, Op, OpKind, Value};

/// A history file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Larder's `history.jsonl` (see [`crate::history`]).
    Jsonl,
    /// `INFO jepsen.util` text log lines.
    JepsenLog,
    /// One EDN map per event (Porcupine kv logs, Jepsen `history.edn`).
    Edn,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Jsonl => "history.jsonl",
            Format::JepsenLog => "Jepsen log",
            Format::Edn => "EDN history",
        })
    }
}

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

fn parse_error(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// Guesses the format of a history from its first lines; `None` if none fits. An empty
/// text is an empty `history.jsonl`.
pub fn detect_format(text: &str) -> Option<Format> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .take(64)
        .collect();
    if lines.iter().any(|line| line.contains("jepsen.util")) {
        return Some(Format::JepsenLog);
    }
    let Some(first) = lines.first() else {
        return Some(Format::Jsonl);
    };
    let inner = first
        .strip_prefix('[')
        .map(str::trim_start)
        .unwrap_or(first);
    if let Some(rest) = inner.strip_prefix('{') {
        let rest = rest.trim_start();
        if rest.starts_with('"') {
            return Some(Format::Jsonl);
        }
        if rest.starts_with(':') {
            return Some(Format::Edn);
        }
    }
    None
}

fn function_of(name: &str) -> Option<Function> {
    Some(match name {
        "read" | "get" => Function::Read,
        "write" | "put" | "set" => Function::Write,
        "cas" => Function::Cas,
        "add" | "incr" => Function::Add,
        "append" => Function::Append,
        _ => return None,
    })
}

fn kind_of(name: &str) -> Option<OpKind> {
    Some(match name {
        "invoke" => OpKind::Invoke,
        "ok" => OpKind::Ok,
        "fail" => OpKind::Fail,
        "info" => OpKind::Info,
        _ => return None,
    })
}

/// EDN to a history value: `nil`, integers, strings and sequences map directly; anything
/// else becomes its EDN text.
fn value_of(edn: &Edn) -> Value {
    match edn {
        Edn::Nil => Value::Null,
        Edn::Int(n) => Value::Int(*n),
        Edn::Str(s) => Value::Str(s.clone()),
        Edn::Vector(items) | Edn::List(items) => Value::List(items.iter().map(value_of).collect()),
        other => Value::Str(other.to_string()),
    }
}

fn key_of(edn: &Edn) -> String {
    match edn {
        Edn::Str(s) => s.clone(),
        Edn::Keyword(k) => k.clone(),
        Edn::Nil => String::new(),
        other => other.to_string(),
    }
}

/// Tracks each process's pending invocation, so a completion without a usable value (an
/// `:info` carrying `:timed-out`) can take its invocation's value and report the keyword as
/// its error.
#[derive(Default)]
struct Pending {
    invocations: std::collections::BTreeMap<u64, (Function, String, Value)>,
}

impl Pending {
    fn record(&mut self, op: &mut Op) {
        match op.kind {
            OpKind::Invoke => {
                self.invocations
                    .insert(op.process, (op.f, op.key.clone(), op.value.clone()));
            }
            _ => {
                if let Some((_, _, value)) = self.invocations.remove(&op.process)
                    && op.kind != OpKind::Ok
                {
                    if let Value::Str(s) = &op.value
                        && s.starts_with(':')
                    {
                        op.error.get_or_insert_with(|| s[1..].to_string());
                        op.value = value;
                    } else if op.value.is_null() {
                        op.value = value;
                    }
                }
            }
        }
    }
}

/// Reads the `jepsen.util` lines of a Jepsen test log.
pub fn parse_jepsen_log(text: &str) -> Result<History, ParseError> {
    let mut history = History::new();
    let mut pending = Pending::default();
    for (number, line) in text.lines().enumerate() {
        let line_no = number + 1;
        let Some(at) = line.find("jepsen.util") else {
            continue;
        };
        let rest = &line[at + "jepsen.util".len()..];
        let Some(rest) = rest.trim_start().strip_prefix('-') else {
            continue;
        };
        let fields: Vec<&str> = rest.trim().splitn(4, '\t').map(str::trim).collect();
        if fields.len() < 3 {
            continue;
        }
        if fields[0].starts_with(':') {
            continue; // :nemesis
        }
        let process: u64 = fields[0]
            .parse()
            .map_err(|_| parse_error(line_no, format!("bad process {:?}", fields[0])))?;
        let kind = fields[1]
            .strip_prefix(':')
            .and_then(kind_of)
            .ok_or_else(|| parse_error(line_no, format!("bad type {:?}", fields[1])))?;
        let f = fields[2]
            .strip_prefix(':')
            .and_then(function_of)
            .ok_or_else(|| parse_error(line_no, format!("unsupported function {:?}", fields[2])))?;
        let value = match fields.get(3) {
            None => Value::Null,
            Some(text) => {
                // Later tab-separated fields (an error message) are not part of the value.
                let text = text.split('\t').next().unwrap_or_default();
                let forms = edn::parse_all(text).map_err(|e| parse_error(line_no, e))?;
                forms.first().map_or(Value::Null, value_of)
            }
        };
        let mut op = Op {
            index: 0,
            time_ns: 0,
            process,
            kind,
            f,
            key: String::new(),
            value,
            error: None,
        };
        pending.record(&mut op);
        history.push(op);
        let last = history.ops.last_mut().expect("just pushed");
        last.time_ns = last.index;
    }
    Ok(history)
}

/// Reads an EDN history (one map per event). Returns the history and whether it uses
/// Porcupine's kv function names (`:get`, `:put`).
fn parse_edn(text: &str) -> Result<(History, bool), ParseError> {
    // Parse line by line when every line is one form (the usual layout), so errors carry a
    // line number; fall back to the whole text (one vector, or maps spanning lines).
    let mut forms: Vec<(usize, Edn)> = Vec::new();
    let mut per_line = true;
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match edn::parse_all(line) {
            Ok(parsed) => forms.extend(parsed.into_iter().map(|form| (number + 1, form))),
            Err(_) => {
                per_line = false;
                break;
            }
        }
    }
    if !per_line {
        let parsed = edn::parse_all(text).map_err(|e| parse_error(0, e))?;
        forms = parsed.into_iter().map(|form| (0, form)).collect();
    }
    if let [(line, Edn::Vector(items))] = forms.as_slice() {
        let line = *line;
        forms = items.iter().map(|item| (line, item.clone())).collect();
    }

    let mut history = History::new();
    let mut pending = Pending::default();
    let mut kv_names = false;
    for (line, form) in forms {
        if !matches!(form, Edn::Map(_)) {
            return Err(parse_error(line, format!("expected a map, got {form}")));
        }
        let process = match form.get("process") {
            Some(Edn::Int(p)) if *p >= 0 => *p as u64,
            Some(Edn::Keyword(_)) => continue, // :nemesis
            other => {
                return Err(parse_error(line, format!("bad :process {other:?}")));
            }
        };
        let kind = match form.get("type") {
            Some(Edn::Keyword(k)) => kind_of(k),
            _ => None,
        }
        .ok_or_else(|| parse_error(line, "missing or bad :type"))?;
        let f_name = match form.get("f") {
            Some(Edn::Keyword(f)) => f.as_str(),
            _ => return Err(parse_error(line, "missing or bad :f")),
        };
        let f = function_of(f_name)
            .ok_or_else(|| parse_error(line, format!("unsupported function :{f_name}")))?;
        kv_names |= matches!(f_name, "get" | "put");
        let mut op = Op {
            index: 0,
            time_ns: 0,
            process,
            kind,
            f,
            key: form.get("key").map(key_of).unwrap_or_default(),
            value: form.get("value").map(value_of).unwrap_or_default(),
            error: form.get("error").map(|e| match e {
                Edn::Str(s) => s.clone(),
                other => other.to_string(),
            }),
        };
        pending.record(&mut op);
        let index = match form.get("index") {
            Some(Edn::Int(i)) if *i >= 0 => Some(*i as u64),
            _ => None,
        };
        let time = match form.get("time") {
            Some(Edn::Int(t)) if *t >= 0 => Some(*t as u64),
            _ => None,
        };
        history.push(op);
        let last = history.ops.last_mut().expect("just pushed");
        if let Some(index) = index {
            last.index = index;
        }
        last.time_ns = time.unwrap_or(last.index);
    }
    Ok((history, kv_names))
}

/// Reads an EDN history (one map per event).
pub fn parse_edn_history(text: &str) -> Result<History, ParseError> {
    parse_edn(text).map(|(history, _)| history)
}

/// A history read from text, with the configuration its format calls for.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub format: Format,
    pub history: History,
    pub config: CheckConfig,
}

/// Why a history file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot tell the format of the history (expected history.jsonl, a Jepsen log or EDN)")]
    UnknownFormat,
    #[error("{format}: {source}")]
    Parse {
        format: Format,
        #[source]
        source: ParseError,
    },
    #[error("history.jsonl: {0}")]
    Jsonl(#[from] crate::history::HistoryError),
}

/// Detects the format of `text` and reads it.
pub fn load_str(text: &str) -> Result<Loaded, LoadError> {
    let format = detect_format(text).ok_or(LoadError::UnknownFormat)?;
    let mut config = CheckConfig::default();
    let history = match format {
        Format::Jsonl => History::from_jsonl_str(text)?,
        Format::JepsenLog => {
            config.fail_cas_observes_mismatch = true;
            parse_jepsen_log(text).map_err(|source| LoadError::Parse { format, source })?
        }
        Format::Edn => {
            let (history, kv_names) =
                parse_edn(text).map_err(|source| LoadError::Parse { format, source })?;
            if kv_names {
                config.initial = Value::Str(String::new());
            }
            history
        }
    };
    Ok(Loaded {
        format,
        history,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Outcome;

    const JEPSEN: &str = "\
2017-01-01 INFO  jepsen.core - Running test
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 1\t:invoke\t:write\t4
INFO  jepsen.util - 0\t:ok\t:read\tnil
INFO  jepsen.util - 1\t:ok\t:write\t4
INFO  jepsen.util - :nemesis\t:info\t:start\tnil
INFO  jepsen.util - 2\t:invoke\t:cas\t[4 1]
INFO  jepsen.util - 2\t:info\t:cas\t:timed-out
INFO  jepsen.util - 0\t:invoke\t:cas\t[1 2]
INFO  jepsen.util - 0\t:fail\t:cas\t[1 2]\tcompare failed: (not= 4 1)
";

    #[test]
    fn jepsen_log_lines() {
        assert_eq!(detect_format(JEPSEN), Some(Format::JepsenLog));
        let history = parse_jepsen_log(JEPSEN).unwrap();
        assert_eq!(history.len(), 8);
        assert_eq!(history.ops[1].f, Function::Write);
        assert_eq!(history.ops[1].value, Value::Int(4));
        assert_eq!(history.ops[1].time_ns, 1);
        let ops = history.operations().unwrap();
        assert_eq!(ops.len(), 4);
        assert_eq!(ops[0].output, Value::Null);
        assert_eq!(ops[2].f, Function::Cas);
        assert_eq!(ops[2].value, Value::pair(4.into(), 1.into()));
        assert_eq!(ops[2].outcome, Outcome::Info);
        assert_eq!(ops[2].error.as_deref(), Some("timed-out"));
        assert_eq!(ops[3].outcome, Outcome::Fail);
        let loaded = load_str(JEPSEN).unwrap();
        assert!(loaded.config.fail_cas_observes_mismatch);
    }

    #[test]
    fn jepsen_log_errors() {
        let err = parse_jepsen_log("INFO  jepsen.util - x\t:invoke\t:read\tnil\n").unwrap_err();
        assert_eq!(err.line, 1);
        let err = parse_jepsen_log("\nINFO  jepsen.util - 1\t:invoke\t:frob\tnil\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("frob"));
    }

    const PORCUPINE: &str = r#"{:process 0, :type :invoke, :f :get, :key "6", :value nil}
{:process 1, :type :invoke, :f :put, :key "6", :value "x 1 0 y"}
{:process 0, :type :ok, :f :get, :key "6", :value ""}
{:process 1, :type :ok, :f :put, :key "6", :value "x 1 0 y"}
{:process 0, :type :invoke, :f :append, :key "6", :value "x 0 1 y"}
{:process 0, :type :ok, :f :append, :key "6", :value "x 0 1 y"}
"#;

    #[test]
    fn porcupine_kv_lines() {
        assert_eq!(detect_format(PORCUPINE), Some(Format::Edn));
        let loaded = load_str(PORCUPINE).unwrap();
        assert_eq!(loaded.config.initial, Value::Str(String::new()));
        let ops = loaded.history.operations().unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].key, "6");
        assert_eq!(ops[0].output, Value::Str(String::new()));
        assert_eq!(ops[1].f, Function::Write);
        assert_eq!(ops[2].f, Function::Append);
    }

    #[test]
    fn jepsen_history_edn() {
        let text = r#"[{:type :invoke, :f :write, :value 3, :process 0, :time 100, :index 0}
 {:type :info, :f :start, :value nil, :process :nemesis, :time 150, :index 1}
 {:type :ok, :f :write, :value 3, :process 0, :time 200, :index 2}
 {:type :invoke, :f :read, :value nil, :process 1, :time 300, :index 3}
 {:type :ok, :f :read, :value 3, :process 1, :time 400, :index 4}]"#;
        assert_eq!(detect_format(text), Some(Format::Edn));
        let loaded = load_str(text).unwrap();
        assert_eq!(loaded.config.initial, Value::Null);
        let history = &loaded.history;
        assert_eq!(history.len(), 4);
        assert_eq!(history.ops[2].index, 3);
        assert_eq!(history.ops[2].time_ns, 300);
        let ops = history.operations().unwrap();
        assert_eq!(ops[1].output, Value::Int(3));
    }

    #[test]
    fn edn_errors() {
        assert!(parse_edn_history("{:process 0, :type :invoke}").is_err());
        assert!(parse_edn_history("{:process 0, :type :invoke, :f :frob}").is_err());
        assert!(parse_edn_history("[1 2]").is_err());
        assert!(matches!(load_str("hello"), Err(LoadError::UnknownFormat)));
        assert!(load_str(" \n").unwrap().history.is_empty());
    }

    #[test]
    fn jsonl_is_detected() {
        let text = "{\"process\":1,\"type\":\"invoke\",\"f\":\"read\"}\n";
        assert_eq!(detect_format(text), Some(Format::Jsonl));
        assert_eq!(load_str(text).unwrap().history.len(), 1);
    }
}
