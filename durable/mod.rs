//! The `RoomObject` Durable Object: one room, one thread, one ordered log,
//! three transports.
//!
//! Requests arrive from the Worker (`src/routes.rs`) already routed,
//! authenticated and described ([`RoomRequest`], read from one internal
//! header): the room never parses a path or an identity header. The object
//! loads its log from SQLite on the first event after it starts or wakes
//! from hibernation (a request, or a WebSocket event, whose socket's
//! attachment names the room), then serves every transport from that log.
//!
//! The shape: the log ([`log::PersistedLog`]: accept, store, replay,
//! idempotency) and one hub per transport, each owning its connections
//! behind `core::transport::Transport`: [`sockets::SocketHub`] (WebSocket
//! sessions, Hibernation API), [`sse::StreamHub`] (Server-Sent Events
//! streams and their heartbeat) and [`poll::PollHub`] (held long polls).
//! What concerns every connection is one loop over [`RoomObject::hubs`]:
//! delivery ([`RoomObject::deliver`]), admission ([`RoomObject::admit`])
//! and counting (`GET /rooms/{room}`).
//!
//! Invariants:
//! - All `RefCell` borrows end before any `.await`: handlers interleave at
//!   awaits, and a borrow held across one would panic the instance.
//! - A message is acknowledged only after the log stored it; `deliver`
//!   then hands it to every hub, in id order, in the same synchronous
//!   stretch.
//! - Settings are read once, when the object starts (`crate::config`); a
//!   bad setting answers every request with `bad_config`.
//! - The room's alarm is set to the earliest of: the token deadlines of its
//!   live connections, the next webhook event due, retention's next work
//!   (history expiring, the idle check) and the meter's next save
//!   ([`RoomObject::arm_alarm`]), so all of these happen on time even
//!   while the room hibernates; it is re-set after every event that may
//!   have changed it (and after `deleteAll`, which clears it).
//! - Every event tells the meter when it begins and, in
//!   [`RoomObject::after_event`], when it ends; a request or an alarm also
//!   counts the repeat polls the entry module answered since the last
//!   count (`RoomObject::count_requests`).
//! - The entry module's remembered `304`s (`crate::memo`) are forgotten
//!   before anything that may move the room's ETag, in the same
//!   synchronous stretch ([`RoomObject::answers_changed`]).
//! - Nothing here panics on input: handlers return errors, which become
//!   JSON errors, `error` frames or close codes.
//!
//! Other modules: `binding` (the class the runtime calls, each event run
//! on the spot), `timer` (timeouts for held polls), `store` (SQLite),
//! `budgets` (publish budgets per user), `fanout` (WebSocket sends in one
//! boundary crossing), `retention` (history by age, idle rooms), `meter`
//! (stats and usage).

mod binding;
mod budgets;
mod fanout;
mod log;
mod meter;
mod poll;
mod retention;
mod sockets;
mod sse;
mod store;
mod tickets;
mod timer;
mod webhooks;

use crate::core::auth::Identity;
use crate::core::backend;
use crate::core::error::HubError;
use crate::core::meter::Meter;
use crate::core::names::RoomName;
use crate::core::protocol::{Publish, Published, RoomState};
use crate::core::request::{RoomAction, RoomRequest};
use crate::core::settings::Settings;
use crate::core::tickets::TicketBook;
use crate::core::transport::{self, StoredMessage, Transport};
use crate::memo::NotModified;
use crate::respond::{self, Cors};
use budgets::PublishBudgets;
use log::{Origin, PersistedLog};
use poll::PollHub;
use sockets::SocketHub;
use sse::StreamHub;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::JsValue;
use worker::{
    js_sys, web_sys, worker_sys::WebSocketRequestResponsePair, Env, ScheduledTime, State,
    WebSocket, WebSocketIncomingMessage,
};

/// One room's state and handlers; the runtime reaches it through
/// [`binding::RoomBinding`], exported as the class `RoomObject`.
pub struct RoomObject {
    state: State,
    settings: Result<Rc<Settings>, HubError>,
    /// The room's log, loaded on the first event (`None` until then).
    log: RefCell<Option<PersistedLog>>,
    sockets: SocketHub,
    streams: StreamHub,
    polls: PollHub,
    budgets: PublishBudgets,
    /// The alarm this instance last set (ms), if any: the alarm is only
    /// written when the earliest time changes.
    alarm_ms: Cell<Option<u64>>,
    /// Where webhook events go; `None` when webhooks are off.
    webhooks: Option<webhooks::WebhookTarget>,
    /// When the next webhook event is due (ms), as far as this instance knows.
    webhook_due_ms: Cell<Option<u64>>,
    /// Whether this instance read its outbox's head since it started.
    webhooks_checked: Cell<bool>,
    /// Whether this instance has seen a connection with a token deadline
    /// (or its alarm fired): only then is the earliest deadline looked
    /// for, so open rooms pay nothing per request for expiry.
    pub(super) deadlines_seen: Cell<bool>,
    /// Outstanding connect tickets for this room.
    tickets: RefCell<TicketBook>,
    /// What the room did and what it costs (`stats`, `usage`).
    meter: RefCell<Meter>,
    /// The entry module's memo of this room's `304`s (`crate::memo`).
    pub(super) answers: NotModified,
    /// Whether the storage that loading a never-published room opened was
    /// let go already ([`RoomObject::release_unused_storage`]).
    unused_storage_released: Cell<bool>,
    /// Storage rows read and written, for the meter.
    rows: Rc<store::RowCounter>,
    /// When history expires and when the room is idle.
    retention: retention::Retention,
}

/// The runtime's events, as [`binding::RoomBinding`] hands them on.
impl RoomObject {
    fn new(state: State, env: Env, answers: NotModified) -> Self {
        // The runtime answers `ping` with `pong` itself, so keep-alives
        // never wake a hibernated room. Registering is idempotent.
        match WebSocketRequestResponsePair::new("ping", "pong") {
            Ok(pair) => state.set_websocket_auto_response(&pair),
            Err(e) => worker::console_error!("auto-response: {:?}", e),
        }
        // Webhooks need their secret: a URL without one fails every request.
        let (settings, webhooks) = match crate::config::settings(&env) {
            Ok(s) => match webhooks::WebhookTarget::from_env(&env, &s) {
                Ok(w) => (Ok(s), w),
                Err(e) => (Err(e), None),
            },
            Err(e) => (Err(e), None),
        };
        // With bad settings every request fails before a hub is used.
        let hub_settings = settings.as_deref().cloned().unwrap_or_default();
        RoomObject {
            sockets: SocketHub::new(&state, &hub_settings, webhooks.is_some()),
            streams: StreamHub::default(),
            polls: PollHub::default(),
            budgets: PublishBudgets::default(),
            log: RefCell::new(None),
            alarm_ms: Cell::new(None),
            webhooks,
            webhook_due_ms: Cell::new(None),
            webhooks_checked: Cell::new(false),
            deadlines_seen: Cell::new(false),
            tickets: RefCell::new(TicketBook::default()),
            meter: RefCell::new(Meter::default()),
            answers,
            unused_storage_released: Cell::new(false),
            rows: Rc::new(store::RowCounter::default()),
            retention: retention::Retention::default(),
            settings,
            state,
        }
    }

    /// The runtime's request as it is: the room reads only the description
    /// header, or the head of a request that came without one (in
    /// `binding`), and, for a publish, the body (a
    /// `worker::Request` would read the method, URL, headers and `cf`
    /// across the boundary first). `read_ahead`: the body, when the binding
    /// read it before the handling began ([`RoomObject::reads_body_first`]).
    async fn fetch(
        &self,
        req: web_sys::Request,
        described: Result<RoomRequest, HubError>,
        read_ahead: Option<JsValue>,
    ) -> web_sys::Response {
        self.event_began();
        self.count_requests(1);
        // The Worker sends a body with a publish only (`crate::rooms_call`),
        // and a body read ahead was read whole: only a publish not read
        // ahead (or a request the room cannot read) may leave one unread.
        let sent_with_body = match &described {
            Ok(r) => matches!(r.action, RoomAction::Publish { .. }),
            Err(_) => true,
        };
        let may_leave_body = sent_with_body && read_ahead.is_none();
        let resp = self.answer(&req, described, read_ahead).await;
        if may_leave_body {
            // A body that no handler read is read to its end (see `crate::body`).
            crate::body::discard(&req).await;
        }
        self.after_event().await;
        resp
    }

    /// The room's clock: delivers the webhook events due, ends the
    /// connections whose token expired, then sets the alarm for what is
    /// next.
    async fn alarm(&self) {
        self.alarm_ms.set(None);
        self.deadlines_seen.set(true);
        self.event_began();
        self.meter.borrow_mut().alarm();
        self.count_requests(0);
        self.deliver_webhooks().await;
        let now_s = now_ms() / 1000;
        transport::end(&self.hubs(), &transport::Ending::Expired { now_s });
        self.note_webhook_events();
        self.save_meter(false);
        self.retention_alarm().await;
        self.arm_alarm().await;
        self.event_ended();
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        self.event_began();
        let bytes = match &message {
            WebSocketIncomingMessage::String(text) => text.len(),
            WebSocketIncomingMessage::Binary(bytes) => bytes.len(),
        };
        self.meter.borrow_mut().ws_message(bytes);
        self.on_socket_message(&ws, message);
        self.after_event().await;
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        reason: String,
        _was_clean: bool,
    ) -> worker::Result<()> {
        self.event_began();
        self.on_socket_close(&ws, code, &reason);
        self.after_event().await;
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> worker::Result<()> {
        worker::console_warn!("websocket error: {}", error);
        self.on_socket_error(&ws);
        Ok(())
    }
}

/// Milliseconds since the epoch, read once per synchronous stretch.
pub use crate::clock::now_ms;

/// A random id for connections and epochs: only needs to be unique in its room.
fn random_u32() -> u32 {
    (js_sys::Math::random() * f64::from(u32::MAX)) as u32
}

impl RoomObject {
    /// Every transport's hub: what concerns every connection loops here.
    fn hubs(&self) -> [&dyn Transport; 3] {
        [&self.sockets, &self.streams, &self.polls]
    }

    fn settings(&self) -> Result<Rc<Settings>, HubError> {
        self.settings.clone()
    }

    /// What follows every event: webhook events and the room's occupancy
    /// noted, unused storage let go, the counters saved when due, and the
    /// alarm set for what comes next.
    async fn after_event(&self) {
        self.note_webhook_events();
        let live = self.meter_connections();
        self.retention_occupancy(live);
        self.release_unused_storage().await;
        self.save_meter(false);
        self.arm_alarm().await;
        self.event_ended();
    }

    /// Whether the binding reads `request`'s body before the handling
    /// begins: a publish whose body is read in one piece
    /// (`crate::body::reads_in_one_piece`; any other body is read bounded,
    /// as it streams in, by `crate::body::read_within`).
    fn reads_body_first(&self, request: &RoomRequest) -> bool {
        match (&request.action, &self.settings) {
            (RoomAction::Publish { body_len, .. }, Ok(settings)) => {
                crate::body::reads_in_one_piece(*body_len, settings.max_message_bytes)
            }
            _ => false,
        }
    }

    /// The response to a request: the handler's, or its error as JSON.
    async fn answer(
        &self,
        req: &web_sys::Request,
        described: Result<RoomRequest, HubError>,
        read_ahead: Option<JsValue>,
    ) -> web_sys::Response {
        let request = match described {
            Ok(r) => r,
            Err(e) => return respond::error(&e, &Cors::None),
        };
        let settings = match self.settings() {
            Ok(s) => s,
            Err(e) => return respond::error(&e, &Cors::None),
        };
        let cors = Cors::for_origin(&settings.allowed_origins, request.origin.as_deref());
        let request = match self.redeem_ticket(request) {
            Ok(r) => r,
            Err(e) => return respond::error(&e, &cors),
        };
        if request.expires_s.is_some() && request.action.opens_connection() {
            self.deadlines_seen.set(true);
        }
        match self
            .handle(req, &request, read_ahead, &settings, &cors)
            .await
        {
            Ok(resp) => resp,
            Err(e) => respond::error(&e, &cors),
        }
    }

    async fn handle(
        &self,
        req: &web_sys::Request,
        request: &RoomRequest,
        read_ahead: Option<JsValue>,
        settings: &Settings,
        cors: &Cors,
    ) -> Result<web_sys::Response, HubError> {
        self.load(&request.room)?;
        if request.action.opens_connection() {
            self.admit(request)?;
        }
        match &request.action {
            RoomAction::Publish {
                idempotency_key,
                body_len,
            } => {
                self.on_publish(
                    (req, read_ahead),
                    request,
                    (idempotency_key.as_deref(), *body_len),
                    settings,
                    cors,
                )
                .await
            }
            RoomAction::Poll {
                query,
                if_none_match,
            } => {
                self.on_poll(request, query, if_none_match.as_deref(), cors)
                    .await
            }
            RoomAction::ReadState => self.on_read_state(request, cors),
            RoomAction::OpenSocket { since } => self.on_open_socket(request, *since),
            RoomAction::OpenEvents { cursor } => self.on_open_events(request, *cursor, cors),
            RoomAction::IssueTicket => self.on_issue_ticket(request, cors),
            RoomAction::Disconnect { user } => self.on_disconnect(user, cors),
            RoomAction::DeleteRoom => self.on_delete_room(cors).await,
        }
    }

    /// Loads the room's log from storage once per instance.
    /// Every later call trims the history that expired meanwhile.
    fn load(&self, name: &RoomName) -> Result<(), HubError> {
        if self.log.borrow().is_some() {
            self.expire_history();
            return Ok(());
        }
        let settings = self.settings()?;
        self.answers_changed();
        // Opening the log opens the database, never-published or not.
        self.unused_storage_released.set(false);
        let (log, saved) = PersistedLog::open(
            self.state.storage().sql(),
            self.rows.clone(),
            name.clone(),
            settings.history_limit,
            random_u32,
            now_ms(),
        )?;
        *self.log.borrow_mut() = Some(log);
        self.absorb_saved_counters(&saved);
        self.retention_loaded();
        Ok(())
    }

    /// Loads the room named by a socket's attachment: a WebSocket event
    /// that wakes the room carries no request to name it.
    fn load_named(&self, name: &str) -> Result<(), HubError> {
        self.load(&RoomName::parse(name)?)
    }

    /// Lets go of the database that reading a never-published room opened:
    /// reads must not create storage. The check and the runtime's delete
    /// happen in one synchronous stretch, so no publish can fall between
    /// them. (On the platform an object without stored data is not kept;
    /// local workerd leaves an empty 4 KB file where it kept three before.)
    /// Once per loaded log: only opening the log opens the database before
    /// a publish creates the room's storage, and a delete per event made
    /// every frame of a never-published room wait for storage (a flood of
    /// 5000 frames took 15–26 s to cut off, and held up every other member).
    async fn release_unused_storage(&self) {
        let unused = matches!(self.log.borrow().as_ref(), Some(l) if !l.is_created());
        if unused && !self.unused_storage_released.replace(true) {
            // `deleteAll` clears the alarm too: let the next `arm_alarm`
            // set it again if a connection still has a deadline (this
            // instance may have woken without having seen one).
            self.alarm_ms.set(None);
            self.deadlines_seen.set(true);
            if let Err(e) = self.state.storage().delete_all().await {
                worker::console_warn!("releasing an unused room's storage: {}", e);
            }
        }
    }

    /// Sets the alarm to the earliest of: the next token deadline of a
    /// live connection, and the next webhook event due. Written only when
    /// that time changes. With nothing due the alarm is left to fire once
    /// more and find nothing: cheaper than a storage write per change.
    pub(super) async fn arm_alarm(&self) {
        let expiry_ms = if self.deadlines_seen.get() {
            transport::next_expiry(&self.hubs()).map(|s| s.saturating_mul(1000))
        } else {
            None
        };
        if self.webhooks.is_some() && !self.webhooks_checked.get() {
            // A woken instance learns what its outbox holds once.
            self.webhooks_checked.set(true);
            if let Ok(Some(head)) =
                store::Store::peek(self.state.storage().sql(), self.rows.clone())
                    .and_then(|s| s.webhook_head())
            {
                self.webhook_due(head.due as u64);
            }
        }
        let Some(at_ms) = [
            expiry_ms,
            self.webhook_due_ms.get(),
            self.retention.due(),
            self.meter_save_due(),
        ]
        .into_iter()
        .flatten()
        .min() else {
            return;
        };
        // An alarm set for earlier fires first and sets the next one.
        if self.alarm_ms.get().is_some_and(|set| set <= at_ms) {
            return;
        }
        self.alarm_ms.set(Some(at_ms));
        let at = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(at_ms as f64));
        if let Err(e) = self.state.storage().set_alarm(ScheduledTime::new(at)).await {
            self.alarm_ms.set(None);
            worker::console_error!("setting the alarm: {}", e);
        }
    }

    /// Runs `f` on the loaded log. Never call across an `.await`.
    fn with_log<T>(&self, f: impl FnOnce(&mut PersistedLog) -> T) -> Result<T, HubError> {
        let mut guard = self.log.borrow_mut();
        let log = guard
            .as_mut()
            .ok_or_else(|| HubError::Internal("room used before load".into()))?;
        Ok(f(log))
    }

    /// Accepts a message into the log (or recognises a retry). The
    /// remembered `304`s are forgotten first: the ETag changes with an
    /// accepted message, and nothing may answer from the old one once the
    /// message is stored.
    fn accept(
        &self,
        publish: &Publish,
        origin: &Origin<'_>,
        max_message_bytes: usize,
    ) -> Result<log::Accepted, HubError> {
        self.answers_changed();
        self.with_log(|l| l.accept(publish, origin, max_message_bytes, now_ms()))?
    }

    /// Forgets every remembered `304` (`crate::memo`): called before
    /// anything that may change the room's ETag (an accepted message, a
    /// log loaded, the room erased).
    pub(super) fn answers_changed(&self) {
        self.answers.forget();
    }

    /// Whether the caller may open one more live connection, on any
    /// transport (`MAX_CONNECTIONS_PER_ROOM`, `MAX_CONNECTIONS_PER_USER`).
    fn admit(&self, request: &RoomRequest) -> Result<(), HubError> {
        let settings = self.settings()?;
        transport::admit(
            &self.hubs(),
            request.connection_key().as_deref(),
            settings.max_connections_per_room,
            settings.max_connections_per_user,
        )
    }

    /// Hands a newly stored message to every hub: WebSockets, SSE streams,
    /// then held long polls.
    fn deliver(&self, message: &StoredMessage) {
        let handed = transport::deliver_all(&self.hubs(), message);
        let mut meter = self.meter.borrow_mut();
        for (kind, h) in handed {
            meter.delivered(kind, h.count, (h.count * h.bytes) as u64);
        }
    }

    async fn on_publish(
        &self,
        (req, read_ahead): (&web_sys::Request, Option<JsValue>),
        request: &RoomRequest,
        (idempotency_key, body_len): (Option<&str>, Option<u64>),
        settings: &Settings,
        cors: &Cors,
    ) -> Result<web_sys::Response, HubError> {
        if !request.identity.can_publish() {
            return Err(HubError::Forbidden("the token does not grant publish"));
        }
        // Content-Type and a declared Content-Length were checked by the
        // Worker; a body without a length is bounded while it is read.
        let max = settings.max_message_bytes;
        let bytes = match read_ahead {
            Some(buffer) => crate::body::read_ahead(&buffer, max)?,
            None => crate::body::read_within(req, max, body_len).await?,
        };
        self.meter.borrow_mut().published(bytes.len());
        // The room may have been deleted while the body was read.
        self.load(&request.room)?;
        let body = std::str::from_utf8(&bytes)
            .map_err(|_| HubError::InvalidJson("the body is not UTF-8".into()))?;
        let publish = Publish::from_http_body(body, max)?;
        let backend = request.identity == Identity::Backend;
        let from = backend::author(&request.identity, publish.from.as_deref());
        if backend {
            // The app's backend is not held to a user's publish budget.
            if let Some(from) = from {
                backend::check_from(from)?;
            }
        } else {
            self.budgets
                .take(request.budget_key().as_deref(), settings, now_ms())?;
        }
        let origin = Origin {
            from,
            scope: if backend {
                backend::BACKEND_SCOPE
            } else {
                from.unwrap_or("")
            },
            key: idempotency_key,
        };
        let accepted = self.accept(&publish, &origin, max)?;
        if let Some(message) = &accepted.stored {
            self.published(message);
        }
        let published = Published {
            id: accepted.id.0,
            ts: accepted.ts_ms,
        };
        let replayed: &[(&str, &str)] = match accepted.stored {
            Some(_) => &[],
            None => &[("Idempotent-Replayed", "true")],
        };
        respond::json_with(201, &published, replayed, cors)
    }

    /// `POST /rooms/{room}/disconnect`: ends every live connection of
    /// `user`, on every transport (`4003 disconnected`).
    /// Their outstanding connect tickets are revoked too.
    fn on_disconnect(&self, user: &str, cors: &Cors) -> Result<web_sys::Response, HubError> {
        self.tickets.borrow_mut().revoke_user(user);
        let identity = Identity::User {
            sub: user.to_owned(),
            can_publish: false,
        };
        let key = crate::core::auth::connection_key(&identity).unwrap_or_default();
        let closed = transport::end(&self.hubs(), &transport::Ending::User { key: &key });
        respond::json(200, &serde_json::json!({ "closed": closed }), cors)
    }

    /// `DELETE /rooms/{room}`: ends every live connection (`4004
    /// room_deleted`), then erases the log, idempotency keys and the alarm.
    /// The next publish starts a new log under a new epoch, so an old
    /// cursor gets `reset cursor_ahead` and an old ETag never matches.
    async fn on_delete_room(&self, cors: &Cors) -> Result<web_sys::Response, HubError> {
        self.erase().await?;
        Ok(respond::empty(204, cors))
    }

    fn on_read_state(
        &self,
        request: &RoomRequest,
        cors: &Cors,
    ) -> Result<web_sys::Response, HubError> {
        // What this reports is what a restart would find.
        self.save_meter(true);
        let report = self.meter_report();
        let hubs = self.hubs();
        let connections = transport::counts(&hubs);
        let connect_refused = self.admit(request).err().map(|e| e.body());
        let presence = self.sockets.members();
        let body = self.with_log(|l| {
            serde_json::to_string(&RoomState {
                room: l.name.as_str(),
                last_id: l.position.last_id().0,
                first_id: l.position.first_kept().0,
                connections,
                presence,
                // Only a hub without a secret lets a caller in anonymously.
                open: request.identity == Identity::Anonymous,
                loads: l.loads,
                poll_waiters: connections.poll,
                connect_refused,
                webhooks: self
                    .webhooks
                    .as_ref()
                    .and_then(|_| l.store.webhook_counts().ok()),
                stats: report.as_ref().map(|r| &r.0),
                usage: report.as_ref().map(|r| &r.1),
            })
            .map_err(|e| HubError::Internal(e.to_string()))
        })??;
        Ok(respond::json_text(200, &body, cors))
    }
}
