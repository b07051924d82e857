//! Room log: the position and window of one room's ordered history.
//!
//! Each accepted message gets the next [`Seq`]; the last `HISTORY_LIMIT`
//! are kept (fewer once `HISTORY_TTL_SECS` expired the oldest), so the
//! kept ids are always the contiguous range `first_kept ..= last_id`. A resume from a cursor older than that window,
//! or from a cursor ahead of the log (the room's storage was lost and began
//! a new [`Epoch`]), yields [`Resume::Reset`]: we never skip silently
//! (cf. centrifuge's `StreamPosition.Epoch`).
//!
//! Storage trims in batches: a dropped message's row is deleted with up to
//! [`TRIM_BATCH`] others, one statement per batch instead of one per
//! publish (cf. Redis Streams' `MAXLEN ~`). Storage may therefore hold up to
//! `min(TRIM_BATCH, HISTORY_LIMIT) - 1` rows older than `first_kept`; no
//! read serves them: replays and pages start from the window, which lives
//! here, never from the rows that storage holds.
//!
//! The log also owns the room's current ETag, recomputed once per accepted
//! message so a conditional poll compares two strings and nothing more.
//!
//! Pure: no `worker` types, clock or I/O. `durable/store.rs` persists the
//! messages themselves and restores this state from SQLite.

use super::cursor::{Epoch, Seq};
use super::etag::etag_for;

/// Dropped messages whose rows storage deletes in one statement (fewer when
/// `HISTORY_LIMIT` is smaller, so storage never holds twice the limit).
pub const TRIM_BATCH: u64 = 64;

/// Why a resume could not continue exactly where the client stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// Messages after the cursor were already dropped by retention.
    HistoryExceeded,
    /// The cursor is past the room's last id: the room's storage is not the
    /// one the client saw (lost, or a different deployment).
    CursorAhead,
}

impl ResetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::HistoryExceeded => "history_exceeded",
            ResetReason::CursorAhead => "cursor_ahead",
        }
    }
}

/// What a client resuming after a cursor receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Every kept message with an id greater than `after`, no signal needed.
    Replay { after: Seq },
    /// A `reset` signal first, then every kept message from `first_id` on.
    Reset { reason: ResetReason, first_id: Seq },
}

impl Resume {
    /// The id after which replay starts.
    pub fn replay_after(self) -> Seq {
        match self {
            Resume::Replay { after } => after,
            Resume::Reset { first_id, .. } => Seq(first_id.0.saturating_sub(1)),
        }
    }
}

/// The position of a room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLog {
    epoch: Epoch,
    last_id: Seq,
    kept: u64,
    history_limit: u64,
    etag: String,
}

impl RoomLog {
    /// Restores a log from what storage holds: the epoch, the last id ever
    /// assigned and how many messages are kept.
    pub fn restore(epoch: Epoch, last_id: Seq, kept: u64, history_limit: u32) -> Self {
        let history_limit = u64::from(history_limit.max(1));
        RoomLog {
            epoch,
            last_id,
            kept: kept.min(history_limit).min(last_id.0),
            history_limit,
            etag: etag_for(epoch, last_id),
        }
    }

    pub fn last_id(&self) -> Seq {
        self.last_id
    }

    /// The oldest kept id; `last_id + 1` when nothing is kept.
    pub fn first_kept(&self) -> Seq {
        Seq(self.last_id.0 + 1 - self.kept)
    }

    /// The current ETag, quotes included.
    pub fn etag(&self) -> &str {
        &self.etag
    }

    /// The id the next accepted message gets.
    pub fn next_id(&self) -> Seq {
        self.last_id.next()
    }

    /// Retention in storage: once the message `id` is stored, the rows of
    /// every id up to the returned one (inclusive) are to be deleted.
    /// `Some` once per batch of dropped ids (see the module doc), computed
    /// from the id alone, so a lowered `HISTORY_LIMIT` trims the surplus
    /// within one batch. The window ([`Self::first_kept`]) moves with every
    /// message regardless.
    pub fn drop_through(&self, id: Seq) -> Option<Seq> {
        let batch = TRIM_BATCH.min(self.history_limit);
        id.0.checked_sub(self.history_limit)
            .filter(|&n| n > 0 && n % batch == 0)
            .map(Seq)
    }

    /// How many messages the window holds (`first_kept ..= last_id`).
    pub fn kept(&self) -> u64 {
        self.kept
    }

    /// Records that the message with [`Self::next_id`] is stored.
    pub fn append(&mut self) {
        self.last_id = self.last_id.next();
        self.kept = (self.kept + 1).min(self.history_limit);
        self.etag = etag_for(self.epoch, self.last_id);
    }

    /// Age retention (`HISTORY_TTL_SECS`) left the newest `kept` messages:
    /// the older ones are gone, and a resume from before them gets `reset`.
    pub fn retain_newest(&mut self, kept: u64) {
        self.kept = kept.min(self.kept);
    }

    /// How a client standing after `since` resumes.
    pub fn resume(&self, since: Seq) -> Resume {
        if since > self.last_id {
            return Resume::Reset {
                reason: ResetReason::CursorAhead,
                first_id: self.first_kept(),
            };
        }
        // Messages since+1 .. first_kept-1 existed and are gone.
        if since.0 + 1 < self.first_kept().0 {
            return Resume::Reset {
                reason: ResetReason::HistoryExceeded,
                first_id: self.first_kept(),
            };
        }
        Resume::Replay { after: since }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(last: u64, kept: u64, limit: u32) -> RoomLog {
        RoomLog::restore(Epoch(7), Seq(last), kept, limit)
    }

    #[test]
    fn ids_start_at_one_and_always_increase() {
        let mut l = log(0, 0, 3);
        let mut prev = Seq::ZERO;
        for _ in 0..10 {
            let id = l.next_id();
            assert!(id > prev);
            l.append();
            assert_eq!(l.last_id(), id);
            prev = id;
        }
        assert_eq!(l.last_id(), Seq(10));
        assert_eq!(l.first_kept(), Seq(8));
    }

    #[test]
    fn retention_trims_storage_in_batches_of_the_limit_when_small() {
        let l = log(0, 0, 2);
        assert_eq!(l.drop_through(Seq(1)), None);
        assert_eq!(l.drop_through(Seq(2)), None);
        assert_eq!(l.drop_through(Seq(3)), None);
        assert_eq!(l.drop_through(Seq(4)), Some(Seq(2)));
        assert_eq!(l.drop_through(Seq(5)), None);
        assert_eq!(l.drop_through(Seq(10)), Some(Seq(8)));
    }

    #[test]
    fn retention_trims_storage_once_per_batch() {
        let l = log(0, 0, 1000);
        let trims: Vec<u64> = (1..=1200)
            .filter_map(|id| l.drop_through(Seq(id)).map(|s| s.0))
            .collect();
        assert_eq!(trims, vec![64, 128, 192]);
    }

    #[test]
    fn storage_never_holds_a_batch_more_than_the_window() {
        // Rows held after each publish, trimming as `drop_through` says.
        for limit in [1u32, 2, 5, 63, 64, 65, 1000] {
            let mut l = log(0, 0, limit);
            let mut oldest_row = 1;
            for _ in 0..3000 {
                let id = l.next_id();
                l.append();
                if let Some(through) = l.drop_through(id) {
                    oldest_row = through.0 + 1;
                }
                assert!(oldest_row <= l.first_kept().0, "limit {limit} at {id:?}");
                let held = id.0 + 1 - oldest_row;
                let slack = TRIM_BATCH.min(u64::from(limit)) - 1;
                assert!(
                    held <= l.kept() + slack,
                    "limit {limit} at {id:?}: {held} rows"
                );
            }
        }
    }

    #[test]
    fn resume_table() {
        use ResetReason::*;
        // Ids 6..=10 kept.
        let l = log(10, 5, 5);
        let table: &[(u64, Resume)] = &[
            (10, Resume::Replay { after: Seq(10) }),
            (7, Resume::Replay { after: Seq(7) }),
            (5, Resume::Replay { after: Seq(5) }),
            (
                4,
                Resume::Reset {
                    reason: HistoryExceeded,
                    first_id: Seq(6),
                },
            ),
            (
                0,
                Resume::Reset {
                    reason: HistoryExceeded,
                    first_id: Seq(6),
                },
            ),
            (
                11,
                Resume::Reset {
                    reason: CursorAhead,
                    first_id: Seq(6),
                },
            ),
        ];
        for (since, want) in table {
            assert_eq!(l.resume(Seq(*since)), *want, "since={since}");
        }
        // A fresh room: since=0 is a plain replay; anything else is ahead.
        let empty = log(0, 0, 5);
        assert_eq!(empty.resume(Seq(0)), Resume::Replay { after: Seq(0) });
        assert!(matches!(
            empty.resume(Seq(3)),
            Resume::Reset {
                reason: CursorAhead,
                ..
            }
        ));
        // Nothing dropped yet: since=0 replays everything without a reset.
        assert_eq!(
            log(3, 3, 5).resume(Seq(0)),
            Resume::Replay { after: Seq(0) }
        );
    }

    #[test]
    fn reset_replays_from_the_first_kept_id() {
        let l = log(10, 5, 5);
        assert_eq!(l.resume(Seq(1)).replay_after(), Seq(5));
    }

    #[test]
    fn etag_follows_every_append() {
        let mut l = log(4, 4, 10);
        let before = l.etag().to_owned();
        l.append();
        assert_ne!(l.etag(), before);
        assert_eq!(l.etag(), "\"00000007-5\"");
    }

    #[test]
    fn expired_messages_reset_a_resume_from_before_them() {
        // Ids 1..=10 kept; age retention leaves the newest 3 (8..=10).
        let mut l = log(10, 10, 100);
        l.retain_newest(3);
        assert_eq!(l.first_kept(), Seq(8));
        assert_eq!(l.resume(Seq(7)), Resume::Replay { after: Seq(7) });
        assert!(matches!(
            l.resume(Seq(6)),
            Resume::Reset {
                reason: ResetReason::HistoryExceeded,
                first_id: Seq(8)
            }
        ));
        // Everything expired: ids go on, a resume from the last id is fine.
        l.retain_newest(0);
        assert_eq!(l.first_kept(), Seq(11));
        assert_eq!(l.resume(Seq(10)), Resume::Replay { after: Seq(10) });
        assert_eq!(l.next_id(), Seq(11));
        // It never grows the kept window back.
        l.retain_newest(5);
        assert_eq!(l.first_kept(), Seq(11));
    }

    #[test]
    fn restore_clamps_kept_to_the_limit() {
        let l = log(100, 100, 10);
        assert_eq!(l.first_kept(), Seq(91));
    }
}
