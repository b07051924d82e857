//! The `RoomObject` Durable Object: one room, one thread, one ordered log.
//!
//! Requests arrive here from the Worker (`src/routes.rs`) already routed
//! and checked for origin. The object loads its log position from SQLite
//! on the first request after it starts (or wakes), then serves every
//! transport from that one log.
//!
//! Invariants:
//! - All `RefCell` borrows end before any `.await`: handlers interleave at
//!   awaits, and a borrow held across one would panic the instance.
//! - A message is acknowledged only after [`room::LoadedRoom::accept`]
//!   stored it; live delivery happens after that, in id order.
//!
//! Module map: `store` (SQLite), `room` (accepting messages), `poll`
//! (polling and long-polling).

mod poll;
mod room;
mod store;

use crate::core::error::HubError;
use crate::core::log::RoomLog;
use crate::core::names::RoomName;
use crate::core::protocol::{ConnectionCounts, Publish, Published, RoomState};
use crate::core::route::{route, Action, Method};
use crate::core::settings::Settings;
use crate::respond::{self, Cors};
use futures_channel::oneshot;
use room::{LoadedRoom, Origin};
use std::cell::{Cell, RefCell};
use worker::{durable_object, js_sys, DurableObject, Env, Request, Response, State};

#[durable_object]
pub struct RoomObject {
    state: State,
    env: Env,
    room: RefCell<Option<LoadedRoom>>,
    /// Long polls waiting for the next message; each is woken once.
    waiters: RefCell<Vec<oneshot::Sender<()>>>,
    /// Long polls currently held (for `GET /rooms/{room}`).
    held_polls: Cell<u32>,
}

impl DurableObject for RoomObject {
    fn new(state: State, env: Env) -> Self {
        RoomObject {
            state,
            env,
            room: RefCell::new(None),
            waiters: RefCell::new(Vec::new()),
            held_polls: Cell::new(0),
        }
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        let settings = match settings_from_env(&self.env) {
            Ok(s) => s,
            Err(e) => return Ok(respond::error(&e, &Cors::None)),
        };
        let origin = req.headers().get("Origin").ok().flatten();
        let cors = Cors::for_origin(&settings.allowed_origins, origin.as_deref());
        match self.handle(req, settings, &cors).await {
            Ok(resp) => Ok(resp),
            Err(e) => Ok(respond::error(&e, &cors)),
        }
    }
}

/// Reads the settings from `[vars]`; the Worker and the room share this.
pub fn settings_from_env(env: &Env) -> Result<Settings, HubError> {
    Settings::from_lookup(|key| env.var(key).ok().map(|v| v.to_string()))
}

/// Milliseconds since the epoch, from the runtime's clock.
pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

impl RoomObject {
    async fn handle(
        &self,
        req: Request,
        settings: Settings,
        cors: &Cors,
    ) -> Result<Response, HubError> {
        let crate::core::route::Route { room, endpoint } = route(&req.path())?;
        let action = endpoint.action(Method::parse(req.method().as_ref()))?;
        self.load(room, settings)?;
        match action {
            Action::Publish => self.on_publish(req, cors).await,
            Action::Poll => self.on_poll(req, cors).await,
            Action::ReadState => self.on_read_state(cors),
            Action::OpenSocket | Action::OpenEvents => Err(HubError::NotFound),
        }
    }

    /// Loads the room's log position from storage once per instance.
    fn load(&self, name: RoomName, settings: Settings) -> Result<(), HubError> {
        if self.room.borrow().is_some() {
            return Ok(());
        }
        let (store, restored) = store::Store::open(self.state.storage().sql(), || {
            // A fresh room's epoch only has to differ from a lost one's.
            (js_sys::Math::random() * f64::from(u32::MAX)) as u32
        })?;
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
        });
        Ok(())
    }

    /// Runs `f` on the loaded room. Never call across an `.await`.
    fn with_room<T>(&self, f: impl FnOnce(&mut LoadedRoom) -> T) -> Result<T, HubError> {
        let mut guard = self.room.borrow_mut();
        let room = guard
            .as_mut()
            .ok_or_else(|| HubError::Internal("room used before load".into()))?;
        Ok(f(room))
    }

    async fn on_publish(&self, mut req: Request, cors: &Cors) -> Result<Response, HubError> {
        let max = self.with_room(|r| r.settings.max_message_bytes)?;
        let content_type = req
            .headers()
            .get("Content-Type")
            .ok()
            .flatten()
            .unwrap_or_default();
        if !crate::core::protocol::is_json_media_type(&content_type) {
            return Err(HubError::UnsupportedMediaType);
        }
        let declared = req.headers().get("Content-Length").ok().flatten();
        if declared
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n > max)
        {
            return Err(HubError::TooLarge { limit: max });
        }
        let bytes = req.bytes().await.map_err(respond::internal)?;
        if bytes.len() > max {
            return Err(HubError::TooLarge { limit: max });
        }
        let body = std::str::from_utf8(&bytes)
            .map_err(|_| HubError::InvalidJson("the body is not UTF-8".into()))?;
        let publish = Publish::from_http_body(body, max)?;
        let key_header = req.headers().get("Idempotency-Key").ok().flatten();
        let key = key_header
            .as_deref()
            .map(|k| crate::core::protocol::idempotency_key("Idempotency-Key", k))
            .transpose()?;
        let origin = Origin { from: None, key };
        let accepted = self.with_room(|r| r.accept(&publish, &origin, now_ms()))??;
        let replayed = accepted.envelope.is_none();
        if !replayed {
            self.deliver();
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
        if replayed {
            resp.headers()
                .set("Idempotent-Replayed", "true")
                .map_err(respond::internal)?;
        }
        Ok(resp)
    }

    /// Hands a newly stored message to every live subscriber.
    fn deliver(&self) {
        for waiter in self.waiters.borrow_mut().drain(..) {
            // A waiter whose poll already timed out has dropped its receiver.
            let _ = waiter.send(());
        }
    }

    fn on_read_state(&self, cors: &Cors) -> Result<Response, HubError> {
        let body = self
            .with_room(|r| {
                serde_json::to_string(&RoomState {
                    room: r.name.as_str(),
                    last_id: r.log.last_id().0,
                    first_id: r.log.first_kept().0,
                    connections: ConnectionCounts {
                        ws: 0,
                        sse: 0,
                        poll: self.held_polls.get(),
                    },
                    presence: Vec::new(),
                    open: true,
                })
            })?
            .map_err(|e| HubError::Internal(e.to_string()))?;
        respond::json_text(200, body, cors).map_err(respond::internal)
    }
}
