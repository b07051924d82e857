//! The room's SQLite storage: messages, the log position, idempotency keys.
//!
//! Invariants:
//! - `hub_messages` holds the contiguous ids `first_kept ..= last_id`, each
//!   row the envelope exactly as it was sent.
//! - The last id ever assigned is the largest id in `hub_messages`:
//!   retention keeps at least one message, so ids continue after a restart
//!   and are never reused, without a second write per publish.
//! - `hub_meta.epoch` is drawn once, when the room's storage is created.
//! - Storage is created by the first publish, never by a read: a room that
//!   was never published to writes nothing, and the room lets go of the
//!   database its reads opened (`RoomObject::release_unused_storage`).
//! - Every write of one publish happens in one synchronous stretch with no
//!   `.await` in between, so the runtime commits them atomically, and its
//!   output gate holds the `201`/`ack` until they are durable.

use crate::core::cursor::{Epoch, Seq};
use crate::core::error::HubError;
use crate::core::transport::StoredMessage;
use crate::core::webhooks::WebhookCounts;
use serde::Deserialize;
use std::cell::Cell;
use worker::{SqlStorage, SqlStorageValue};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS hub_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS hub_messages (id INTEGER PRIMARY KEY, event TEXT NOT NULL, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS hub_idempotency (scope TEXT NOT NULL, key TEXT NOT NULL, \
     id INTEGER NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (scope, key)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS hub_idempotency_by_id ON hub_idempotency (id)",
];

/// The bytes of envelopes one poll page holds (plus the one message that
/// crosses it). SQLite refuses strings of a few MB (`SQLITE_TOOBIG`), and a
/// page is built as one string.
pub const POLL_PAGE_BYTES: u64 = 512 * 1024;

/// The webhook outbox (see `core::webhooks`): created on first use, also in
/// rooms whose storage predates it.
const OUTBOX_SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS hub_webhooks (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
     body TEXT NOT NULL, attempts INTEGER NOT NULL, due INTEGER NOT NULL)";

/// Idempotency keys of dropped messages are deleted every this many ids.
const IDEMPOTENCY_PRUNE_EVERY: u64 = 64;

/// A message to store in one step.
pub struct NewMessage<'a> {
    pub message: &'a StoredMessage,
    pub ts_ms: u64,
    /// `(scope, key)` of an `Idempotency-Key` or WebSocket `cid`.
    pub idempotency: Option<(&'a str, &'a str)>,
    /// Retention: drop every message with an id up to this one.
    pub drop_through: Option<Seq>,
}

/// What storage holds about the room when it wakes.
pub struct Restored {
    pub epoch: Epoch,
    pub last_id: Seq,
    pub kept: u64,
    /// How many times the room was loaded, this time included: once per
    /// start or wake of its Durable Object.
    pub loads: u64,
}

pub struct Store {
    sql: SqlStorage,
    /// Whether the room's tables exist (see [`Store::open`]).
    created: Cell<bool>,
    epoch: Epoch,
    loads: Cell<u64>,
    /// Whether this handle made sure the webhook outbox table exists.
    outbox_ready: Cell<bool>,
}

#[derive(Deserialize)]
struct ValueRow {
    value: i64,
}

#[derive(Deserialize)]
struct WindowRow {
    n: i64,
    last: i64,
}

#[derive(Deserialize)]
struct JoinedRow {
    joined: Option<String>,
}

/// The oldest event of the webhook outbox.
#[derive(Debug, Clone, Deserialize)]
pub struct OutboxEvent {
    pub seq: i64,
    pub body: String,
    pub attempts: i64,
    pub due: i64,
}

#[derive(Deserialize)]
struct IdemRow {
    id: i64,
    ts: i64,
}

fn int(n: u64) -> SqlStorageValue {
    SqlStorageValue::from(n as i64)
}

/// Whether the room's storage was ever created (its schema exists).
fn schema_exists(sql: &SqlStorage) -> Result<bool, HubError> {
    Ok(sql
        .exec(
            "SELECT COUNT(*) AS value FROM sqlite_master WHERE type = 'table' AND name = 'hub_meta'",
            None,
        )
        .and_then(|c| c.one::<ValueRow>())
        .map_err(storage_error)?
        .value
        > 0)
}

fn storage_error(e: worker::Error) -> HubError {
    HubError::Internal(format!("storage: {e}"))
}

impl Store {
    /// Reads the room's state. A room whose storage was never created (never
    /// published to) is not created here: reads and subscriptions leave
    /// nothing on disk, and the first [`Store::append`] creates it with the
    /// epoch drawn now (`new_epoch`). The room's name always comes from the
    /// caller (a request path, or a socket's attachment after a wake).
    pub fn open(
        sql: SqlStorage,
        new_epoch: impl FnOnce() -> u32,
    ) -> Result<(Store, Restored), HubError> {
        let exists = schema_exists(&sql)?;
        if !exists {
            let epoch = Epoch(new_epoch());
            let store = Store {
                sql,
                created: Cell::new(false),
                epoch,
                loads: Cell::new(1),
                outbox_ready: Cell::new(false),
            };
            let restored = Restored {
                epoch,
                last_id: Seq(0),
                kept: 0,
                loads: 1,
            };
            return Ok((store, restored));
        }
        let mut store = Store {
            sql,
            created: Cell::new(true),
            epoch: Epoch(0),
            loads: Cell::new(0),
            outbox_ready: Cell::new(false),
        };
        let loads = store.meta("loads")?.unwrap_or(0) + 1;
        store.set_meta("loads", loads)?;
        store.loads.set(loads);
        store.epoch = match store.meta("epoch")? {
            Some(e) => Epoch(e as u32),
            None => {
                let e = Epoch(new_epoch());
                store.set_meta("epoch", u64::from(e.0))?;
                e
            }
        };
        let window = store
            .sql
            .exec(
                "SELECT COUNT(*) AS n, COALESCE(MAX(id), 0) AS last FROM hub_messages",
                None,
            )
            .and_then(|c| c.one::<WindowRow>())
            .map_err(storage_error)?;
        let restored = Restored {
            epoch: store.epoch,
            last_id: Seq(window.last as u64),
            kept: window.n as u64,
            loads,
        };
        Ok((store, restored))
    }

    /// A handle on the room's storage for its alarm, which carries no room
    /// name and must not count as a load of the room.
    pub fn peek(sql: SqlStorage) -> Result<Store, HubError> {
        let exists = schema_exists(&sql)?;
        let mut store = Store {
            sql,
            created: Cell::new(exists),
            epoch: Epoch(0),
            loads: Cell::new(0),
            outbox_ready: Cell::new(false),
        };
        if exists {
            store.epoch = Epoch(store.meta("epoch")?.unwrap_or(0) as u32);
        }
        Ok(store)
    }

    /// Whether the room's storage exists (it was published to).
    pub fn is_created(&self) -> bool {
        self.created.get()
    }

    /// The room's epoch (part of every webhook id).
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Appends a webhook event to the outbox, in the caller's synchronous
    /// stretch (so in the same transaction as what caused it). Past
    /// `MAX_OUTBOX_EVENTS` pending, the event is counted as dropped instead.
    pub fn enqueue_webhook(&self, body: &str, now_ms: u64) -> Result<(), HubError> {
        self.ensure_created()?;
        if self.pending_webhooks()? >= crate::core::webhooks::MAX_OUTBOX_EVENTS {
            return self.bump_meta("webhooks_dropped");
        }
        self.exec(
            "INSERT INTO hub_webhooks (body, attempts, due) VALUES (?, 0, ?)",
            vec![body.into(), int(now_ms)],
        )?;
        Ok(())
    }

    /// Creates the outbox table once per handle: it may be missing in a
    /// room whose storage predates webhooks.
    fn ensure_outbox(&self) -> Result<(), HubError> {
        if !self.outbox_ready.get() {
            self.exec(OUTBOX_SCHEMA, vec![])?;
            self.outbox_ready.set(true);
        }
        Ok(())
    }

    /// Events waiting in the outbox.
    fn pending_webhooks(&self) -> Result<u64, HubError> {
        self.ensure_outbox()?;
        Ok(self
            .exec("SELECT COUNT(*) AS value FROM hub_webhooks", vec![])?
            .one::<ValueRow>()
            .map_err(storage_error)?
            .value as u64)
    }

    /// Adds one to the counter `key`.
    fn bump_meta(&self, key: &str) -> Result<(), HubError> {
        let n = self.meta(key)?.unwrap_or(0);
        self.set_meta(key, n + 1)
    }

    /// The oldest pending event, if any.
    pub fn webhook_head(&self) -> Result<Option<OutboxEvent>, HubError> {
        if !self.created.get() {
            return Ok(None);
        }
        self.ensure_outbox()?;
        let rows: Vec<OutboxEvent> = self
            .exec(
                "SELECT seq, body, attempts, due FROM hub_webhooks ORDER BY seq LIMIT 1",
                vec![],
            )?
            .to_array()
            .map_err(storage_error)?;
        Ok(rows.into_iter().next())
    }

    /// Records what became of an attempt at event `seq`.
    pub fn webhook_attempted(
        &self,
        seq: i64,
        attempts: u32,
        after: crate::core::webhooks::AfterAttempt,
    ) -> Result<(), HubError> {
        use crate::core::webhooks::AfterAttempt;
        let (counter, retry_at) = match after {
            AfterAttempt::Delivered => ("webhooks_delivered", None),
            AfterAttempt::GiveUp => ("webhooks_failed", None),
            AfterAttempt::RetryAt(at) => ("", Some(at)),
        };
        match retry_at {
            Some(at) => {
                self.exec(
                    "UPDATE hub_webhooks SET attempts = ?, due = ? WHERE seq = ?",
                    vec![
                        int(u64::from(attempts)),
                        int(at),
                        SqlStorageValue::from(seq),
                    ],
                )?;
            }
            None => {
                self.exec(
                    "DELETE FROM hub_webhooks WHERE seq = ?",
                    vec![SqlStorageValue::from(seq)],
                )?;
                self.bump_meta(counter)?;
            }
        }
        Ok(())
    }

    /// The outbox's counters.
    pub fn webhook_counts(&self) -> Result<WebhookCounts, HubError> {
        if !self.created.get() {
            return Ok(WebhookCounts::default());
        }
        Ok(WebhookCounts {
            pending: self.pending_webhooks()?,
            delivered: self.meta("webhooks_delivered")?.unwrap_or(0),
            failed: self.meta("webhooks_failed")?.unwrap_or(0),
            dropped: self.meta("webhooks_dropped")?.unwrap_or(0),
        })
    }

    /// Whether the room had a live connection when last looked at (for
    /// `room.occupied` / `room.vacated`, which must fire once per
    /// transition, across restarts).
    pub fn was_occupied(&self) -> Result<bool, HubError> {
        if !self.created.get() {
            return Ok(false);
        }
        Ok(self.meta("occupied")?.unwrap_or(0) == 1)
    }

    pub fn set_occupied(&self, occupied: bool) -> Result<(), HubError> {
        self.ensure_created()?;
        self.set_meta("occupied", u64::from(occupied))
    }

    /// Creates the schema and the room's meta on the first write.
    fn ensure_created(&self) -> Result<(), HubError> {
        if self.created.get() {
            return Ok(());
        }
        for stmt in SCHEMA {
            self.exec(stmt, vec![])?;
        }
        self.set_meta("epoch", u64::from(self.epoch.0))?;
        self.set_meta("loads", self.loads.get())?;
        self.created.set(true);
        Ok(())
    }

    fn exec(
        &self,
        query: &str,
        bindings: Vec<SqlStorageValue>,
    ) -> Result<worker::SqlCursor, HubError> {
        self.sql.exec(query, Some(bindings)).map_err(storage_error)
    }

    fn meta(&self, key: &str) -> Result<Option<u64>, HubError> {
        let rows: Vec<ValueRow> = self
            .exec("SELECT value FROM hub_meta WHERE key = ?", vec![key.into()])?
            .to_array()
            .map_err(storage_error)?;
        Ok(rows.first().map(|r| r.value as u64))
    }

    fn set_meta(&self, key: &str, value: u64) -> Result<(), HubError> {
        self.exec(
            "INSERT INTO hub_meta (key, value) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            vec![key.into(), int(value)],
        )?;
        Ok(())
    }

    /// Stores one accepted message, its idempotency key and the retention
    /// trim, all before the caller answers.
    pub fn append(&self, msg: &NewMessage<'_>) -> Result<(), HubError> {
        self.ensure_created()?;
        self.exec(
            "INSERT INTO hub_messages (id, event, body) VALUES (?, ?, ?)",
            vec![
                int(msg.message.id.0),
                msg.message.event.as_str().into(),
                msg.message.envelope.as_str().into(),
            ],
        )?;
        if let Some((scope, key)) = msg.idempotency {
            self.exec(
                "INSERT INTO hub_idempotency (scope, key, id, ts) VALUES (?, ?, ?, ?)",
                vec![
                    scope.into(),
                    key.into(),
                    int(msg.message.id.0),
                    int(msg.ts_ms),
                ],
            )?;
        }
        if let Some(through) = msg.drop_through {
            self.exec(
                "DELETE FROM hub_messages WHERE id <= ?",
                vec![int(through.0)],
            )?;
            // A key outlives nothing it protects: once its message is gone
            // from history, so is the key. Pruned in batches: a key lives
            // at most IDEMPOTENCY_PRUNE_EVERY messages longer than its message.
            if msg.message.id.0 % IDEMPOTENCY_PRUNE_EVERY == 0 {
                self.exec(
                    "DELETE FROM hub_idempotency WHERE id <= ?",
                    vec![int(through.0)],
                )?;
            }
        }
        Ok(())
    }

    /// The id and timestamp a key was first accepted with, if it still is kept.
    pub fn idempotent(&self, scope: &str, key: &str) -> Result<Option<(Seq, u64)>, HubError> {
        if !self.created.get() {
            return Ok(None);
        }
        let rows: Vec<IdemRow> = self
            .exec(
                "SELECT id, ts FROM hub_idempotency WHERE scope = ? AND key = ?",
                vec![scope.into(), key.into()],
            )?
            .to_array()
            .map_err(storage_error)?;
        Ok(rows.first().map(|r| (Seq(r.id as u64), r.ts as u64)))
    }

    /// Up to `limit` envelopes with ids greater than `after`, oldest first,
    /// stopping once they hold `max_bytes` (the one that crosses it is
    /// still in, so a read is never empty while messages are due): a read
    /// of maximum-size messages never pulls the whole history into the
    /// isolate. Returns the envelopes and whether the read stopped at the
    /// end of the log.
    pub fn read_after(
        &self,
        after: Seq,
        limit: u32,
        max_bytes: u64,
    ) -> Result<(Vec<StoredMessage>, bool), HubError> {
        if !self.created.get() {
            return Ok((Vec::new(), true));
        }
        let rows = self.messages(
            "SELECT id, event, body FROM \
             (SELECT id, event, body, SUM(len) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) - len AS before FROM \
              (SELECT id, event, body, length(CAST(body AS BLOB)) AS len FROM hub_messages \
               WHERE id > ? ORDER BY id LIMIT ?)) \
             WHERE before < ? ORDER BY id",
            vec![int(after.0), int(u64::from(limit)), int(max_bytes)],
        )?;
        // A further row was left out only by the row limit, or by the byte
        // budget when the rows read already reach it.
        let bytes: u64 = rows.iter().map(|m| m.envelope.len() as u64).sum();
        let at_end = (rows.len() as u32) < limit && bytes < max_bytes;
        Ok((rows, at_end))
    }

    /// Up to `limit` envelopes after `after` (or the newest `limit` when
    /// `after` is `None`), oldest first, joined with commas by SQLite: one
    /// row crosses into the Worker instead of one object per message. The
    /// page stops once it holds `max_bytes` (the message that crosses
    /// the budget is still in, so a page is never empty while messages are
    /// due): one string that SQLite and the isolate can always hold.
    pub fn joined(
        &self,
        after: Option<Seq>,
        limit: u32,
        max_bytes: u64,
    ) -> Result<String, HubError> {
        if !self.created.get() {
            return Ok(String::new());
        }
        let (query, bindings) = match after {
            Some(after) => (
                "SELECT group_concat(body, ',' ORDER BY id) AS joined FROM \
                 (SELECT id, body, SUM(len) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) - len AS before FROM \
                  (SELECT id, body, length(CAST(body AS BLOB)) AS len FROM hub_messages \
                   WHERE id > ? ORDER BY id LIMIT ?)) \
                 WHERE before < ?",
                vec![int(after.0), int(u64::from(limit)), int(max_bytes)],
            ),
            None => (
                "SELECT group_concat(body, ',' ORDER BY id) AS joined FROM \
                 (SELECT id, body, SUM(len) OVER (ORDER BY id DESC ROWS UNBOUNDED PRECEDING) - len AS before FROM \
                  (SELECT id, body, length(CAST(body AS BLOB)) AS len FROM hub_messages \
                   ORDER BY id DESC LIMIT ?)) \
                 WHERE before < ?",
                vec![int(u64::from(limit)), int(max_bytes)],
            ),
        };
        let row: JoinedRow = self.exec(query, bindings)?.one().map_err(storage_error)?;
        Ok(row.joined.unwrap_or_default())
    }

    fn messages(
        &self,
        query: &str,
        bindings: Vec<SqlStorageValue>,
    ) -> Result<Vec<StoredMessage>, HubError> {
        self.exec(query, bindings)?
            .to_array()
            .map_err(storage_error)
    }
}
