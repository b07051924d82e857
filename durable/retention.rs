//! Retention in the Durable Object: expiring history by age
//! (`HISTORY_TTL_SECS`) and erasing idle rooms (`ROOM_IDLE_TTL_SECS`),
//! on the rules of `core::retention`.
//!
//! Invariants:
//! - History is trimmed whenever the room loads its log (every event) once
//!   the oldest message is due, and by the alarm while no event comes, so
//!   an expired message is never read back and does not stay on disk.
//! - The room's alarm is armed for the earlier of the next history expiry
//!   and the idle deadline ([`Retention::due`]); the alarm decides
//!   (`core::retention::idle_check`): a live connection, a hibernated
//!   WebSocket included, always keeps the room.
//! - Erasing an idle room is exactly `DELETE /rooms/{room}` without a
//!   caller: connections ended (there are none), tickets dropped, storage
//!   (log, keys, counters, outbox, alarm) deleted; the next publish starts a
//!   new epoch, so old cursors get `reset` and old ETags never match.
//! - The last time the room had a live connection is written only when
//!   the idle TTL is on: when its last connection leaves (noticed at the
//!   next event) and when the alarm finds it occupied.

use super::store::Store;
use super::{now_ms, RoomObject};
use crate::core::retention::{self, Idle};
use crate::core::transport;
use std::cell::Cell;

/// When retention next has work, as far as this instance knows.
#[derive(Default)]
pub struct Retention {
    /// When the oldest kept message expires (ms).
    history_due: Cell<Option<u64>>,
    /// When the room will have been idle for the whole TTL (ms).
    idle_due: Cell<Option<u64>>,
    /// Whether the room had a live connection after the last event.
    was_live: Cell<bool>,
}

impl Retention {
    /// The earliest time retention needs the alarm.
    pub fn due(&self) -> Option<u64> {
        [self.history_due.get(), self.idle_due.get()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The room's storage was erased: nothing is due.
    pub fn clear(&self) {
        self.history_due.set(None);
        self.idle_due.set(None);
    }
}

impl RoomObject {
    /// After the log loaded: when retention is next due, and trims what
    /// already expired.
    pub(super) fn retention_loaded(&self) {
        let Ok(settings) = self.settings() else {
            return;
        };
        let idle = self
            .with_log(|l| {
                l.is_created().then(|| {
                    retention::idle_deadline(
                        l.last_publish_ms,
                        l.last_active_ms,
                        settings.room_idle_ttl_secs,
                    )
                })
            })
            .ok()
            .flatten()
            .flatten();
        self.retention.idle_due.set(idle);
        self.expire_history();
    }

    /// Drops the messages older than `HISTORY_TTL_SECS` from the loaded
    /// log, if any are due (a comparison in memory otherwise).
    pub(super) fn expire_history(&self) {
        let Ok(settings) = self.settings() else {
            return;
        };
        let ttl = settings.history_ttl_secs;
        if ttl == 0 {
            return;
        }
        let trimmed = self.with_log(|l| {
            let result = l.expire(now_ms(), ttl);
            (result, l.history_due(ttl))
        });
        match trimmed {
            Ok((Ok(()), due)) => self.retention.history_due.set(due),
            Ok((Err(e), _)) => worker::console_error!("expiring history: {}", e),
            Err(_) => {}
        }
    }

    /// A message was stored at `now`: the room is not idle, and the
    /// history has something to expire.
    pub(super) fn retention_published(&self, now: u64) {
        let Ok(settings) = self.settings() else {
            return;
        };
        if let Some(due) = retention::idle_deadline(now, 0, settings.room_idle_ttl_secs) {
            self.retention.idle_due.set(Some(due));
        }
        if let Some(due) = retention::history_due(Some(now), settings.history_ttl_secs) {
            let earliest = self.retention.history_due.get().map_or(due, |d| d.min(due));
            self.retention.history_due.set(Some(earliest));
        }
    }

    /// After an event, with `live` connections: when the last one left,
    /// the room's idle time starts now.
    pub(super) fn retention_occupancy(&self, live: usize) {
        let was_live = self.retention.was_live.replace(live > 0);
        if !was_live || live > 0 {
            return;
        }
        let Ok(settings) = self.settings() else {
            return;
        };
        if settings.room_idle_ttl_secs == 0 {
            return;
        }
        let now = now_ms();
        // A room without storage has nothing to erase, and its alarm
        // must not be set (reads create no storage).
        if self.note_active(now) {
            self.retention.idle_due.set(retention::idle_deadline(
                0,
                now,
                settings.room_idle_ttl_secs,
            ));
        }
    }

    /// Records that the room had a live connection at `now`, in storage
    /// and in the loaded log. Returns whether it was recorded (the room
    /// has storage).
    fn note_active(&self, now: u64) -> bool {
        let in_log = self.with_log(|l| {
            if !l.is_created() {
                return Ok(false);
            }
            l.last_active_ms = now;
            l.store.set_last_active(now).map(|()| true)
        });
        // Not loaded (an alarm names no room): straight into storage.
        let recorded = in_log.unwrap_or_else(|_| {
            self.peek_store()
                .and_then(|s| s.set_last_active(now).map(|()| s.is_created()))
        });
        match recorded {
            Ok(recorded) => recorded,
            Err(e) => {
                worker::console_error!("noting the room's activity: {}", e);
                false
            }
        }
    }

    /// From the alarm: trims expired history (also when the log is not
    /// loaded: an alarm names no room) and erases the room once it has
    /// been idle for `ROOM_IDLE_TTL_SECS`.
    pub(super) async fn retention_alarm(&self) {
        let Ok(settings) = self.settings() else {
            return;
        };
        let now = now_ms();
        let loaded = self.log.borrow().is_some();
        let history_ttl = settings.history_ttl_secs;
        if history_ttl > 0 && self.retention.history_due.get().is_none_or(|d| d <= now) {
            if loaded {
                self.expire_history();
            } else if let Err(e) = self.expire_unloaded(now, history_ttl) {
                worker::console_error!("expiring history: {}", e);
            }
        }
        let idle_ttl = settings.room_idle_ttl_secs;
        if idle_ttl == 0 {
            return;
        }
        let activity = if loaded {
            self.with_log(|l| {
                l.is_created()
                    .then_some((l.last_publish_ms, l.last_active_ms))
            })
            .ok()
            .flatten()
        } else {
            self.store_activity().ok().flatten()
        };
        let Some((last_publish, last_active)) = activity else {
            // No storage: nothing to erase.
            self.retention.idle_due.set(None);
            return;
        };
        let live = transport::live(&self.hubs());
        match retention::idle_check(now, live, last_publish, last_active, idle_ttl) {
            Some(Idle::Occupied { next_check_ms }) => {
                self.note_active(now);
                self.retention.idle_due.set(Some(next_check_ms));
            }
            Some(Idle::NotYet { at_ms }) => self.retention.idle_due.set(Some(at_ms)),
            Some(Idle::Erase) => {
                if let Err(e) = self.erase().await {
                    worker::console_error!("erasing an idle room: {}", e);
                }
            }
            None => {}
        }
    }

    /// A handle on the room's storage that needs no room name.
    fn peek_store(&self) -> Result<Store, crate::core::error::HubError> {
        Store::peek(self.state.storage().sql(), self.rows.clone())
    }

    /// The room's last publish and activity from storage, when it has any.
    fn store_activity(&self) -> Result<Option<(u64, u64)>, crate::core::error::HubError> {
        let store = self.peek_store()?;
        if !store.is_created() {
            return Ok(None);
        }
        let (_, last_publish) = store.last_publish()?;
        Ok(Some((last_publish, store.last_active()?)))
    }

    /// Trims expired history straight in storage (the alarm of a room
    /// whose log is not loaded).
    fn expire_unloaded(&self, now: u64, ttl: u32) -> Result<(), crate::core::error::HubError> {
        let store = self.peek_store()?;
        let Some(cutoff) = retention::history_cutoff(now, ttl) else {
            return Ok(());
        };
        let (last_id, last_publish) = store.last_publish()?;
        let (_, oldest) = store.expire(cutoff, last_id, last_publish)?;
        self.retention
            .history_due
            .set(retention::history_due(oldest, ttl));
        Ok(())
    }

    /// Erases the room: every connection ended (`4004 room_deleted`), its
    /// tickets, log, keys, counters, outbox and alarm gone. The next
    /// publish starts a new log under a new epoch.
    pub(super) async fn erase(&self) -> Result<(), crate::core::error::HubError> {
        transport::end(&self.hubs(), &transport::Ending::All);
        self.tickets.borrow_mut().clear();
        self.answers_changed();
        *self.log.borrow_mut() = None;
        self.polls.forget_pages();
        *self.meter.borrow_mut() = Default::default();
        self.retention.clear();
        self.alarm_ms.set(None);
        self.state.storage().delete_all().await?;
        Ok(())
    }
}
