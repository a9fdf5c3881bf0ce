//! Shorthand for hand-written histories.
#![allow(dead_code)]

use larder_workloads::{
    Budget, CheckConfig, Function, Operation, Outcome, Report, Value, check_operations,
};

/// Builds operations with ids in the order they are added.
#[derive(Clone, Default)]
pub struct Ops {
    pub ops: Vec<Operation>,
}

impl Ops {
    pub fn new() -> Self {
        Ops::default()
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        process: u64,
        f: Function,
        key: &str,
        value: Value,
        output: Value,
        outcome: Outcome,
        start: u64,
        end: Option<u64>,
    ) -> &mut Self {
        let id = self.ops.len();
        self.ops.push(Operation {
            id,
            process,
            f,
            key: key.to_string(),
            value,
            output,
            outcome,
            invoke_ns: start,
            complete_ns: end,
            invoke_index: 0,
            complete_index: None,
            error: None,
        });
        self
    }

    pub fn write(
        &mut self,
        p: u64,
        key: &str,
        v: impl Into<Value>,
        start: u64,
        end: u64,
    ) -> &mut Self {
        self.add(
            p,
            Function::Write,
            key,
            v.into(),
            Value::Null,
            Outcome::Ok,
            start,
            Some(end),
        )
    }

    pub fn write_info(&mut self, p: u64, key: &str, v: impl Into<Value>, start: u64) -> &mut Self {
        self.add(
            p,
            Function::Write,
            key,
            v.into(),
            Value::Null,
            Outcome::Info,
            start,
            None,
        )
    }

    pub fn write_fail(
        &mut self,
        p: u64,
        key: &str,
        v: impl Into<Value>,
        start: u64,
        end: u64,
    ) -> &mut Self {
        self.add(
            p,
            Function::Write,
            key,
            v.into(),
            Value::Null,
            Outcome::Fail,
            start,
            Some(end),
        )
    }

    pub fn read(
        &mut self,
        p: u64,
        key: &str,
        v: impl Into<Value>,
        start: u64,
        end: u64,
    ) -> &mut Self {
        self.add(
            p,
            Function::Read,
            key,
            Value::Null,
            v.into(),
            Outcome::Ok,
            start,
            Some(end),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub fn cas(
        &mut self,
        p: u64,
        key: &str,
        from: i64,
        to: i64,
        outcome: Outcome,
        start: u64,
        end: Option<u64>,
    ) -> &mut Self {
        let pair = Value::pair(from.into(), to.into());
        self.add(
            p,
            Function::Cas,
            key,
            pair,
            Value::Null,
            outcome,
            start,
            end,
        )
    }

    pub fn add_ok(&mut self, p: u64, key: &str, delta: i64, start: u64, end: u64) -> &mut Self {
        self.add(
            p,
            Function::Add,
            key,
            delta.into(),
            Value::Null,
            Outcome::Ok,
            start,
            Some(end),
        )
    }

    pub fn add_info(&mut self, p: u64, key: &str, delta: i64, start: u64) -> &mut Self {
        self.add(
            p,
            Function::Add,
            key,
            delta.into(),
            Value::Null,
            Outcome::Info,
            start,
            None,
        )
    }

    pub fn append(&mut self, p: u64, key: &str, s: &str, start: u64, end: u64) -> &mut Self {
        self.add(
            p,
            Function::Append,
            key,
            s.into(),
            Value::Null,
            Outcome::Ok,
            start,
            Some(end),
        )
    }

    /// Any operation: `value` as invoked, `output` as an `ok` completion answered.
    #[allow(clippy::too_many_arguments)]
    pub fn op(
        &mut self,
        p: u64,
        f: Function,
        key: &str,
        value: impl Into<Value>,
        output: impl Into<Value>,
        outcome: Outcome,
        start: u64,
        end: Option<u64>,
    ) -> &mut Self {
        self.add(p, f, key, value.into(), output.into(), outcome, start, end)
    }

    /// `SET key v PX ttl_ms`, acknowledged.
    pub fn set_ttl(
        &mut self,
        p: u64,
        key: &str,
        v: &str,
        ttl_ms: i64,
        start: u64,
        end: u64,
    ) -> &mut Self {
        let value = Value::List(vec![v.into(), ttl_ms.into()]);
        self.add(
            p,
            Function::SetTtl,
            key,
            value,
            Value::Null,
            Outcome::Ok,
            start,
            Some(end),
        )
    }

    /// An acknowledged operation answering `output`: `expire` (value the TTL), `persist`,
    /// `ttl` (value `"ms"` or `"s"`), `mread`, `mdel` (value the names).
    #[allow(clippy::too_many_arguments)]
    pub fn answered(
        &mut self,
        p: u64,
        f: Function,
        key: &str,
        value: impl Into<Value>,
        output: impl Into<Value>,
        start: u64,
        end: u64,
    ) -> &mut Self {
        self.add(
            p,
            f,
            key,
            value.into(),
            output.into(),
            Outcome::Ok,
            start,
            Some(end),
        )
    }

    pub fn check(&self) -> Report {
        self.check_with(&CheckConfig::default())
    }

    pub fn check_with(&self, config: &CheckConfig) -> Report {
        check_operations(&self.ops, config, &Budget::unlimited())
    }
}
