//! Set commands. Each family of collection commands lives in its own module with the same
//! shape: an enum of its commands (stored in the log inside [`Command`], so variants are only
//! ever added at the end), parsing from Redis arguments, classification, and execution over a
//! [`View`].

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::execute::View;
use super::{CommandError, Reply};

/// A set command as replicas execute it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCommand {}

impl SetCommand {
    /// Parses the command named `name` (lower case) from its arguments after the name;
    /// `None` when `name` is not a set command.
    pub(super) fn parse(name: &str, rest: &[Bytes]) -> Option<Result<SetCommand, CommandError>> {
        let _ = (name, rest);
        None
    }

    /// True for commands that change state (they go through the Raft log).
    pub fn is_write(&self) -> bool {
        match *self {}
    }

    /// Every key the command reads or writes, in argument order.
    pub fn keys(&self) -> Vec<&Bytes> {
        match *self {}
    }

    /// The command's name as clients spell it.
    pub fn name(&self) -> &'static str {
        match *self {}
    }

    /// Applies the command to `view` (pure: the same view gives the same reply and writes).
    pub(super) fn execute(&self, view: &mut View<'_>) -> Reply {
        let _ = view;
        match *self {}
    }
}
