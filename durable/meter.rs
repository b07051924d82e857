//! The room's meter in the Durable Object: when it counts, when it saves,
//! and what `GET /rooms/{room}` reports (`stats`, `usage`). The counting
//! rules are `core::meter`'s.
//!
//! Invariants:
//! - Every event (request, WebSocket message or close, alarm) tells the
//!   meter when it begins and when it ends, so awake time and stream time
//!   are accrued with the events in flight and the connections held.
//! - Counters are saved only into storage that exists (a room that was
//!   never published to writes nothing), at most every
//!   `core::meter::SAVE_EVERY_MS` while clients change them (after the
//!   event that made a save due, or by the alarm), and when the room's
//!   state is read, so what `GET` reports is what a restart finds.

use super::{now_ms, RoomObject};
use crate::core::meter::{Counters, FromStorage, Meter, Stats, Usage};
use crate::core::transport;

impl RoomObject {
    /// Connections that keep the room awake: SSE streams and held long
    /// polls (hibernated WebSockets do not).
    fn held_awake(&self) -> usize {
        use crate::core::transport::Transport;
        self.streams.connections() + self.polls.connections()
    }

    /// Steps the meter to now (`step` gets the time and the connections
    /// holding the room awake), then adds the storage rows counted since
    /// the last step.
    fn meter_step(&self, step: impl FnOnce(&mut Meter, u64, usize)) {
        let held = self.held_awake();
        let (read, written) = self.rows.take();
        let mut meter = self.meter.borrow_mut();
        step(&mut meter, now_ms(), held);
        meter.rows(read, written);
    }

    /// Accrues awake time and the storage rows counted so far.
    pub(super) fn tick_meter(&self) {
        self.meter_step(Meter::tick);
    }

    /// An event began: the room is billed for duration until it ends.
    pub(super) fn event_began(&self) {
        let held = self.held_awake();
        self.meter.borrow_mut().event_began(now_ms(), held);
    }

    /// Counts `own` requests and those the entry module answered from its
    /// memo since the last count (`crate::memo`). Nothing counted, nothing
    /// changed: an alarm alone never asks for a save.
    pub(super) fn count_requests(&self, own: u64) {
        let requests = own + u64::from(self.answers.take_answered());
        if requests > 0 {
            self.meter.borrow_mut().requests(requests);
        }
    }

    /// The event ended (its storage rows counted with it).
    pub(super) fn event_ended(&self) {
        self.meter_step(Meter::event_ended);
    }

    /// The room's live connections, for its peak.
    pub(super) fn meter_connections(&self) -> usize {
        let live = transport::live(&self.hubs());
        self.meter.borrow_mut().connections(live);
        live
    }

    /// Adds what storage saved to what this instance counted before it
    /// loaded the room (its first request counts before the load).
    pub(super) fn absorb_saved_counters(&self, saved: &Counters) {
        self.meter.borrow_mut().absorb(saved);
    }

    /// When the counters must be saved, if the room has storage to save
    /// them in.
    pub(super) fn meter_save_due(&self) -> Option<u64> {
        let created = matches!(self.log.borrow().as_ref(), Some(l) if l.is_created());
        if !created {
            return None;
        }
        self.meter.borrow().save_due()
    }

    /// Saves the counters if a save is due (or now, with `force`).
    pub(super) fn save_meter(&self, force: bool) {
        let now = now_ms();
        let due = self.meter_save_due();
        if !force && due.is_none_or(|d| d > now) {
            return;
        }
        self.tick_meter();
        let counters = self.meter.borrow().counters().clone();
        match self.with_log(|l| l.store.save_counters(&counters)) {
            Ok(Ok(true)) => self.meter.borrow_mut().saved(now),
            Ok(Ok(false)) | Err(_) => {}
            Ok(Err(e)) => worker::console_error!("saving the room's counters: {}", e),
        }
    }

    /// `stats` and `usage` as `GET /rooms/{room}` reports them; `None`
    /// before the room is loaded.
    pub(super) fn meter_report(&self) -> Option<(Stats, Usage)> {
        let log = self.log.borrow();
        let l = log.as_ref()?;
        let storage = FromStorage {
            published: l.position.last_id().0,
            loads: l.loads,
            since: l.created_ms,
            stored_bytes: l.store.stored_bytes(),
        };
        Some(self.meter.borrow().counters().report(storage))
    }
}
