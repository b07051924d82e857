//! Retention by age: when kept messages expire (`HISTORY_TTL_SECS`) and
//! when an idle room erases itself (`ROOM_IDLE_TTL_SECS`).
//!
//! Invariants:
//! - A message published at `ts` is kept while `now < ts + ttl`; from
//!   `ts + ttl` on it is gone from every read (a resume from before it
//!   gets `reset history_exceeded`).
//! - A room is idle from the later of its last publish and the last time
//!   it was seen with a live connection; it is erased once it has been idle
//!   for the whole TTL and has no live connection at that moment. A live
//!   connection (a hibernated WebSocket included) always keeps it.
//! - A TTL of 0 is off: nothing expires and no room is erased.
//!
//! Pure: times are milliseconds since the epoch, passed in.

/// Milliseconds in a TTL of `secs` seconds; `None` when the TTL is off.
fn ttl_ms(secs: u32) -> Option<u64> {
    (secs > 0).then(|| u64::from(secs) * 1000)
}

/// Messages published at or before this time have expired at `now_ms`.
pub fn history_cutoff(now_ms: u64, ttl_secs: u32) -> Option<u64> {
    ttl_ms(ttl_secs).map(|ttl| now_ms.saturating_sub(ttl))
}

/// When the oldest kept message (published at `oldest_ts_ms`) expires: the
/// next time the history must be trimmed.
pub fn history_due(oldest_ts_ms: Option<u64>, ttl_secs: u32) -> Option<u64> {
    Some(oldest_ts_ms? + ttl_ms(ttl_secs)?)
}

/// Whether the message published at `ts_ms` has expired at `now_ms`.
pub fn expired(ts_ms: u64, now_ms: u64, ttl_secs: u32) -> bool {
    history_cutoff(now_ms, ttl_secs).is_some_and(|cutoff| ts_ms <= cutoff)
}

/// What the room's alarm decides about an idle room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// A live connection holds the room: it is active now; look again one
    /// TTL later (or when the last connection leaves).
    Occupied { next_check_ms: u64 },
    /// Not idle for long enough: look again at this time.
    NotYet { at_ms: u64 },
    /// Idle for the whole TTL: erase the room's storage.
    Erase,
}

/// When the room will have been idle for the whole TTL, counting from the
/// later of its last publish and the last time it had a live connection.
pub fn idle_deadline(last_publish_ms: u64, last_active_ms: u64, ttl_secs: u32) -> Option<u64> {
    Some(last_publish_ms.max(last_active_ms) + ttl_ms(ttl_secs)?)
}

/// Decides about a room at `now_ms`, with `live` connections. `None` when
/// `ROOM_IDLE_TTL_SECS` is off.
pub fn idle_check(
    now_ms: u64,
    live: usize,
    last_publish_ms: u64,
    last_active_ms: u64,
    ttl_secs: u32,
) -> Option<Idle> {
    let ttl = ttl_ms(ttl_secs)?;
    if live > 0 {
        return Some(Idle::Occupied {
            next_check_ms: now_ms + ttl,
        });
    }
    let deadline = idle_deadline(last_publish_ms, last_active_ms, ttl_secs)?;
    Some(if now_ms >= deadline {
        Idle::Erase
    } else {
        Idle::NotYet { at_ms: deadline }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_means_nothing_expires_and_nothing_is_erased() {
        assert_eq!(history_cutoff(1_000_000, 0), None);
        assert_eq!(history_due(Some(5), 0), None);
        assert!(!expired(0, u64::MAX, 0));
        assert_eq!(idle_check(u64::MAX, 0, 0, 0, 0), None);
        assert_eq!(idle_deadline(0, 0, 0), None);
    }

    #[test]
    fn a_message_expires_exactly_one_ttl_after_it_was_published() {
        let ts = 10_000;
        assert!(!expired(ts, ts + 1_999, 2));
        assert!(expired(ts, ts + 2_000, 2));
        assert_eq!(history_due(Some(ts), 2), Some(ts + 2_000));
        assert_eq!(history_due(None, 2), None);
        // Early in the clock nothing underflows.
        assert_eq!(history_cutoff(500, 2), Some(0));
    }

    #[test]
    fn idleness_counts_from_the_later_of_publish_and_activity() {
        // Last publish at 1 s, last seen occupied at 5 s, TTL 10 s.
        assert_eq!(idle_deadline(1_000, 5_000, 10), Some(15_000));
        assert_eq!(
            idle_check(14_999, 0, 1_000, 5_000, 10),
            Some(Idle::NotYet { at_ms: 15_000 })
        );
        assert_eq!(idle_check(15_000, 0, 1_000, 5_000, 10), Some(Idle::Erase));
        // A publish after that moves the deadline.
        assert_eq!(
            idle_check(15_000, 0, 9_000, 5_000, 10),
            Some(Idle::NotYet { at_ms: 19_000 })
        );
    }

    #[test]
    fn a_live_connection_always_keeps_the_room() {
        assert_eq!(
            idle_check(1_000_000, 1, 0, 0, 10),
            Some(Idle::Occupied {
                next_check_ms: 1_010_000
            })
        );
    }
}
