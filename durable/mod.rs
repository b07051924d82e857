//! The `RoomObject` Durable Object: one room, one thread, one ordered log.
//!
//! Requests arrive here from the Worker (`src/routes.rs`) already routed
//! and checked for origin. The object loads its room from SQLite on the
//! first event after it starts or wakes from hibernation (a request, or a
//! WebSocket event that carries no path), then serves every transport from
//! that one log.
//!
//! Invariants:
//! - All `RefCell` borrows end before any `.await`: handlers interleave at
//!   awaits, and a borrow held across one would panic the instance.
//! - A message is acknowledged only after [`room::LoadedRoom::accept`]
//!   stored it; [`RoomObject::deliver`] then hands it to every subscriber
//!   of every transport, in id order, in the same synchronous stretch.
//! - Nothing here panics on input: handlers return errors, which become
//!   JSON errors, `error` frames or close codes.
//!
//! Module map: `store` (SQLite), `room` (accepting messages), `poll`
//! (polling and long-polling), `sockets` (WebSocket sessions with the
//! Hibernation API), `sse` (Server-Sent Events streams and their
//! heartbeat), `fanout` (broadcast in one boundary crossing).

mod fanout;
mod poll;
mod room;
mod sockets;
mod sse;
mod store;

use crate::core::auth::{budget_key, connection_key, Identity, ANONYMOUS_KEY, IDENTITY_HEADER};
use crate::core::cursor::Seq;
use crate::core::error::HubError;
use crate::core::limits::TokenBucket;
use crate::core::log::RoomLog;
use crate::core::names::RoomName;
use crate::core::protocol::{ConnectionCounts, Publish, Published, RoomState};
use crate::core::route::{route, Action, Method, Route};
use crate::core::session::message_frame;
use crate::core::settings::Settings;
use crate::respond::{self, Cors};
use futures_channel::oneshot;
use room::{LoadedRoom, Origin};
use sockets::SocketIndex;
use sse::SseHub;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use store::StoredMessage;
use worker::{
    durable_object, js_sys, worker_sys::WebSocketRequestResponsePair, DurableObject, Env, Request,
    Response, State, WebSocket, WebSocketIncomingMessage,
};

#[durable_object]
pub struct RoomObject {
    state: State,
    env: Env,
    room: RefCell<Option<LoadedRoom>>,
    /// Who holds which WebSocket (presence, counts per budget key);
    /// rebuilt from attachments after a wake.
    sockets: RefCell<Option<SocketIndex>>,
    /// Open Server-Sent Events streams; shared with their heartbeat loop.
    sse: Rc<RefCell<SseHub>>,
    /// Long polls waiting for the next message, by waiter id; each is
    /// woken once, and removed when it fires or times out.
    waiters: RefCell<HashMap<u64, oneshot::Sender<()>>>,
    /// The id of the next waiter.
    next_waiter: Cell<u64>,
    /// Long polls currently held per connection key (`None`: anonymous).
    held_polls: RefCell<HashMap<Option<String>, u32>>,
    /// Publish budgets per budget key, shared by every WebSocket and HTTP
    /// publish of that user (`RATE_PER_SEC`/`RATE_BURST`): reconnecting
    /// does not refill them.
    publish_budgets: RefCell<HashMap<String, TokenBucket>>,
}

/// Publish budgets kept before the full ones are forgotten (a full bucket
/// is the same as a new one, so forgetting it changes nothing).
const PUBLISH_BUDGETS_KEPT: usize = 4096;

/// Who is asking, as the room sees it.
pub struct Caller {
    pub identity: Identity,
    /// The client's address (`CF-Connecting-IP`) for anonymous callers.
    pub addr: Option<String>,
}

impl Caller {
    /// The key of this caller's publish budget.
    pub fn budget_key(&self) -> Option<String> {
        budget_key(&self.identity, self.addr.as_deref())
    }

    /// The key of this caller's per-user connection count.
    pub fn connection_key(&self) -> Option<String> {
        connection_key(&self.identity)
    }
}

impl DurableObject for RoomObject {
    fn new(state: State, env: Env) -> Self {
        // The runtime answers `ping` with `pong` itself, so keep-alives
        // never wake a hibernated room. Registering is idempotent.
        match WebSocketRequestResponsePair::new("ping", "pong") {
            Ok(pair) => state.set_websocket_auto_response(&pair),
            Err(e) => worker::console_error!("auto-response: {:?}", e),
        }
        RoomObject {
            state,
            env,
            room: RefCell::new(None),
            sockets: RefCell::new(None),
            sse: Rc::new(RefCell::new(SseHub::default())),
            waiters: RefCell::new(HashMap::new()),
            next_waiter: Cell::new(0),
            held_polls: RefCell::new(HashMap::new()),
            publish_budgets: RefCell::new(HashMap::new()),
        }
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        // The same JS request (a second handle, not `Request.clone()`), kept
        // to read to its end a body that no handler read (see `crate::body`).
        let raw = Clone::clone(req.inner());
        let resp = self.answer(req).await;
        crate::body::discard(&raw).await;
        self.release_unused_storage().await;
        Ok(resp)
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        self.on_socket_message(&ws, message);
        self.release_unused_storage().await;
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        reason: String,
        _was_clean: bool,
    ) -> worker::Result<()> {
        self.on_socket_close(&ws, code, &reason);
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> worker::Result<()> {
        worker::console_warn!("websocket error: {}", error);
        self.on_socket_gone(&ws);
        Ok(())
    }
}

/// What one storage read brings into the isolate when replaying: at most
/// this many rows, and at most this many bytes (plus one message).
const REPLAY_READ_ROWS: u32 = 200;
const REPLAY_READ_BYTES: u64 = 256 * 1024;

/// The last value of a query parameter, decoded.
fn query_param(url: &worker::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .filter(|(k, _)| k == name)
        .last()
        .map(|(_, v)| v.into_owned())
}

/// Milliseconds since the epoch, from the runtime's clock.
pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// A random id for connections and epochs: only needs to be unique in its room.
fn random_u32() -> u32 {
    (js_sys::Math::random() * f64::from(u32::MAX)) as u32
}

impl RoomObject {
    /// The response to a request: the handler's, or its error as JSON.
    async fn answer(&self, req: Request) -> Response {
        let settings = match crate::config::settings(&self.env) {
            Ok(s) => s,
            Err(e) => return respond::error(&e, &Cors::None),
        };
        let origin = req.headers().get("Origin").ok().flatten();
        let cors = Cors::for_origin(&settings.allowed_origins, origin.as_deref());
        match self.handle(&req, settings, &cors).await {
            Ok(resp) => resp,
            Err(e) => respond::error(&e, &cors),
        }
    }

    async fn handle(
        &self,
        req: &Request,
        settings: Rc<Settings>,
        cors: &Cors,
    ) -> Result<Response, HubError> {
        // Parsed once here; the handlers read the query from it.
        let url = req.url().map_err(respond::internal)?;
        let Route { room, endpoint } = route(url.path())?;
        let action = endpoint.action(Method::parse(req.method().as_ref()))?;
        let caller = self.caller(req)?;
        self.load(room, Some(settings))?;
        match action {
            Action::Publish => self.on_publish(req, &caller, cors).await,
            Action::Poll => self.on_poll(req, &url, &caller, cors).await,
            Action::ReadState => self.on_read_state(&caller, cors),
            Action::OpenSocket => self.on_open_socket(&url, &caller),
            Action::OpenEvents => self.on_open_events(req, &url, &caller, cors),
        }
    }

    /// Who the request is. The identity header is set by the Worker after
    /// it verified the token, over anything a client sent; without a
    /// secret every request is anonymous and the header is not even read.
    fn caller(&self, req: &Request) -> Result<Caller, HubError> {
        let header = |name: &str| req.headers().get(name).ok().flatten();
        let identity = match crate::config::hub_secret(&self.env)? {
            None => Identity::Anonymous,
            Some(_) => Identity::from_header(header(IDENTITY_HEADER).as_deref())?,
        };
        let addr = match identity {
            Identity::Anonymous => header("CF-Connecting-IP"),
            Identity::User { .. } => None,
        };
        Ok(Caller { identity, addr })
    }

    /// Loads the room from storage once per instance. `name` comes from the
    /// request path, or from a socket's attachment when a WebSocket event
    /// wakes the room.
    fn load(&self, name: RoomName, settings: Option<Rc<Settings>>) -> Result<(), HubError> {
        if self.room.borrow().is_some() {
            return Ok(());
        }
        let settings = match settings {
            Some(s) => s,
            None => crate::config::settings(&self.env)?,
        };
        let (store, restored) = store::Store::open(self.state.storage().sql(), random_u32)?;
        let log = RoomLog::restore(
            restored.epoch,
            restored.last_id,
            restored.kept,
            settings.history_limit,
        );
        *self.room.borrow_mut() = Some(LoadedRoom {
            name,
            settings,
            log,
            store,
            loads: restored.loads,
        });
        Ok(())
    }

    /// Calls `f` on every kept message after `after`, in id order, until it
    /// returns `false`; returns whether it saw them all. Synchronous, so no
    /// message can be published in between.
    fn replay(
        &self,
        mut after: Seq,
        mut f: impl FnMut(&StoredMessage) -> bool,
    ) -> Result<bool, HubError> {
        loop {
            let (batch, at_end) = self.with_room(|r| {
                r.store
                    .read_after(after, REPLAY_READ_ROWS, REPLAY_READ_BYTES)
            })??;
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

    /// Lets go of the database that reading a never-published room opened:
    /// reads must not create storage. The check and the runtime's delete
    /// happen in one synchronous stretch, so no publish can fall between
    /// them. (On the platform an object without stored data is not kept;
    /// local workerd leaves an empty 4 KB file where it kept three before.)
    async fn release_unused_storage(&self) {
        let unused = matches!(self.room.borrow().as_ref(), Some(r) if !r.store.is_created());
        if unused {
            if let Err(e) = self.state.storage().delete_all().await {
                worker::console_warn!("releasing an unused room's storage: {}", e);
            }
        }
    }

    /// Runs `f` on the loaded room. Never call across an `.await`.
    fn with_room<T>(&self, f: impl FnOnce(&mut LoadedRoom) -> T) -> Result<T, HubError> {
        let mut guard = self.room.borrow_mut();
        let room = guard
            .as_mut()
            .ok_or_else(|| HubError::Internal("room used before load".into()))?;
        Ok(f(room))
    }

    /// Refuses a new live connection when the room holds
    /// `MAX_CONNECTIONS_PER_ROOM`, or when its user already holds
    /// `MAX_CONNECTIONS_PER_USER` in this room, across transports.
    fn check_connection_limit(&self, caller: &Caller) -> Result<(), HubError> {
        let (per_room, per_user) = self.with_room(|r| {
            (
                r.settings.max_connections_per_room,
                r.settings.max_connections_per_user,
            )
        })?;
        if per_room > 0 {
            let counts = self.connection_counts()?;
            if counts.ws + counts.sse + counts.poll >= per_room {
                return Err(HubError::RoomFull { limit: per_room });
            }
        }
        let Some(key) = caller.connection_key() else {
            return Ok(());
        };
        if per_user == 0 {
            return Ok(());
        }
        let sockets = self.with_sockets(|s| s.connections_of(&key))?;
        let streams = self.sse.borrow().count_of(&key);
        let polls = self
            .held_polls
            .borrow()
            .get(&Some(key))
            .copied()
            .unwrap_or(0) as usize;
        if sockets + streams + polls >= per_user as usize {
            return Err(HubError::TooManyConnections { limit: per_user });
        }
        Ok(())
    }

    /// Live connections by transport.
    fn connection_counts(&self) -> Result<ConnectionCounts, HubError> {
        Ok(ConnectionCounts {
            ws: self.with_sockets(|s| s.connections())? as u32,
            sse: self.sse.borrow().count() as u32,
            poll: self.held_polls.borrow().values().sum(),
        })
    }

    /// Takes one token from the publish budget of `key` (a budget key, or
    /// `None` for anonymous callers without an address, who share one).
    fn take_publish_token(&self, key: Option<&str>, settings: &Settings) -> Result<(), HubError> {
        let (rate, burst) = (settings.rate_per_sec, settings.rate_burst);
        if rate == 0 {
            return Ok(());
        }
        let now = now_ms();
        let mut budgets = self.publish_budgets.borrow_mut();
        if budgets.len() >= PUBLISH_BUDGETS_KEPT {
            budgets.retain(|_, b| !b.is_full_at(rate, burst, now));
        }
        budgets
            .entry(key.unwrap_or(ANONYMOUS_KEY).to_owned())
            .or_insert_with(|| TokenBucket::full(burst, now))
            .take(rate, burst, now)
            .map_err(|retry_after_ms| HubError::RateLimited { retry_after_ms })
    }

    async fn on_publish(
        &self,
        req: &Request,
        caller: &Caller,
        cors: &Cors,
    ) -> Result<Response, HubError> {
        if !caller.identity.can_publish() {
            return Err(HubError::Forbidden("the token does not grant publish"));
        }
        let settings = self.with_room(|r| r.settings.clone())?;
        let max = settings.max_message_bytes;
        let header = |name| req.headers().get(name).ok().flatten();
        crate::core::protocol::check_publish_headers(
            header("Content-Type").as_deref(),
            header("Content-Length").as_deref(),
            max,
        )?;
        let key_header = header("Idempotency-Key");
        let bytes = crate::body::read_within(req.inner(), max).await?;
        let body = std::str::from_utf8(&bytes)
            .map_err(|_| HubError::InvalidJson("the body is not UTF-8".into()))?;
        let publish = Publish::from_http_body(body, max)?;
        let key = key_header
            .as_deref()
            .map(|k| crate::core::protocol::idempotency_key("Idempotency-Key", k))
            .transpose()?;
        self.take_publish_token(caller.budget_key().as_deref(), &settings)?;
        let origin = Origin {
            from: caller.identity.user(),
            key,
        };
        let accepted = self.with_room(|r| r.accept(&publish, &origin, now_ms()))??;
        if let Some(message) = &accepted.stored {
            self.deliver(message);
        }
        let resp = respond::json(
            201,
            &Published {
                id: accepted.id.0,
                ts: accepted.ts_ms,
            },
            cors,
        )
        .map_err(respond::internal)?;
        if accepted.stored.is_none() {
            resp.headers()
                .set("Idempotent-Replayed", "true")
                .map_err(respond::internal)?;
        }
        Ok(resp)
    }

    /// Hands a newly stored message to every live subscriber of every
    /// transport: WebSockets (one frame, built once), then long polls.
    fn deliver(&self, message: &StoredMessage) {
        self.broadcast_message(&message_frame(&message.envelope));
        self.sse.borrow_mut().deliver(message);
        for (_, waiter) in self.waiters.borrow_mut().drain() {
            let _ = waiter.send(());
        }
    }

    fn on_read_state(&self, caller: &Caller, cors: &Cors) -> Result<Response, HubError> {
        let presence = self.with_sockets(|s| s.presence.members())?;
        let connect_refused = self.check_connection_limit(caller).err().map(|e| e.body());
        let connections = self.connection_counts()?;
        let open = crate::config::hub_secret(&self.env)?.is_none();
        let poll_waiters = self.waiters.borrow().len() as u32;
        let body = self
            .with_room(|r| {
                serde_json::to_string(&RoomState {
                    room: r.name.as_str(),
                    last_id: r.log.last_id().0,
                    first_id: r.log.first_kept().0,
                    connections,
                    presence,
                    open,
                    loads: r.loads,
                    poll_waiters,
                    connect_refused,
                })
            })?
            .map_err(|e| HubError::Internal(e.to_string()))?;
        respond::json_text(200, body, cors).map_err(respond::internal)
    }
}
