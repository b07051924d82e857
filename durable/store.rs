//! The room's SQLite storage: messages, the log position, idempotency keys,
//! the room's saved counters and the webhook outbox.
//!
//! Invariants:
//! - `hub_messages` holds contiguous ids up to `last_id`, each row the
//!   envelope exactly as it was sent and the time it was published: the
//!   log's window `first_kept ..= last_id` and, since storage trims in
//!   batches (`core::log::TRIM_BATCH`), fewer than a batch of older rows
//!   that no read serves (every read starts from the window).
//! - The last id ever assigned is the largest id in `hub_messages`: count
//!   retention keeps at least one message, so ids continue after a restart
//!   and are never reused, without a second write per publish. Age
//!   retention may empty the table; it then writes the last id (and the
//!   last publish time) to `hub_meta` first.
//! - Every statement goes through [`Store::run`], [`Store::rows`],
//!   [`Store::one`] or [`Store::run_direct`], which count the rows it read
//!   and wrote for the room's usage meter.
//! - The statements of every publish (the message, its idempotency key,
//!   the history trim) run through [`Store::run_direct`]: one boundary
//!   crossing each, where `SqlStorage::exec` takes one per binding, one
//!   for its array and two for the counts (issue 19).
//! - `hub_meta.epoch` is drawn once, when the room's storage is created.
//! - Storage is created by the first publish, never by a read: a room that
//!   was never published to writes nothing, and the room lets go of the
//!   database its reads opened (`RoomObject::release_unused_storage`).
//! - Every write of one publish happens in one synchronous stretch with no
//!   `.await` in between, so the runtime commits them atomically, and its
//!   output gate holds the `201`/`ack` until they are durable.

use crate::core::cursor::{Epoch, Seq};
use crate::core::error::HubError;
use crate::core::meter::Counters;
use crate::core::transport::StoredMessage;
use crate::core::webhooks::WebhookCounts;
use crate::js_text::js_text;
use serde::Deserialize;
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::{SqlCursor, SqlStorage, SqlStorageValue};

#[wasm_bindgen(inline_js = r#"
export function run_counted(sql, counts, query, ...bindings) {
  const cursor = sql.exec(query, ...bindings);
  counts[0] = cursor.rowsRead;
  counts[1] = cursor.rowsWritten;
}
"#)]
extern "C" {
    /// Runs `query` with one row of `hub_messages` (id, event, body, ts)
    /// and writes the rows it read and wrote to `counts`.
    #[wasm_bindgen(catch, js_name = run_counted)]
    fn run_message_row(
        sql: &JsValue,
        counts: &mut [f64],
        query: &JsValue,
        id: f64,
        event: &str,
        body: &str,
        ts: f64,
    ) -> Result<(), JsValue>;
    /// Runs `query` with one row of `hub_idempotency` (scope, key, id, ts).
    #[wasm_bindgen(catch, js_name = run_counted)]
    fn run_key_row(
        sql: &JsValue,
        counts: &mut [f64],
        query: &JsValue,
        scope: &str,
        key: &str,
        id: f64,
        ts: f64,
    ) -> Result<(), JsValue>;
    /// Runs `query` with one id.
    #[wasm_bindgen(catch, js_name = run_counted)]
    fn run_with_id(
        sql: &JsValue,
        counts: &mut [f64],
        query: &JsValue,
        id: f64,
    ) -> Result<(), JsValue>;
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS hub_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS hub_messages (id INTEGER PRIMARY KEY, event TEXT NOT NULL, \
     body TEXT NOT NULL, ts INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS hub_idempotency (scope TEXT NOT NULL, key TEXT NOT NULL, \
     id INTEGER NOT NULL, ts INTEGER NOT NULL, PRIMARY KEY (scope, key)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS hub_idempotency_by_id ON hub_idempotency (id)",
    "CREATE TABLE IF NOT EXISTS hub_stats (id INTEGER PRIMARY KEY CHECK (id = 1), counters TEXT NOT NULL)",
];

/// The schema's version, in `hub_meta.schema`. Version 1 (before it was
/// recorded) had no `ts` column and no `hub_stats`.
const SCHEMA_VERSION: u64 = 2;

/// The bytes of envelopes one poll page holds (plus the one message that
/// crosses it). SQLite refuses strings of a few MB (`SQLITE_TOOBIG`), and a
/// page is built as one string.
pub const POLL_PAGE_BYTES: u64 = 512 * 1024;

/// The webhook outbox (see `core::webhooks`): created on first use, also in
/// rooms whose storage predates it.
const OUTBOX_SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS hub_webhooks (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
     body TEXT NOT NULL, attempts INTEGER NOT NULL, due INTEGER NOT NULL)";

/// A message to store in one step.
pub struct NewMessage<'a> {
    pub message: &'a StoredMessage,
    pub ts_ms: u64,
    /// `(scope, key)` of an `Idempotency-Key` or WebSocket `cid`.
    pub idempotency: Option<(&'a str, &'a str)>,
    /// Retention: delete the rows (and keys) of every id up to this one.
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
    /// When the oldest kept message was published (ms), if any is kept.
    pub oldest_ts: Option<u64>,
    /// When the last message was published (ms); 0 if never.
    pub last_publish_ms: u64,
    /// The last time the room was seen with a live connection (ms).
    pub last_active_ms: u64,
    /// When the room's storage was created (ms).
    pub created_ms: u64,
    /// The saved counters (see `core::meter`).
    pub counters: Counters,
}

/// Storage rows read and written through every handle of one room, for
/// its usage meter.
#[derive(Default)]
pub struct RowCounter {
    read: Cell<u64>,
    written: Cell<u64>,
}

impl RowCounter {
    /// Rows read and written since the last call.
    pub fn take(&self) -> (u64, u64) {
        (self.read.take(), self.written.take())
    }

    fn count(&self, cursor: &SqlCursor) {
        self.add(cursor.rows_read() as u64, cursor.rows_written() as u64);
    }

    fn add(&self, read: u64, written: u64) {
        self.read.set(self.read.get() + read);
        self.written.set(self.written.get() + written);
    }
}

pub struct Store {
    sql: SqlStorage,
    /// Whether the room's tables exist (see [`Store::open`]).
    created: Cell<bool>,
    epoch: Epoch,
    loads: Cell<u64>,
    /// Whether this handle made sure the webhook outbox table exists.
    outbox_ready: Cell<bool>,
    rows: Rc<RowCounter>,
}

#[derive(Deserialize)]
struct ValueRow {
    value: i64,
}

#[derive(Deserialize)]
struct MetaRow {
    key: String,
    value: i64,
}

#[derive(Deserialize)]
struct WindowRow {
    first: i64,
    last: i64,
    oldest: Option<i64>,
    newest: Option<i64>,
}

impl WindowRow {
    /// Messages kept: the ids are contiguous.
    fn kept(&self) -> u64 {
        if self.first == 0 {
            0
        } else {
            (self.last - self.first + 1) as u64
        }
    }

    /// The last id ever assigned and the last publish time. Age retention
    /// may have emptied the history: both were kept in meta then.
    fn ends(&self, meta_last_id: Option<u64>, meta_last_publish: Option<u64>) -> (Seq, u64) {
        let last_id = (self.last as u64).max(meta_last_id.unwrap_or(0));
        let newest = self.newest.map_or(0, |t| t as u64);
        (Seq(last_id), newest.max(meta_last_publish.unwrap_or(0)))
    }
}

#[derive(Deserialize)]
struct CountersRow {
    counters: String,
}

#[derive(Deserialize)]
struct JoinedRow {
    joined: Option<String>,
    n: i64,
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
fn schema_exists(sql: &SqlStorage, rows: &RowCounter) -> Result<bool, HubError> {
    let cursor = sql
        .exec(
            "SELECT COUNT(*) AS value FROM sqlite_master WHERE type = 'table' AND name = 'hub_meta'",
            None,
        )
        .map_err(storage_error)?;
    let row: ValueRow = cursor.one().map_err(storage_error)?;
    rows.count(&cursor);
    Ok(row.value > 0)
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
        rows: Rc<RowCounter>,
        new_epoch: impl FnOnce() -> u32,
        now_ms: u64,
    ) -> Result<(Store, Restored), HubError> {
        let mut store = Store::handle(sql, rows)?;
        if !store.is_created() {
            store.loads.set(1);
            store.epoch = Epoch(new_epoch());
            let restored = Restored {
                epoch: store.epoch,
                last_id: Seq(0),
                kept: 0,
                loads: 1,
                oldest_ts: None,
                last_publish_ms: 0,
                last_active_ms: 0,
                created_ms: now_ms,
                counters: Counters::default(),
            };
            return Ok((store, restored));
        }
        let meta = store.all_meta()?;
        let meta_of = |key: &str| meta.get(key).copied();
        if meta_of("schema").unwrap_or(1) < SCHEMA_VERSION {
            store.migrate(now_ms)?;
        }
        let loads = meta_of("loads").unwrap_or(0) + 1;
        store.set_meta("loads", loads)?;
        store.loads.set(loads);
        store.epoch = match meta_of("epoch") {
            Some(e) => Epoch(e as u32),
            None => {
                let e = Epoch(new_epoch());
                store.set_meta("epoch", u64::from(e.0))?;
                e
            }
        };
        let window = store.window()?;
        let (last_id, last_publish_ms) =
            window.ends(meta_of("last_id"), meta_of("last_publish_ms"));
        let counters: Vec<CountersRow> =
            store.rows("SELECT counters FROM hub_stats WHERE id = 1", vec![])?;
        let restored = Restored {
            epoch: store.epoch,
            last_id,
            kept: window.kept(),
            loads,
            oldest_ts: window.oldest.map(|t| t as u64),
            last_publish_ms,
            last_active_ms: meta_of("active_ms").unwrap_or(0),
            created_ms: meta_of("created_ms").unwrap_or(0),
            counters: counters
                .first()
                .and_then(|r| serde_json::from_str(&r.counters).ok())
                .unwrap_or_default(),
        };
        Ok((store, restored))
    }

    /// Brings storage created by an older version to [`SCHEMA_VERSION`]:
    /// messages stored before they carried a time count as published now,
    /// so age retention starts counting from the upgrade.
    fn migrate(&self, now_ms: u64) -> Result<(), HubError> {
        // One synchronous stretch is one transaction: a version-1 room
        // never has the column, and a half-done migration is never stored.
        self.run(
            "ALTER TABLE hub_messages ADD COLUMN ts INTEGER NOT NULL DEFAULT 0",
            vec![],
        )?;
        self.run("UPDATE hub_messages SET ts = ?", vec![int(now_ms)])?;
        for stmt in SCHEMA {
            self.run(stmt, vec![])?;
        }
        if self.meta("created_ms")?.is_none() {
            self.set_meta("created_ms", now_ms)?;
        }
        self.set_meta("schema", SCHEMA_VERSION)
    }

    /// A handle on the room's storage for its alarm, which carries no room
    /// name and must not count as a load of the room.
    pub fn peek(sql: SqlStorage, rows: Rc<RowCounter>) -> Result<Store, HubError> {
        let mut store = Store::handle(sql, rows)?;
        if store.is_created() {
            store.epoch = Epoch(store.meta("epoch")?.unwrap_or(0) as u32);
        }
        Ok(store)
    }

    /// A handle on the room's storage, knowing whether it exists; the
    /// epoch and loads are the caller's to read.
    fn handle(sql: SqlStorage, rows: Rc<RowCounter>) -> Result<Store, HubError> {
        let exists = schema_exists(&sql, &rows)?;
        Ok(Store {
            sql,
            created: Cell::new(exists),
            epoch: Epoch(0),
            loads: Cell::new(0),
            outbox_ready: Cell::new(false),
            rows,
        })
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
        self.ensure_created(now_ms)?;
        if self.pending_webhooks()? >= crate::core::webhooks::MAX_OUTBOX_EVENTS {
            return self.bump_meta("webhooks_dropped");
        }
        self.run(
            "INSERT INTO hub_webhooks (body, attempts, due) VALUES (?, 0, ?)",
            vec![body.into(), int(now_ms)],
        )?;
        Ok(())
    }

    /// Creates the outbox table once per handle: it may be missing in a
    /// room whose storage predates webhooks.
    fn ensure_outbox(&self) -> Result<(), HubError> {
        if !self.outbox_ready.get() {
            self.run(OUTBOX_SCHEMA, vec![])?;
            self.outbox_ready.set(true);
        }
        Ok(())
    }

    /// Events waiting in the outbox.
    fn pending_webhooks(&self) -> Result<u64, HubError> {
        self.ensure_outbox()?;
        Ok(self
            .one::<ValueRow>("SELECT COUNT(*) AS value FROM hub_webhooks", vec![])?
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
        let rows: Vec<OutboxEvent> = self.rows(
            "SELECT seq, body, attempts, due FROM hub_webhooks ORDER BY seq LIMIT 1",
            vec![],
        )?;
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
                self.run(
                    "UPDATE hub_webhooks SET attempts = ?, due = ? WHERE seq = ?",
                    vec![
                        int(u64::from(attempts)),
                        int(at),
                        SqlStorageValue::from(seq),
                    ],
                )?;
            }
            None => {
                self.run(
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

    pub fn set_occupied(&self, occupied: bool, now_ms: u64) -> Result<(), HubError> {
        self.ensure_created(now_ms)?;
        self.set_meta("occupied", u64::from(occupied))
    }

    /// Creates the schema and the room's meta on the first write.
    fn ensure_created(&self, now_ms: u64) -> Result<(), HubError> {
        if self.created.get() {
            return Ok(());
        }
        for stmt in SCHEMA {
            self.run(stmt, vec![])?;
        }
        self.set_meta("schema", SCHEMA_VERSION)?;
        self.set_meta("epoch", u64::from(self.epoch.0))?;
        self.set_meta("loads", self.loads.get())?;
        self.set_meta("created_ms", now_ms)?;
        self.created.set(true);
        Ok(())
    }

    /// Runs a statement, reads what it returns with `read`, and counts
    /// the rows it read and wrote.
    fn query<T>(
        &self,
        query: &str,
        bindings: Vec<SqlStorageValue>,
        read: impl FnOnce(&SqlCursor) -> worker::Result<T>,
    ) -> Result<T, HubError> {
        let cursor = self
            .sql
            .exec(query, Some(bindings))
            .map_err(storage_error)?;
        let result = read(&cursor).map_err(storage_error)?;
        self.rows.count(&cursor);
        Ok(result)
    }

    /// Runs a statement that returns no rows.
    fn run(&self, query: &str, bindings: Vec<SqlStorageValue>) -> Result<(), HubError> {
        self.query(query, bindings, |_| Ok(()))
    }

    /// Runs a statement that returns no rows through one of the direct
    /// calls above (`exec` gets the handle and the counts to fill).
    fn run_direct(
        &self,
        exec: impl FnOnce(&JsValue, &mut [f64]) -> Result<(), JsValue>,
    ) -> Result<(), HubError> {
        let mut counts = [0.0; 2];
        exec(self.sql.as_ref(), &mut counts)
            .map_err(|e| HubError::Internal(format!("storage: {e:?}")))?;
        self.rows.add(counts[0] as u64, counts[1] as u64);
        Ok(())
    }

    /// Runs a query and reads every row it returns.
    fn rows<T: serde::de::DeserializeOwned>(
        &self,
        query: &str,
        bindings: Vec<SqlStorageValue>,
    ) -> Result<Vec<T>, HubError> {
        self.query(query, bindings, SqlCursor::to_array)
    }

    /// Runs a query that returns exactly one row.
    fn one<T: serde::de::DeserializeOwned>(
        &self,
        query: &str,
        bindings: Vec<SqlStorageValue>,
    ) -> Result<T, HubError> {
        self.query(query, bindings, SqlCursor::one)
    }

    /// What `hub_messages` holds: the id range and the publish times of
    /// its ends (primary-key lookups, no scan).
    fn window(&self) -> Result<WindowRow, HubError> {
        self.one(
            "SELECT COALESCE(MIN(id), 0) AS first, COALESCE(MAX(id), 0) AS last, \
             (SELECT ts FROM hub_messages ORDER BY id LIMIT 1) AS oldest, \
             (SELECT ts FROM hub_messages ORDER BY id DESC LIMIT 1) AS newest FROM hub_messages",
            vec![],
        )
    }

    /// Every meta value, read once when the room loads.
    fn all_meta(&self) -> Result<HashMap<String, u64>, HubError> {
        let rows: Vec<MetaRow> = self.rows("SELECT key, value FROM hub_meta", vec![])?;
        Ok(rows.into_iter().map(|r| (r.key, r.value as u64)).collect())
    }

    fn meta(&self, key: &str) -> Result<Option<u64>, HubError> {
        let rows: Vec<ValueRow> =
            self.rows("SELECT value FROM hub_meta WHERE key = ?", vec![key.into()])?;
        Ok(rows.first().map(|r| r.value as u64))
    }

    fn set_meta(&self, key: &str, value: u64) -> Result<(), HubError> {
        self.run(
            "INSERT INTO hub_meta (key, value) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            vec![key.into(), int(value)],
        )?;
        Ok(())
    }

    /// Stores one accepted message, its idempotency key and the retention
    /// trim, all before the caller answers.
    pub fn append(&self, msg: &NewMessage<'_>) -> Result<(), HubError> {
        self.ensure_created(msg.ts_ms)?;
        // Ids and times are far below 2^53: exact as JavaScript numbers.
        let id = msg.message.id.0 as f64;
        let ts = msg.ts_ms as f64;
        self.run_direct(|sql, counts| {
            run_message_row(
                sql,
                counts,
                js_text("INSERT INTO hub_messages (id, event, body, ts) VALUES (?, ?, ?, ?)"),
                id,
                msg.message.event.as_str(),
                msg.message.envelope.as_str(),
                ts,
            )
        })?;
        if let Some((scope, key)) = msg.idempotency {
            self.run_direct(|sql, counts| {
                run_key_row(
                    sql,
                    counts,
                    js_text("INSERT INTO hub_idempotency (scope, key, id, ts) VALUES (?, ?, ?, ?)"),
                    scope,
                    key,
                    id,
                    ts,
                )
            })?;
        }
        if let Some(through) = msg.drop_through {
            self.run_direct(|sql, counts| {
                run_with_id(
                    sql,
                    counts,
                    js_text("DELETE FROM hub_messages WHERE id <= ?"),
                    through.0 as f64,
                )
            })?;
            // A key outlives nothing it protects: its row goes with its
            // message's, so it lives at most a trim batch longer than its
            // message stays in the window.
            self.run(
                "DELETE FROM hub_idempotency WHERE id <= ?",
                vec![int(through.0)],
            )?;
        }
        Ok(())
    }

    /// The id and timestamp a key was first accepted with, if it still is kept.
    pub fn idempotent(&self, scope: &str, key: &str) -> Result<Option<(Seq, u64)>, HubError> {
        if !self.created.get() {
            return Ok(None);
        }
        let rows: Vec<IdemRow> = self.rows(
            "SELECT id, ts FROM hub_idempotency WHERE scope = ? AND key = ?",
            vec![scope.into(), key.into()],
        )?;
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
    ) -> Result<(String, u64), HubError> {
        if !self.created.get() {
            return Ok((String::new(), 0));
        }
        let (query, bindings) = match after {
            Some(after) => (
                "SELECT group_concat(body, ',' ORDER BY id) AS joined, COUNT(*) AS n FROM \
                 (SELECT id, body, SUM(len) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) - len AS before FROM \
                  (SELECT id, body, length(CAST(body AS BLOB)) AS len FROM hub_messages \
                   WHERE id > ? ORDER BY id LIMIT ?)) \
                 WHERE before < ?",
                vec![int(after.0), int(u64::from(limit)), int(max_bytes)],
            ),
            None => (
                "SELECT group_concat(body, ',' ORDER BY id) AS joined, COUNT(*) AS n FROM \
                 (SELECT id, body, SUM(len) OVER (ORDER BY id DESC ROWS UNBOUNDED PRECEDING) - len AS before FROM \
                  (SELECT id, body, length(CAST(body AS BLOB)) AS len FROM hub_messages \
                   ORDER BY id DESC LIMIT ?)) \
                 WHERE before < ?",
                vec![int(u64::from(limit)), int(max_bytes)],
            ),
        };
        let row: JoinedRow = self.one(query, bindings)?;
        Ok((row.joined.unwrap_or_default(), row.n as u64))
    }

    /// Age retention: deletes the messages published at or before
    /// `cutoff_ms` (and the idempotency keys of deleted ids). Should the
    /// clock step back, a message is kept until every older id expired. When that
    /// empties the history, the last id and publish time go to meta, so ids
    /// continue and idleness is measured after a restart. Returns how many
    /// messages are kept and when the oldest of them was published.
    pub fn expire(
        &self,
        cutoff_ms: u64,
        last_id: Seq,
        last_publish_ms: u64,
    ) -> Result<(u64, Option<u64>), HubError> {
        if !self.created.get() {
            return Ok((0, None));
        }
        // Ids follow publish order, so the expired messages are the oldest
        // ids: found by walking the primary key from its start (no index
        // on `ts`, which would cost a row written per publish), and
        // deleted as one id range.
        self.run(
            "DELETE FROM hub_messages WHERE id < COALESCE(\
             (SELECT id FROM hub_messages WHERE ts > ? ORDER BY id LIMIT 1), ?)",
            vec![int(cutoff_ms), int(last_id.0 + 1)],
        )?;
        let window = self.window()?;
        let kept = window.kept();
        // Keys of ids below the first kept one protect nothing any more.
        let first_kept = if kept > 0 {
            window.first as u64
        } else {
            last_id.0 + 1
        };
        self.run(
            "DELETE FROM hub_idempotency WHERE id < ?",
            vec![int(first_kept)],
        )?;
        if kept == 0 {
            self.set_meta("last_id", last_id.0)?;
            self.set_meta("last_publish_ms", last_publish_ms)?;
        }
        Ok((kept, window.oldest.map(|t| t as u64)))
    }

    /// The last id and publish time, for the alarm of a room whose log is
    /// not loaded (it has no name to load it by).
    pub fn last_publish(&self) -> Result<(Seq, u64), HubError> {
        if !self.created.get() {
            return Ok((Seq(0), 0));
        }
        let window = self.window()?;
        Ok(window.ends(self.meta("last_id")?, self.meta("last_publish_ms")?))
    }

    /// The last time the room was seen with a live connection.
    pub fn last_active(&self) -> Result<u64, HubError> {
        if !self.created.get() {
            return Ok(0);
        }
        Ok(self.meta("active_ms")?.unwrap_or(0))
    }

    /// Records that the room had a live connection at `now_ms` (written
    /// when the last one leaves, and by the idle check): idleness counts
    /// from here. Nothing is written for a room without storage.
    pub fn set_last_active(&self, now_ms: u64) -> Result<(), HubError> {
        if !self.created.get() {
            return Ok(());
        }
        self.set_meta("active_ms", now_ms)
    }

    /// Saves the room's counters (one row). Nothing is written for a room
    /// without storage: its counters live in memory until it has some.
    pub fn save_counters(&self, counters: &Counters) -> Result<bool, HubError> {
        if !self.created.get() {
            return Ok(false);
        }
        let json =
            serde_json::to_string(counters).map_err(|e| HubError::Internal(e.to_string()))?;
        self.run(
            "INSERT INTO hub_stats (id, counters) VALUES (1, ?) \
             ON CONFLICT (id) DO UPDATE SET counters = excluded.counters",
            vec![json.into()],
        )?;
        Ok(true)
    }

    /// The room's database size in bytes; 0 for a room without storage.
    pub fn stored_bytes(&self) -> u64 {
        if !self.created.get() {
            return 0;
        }
        self.sql.database_size() as u64
    }

    fn messages(
        &self,
        query: &str,
        bindings: Vec<SqlStorageValue>,
    ) -> Result<Vec<StoredMessage>, HubError> {
        self.rows(query, bindings)
    }
}
