//! The Worker's memory of each room's last ETag (`POLL_CACHE_MS`), so that
//! a repeat conditional poll gets its `304` without the hop to the room.
//!
//! One cache per isolate: the Worker records the ETag a room answered a
//! poll with, stamped with when the poll was *sent* to the room (the
//! room's answer was computed after that, so the ETag was current at the
//! stamp or later). A poll whose `If-None-Match` matches an entry younger
//! than the TTL is answered `304` from here.
//!
//! Invariants:
//! - Staleness bound: a `304` from the cache says the ETag was the room's
//!   no more than `ttl_ms` ago. Publishes that do not pass through this
//!   isolate (another isolate, a WebSocket, `POST /publish` elsewhere)
//!   may be missed for that long, never longer.
//! - A publish or delete through this isolate leaves a tombstone stamped
//!   with when its answer arrived; an older poll answer still in flight
//!   (sent before the tombstone) never overwrites it, so this isolate
//!   never serves a `304` for a state it saw replaced, except when the
//!   tombstone was evicted, and the bound above holds even then.
//! - At most `max_entries` rooms are remembered: a full cache first drops
//!   expired entries, then the oldest one.
//!
//! Pure: the caller passes the clock (`now_ms`, milliseconds).

use super::etag::if_none_match;
use std::collections::HashMap;

/// Rooms one isolate remembers at most: each entry is a room name and an
/// ETag (~200 bytes at worst), so the cache stays under a megabyte.
pub const MAX_ENTRIES: usize = 4096;

/// What the isolate last knew about a room.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// The room's ETag; `None` for a tombstone (a publish or delete went
    /// through here, so whatever ETag was known is outdated).
    etag: Option<String>,
    /// When that was known (ms).
    at_ms: u64,
}

/// The per-isolate ETag cache; see the module docs.
#[derive(Debug)]
pub struct PollCache {
    ttl_ms: u64,
    max_entries: usize,
    entries: HashMap<String, Entry>,
}

impl PollCache {
    /// A cache whose entries answer for `ttl_ms` (0 = never).
    pub fn new(ttl_ms: u64, max_entries: usize) -> Self {
        PollCache {
            ttl_ms,
            max_entries: max_entries.max(1),
            entries: HashMap::new(),
        }
    }

    /// The ETag to answer `304` with: the room's remembered ETag, if it is
    /// younger than the TTL at `now_ms` and `if_none_match_header` matches it.
    pub fn not_modified(
        &self,
        room: &str,
        if_none_match_header: &str,
        now_ms: u64,
    ) -> Option<&str> {
        let entry = self.entries.get(room)?;
        let etag = entry.etag.as_deref()?;
        let fresh = now_ms.saturating_sub(entry.at_ms) < self.ttl_ms;
        (fresh && if_none_match(if_none_match_header, etag)).then_some(etag)
    }

    /// Remembers the ETag a room answered a poll with; `sent_at_ms` is
    /// when the poll was sent to the room. Knowledge newer than that (a
    /// later answer, or a tombstone from the same millisecond on) wins.
    pub fn record(&mut self, room: &str, etag: &str, sent_at_ms: u64) {
        if let Some(known) = self.entries.get(room) {
            let newer = match known.etag {
                Some(_) => known.at_ms > sent_at_ms,
                None => known.at_ms >= sent_at_ms,
            };
            if newer {
                return;
            }
        }
        self.put(
            room,
            Entry {
                etag: Some(etag.to_owned()),
                at_ms: sent_at_ms,
            },
            sent_at_ms,
        );
    }

    /// Forgets a room's ETag: a publish or delete through this isolate was
    /// answered at `now_ms`.
    pub fn invalidate(&mut self, room: &str, now_ms: u64) {
        self.put(
            room,
            Entry {
                etag: None,
                at_ms: now_ms,
            },
            now_ms,
        );
    }

    /// Rooms remembered (tombstones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn put(&mut self, room: &str, entry: Entry, now_ms: u64) {
        if let Some(slot) = self.entries.get_mut(room) {
            *slot = entry;
            return;
        }
        if self.entries.len() >= self.max_entries {
            self.make_room(now_ms);
        }
        self.entries.insert(room.to_owned(), entry);
    }

    /// Frees one slot at least: expired entries first (a tombstone past the
    /// TTL guards nothing: an answer sent before it would be expired too),
    /// else the oldest entry.
    fn make_room(&mut self, now_ms: u64) {
        let ttl = self.ttl_ms;
        self.entries
            .retain(|_, e| now_ms.saturating_sub(e.at_ms) < ttl);
        if self.entries.len() < self.max_entries {
            return;
        }
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.at_ms)
            .map(|(room, _)| room.clone());
        if let Some(room) = oldest {
            self.entries.remove(&room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: u64 = 1000;
    const E1: &str = "\"0000001f-1\"";
    const E2: &str = "\"0000001f-2\"";

    /// A test clock: the cache is handed its readings.
    struct Clock(u64);

    impl Clock {
        fn advance(&mut self, ms: u64) -> u64 {
            self.0 += ms;
            self.0
        }
    }

    #[test]
    fn a_matching_fresh_entry_answers_and_an_old_one_does_not() {
        let mut clock = Clock(10_000);
        let mut c = PollCache::new(TTL, 8);
        assert_eq!(c.not_modified("a", E1, clock.0), None, "nothing known");
        c.record("a", E1, clock.0);
        assert_eq!(c.not_modified("a", E1, clock.0), Some(E1));
        assert_eq!(c.not_modified("a", "*", clock.0), Some(E1));
        assert_eq!(c.not_modified("a", &format!("W/{E1}"), clock.0), Some(E1));
        assert_eq!(c.not_modified("a", E2, clock.0), None, "another ETag");
        assert_eq!(c.not_modified("b", E1, clock.0), None, "another room");
        clock.advance(TTL - 1);
        assert_eq!(c.not_modified("a", E1, clock.0), Some(E1), "within the TTL");
        clock.advance(1);
        assert_eq!(c.not_modified("a", E1, clock.0), None, "at the TTL");
    }

    #[test]
    fn the_age_counts_from_when_the_poll_was_sent() {
        let mut c = PollCache::new(TTL, 8);
        // Sent at 0, answered at 400: fresh until 1000, not 1400.
        c.record("a", E1, 0);
        assert_eq!(c.not_modified("a", E1, 999), Some(E1));
        assert_eq!(c.not_modified("a", E1, 1000), None);
    }

    #[test]
    fn a_zero_ttl_never_answers() {
        let mut c = PollCache::new(0, 8);
        c.record("a", E1, 5);
        assert_eq!(c.not_modified("a", E1, 5), None);
    }

    #[test]
    fn a_publish_through_the_isolate_is_seen_at_once() {
        let mut clock = Clock(1_000);
        let mut c = PollCache::new(TTL, 8);
        c.record("a", E1, clock.0);
        let sent_before = clock.0;
        clock.advance(5);
        c.invalidate("a", clock.0);
        assert_eq!(c.not_modified("a", E1, clock.0), None);
        // A poll sent before the publish's answer arrives late with the
        // old ETag: it must not bring it back.
        c.record("a", E1, sent_before);
        assert_eq!(c.not_modified("a", E1, clock.0), None);
        // Nor one sent in the same millisecond (the order is unknown).
        c.record("a", E1, clock.0);
        assert_eq!(c.not_modified("a", E1, clock.0), None);
        // A poll sent after it is the room's newer word.
        clock.advance(1);
        c.record("a", E2, clock.0);
        assert_eq!(c.not_modified("a", E2, clock.0), Some(E2));
        assert_eq!(c.not_modified("a", E1, clock.0), None);
    }

    #[test]
    fn a_late_answer_never_replaces_a_newer_one() {
        let mut c = PollCache::new(TTL, 8);
        c.record("a", E2, 20);
        c.record("a", E1, 10);
        assert_eq!(c.not_modified("a", E2, 20), Some(E2));
        assert_eq!(c.not_modified("a", E1, 20), None);
    }

    #[test]
    fn the_cache_is_bounded_and_drops_the_expired_then_the_oldest() {
        let mut c = PollCache::new(TTL, 3);
        c.record("old", E1, 0);
        c.record("b", E1, 900);
        c.record("c", E1, 950);
        assert_eq!(c.len(), 3);
        // At 1500 "old" has expired: it goes, the fresh ones stay.
        c.record("d", E1, 1500);
        assert_eq!(c.len(), 3);
        assert_eq!(c.not_modified("old", E1, 1500), None);
        assert_eq!(c.not_modified("b", E1, 1500), Some(E1));
        // Nothing expired at 1600: the oldest ("b") goes.
        c.invalidate("e", 1600);
        assert_eq!(c.len(), 3);
        assert_eq!(c.not_modified("b", E1, 1600), None);
        assert_eq!(c.not_modified("c", E1, 1600), Some(E1));
        assert_eq!(c.not_modified("d", E1, 1600), Some(E1));
        // Updating a remembered room takes no new slot.
        c.record("c", E2, 1700);
        assert_eq!(c.len(), 3);
        assert_eq!(c.not_modified("d", E1, 1700), Some(E1));
    }
}
