//! A node-local cache of aggregate states, so a command on a busy stream does not reload it.
//!
//! An entry is the state of a stream at a version. It is used only when the version equals the
//! stream's head as read under the stream's lock, which makes it exact: events are immutable, so
//! the state at a version never changes. Entries are stored only after their transaction commits
//! (a rolled-back version could later be taken by other events). Other nodes' appends make the
//! entry miss; on a node that reads the log ([`parley_eventstore::EventStore::share_reads`]), the
//! cache also hears of them from its reader (it is a [`LogObserver`]) and says the entry is
//! behind, so that a command brings it up to date before it decides instead of after its
//! append was refused.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Mutex;

use parley_eventstore::{LogCursor, LogObserver, RecordedEvent, StreamKey};
use uuid::Uuid;

/// Streams kept at most; beyond it, an arbitrary entry is dropped per insertion.
const CAPACITY: usize = 10_000;

/// A committed state: its version, the stream's account, the cursor of its last event.
struct Entry {
    version: i64,
    /// The newest version of the stream the log has shown this node (0: none newer seen).
    seen: i64,
    account_id: Uuid,
    cursor: Option<LogCursor>,
    state: Box<dyn Any + Send + Sync>,
}

/// The latest cached state of a stream.
pub struct Latest<A> {
    pub version: i64,
    /// The log showed a newer version of the stream (another node wrote): the state is exact
    /// at `version` but not the head.
    pub behind: bool,
    pub account_id: Uuid,
    pub cursor: Option<LogCursor>,
    pub state: A,
}

#[derive(Default)]
pub struct AggregateCache {
    entries: Mutex<HashMap<StreamKey, Entry>>,
}

impl AggregateCache {
    /// The latest cached state of `stream`, to decide on optimistically (the append then checks
    /// the version under the lock).
    pub fn latest<A: Clone + 'static>(&self, stream: &StreamKey) -> Option<Latest<A>> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.get(stream)?;
        let state = entry.state.downcast_ref::<A>()?.clone();
        Some(Latest {
            version: entry.version,
            behind: entry.seen > entry.version,
            account_id: entry.account_id,
            cursor: entry.cursor,
            state,
        })
    }

    /// Drops what is known of `stream` (after a conflict showed it stale).
    pub fn forget(&self, stream: &StreamKey) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(stream);
        }
    }

    /// Remembers the committed state of `stream` at `version`.
    pub fn put<A: Send + Sync + 'static>(
        &self,
        stream: StreamKey,
        version: i64,
        account_id: Uuid,
        cursor: Option<LogCursor>,
        state: A,
    ) {
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() >= CAPACITY && !entries.contains_key(&stream) {
            if let Some(evict) = entries.keys().next().cloned() {
                entries.remove(&evict);
            }
        }
        let seen = match entries.get(&stream) {
            // Never replace a newer state with an older one.
            Some(entry) if entry.version > version => return,
            Some(entry) => entry.seen,
            None => 0,
        };
        entries.insert(stream, Entry { version, seen, account_id, cursor, state: Box::new(state) });
    }
}

/// The log showed each event's stream at its version: a cached state older than that is behind.
impl LogObserver for AggregateCache {
    fn read(&self, events: &[RecordedEvent]) {
        let Ok(mut entries) = self.entries.lock() else { return };
        for e in events {
            if let Some(entry) =
                entries.get_mut(&StreamKey::new(e.stream_type.as_str(), e.stream_id.as_str()))
            {
                entry.seen = entry.seen.max(e.version);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_serves_only_its_exact_version_and_type() {
        let cache = AggregateCache::default();
        let s = StreamKey::new("T", "1");
        cache.put(s.clone(), 3, Uuid::nil(), None, String::from("state at 3"));
        let latest = cache.latest::<String>(&s).unwrap();
        assert_eq!((latest.version, latest.state.as_str()), (3, "state at 3"));
        assert!(cache.latest::<u32>(&s).is_none(), "another type's state is not served");
        cache.put(s.clone(), 2, Uuid::nil(), None, String::from("older"));
        let latest = cache.latest::<String>(&s).unwrap();
        assert_eq!(
            (latest.version, latest.state.as_str()),
            (3, "state at 3"),
            "an older state never replaces a newer one"
        );
        cache.forget(&s);
        assert!(cache.latest::<String>(&s).is_none());
    }
}
