//! Webhooks in the room: events go into the outbox beside the log, in the
//! same synchronous stretch as what caused them, and the room's alarm
//! delivers them one at a time, in order (see `core::webhooks`).
//!
//! Invariants:
//! - Delivery never holds the log: publishes are acknowledged and
//!   delivered to subscribers at once; the outbox is drained by the alarm,
//!   and while it awaits the receiver other requests run.
//! - The head of the outbox is retried until delivered or out of attempts;
//!   nothing behind it is sent before it (order), and a restart resumes at
//!   the head (at least once: an event whose 2xx was not yet recorded is
//!   sent again with the same `webhook-id`).
//! - `room.occupied` / `room.vacated` fire once per transition of the live
//!   connection count (kept in storage across restarts), checked after every
//!   event the room handles; `member.joined` / `member.left` fire on a
//!   member's first and last WebSocket.

use super::store::Store;
use super::{now_ms, RoomObject};
use crate::core::error::HubError;
use crate::core::settings::Settings;
use crate::core::transport::{self, StoredMessage};
use crate::core::webhooks::{
    after_attempt, event_body, event_id, member_data, occupancy, signature, EventType,
    ATTEMPT_TIMEOUT_MS,
};
use futures_util::future::{select, Either};
use std::time::Duration;
use worker::{Delay, Env, Fetch, Headers, Method, Request, RequestInit};

/// Where events go and how they are signed.
pub struct WebhookTarget {
    url: String,
    key: Vec<u8>,
    max_attempts: u32,
}

impl WebhookTarget {
    /// From `WEBHOOK_URL` and `WEBHOOK_SECRET`; `None` when webhooks are off.
    /// A URL without a secret is a configuration error (unsigned events
    /// could be forged).
    pub fn from_env(env: &Env, settings: &Settings) -> Result<Option<WebhookTarget>, HubError> {
        let Some(url) = settings.webhook_url.clone() else {
            return Ok(None);
        };
        let key = crate::config::webhook_key(env)?.ok_or_else(|| {
            HubError::BadConfig("WEBHOOK_URL is set but WEBHOOK_SECRET is not".into())
        })?;
        Ok(Some(WebhookTarget {
            url,
            key,
            max_attempts: settings.webhook_max_attempts,
        }))
    }
}

/// Events delivered by one alarm at most, so one alarm stays short.
const EVENTS_PER_ALARM: usize = 100;

impl RoomObject {
    /// A message was stored: its webhook event joins the outbox in the
    /// same synchronous stretch, then every transport gets the message.
    pub(super) fn published(&self, message: &StoredMessage) {
        self.retention_published(now_ms());
        if self.webhooks.is_some() {
            let enqueued = self.with_log(|l| {
                let body = event_body(
                    EventType::MessagePublished,
                    l.name.as_str(),
                    now_ms(),
                    &message.envelope,
                );
                l.store.enqueue_webhook(&body, now_ms())
            });
            match enqueued {
                Ok(Ok(())) => self.webhook_due(now_ms()),
                Ok(Err(e)) | Err(e) => worker::console_error!("webhook outbox: {}", e),
            }
        }
        self.deliver(message);
    }

    /// After an event: the member changes the socket hub saw and an
    /// occupancy transition, into the outbox.
    pub(super) fn note_webhook_events(&self) {
        if self.webhooks.is_none() {
            return;
        }
        let changes = self.sockets.take_member_changes();
        if let Some(change) = changes.first() {
            // A socket event after a wake names its room only this way.
            let _ = self.load_named(&change.room);
        }
        let live = transport::live(&self.hubs());
        let written = self.with_log(|l| -> Result<bool, HubError> {
            let room = l.name.as_str().to_owned();
            let now = now_ms();
            let was = l.store.was_occupied()?;
            let transition = occupancy(usize::from(was), live);
            // The room is occupied before anyone in it joins, and vacated
            // after the last one left.
            let mut events: Vec<(EventType, String)> = Vec::new();
            if transition == Some(EventType::RoomOccupied) {
                events.push((EventType::RoomOccupied, "{}".into()));
            }
            for change in &changes {
                events.push((change.kind, member_data(&change.member)));
            }
            if transition == Some(EventType::RoomVacated) {
                events.push((EventType::RoomVacated, "{}".into()));
            }
            for (kind, data) in &events {
                l.store
                    .enqueue_webhook(&event_body(*kind, &room, now, data), now)?;
            }
            if transition.is_some() {
                l.store.set_occupied(live > 0, now)?;
            }
            Ok(!events.is_empty())
        });
        match written {
            Ok(Ok(true)) => self.webhook_due(now_ms()),
            Ok(Ok(false)) => {}
            // Not loaded (an event that named no room): nothing to write to.
            Err(_) => {}
            Ok(Err(e)) => worker::console_error!("webhook outbox: {}", e),
        }
    }

    /// Delivers due events in order, from the alarm; records each outcome.
    pub(super) async fn deliver_webhooks(&self) {
        let Some(target) = self.webhooks.as_ref() else {
            return;
        };
        self.webhook_due_ms.set(None);
        let store = match Store::peek(self.state.storage().sql(), self.rows.clone()) {
            Ok(store) => store,
            Err(e) => {
                worker::console_error!("webhook outbox: {}", e);
                return;
            }
        };
        for _ in 0..EVENTS_PER_ALARM {
            let head = match store.webhook_head() {
                Ok(Some(head)) => head,
                Ok(None) => return,
                Err(e) => {
                    worker::console_error!("webhook outbox: {}", e);
                    return;
                }
            };
            let now = now_ms();
            if head.due as u64 > now {
                self.webhook_due(head.due as u64);
                return;
            }
            let id = event_id(&store.epoch().to_string(), head.seq as u64);
            let status = attempt(target, &id, &head.body).await;
            let attempts = head.attempts as u32 + 1;
            let after = after_attempt(status, attempts, target.max_attempts, now_ms());
            if let Err(e) = store.webhook_attempted(head.seq, attempts, after) {
                worker::console_error!("webhook outbox: {}", e);
                return;
            }
            if let crate::core::webhooks::AfterAttempt::RetryAt(at) = after {
                self.webhook_due(at);
                return;
            }
        }
        // More are waiting: the next alarm, at once.
        self.webhook_due(now_ms());
    }

    /// An event is due at `at_ms`: the alarm must fire by then.
    pub(super) fn webhook_due(&self, at_ms: u64) {
        let due = self.webhook_due_ms.get().map_or(at_ms, |d| d.min(at_ms));
        self.webhook_due_ms.set(Some(due));
    }
}

/// One signed POST; the status, or `None` without an answer in time.
async fn attempt(target: &WebhookTarget, id: &str, body: &str) -> Option<u16> {
    let timestamp_s = now_ms() / 1000;
    let headers = Headers::new();
    let set = |k: &str, v: &str| headers.set(k, v).ok();
    set("Content-Type", "application/json")?;
    set("webhook-id", id)?;
    set("webhook-timestamp", &timestamp_s.to_string())?;
    set(
        "webhook-signature",
        &signature(&target.key, id, timestamp_s, body),
    )?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_headers(headers)
        .with_body(Some(body.into()));
    let req = Request::new_with_init(&target.url, &init).ok()?;
    let fetch = Fetch::Request(req);
    let send = Box::pin(fetch.send());
    let timeout = Delay::from(Duration::from_millis(ATTEMPT_TIMEOUT_MS));
    let status = match select(send, timeout).await {
        Either::Left((Ok(resp), _)) => Some(resp.status_code()),
        _ => None,
    };
    status
}
