//! A loaded room: its settings, its log position and its storage.
//!
//! [`LoadedRoom::accept`] is the one place a message becomes part of the
//! log, whatever transport published it: it checks idempotency, serializes
//! the envelope once, stores it and only then advances the in-memory log.
//! It is synchronous, so two publishes can never interleave inside it.

use super::store::{NewMessage, Store, StoredMessage};
use crate::core::cursor::Seq;
use crate::core::error::HubError;
use crate::core::log::RoomLog;
use crate::core::names::RoomName;
use crate::core::protocol::Publish;
use crate::core::settings::Settings;
use std::rc::Rc;

pub struct LoadedRoom {
    pub name: RoomName,
    pub settings: Rc<Settings>,
    pub log: RoomLog,
    pub store: Store,
    /// How many times this room was loaded (see `store::Restored::loads`).
    pub loads: u64,
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
    /// The verified user, `None` when anonymous.
    pub from: Option<&'a str>,
    /// An `Idempotency-Key` or `cid`, scoped to `from`.
    pub key: Option<&'a str>,
}

impl LoadedRoom {
    pub fn accept(
        &mut self,
        publish: &Publish,
        origin: &Origin<'_>,
        now_ms: u64,
    ) -> Result<Accepted, HubError> {
        let scope = origin.from.unwrap_or("");
        if let Some(key) = origin.key {
            if let Some((id, ts_ms)) = self.store.idempotent(scope, key)? {
                return Ok(Accepted {
                    id,
                    ts_ms,
                    stored: None,
                });
            }
        }
        let id = self.log.next_id();
        let envelope =
            publish.envelope(id, origin.from, now_ms, self.settings.max_message_bytes)?;
        let drop_through = self.log.drop_through(id);
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
        self.log.append();
        Ok(Accepted {
            id,
            ts_ms: now_ms,
            stored: Some(message),
        })
    }
}
