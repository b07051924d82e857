//! The room's persisted log: the one place a message becomes part of the
//! room, and the one place history is read back.
//!
//! Invariants:
//! - [`PersistedLog::accept`] checks idempotency, serializes the envelope
//!   once, stores it and only then advances the in-memory position. It is
//!   synchronous, so two publishes never interleave inside it.
//! - Reads are bounded in bytes as well as rows (a read of maximum-size
//!   messages never pulls the whole history into the isolate), and every
//!   read makes progress (it holds at least one message when one is due).
//! - Nothing is written by a read: storage is created by the first publish
//!   (see `store`).

use super::store::{NewMessage, Restored, RowCounter, Store, POLL_PAGE_BYTES};
use crate::core::cursor::{Cursor, Seq};
use crate::core::error::HubError;
use crate::core::log::RoomLog;
use crate::core::meter::Counters;
use crate::core::names::RoomName;
use crate::core::protocol::{Publish, ResetInfo};
use crate::core::retention;
use crate::core::transport::StoredMessage;
use std::rc::Rc;
use worker::SqlStorage;

/// What one storage read brings into the isolate when replaying: at most
/// this many rows, and at most this many bytes (plus one message).
const REPLAY_READ_ROWS: u32 = 200;
const REPLAY_READ_BYTES: u64 = 256 * 1024;

pub struct PersistedLog {
    pub name: RoomName,
    /// The log's position: ids, what is kept, the ETag.
    pub position: RoomLog,
    /// The room's storage; the webhook outbox lives beside the log there.
    pub store: Store,
    /// How many times this room was loaded (see `store::Restored::loads`).
    pub loads: u64,
    /// When the oldest kept message was published (ms): when age
    /// retention next has work. May be older than the truth after count
    /// retention dropped it (the next trim then finds nothing and learns).
    oldest_ts: Option<u64>,
    /// When the last message was published (ms); 0 if never.
    pub last_publish_ms: u64,
    /// The last time the room was seen with a live connection (ms).
    pub last_active_ms: u64,
    /// When the room's storage was created (ms).
    pub created_ms: u64,
}

/// The outcome of a publish.
pub struct Accepted {
    pub id: Seq,
    pub ts_ms: u64,
    /// The message to deliver live; `None` when this was a retry of an
    /// already-stored message (nothing new to deliver).
    pub stored: Option<StoredMessage>,
}

/// Who published, and under which key a retry is recognised.
pub struct Origin<'a> {
    /// The message's `from`: the verified user, the backend's `from`, or
    /// `None`.
    pub from: Option<&'a str>,
    /// Whose idempotency keys these are: the user's `sub`, `""` for
    /// anonymous callers, `core::backend::BACKEND_SCOPE` for the backend.
    pub scope: &'a str,
    /// An `Idempotency-Key` or `cid`, within `scope`.
    pub key: Option<&'a str>,
}

impl PersistedLog {
    /// Opens the room's log from storage (creating nothing).
    /// Also returns the counters storage saved for the room's meter.
    pub fn open(
        sql: SqlStorage,
        rows: Rc<RowCounter>,
        name: RoomName,
        history_limit: u32,
        random: fn() -> u32,
        now_ms: u64,
    ) -> Result<(Self, Counters), HubError> {
        let (store, restored): (Store, Restored) = Store::open(sql, rows, random, now_ms)?;
        let position = RoomLog::restore(
            restored.epoch,
            restored.last_id,
            restored.kept,
            history_limit,
        );
        let log = PersistedLog {
            name,
            position,
            store,
            loads: restored.loads,
            oldest_ts: restored.oldest_ts,
            last_publish_ms: restored.last_publish_ms,
            last_active_ms: restored.last_active_ms,
            created_ms: restored.created_ms,
        };
        Ok((log, restored.counters))
    }

    /// When age retention next has work (ms), with a TTL of `ttl_secs`.
    pub fn history_due(&self, ttl_secs: u32) -> Option<u64> {
        retention::history_due(self.oldest_ts, ttl_secs)
    }

    /// Age retention: drops the messages older than `ttl_secs` if any are
    /// due (a comparison in memory otherwise). Synchronous, so no publish
    /// or read falls between the delete and the new window.
    pub fn expire(&mut self, now_ms: u64, ttl_secs: u32) -> Result<(), HubError> {
        let Some(due) = self.history_due(ttl_secs) else {
            return Ok(());
        };
        let Some(cutoff) = retention::history_cutoff(now_ms, ttl_secs) else {
            return Ok(());
        };
        if now_ms < due {
            return Ok(());
        }
        let (kept, oldest) =
            self.store
                .expire(cutoff, self.position.last_id(), self.last_publish_ms)?;
        self.position.retain_newest(kept);
        self.oldest_ts = oldest;
        Ok(())
    }

    /// Whether the room ever stored anything.
    pub fn is_created(&self) -> bool {
        self.store.is_created()
    }

    /// Stores a publish (or recognises a retry by its key) and returns what
    /// to acknowledge and deliver.
    pub fn accept(
        &mut self,
        publish: &Publish,
        origin: &Origin<'_>,
        max_message_bytes: usize,
        now_ms: u64,
    ) -> Result<Accepted, HubError> {
        let scope = origin.scope;
        if let Some(key) = origin.key {
            if let Some((id, ts_ms)) = self.store.idempotent(scope, key)? {
                return Ok(Accepted {
                    id,
                    ts_ms,
                    stored: None,
                });
            }
        }
        let id = self.position.next_id();
        let envelope = publish.envelope(id, origin.from, now_ms, max_message_bytes)?;
        let drop_through = self.position.drop_through(id);
        let first_write = !self.store.is_created();
        let message = StoredMessage {
            id,
            event: publish.event.as_str().to_owned(),
            envelope,
        };
        self.store.append(&NewMessage {
            message: &message,
            ts_ms: now_ms,
            idempotency: origin.key.map(|k| (scope, k)),
            drop_through,
        })?;
        self.position.append();
        self.last_publish_ms = now_ms;
        if first_write {
            self.created_ms = now_ms;
        }
        if self.oldest_ts.is_none() {
            self.oldest_ts = Some(now_ms);
        }
        Ok(Accepted {
            id,
            ts_ms: now_ms,
            stored: Some(message),
        })
    }

    /// Calls `f` on every kept message after `after`, in id order, until it
    /// returns `false`; returns whether it saw them all. Synchronous, so no
    /// message can be published in between.
    pub fn replay(
        &self,
        mut after: Seq,
        mut f: impl FnMut(&StoredMessage) -> bool,
    ) -> Result<bool, HubError> {
        loop {
            let (batch, at_end) =
                self.store
                    .read_after(after, REPLAY_READ_ROWS, REPLAY_READ_BYTES)?;
            for message in &batch {
                if !f(message) {
                    return Ok(false);
                }
            }
            match batch.last() {
                Some(last) if !at_end => after = last.id,
                _ => return Ok(true),
            }
        }
    }

    /// One poll page: up to `limit` envelopes after the cursor joined with
    /// commas (at most `POLL_PAGE_BYTES`, plus one), how many, and the
    /// reset signal when the cursor is older than the kept history; without
    /// a cursor, the newest `limit`.
    pub fn page(&self, cursor: Cursor, limit: u32) -> Result<Page, HubError> {
        match cursor {
            Cursor::Latest => {
                // The newest rows, no more than the window holds: storage
                // may still hold older ones (`core::log::TRIM_BATCH`).
                let within = u64::from(limit).min(self.position.kept()) as u32;
                let (joined, count) = self.store.joined(None, within, POLL_PAGE_BYTES)?;
                Ok(Page {
                    joined,
                    count,
                    reset: None,
                })
            }
            Cursor::After(since) => {
                let resume = self.position.resume(since);
                let (joined, count) =
                    self.store
                        .joined(Some(resume.replay_after()), limit, POLL_PAGE_BYTES)?;
                Ok(Page {
                    joined,
                    count,
                    reset: ResetInfo::of(resume),
                })
            }
        }
    }
}

/// One poll page of the log.
pub struct Page {
    /// The envelopes, joined with commas.
    pub joined: String,
    /// How many envelopes `joined` holds.
    pub count: u64,
    pub reset: Option<ResetInfo>,
}
