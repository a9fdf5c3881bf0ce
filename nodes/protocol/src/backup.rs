//! The backup service: what `larder backup` reads from a replica of each slot group to archive
//! it (ARCHITECTURE.md, "Backups and point-in-time restore"): a **base**, the group's whole
//! state at one applied index, and the committed log **entries** after it, which the node
//! keeps for a while after its snapshots cover them (`NodeConfig::retain_log_ms`). Read-only,
//! so any process holding the cluster key may ask (every message is authenticated by it); a
//! backup holds every value of the cluster, so the key is what guards it.

use std::ops::ControlFlow;

use bytes::Bytes;
use larder_core::GroupId;
use serde::{Deserialize, Serialize};

use crate::{Request, Rpc};

/// Bytes of a base per [`BackupPart::Base`] answer.
pub const BACKUP_CHUNK_BYTES: u64 = 1 << 20;

/// A part of the backup of `group`, read from the replica asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRead {
    pub group: GroupId,
    pub part: BackupPart,
}

/// Which part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupPart {
    /// Bytes `offset..` of a base: `index: None` takes a new base now (and answers its first
    /// chunk); `Some(index)` continues the base of that applied index, which the replica keeps
    /// until the next base of the group is taken.
    Base { index: Option<u64>, offset: u64 },
    /// Committed entries from index `from` on.
    Entries { from: u64 },
}

/// How a replica answered a [`BackupRead`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupAnswer {
    Base(BaseChunk),
    Entries(EntriesChunk),
    /// Nothing is applied yet: there is no base to take.
    Empty,
    /// The base asked for is gone (another was taken, or the node restarted): start again.
    Restart,
    /// The node hosts no replica of the group, or its disk failed.
    Failed {
        reason: String,
    },
}

/// One chunk of a base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseChunk {
    /// The applied index the base is the state at.
    pub index: u64,
    /// The group clock at that index (the time a restore compares with).
    pub clock_ms: u64,
    /// The whole base's length in bytes.
    pub total: u64,
    pub offset: u64,
    pub data: Bytes,
}

/// One page of entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntriesChunk {
    /// The lowest index the replica can serve; asked below it, no entries come (a gap).
    pub first: u64,
    /// The replica's applied index: no entry above it is served (they may not be committed).
    pub applied: u64,
    /// `(index, encoded log entry)`, consecutive from the asked index.
    pub entries: Vec<(u64, Bytes)>,
}

impl Rpc for BackupRead {
    type Response = BackupAnswer;
}

impl From<BackupRead> for Request {
    fn from(read: BackupRead) -> Request {
        Request::Backup(read)
    }
}

/// Why reading a part of a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupReadError<E> {
    /// Asking failed (the transport's error).
    #[error("{0}")]
    Ask(E),
    /// The replica answered [`BackupAnswer::Failed`].
    #[error("{0}")]
    Failed(String),
    /// The base being read was replaced by a newer one (another backup took one).
    #[error("the base was replaced while it was read (another backup?)")]
    Restarted,
    /// An answer that does not fit the question.
    #[error("answered {asked} with something else")]
    Unexpected { asked: &'static str },
}

/// A whole base, read chunk by chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// The applied index it is the state at.
    pub index: u64,
    /// The group clock at that index.
    pub clock_ms: u64,
    pub data: Vec<u8>,
}

/// Where reading entries stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntriesRead {
    /// The index after the last entry read (the asked one if none was).
    pub next: u64,
    /// `Some(first)`: the replica no longer holds `next`, only entries from `first` on (its
    /// retention was shorter than the time since the last read): a new base is needed.
    pub gap: Option<u64>,
    /// The taker stopped the reading (its bound on what it holds at once): entries from
    /// `next` on may be waiting.
    pub stopped: bool,
}

/// Reads a new base of `group` whole by `ask` (one [`BackupRead`] to one replica per call):
/// `None` when the replica has applied nothing yet. The client side of the service, shared by
/// `larder backup` (over the network) and the simulator's archiver (in process), so the
/// simulator's faults test the command's own reading.
pub async fn read_base<E, F, Fut>(
    mut ask: F,
    group: GroupId,
) -> Result<Option<Base>, BackupReadError<E>>
where
    F: FnMut(BackupRead) -> Fut,
    Fut: std::future::Future<Output = Result<BackupAnswer, E>>,
{
    let mut ask = |part| {
        let answer = ask(BackupRead { group, part });
        async move {
            match answer.await.map_err(BackupReadError::Ask)? {
                BackupAnswer::Failed { reason } => Err(BackupReadError::Failed(reason)),
                BackupAnswer::Restart => Err(BackupReadError::Restarted),
                answer => Ok(answer),
            }
        }
    };
    let first = match ask(BackupPart::Base {
        index: None,
        offset: 0,
    })
    .await?
    {
        BackupAnswer::Base(chunk) => chunk,
        BackupAnswer::Empty => return Ok(None),
        _ => return Err(BackupReadError::Unexpected { asked: "a base" }),
    };
    let total = usize::try_from(first.total).unwrap_or(usize::MAX);
    // Room for the base as announced, but not more than 64 chunks ahead of what came.
    let mut data = Vec::with_capacity(total.min(64 * BACKUP_CHUNK_BYTES as usize));
    data.extend_from_slice(&first.data);
    while data.len() < total {
        let part = BackupPart::Base {
            index: Some(first.index),
            offset: data.len() as u64,
        };
        match ask(part).await? {
            // An empty chunk short of the total would never end.
            BackupAnswer::Base(chunk)
                if chunk.index == first.index
                    && chunk.offset == data.len() as u64
                    && !chunk.data.is_empty() =>
            {
                data.extend_from_slice(&chunk.data)
            }
            _ => {
                return Err(BackupReadError::Unexpected {
                    asked: "a base chunk",
                });
            }
        }
    }
    Ok(Some(Base {
        index: first.index,
        clock_ms: first.clock_ms,
        data,
    }))
}

/// Reads `group`'s committed entries from index `from` on by `ask`, page by page, handing
/// each page to `take` in order, until the replica's applied index, a gap, or `take` answers
/// [`ControlFlow::Break`] (a taker that holds the pages bounds what it holds this way).
pub async fn read_entries<E, F, Fut, T>(
    mut ask: F,
    group: GroupId,
    mut from: u64,
    mut take: T,
) -> Result<EntriesRead, BackupReadError<E>>
where
    F: FnMut(BackupRead) -> Fut,
    Fut: std::future::Future<Output = Result<BackupAnswer, E>>,
    T: FnMut(Vec<(u64, Bytes)>) -> Result<ControlFlow<()>, E>,
{
    loop {
        let part = BackupPart::Entries { from };
        let chunk = match ask(BackupRead { group, part })
            .await
            .map_err(BackupReadError::Ask)?
        {
            BackupAnswer::Entries(chunk) => chunk,
            BackupAnswer::Failed { reason } => return Err(BackupReadError::Failed(reason)),
            _ => return Err(BackupReadError::Unexpected { asked: "entries" }),
        };
        let Some((last, _)) = chunk.entries.last() else {
            let gap = (from < chunk.first).then_some(chunk.first);
            return Ok(EntriesRead {
                next: from,
                gap,
                stopped: false,
            });
        };
        // Consecutive from the asked index, or the archive would have a hole.
        let consecutive = chunk
            .entries
            .iter()
            .enumerate()
            .all(|(i, (index, _))| *index == from + i as u64);
        if !consecutive {
            return Err(BackupReadError::Unexpected {
                asked: "consecutive entries",
            });
        }
        let next = last + 1;
        let flow = take(chunk.entries).map_err(BackupReadError::Ask)?;
        from = next;
        if flow.is_break() {
            return Ok(EntriesRead {
                next,
                gap: None,
                stopped: true,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use futures::executor::block_on;

    use super::*;

    /// A replica that answers from a script and records what it was asked.
    struct Scripted {
        answers: VecDeque<BackupAnswer>,
        asked: Vec<BackupPart>,
    }

    impl Scripted {
        fn new(answers: Vec<BackupAnswer>) -> Self {
            Scripted {
                answers: answers.into(),
                asked: Vec::new(),
            }
        }

        fn ask(&mut self, read: BackupRead) -> std::future::Ready<Result<BackupAnswer, String>> {
            assert_eq!(read.group, 7);
            self.asked.push(read.part);
            std::future::ready(self.answers.pop_front().ok_or("hung up".to_string()))
        }
    }

    fn chunk(offset: u64, data: &'static [u8]) -> BackupAnswer {
        BackupAnswer::Base(BaseChunk {
            index: 40,
            clock_ms: 1_000,
            total: 5,
            offset,
            data: Bytes::from_static(data),
        })
    }

    fn page(first: u64, indexes: std::ops::Range<u64>) -> BackupAnswer {
        BackupAnswer::Entries(EntriesChunk {
            first,
            applied: 100,
            entries: indexes.map(|i| (i, Bytes::from(i.to_string()))).collect(),
        })
    }

    #[test]
    fn a_base_is_read_chunk_by_chunk_and_a_replaced_one_is_an_error() {
        let mut replica = Scripted::new(vec![chunk(0, b"ab"), chunk(2, b"cde")]);
        let base = block_on(read_base(|read| replica.ask(read), 7)).unwrap();
        assert_eq!(
            base,
            Some(Base {
                index: 40,
                clock_ms: 1_000,
                data: b"abcde".to_vec()
            })
        );
        let continued = BackupPart::Base {
            index: Some(40),
            offset: 2,
        };
        assert_eq!(replica.asked[1], continued);

        let mut replica = Scripted::new(vec![chunk(0, b"ab"), BackupAnswer::Restart]);
        let error = block_on(read_base(|read| replica.ask(read), 7)).unwrap_err();
        assert!(matches!(error, BackupReadError::Restarted), "{error}");
        // A chunk of another offset, or an empty one short of the total, is refused, not
        // waited on forever.
        for wrong in [chunk(1, b"bc"), chunk(2, b"")] {
            let mut replica = Scripted::new(vec![chunk(0, b"ab"), wrong]);
            let error = block_on(read_base(|read| replica.ask(read), 7)).unwrap_err();
            assert!(
                matches!(error, BackupReadError::Unexpected { .. }),
                "{error}"
            );
        }
        let mut replica = Scripted::new(vec![BackupAnswer::Empty]);
        assert_eq!(
            block_on(read_base(|read| replica.ask(read), 7)).unwrap(),
            None
        );
    }

    #[test]
    fn entries_are_read_page_by_page_to_the_applied_index_or_a_gap() {
        let mut replica = Scripted::new(vec![page(1, 10..13), page(1, 13..14), page(1, 14..14)]);
        let mut taken = Vec::new();
        let take = |rows: Vec<(u64, Bytes)>| {
            taken.extend(rows.into_iter().map(|(i, _)| i));
            Ok(ControlFlow::Continue(()))
        };
        let read = block_on(read_entries(|read| replica.ask(read), 7, 10, take)).unwrap();
        assert_eq!(
            read,
            EntriesRead {
                next: 14,
                gap: None,
                stopped: false
            }
        );
        assert_eq!(taken, vec![10, 11, 12, 13]);
        let froms: Vec<_> = replica.asked.iter().collect();
        assert_eq!(
            froms,
            [10, 13, 14]
                .map(|from| BackupPart::Entries { from })
                .iter()
                .collect::<Vec<_>>()
        );

        // The replica purged past what was asked: a gap, with where it now starts.
        let mut replica = Scripted::new(vec![page(30, 0..0)]);
        let read = block_on(read_entries(
            |r| replica.ask(r),
            7,
            10,
            |_| Ok(ControlFlow::Continue(())),
        ))
        .unwrap();
        assert_eq!(
            read,
            EntriesRead {
                next: 10,
                gap: Some(30),
                stopped: false
            }
        );

        // A page that skips an index would leave a hole in the archive.
        let mut replica = Scripted::new(vec![page(1, 11..13)]);
        let error = block_on(read_entries(
            |r| replica.ask(r),
            7,
            10,
            |_| Ok(ControlFlow::Continue(())),
        ))
        .unwrap_err();
        assert!(
            matches!(error, BackupReadError::Unexpected { .. }),
            "{error}"
        );
        // The transport's error and the taker's come back as they were.
        let mut replica = Scripted::new(vec![]);
        let error = block_on(read_entries(
            |r| replica.ask(r),
            7,
            10,
            |_| Ok(ControlFlow::Continue(())),
        ))
        .unwrap_err();
        assert_eq!(error.to_string(), "hung up");
        let mut replica = Scripted::new(vec![page(1, 10..11)]);
        let full = |_| Err("disk full".to_string());
        let error = block_on(read_entries(|r| replica.ask(r), 7, 10, full)).unwrap_err();
        assert_eq!(error.to_string(), "disk full");

        // A taker that holds what it read stops after a page: where to go on is returned.
        let mut replica = Scripted::new(vec![page(1, 10..13), page(1, 13..14)]);
        let enough = |_| Ok(ControlFlow::Break(()));
        let read = block_on(read_entries(|r| replica.ask(r), 7, 10, enough)).unwrap();
        assert_eq!(
            read,
            EntriesRead {
                next: 13,
                gap: None,
                stopped: true
            }
        );
        assert_eq!(replica.asked.len(), 1, "nothing asked after the stop");
    }
}
