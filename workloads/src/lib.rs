//! `larder-workloads`: the client workload, history recording and the linearizability checker,
//! used against a simulated cluster (`larder_sim`) and real processes (`larder jepsen`).
//!
//! - [`driver`]: one workload client (registers, counters, list appends, think times),
//!   generic over how commands reach the store ([`driver::Executor`]) and over time
//!   ([`driver::Timer`]); it records straight into a [`History`].
//! - [`history`]: the `history.jsonl` format (Jepsen-style invoke/ok/fail/info events) and
//!   its pairing into [`Operation`]s.
//! - [`checker`]: the linearizability checker (Wing–Gong–Lowe search per key, register and
//!   counter models, budget).
//! - [`formats`]: readers for Jepsen text logs and EDN histories (Porcupine, Jepsen), to
//!   cross-check verdicts with published ones.
//!
//! [`check_file`] detects a file's format and checks it, for `larder check FILE`.

pub mod checker;
pub mod driver;
mod edn;
pub mod formats;
pub mod history;

use std::path::Path;

pub use checker::{
    Budget, CheckConfig, KeyReport, KeyVerdict, LinearizablePrefix, Model, ModelKind, Report,
    Verdict, check_history, check_operations,
};
pub use formats::{Format, LoadError, Loaded, ParseError, detect_format, load_str};
pub use history::{Function, History, HistoryError, Op, OpKind, Operation, Outcome, Value};

/// Why a history file could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Load {
        path: String,
        #[source]
        source: LoadError,
    },
    #[error("{path}: {source}")]
    History {
        path: String,
        #[source]
        source: HistoryError,
    },
}

/// Reads a history file in any supported format (`history.jsonl`, a Jepsen log, EDN).
// Offline tooling (`larder check`): never called inside a simulation.
#[allow(clippy::disallowed_methods)]
pub fn load_file(path: impl AsRef<Path>) -> Result<Loaded, Error> {
    let path = path.as_ref();
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: name.clone(),
        source,
    })?;
    load_str(&text).map_err(|source| Error::Load { path: name, source })
}

/// Checks a history file with no budget; see [`check_file_with`].
pub fn check_file(path: impl AsRef<Path>) -> Result<Report, Error> {
    check_file_with(path, &Budget::unlimited())
}

/// Detects the file's format, reads it and checks it for linearizability with the
/// configuration its format calls for (see [`formats`]).
pub fn check_file_with(path: impl AsRef<Path>, budget: &Budget) -> Result<Report, Error> {
    let path = path.as_ref();
    let loaded = load_file(path)?;
    check_history(&loaded.history, &loaded.config, budget).map_err(|source| Error::History {
        path: path.display().to_string(),
        source,
    })
}
