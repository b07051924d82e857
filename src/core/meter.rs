//! A room's counters: what it did (`stats`) and what the platform bills
//! for it (`usage`), as `GET /rooms/{room}` reports them (docs/PROTOCOL.md,
//! "Retention, stats and usage").
//!
//! Invariants:
//! - Counters only grow, from the moment the room's storage was created
//!   (its epoch); erasing the room (`DELETE`, idleness) starts them again.
//! - Saving costs no write per message in a busy room: the counters are
//!   saved as one row at most every [`SAVE_EVERY_MS`] while something
//!   changed them (and whenever the room's state is read); busy means two
//!   events ended within the last [`HIBERNATE_AFTER_MS`]. Any other room
//!   may hibernate after its event, which would lose what memory holds,
//!   so the event saves at its end: one row per event, in rooms that have
//!   few. What may be lost is the counting of a busy room's last minute
//!   before it falls quiet and hibernates, and of a crash. `published`
//!   needs no saving at all: every publish gets the next id, so it is the
//!   log's last id.
//! - Only what a client or the backend did marks the counters changed;
//!   the room's own bookkeeping (its alarm, the save itself) is counted but
//!   never asks for another save, so an idle room stays idle.
//! - Awake time follows the platform's billing rule: an object is billed
//!   for duration while it handles an event or is kept from hibernating by
//!   a connection that cannot hibernate (an SSE stream, a held long poll);
//!   an idle object that could hibernate is not billed, even before it
//!   does, and hibernated WebSockets cost nothing.
//!
//! Pure: times are passed in; the glue counts storage rows and bytes.

use super::transport::TransportKind;
use serde::{Deserialize, Serialize};

/// In a busy room counters are saved at most this often while they
/// change: each save is one row written.
pub const SAVE_EVERY_MS: u64 = 60_000;

/// How long a room without events may stay idle before the platform
/// hibernates or evicts it (and what was counted in memory is gone).
pub const HIBERNATE_AFTER_MS: u64 = 10_000;

/// Messages delivered, per transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    pub ws: u64,
    pub sse: u64,
    pub poll: u64,
}

/// The counters a room saves (everything else it reports is read from the
/// log or storage).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub delivered: Delivered,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub peak_connections: u64,
    pub requests: u64,
    pub ws_messages_in: u64,
    pub alarms: u64,
    pub awake_ms: u64,
    pub stream_ms: u64,
    pub rows_read: u64,
    pub rows_written: u64,
}

/// `stats` in `GET /rooms/{room}`: what the room did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub published: u64,
    pub delivered: Delivered,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub peak_connections: u64,
    pub loads: u64,
    /// When the room's storage was created (its epoch began), in ms.
    pub since: u64,
}

/// `usage` in `GET /rooms/{room}`: what the platform bills the room for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Requests that reached the room (through the Worker).
    pub requests: u64,
    /// WebSocket messages the room received (the runtime's own `pong` to a
    /// `ping` wakes nothing and is not counted).
    pub ws_messages_in: u64,
    /// Alarm invocations (billed as requests).
    pub alarms: u64,
    /// Time the room was billed for duration, in ms: handling events, or
    /// kept from hibernating by SSE streams and held long polls.
    pub awake_ms: u64,
    /// Connection-milliseconds of SSE streams and held long polls: what
    /// kept the room awake. `stream_ms / awake_ms` is how many on average.
    pub stream_ms: u64,
    pub rows_read: u64,
    pub rows_written: u64,
    /// The room's SQLite database, in bytes, now.
    pub stored_bytes: u64,
    pub since: u64,
}

/// What the log and storage add to the counters in a report.
#[derive(Debug, Clone, Copy, Default)]
pub struct FromStorage {
    /// The log's last id: every publish took the next one.
    pub published: u64,
    pub loads: u64,
    /// When the room's storage was created, in ms.
    pub since: u64,
    pub stored_bytes: u64,
}

impl Counters {
    /// `stats` and `usage` as `GET /rooms/{room}` reports them.
    pub fn report(&self, storage: FromStorage) -> (Stats, Usage) {
        let stats = Stats {
            published: storage.published,
            delivered: self.delivered,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            peak_connections: self.peak_connections,
            loads: storage.loads,
            since: storage.since,
        };
        let usage = Usage {
            requests: self.requests,
            ws_messages_in: self.ws_messages_in,
            alarms: self.alarms,
            awake_ms: self.awake_ms,
            stream_ms: self.stream_ms,
            rows_read: self.rows_read,
            rows_written: self.rows_written,
            stored_bytes: storage.stored_bytes,
            since: storage.since,
        };
        (stats, usage)
    }
}

/// The room's live counters.
#[derive(Debug, Clone, Default)]
pub struct Meter {
    counters: Counters,
    /// When awake time was last accrued.
    last_tick_ms: Option<u64>,
    /// Connections that held the room awake at the last tick.
    held: u64,
    /// Events being handled (requests interleave at awaits).
    in_flight: u64,
    /// When the last two events ended (the latest first).
    last_events_ms: [Option<u64>; 2],
    /// When an event began in a room that is not busy: it may hibernate
    /// once the event ends, so the counts are saved at once.
    may_hibernate_ms: Option<u64>,
    /// Whether a client changed the counters since they were saved.
    changed: bool,
    saved_ms: u64,
}

impl Meter {
    /// Adds counters storage saved to those counted since this instance
    /// started (before it loaded the room).
    pub fn absorb(&mut self, saved: &Counters) {
        let c = &mut self.counters;
        c.delivered.ws += saved.delivered.ws;
        c.delivered.sse += saved.delivered.sse;
        c.delivered.poll += saved.delivered.poll;
        c.bytes_in += saved.bytes_in;
        c.bytes_out += saved.bytes_out;
        c.peak_connections = c.peak_connections.max(saved.peak_connections);
        c.requests += saved.requests;
        c.ws_messages_in += saved.ws_messages_in;
        c.alarms += saved.alarms;
        c.awake_ms += saved.awake_ms;
        c.stream_ms += saved.stream_ms;
        c.rows_read += saved.rows_read;
        c.rows_written += saved.rows_written;
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Accrues awake time up to `now_ms`; `held` connections (SSE streams,
    /// held long polls) keep the room awake from now until the next tick.
    pub fn tick(&mut self, now_ms: u64, held: usize) {
        if let Some(last) = self.last_tick_ms {
            let dt = now_ms.saturating_sub(last);
            if self.in_flight > 0 || self.held > 0 {
                self.counters.awake_ms += dt;
            }
            self.counters.stream_ms += self.held * dt;
        }
        self.last_tick_ms = Some(now_ms);
        self.held = held as u64;
    }

    /// An event (request, WebSocket message or close, alarm) began.
    pub fn event_began(&mut self, now_ms: u64, held: usize) {
        let kept_awake = self.in_flight > 0 || self.held > 0 || held > 0;
        let recent =
            |t: Option<u64>| t.is_some_and(|t| now_ms.saturating_sub(t) < HIBERNATE_AFTER_MS);
        // Busy: two events ended within the last HIBERNATE_AFTER_MS.
        let busy = self.last_events_ms.iter().all(|t| recent(*t));
        if !busy && !kept_awake && self.may_hibernate_ms.is_none() {
            self.may_hibernate_ms = Some(now_ms);
        }
        self.tick(now_ms, held);
        self.in_flight += 1;
    }

    /// An event ended.
    pub fn event_ended(&mut self, now_ms: u64, held: usize) {
        self.tick(now_ms, held);
        self.in_flight = self.in_flight.saturating_sub(1);
        self.last_events_ms = [Some(now_ms), self.last_events_ms[0]];
    }

    /// `n` requests reached the room.
    pub fn requests(&mut self, n: u64) {
        self.counters.requests += n;
        self.changed = true;
    }

    /// A WebSocket message arrived.
    pub fn ws_message(&mut self, bytes: usize) {
        self.counters.ws_messages_in += 1;
        self.counters.bytes_in += bytes as u64;
        self.changed = true;
    }

    /// A message was published over HTTP with a body of `bytes`.
    pub fn published(&mut self, bytes: usize) {
        self.counters.bytes_in += bytes as u64;
        self.changed = true;
    }

    /// The alarm fired (the room's own clock: not a change to save).
    pub fn alarm(&mut self) {
        self.counters.alarms += 1;
    }

    /// `count` messages of `bytes` in all went out over `kind`.
    pub fn delivered(&mut self, kind: TransportKind, count: usize, bytes: u64) {
        if count == 0 {
            return;
        }
        let d = &mut self.counters.delivered;
        match kind {
            TransportKind::WebSocket => d.ws += count as u64,
            TransportKind::Sse => d.sse += count as u64,
            TransportKind::Poll => d.poll += count as u64,
        }
        self.counters.bytes_out += bytes;
        self.changed = true;
    }

    /// The room holds `live` connections now.
    pub fn connections(&mut self, live: usize) {
        if live as u64 > self.counters.peak_connections {
            self.counters.peak_connections = live as u64;
            self.changed = true;
        }
    }

    /// Storage rows read and written since the last call.
    pub fn rows(&mut self, read: u64, written: u64) {
        self.counters.rows_read += read;
        self.counters.rows_written += written;
    }

    /// When the counters must next be saved: `None` while nothing changed;
    /// at once after an event in a room that is not busy.
    pub fn save_due(&self) -> Option<u64> {
        if !self.changed {
            return None;
        }
        Some(
            self.may_hibernate_ms
                .unwrap_or(self.saved_ms + SAVE_EVERY_MS),
        )
    }

    /// The counters were saved at `now_ms`.
    pub fn saved(&mut self, now_ms: u64) {
        self.changed = false;
        self.saved_ms = now_ms;
        self.may_hibernate_ms = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awake_time_is_events_in_flight_or_a_held_stream() {
        let mut m = Meter::default();
        // A request handled in 5 ms.
        m.event_began(0, 0);
        m.event_ended(5, 0);
        assert_eq!(m.counters().awake_ms, 5);
        // Idle for an hour: eligible for hibernation, not billed.
        m.event_began(3_600_005, 0);
        assert_eq!(m.counters().awake_ms, 5);
        // That request opened an SSE stream, held for a minute.
        m.event_ended(3_600_010, 1);
        m.event_began(3_660_010, 1);
        m.event_ended(3_660_012, 0);
        assert_eq!(m.counters().awake_ms, 5 + 5 + 60_000 + 2);
        assert_eq!(m.counters().stream_ms, 60_002);
        // Two events interleaving (a long poll held while a publish comes).
        m.event_began(4_000_000, 0);
        m.event_began(4_000_100, 1);
        m.event_ended(4_000_110, 1);
        m.event_ended(4_000_200, 0);
        assert_eq!(m.counters().awake_ms, 5 + 5 + 60_000 + 2 + 200);
    }

    #[test]
    fn counts_what_clients_did_per_transport() {
        let mut m = Meter::default();
        m.requests(1);
        m.published(100);
        m.delivered(TransportKind::WebSocket, 3, 300);
        m.delivered(TransportKind::Sse, 2, 200);
        m.delivered(TransportKind::Poll, 1, 100);
        m.delivered(TransportKind::Poll, 0, 0);
        m.ws_message(40);
        let c = m.counters();
        assert_eq!(
            c.delivered,
            Delivered {
                ws: 3,
                sse: 2,
                poll: 1
            }
        );
        assert_eq!((c.bytes_in, c.bytes_out), (140, 600));
        assert_eq!((c.requests, c.ws_messages_in), (1, 1));
    }

    #[test]
    fn saved_counters_add_to_what_this_instance_counted_before_loading() {
        let mut m = Meter::default();
        m.requests(1);
        m.connections(2);
        let saved = Counters {
            requests: 10,
            peak_connections: 7,
            delivered: Delivered {
                ws: 1,
                sse: 2,
                poll: 3,
            },
            ..Counters::default()
        };
        m.absorb(&saved);
        let c = m.counters();
        assert_eq!((c.requests, c.peak_connections), (11, 7));
        assert_eq!((c.delivered.ws, c.delivered.poll), (1, 3));
    }

    #[test]
    fn a_report_joins_the_counters_with_what_storage_knows() {
        let mut m = Meter::default();
        m.requests(1);
        m.delivered(TransportKind::WebSocket, 2, 20);
        let storage = FromStorage {
            published: 9,
            loads: 3,
            since: 1_000,
            stored_bytes: 4096,
        };
        let (stats, usage) = m.counters().report(storage);
        assert_eq!((stats.published, stats.loads, stats.since), (9, 3, 1_000));
        assert_eq!((stats.delivered.ws, stats.bytes_out), (2, 20));
        assert_eq!(
            (usage.requests, usage.stored_bytes, usage.since),
            (1, 4096, 1_000)
        );
    }

    #[test]
    fn peak_connections_only_grows() {
        let mut m = Meter::default();
        m.connections(5);
        m.connections(2);
        assert_eq!(m.counters().peak_connections, 5);
    }

    #[test]
    fn saving_is_due_only_after_a_client_changed_something() {
        let mut m = Meter::default();
        m.saved(1_000);
        assert_eq!(m.save_due(), None);
        // The room's own alarm and storage reads ask for no save.
        m.event_began(2_000, 0);
        m.alarm();
        m.rows(3, 1);
        m.event_ended(2_100, 0);
        assert_eq!(m.save_due(), None);
        m.event_began(3_000, 0);
        m.requests(1);
        m.event_ended(3_001, 0);
        m.saved(3_001);
        assert_eq!(m.save_due(), None);
        assert_eq!(m.counters().requests, 1);
    }

    #[test]
    fn a_busy_room_saves_every_minute_and_any_other_after_each_event() {
        let mut m = Meter::default();
        let event = |m: &mut Meter, t: u64, held: usize| {
            m.event_began(t, held);
            m.requests(1);
            m.event_ended(t + 5, held);
        };
        // A first event in a fresh instance: the room may hibernate after it.
        event(&mut m, 0, 0);
        assert_eq!(m.save_due(), Some(0));
        m.saved(5);
        // A second one 4 s later: one recent event is not busy yet.
        event(&mut m, 4_000, 0);
        assert_eq!(m.save_due(), Some(4_000));
        m.saved(4_005);
        // Events 2 s apart: busy, one save a minute.
        for t in (6_000..50_000).step_by(2_000) {
            event(&mut m, t, 0);
            assert_eq!(m.save_due(), Some(4_005 + SAVE_EVERY_MS), "at {t}");
        }
        // Quiet for a minute, then one more event: saved at its end.
        event(&mut m, 110_000, 0);
        assert_eq!(m.save_due(), Some(110_000));
        m.saved(110_005);
        // An event while an SSE stream holds the room: it cannot hibernate.
        event(&mut m, 200_000, 1);
        event(&mut m, 300_000, 1);
        assert_eq!(m.save_due(), Some(110_005 + SAVE_EVERY_MS));
    }

    #[test]
    fn saved_counters_round_trip_and_tolerate_missing_fields() {
        let mut m = Meter::default();
        m.requests(1);
        m.delivered(TransportKind::Sse, 4, 40);
        let json = serde_json::to_string(m.counters()).unwrap();
        let back: Counters = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, m.counters());
        // A row saved before a counter existed reads it as zero.
        let old: Counters = serde_json::from_str(r#"{"requests":7}"#).unwrap();
        assert_eq!((old.requests, old.alarms), (7, 0));
    }
}
