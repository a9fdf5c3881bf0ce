//! Costly subjects: the keys (or whole groups) whose last read answered a large reply.
//!
//! A read's cost is known only once it answered, and the same key tends to cost the same on
//! its next read (a 10,000-element list read whole stays one until it shrinks). So whoever
//! must keep slow reads apart from fast ones remembers the subjects whose last reply was at
//! least [`COSTLY_REPLY_BYTES`] and treats their next read as slow: a node's lanes run it in
//! the slow lane (`larder_storage::lanes`), the proxy runs it alone instead of in a coalesced
//! batch, where it would hold up every read of its group queued behind it
//! (`larder_proxy::coalesce`). A read of the subject that answers small again forgets it.
//!
//! Bounded: at most `max` subjects, each of at most [`COSTLY_SUBJECT_BYTES_MAX`] (a longer key is
//! never remembered: its reads stay where they were); past `max`, the smallest one (in the
//! subject's order) is forgotten. Cheap when nothing is costly, which is almost always:
//! lookups and small replies then read one atomic and take no lock.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::kv::Reply;

/// A reply at least this large (postcard-encoded bytes, [`Reply::encoded_len`]) makes its
/// subject costly: 64 KiB is a thousand-odd elements of a collection, where encoding,
/// sending and decoding the reply takes milliseconds of CPU against a GET's microseconds.
pub const COSTLY_REPLY_BYTES: usize = 64 << 10;

/// Subjects remembered by default.
pub const COSTLY_SUBJECTS_MAX: usize = 1024;

/// The longest subject (a key, bytes) remembered: with [`COSTLY_SUBJECTS_MAX`] the memory
/// stays within a megabyte whatever keys clients choose.
pub const COSTLY_SUBJECT_BYTES_MAX: usize = 1024;

/// See the module doc.
#[derive(Debug)]
pub struct CostlySubjects<S> {
    reply_bytes: usize,
    max: usize,
    subjects: Mutex<BTreeMap<S, usize>>,
    /// `subjects.len()`, readable without the lock.
    len: AtomicUsize,
}

impl<S: Ord> CostlySubjects<S> {
    /// Subjects become costly at `reply_bytes`; at most `max` (at least one) are remembered.
    pub fn new(reply_bytes: usize, max: usize) -> Self {
        CostlySubjects {
            reply_bytes,
            max: max.max(1),
            subjects: Mutex::new(BTreeMap::new()),
            len: AtomicUsize::new(0),
        }
    }

    /// Whether any of `subjects` is costly.
    pub fn any<'a>(&self, subjects: impl IntoIterator<Item = &'a S>) -> bool
    where
        S: 'a,
    {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let costly = self.lock();
        subjects
            .into_iter()
            .any(|subject| costly.contains_key(subject))
    }

    /// Records that a read of `subject` (`subject_bytes` long) answered `reply_bytes`:
    /// remembered when large, forgotten when small.
    pub fn record(&self, subject: S, subject_bytes: usize, reply_bytes: usize) {
        if subject_bytes > COSTLY_SUBJECT_BYTES_MAX {
            return;
        }
        let large = reply_bytes >= self.reply_bytes;
        if !large && self.len.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut costly = self.lock();
        if large {
            costly.insert(subject, reply_bytes);
            while costly.len() > self.max {
                costly.pop_first();
            }
        } else {
            costly.remove(&subject);
        }
        self.len.store(costly.len(), Ordering::Relaxed);
    }

    /// Subjects remembered now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<S, usize>> {
        // A panic while it was held left a map of plain values: still a sound memory.
        self.subjects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Reply {
    /// The reply's size as it travels between a node and a proxy (postcard-encoded bytes):
    /// what [`CostlySubjects`] measures. One pass over the reply, nothing allocated.
    pub fn encoded_len(&self) -> usize {
        postcard::serialize_with_flavor(self, postcard::ser_flavors::Size::default()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn array(elements: usize) -> Reply {
        Reply::Array(vec![
            Reply::Bulk(Bytes::from_static(b"0123456789"));
            elements
        ])
    }

    #[test]
    fn a_large_reply_makes_its_subject_costly_until_a_small_one() {
        let costly = CostlySubjects::new(1000, 8);
        let (list, other) = ("list".to_string(), "other".to_string());
        assert!(!costly.any([&list]));
        costly.record(list.clone(), 4, array(200).encoded_len());
        assert!(costly.any([&list]));
        assert!(costly.any([&other, &list]));
        assert!(!costly.any([&other]));
        costly.record(list.clone(), 4, array(3).encoded_len());
        assert!(!costly.any([&list]));
        assert!(costly.is_empty());
    }

    #[test]
    fn it_remembers_at_most_max_subjects() {
        let costly = CostlySubjects::new(10, 3);
        for subject in 0..10u32 {
            costly.record(subject, 4, 100);
        }
        assert_eq!(costly.len(), 3);
        // The smallest are forgotten first.
        assert!(!costly.any([&0]));
        assert!(costly.any([&9]));
        // A subject too long to remember is not.
        costly.record(100, COSTLY_SUBJECT_BYTES_MAX + 1, 100);
        assert!(!costly.any([&100]));
    }

    #[test]
    fn encoded_len_grows_with_the_reply() {
        assert!(Reply::Ok.encoded_len() <= 2);
        let (small, large) = (array(10).encoded_len(), array(10_000).encoded_len());
        assert!(large > COSTLY_REPLY_BYTES, "{large}");
        assert!(small < 200, "{small}");
    }
}
