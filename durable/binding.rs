//! The class the runtime constructs and calls for every room: exported to
//! JavaScript as `RoomObject` (the name `wrangler.toml` binds), in place of
//! what `#[durable_object]` would generate.
//!
//! A request's description is its internal header, or, for an anonymous
//! poll or publish that the Worker sent as the client sent it, read from
//! the request itself (`core::request`).
//!
//! Each of the runtime's events is handed to [`RoomObject`] and run with
//! [`settle`]: what completes without waiting (a `304`, every WebSocket
//! frame) returns its value at once, the rest a promise. The generated
//! glue made every event an `async` export (a promise and a queued
//! microtask each, even for a `304`; issue 19). A publish whose length the
//! Worker checked has its body read first, by one promise reaction that
//! then runs the rest on the spot.
//!
//! Invariant: the handlers' futures own an `Rc` of the room, never a
//! borrow of this object, so a promise that outlives the call is sound.

use super::RoomObject;
use crate::core::error::HubError;
use crate::core::request::{RoomRequest, ROOM_REQUEST_HEADER};
use crate::core::request_head::{RequestHead, READ_HEADERS};
use crate::head::description_or_head;
use crate::js_text::js_text;
use crate::settle::settle;
use std::rc::Rc;
use wasm_bindgen::prelude::{wasm_bindgen, Closure};
use wasm_bindgen::JsValue;
use worker::{js_sys, web_sys, worker_sys, Env, State, WebSocketIncomingMessage};

#[wasm_bindgen(inline_js = r#"
export function read_body_then(req, then) {
  return req.arrayBuffer().then(then, () => then(undefined));
}
"#)]
extern "C" {
    /// Reads `req`'s body in one piece and calls `then` with its
    /// `ArrayBuffer` (or `undefined` if reading failed); returns the
    /// promise of what `then` returns.
    fn read_body_then(req: &web_sys::Request, then: &JsValue) -> JsValue;
}

/// The room's answer to `req` (`described`, with its body when it was
/// read ahead): the `Response`, or a promise of it.
fn respond(
    room: Rc<RoomObject>,
    req: web_sys::Request,
    described: Result<RoomRequest, HubError>,
    read_ahead: Option<JsValue>,
) -> JsValue {
    settle(async move { Ok(room.fetch(req, described, read_ahead).await.into()) })
}

/// What `req` asks of the room: the Worker's description, or, for a
/// request the Worker sent as it came, the same read from the request.
fn described(room: &RoomObject, req: &web_sys::Request) -> Result<RoomRequest, HubError> {
    let found = description_or_head(req, js_text(ROOM_REQUEST_HEADER), js_text(READ_HEADERS));
    if found.starts_with('{') {
        return RoomRequest::from_header(Some(&found));
    }
    let head = RequestHead::parse(&found)
        .ok_or_else(|| HubError::Internal("unreadable room request".into()))?;
    RoomRequest::as_sent(&head, room.settings()?.long_poll_max_secs)
}

#[wasm_bindgen(js_name = RoomObject)]
pub struct RoomBinding {
    room: Rc<RoomObject>,
}

#[wasm_bindgen(js_class = RoomObject)]
impl RoomBinding {
    #[wasm_bindgen(constructor)]
    pub fn new(state: worker_sys::DurableObjectState, env: Env) -> RoomBinding {
        RoomBinding {
            room: Rc::new(RoomObject::new(State::from(state), env)),
        }
    }

    /// `Response | Promise<Response>`.
    pub fn fetch(&self, req: web_sys::Request) -> JsValue {
        let room = self.room.clone();
        let described = described(&room, &req);
        if matches!(&described, Ok(r) if room.reads_body_first(r)) {
            // A publish: its body is read by one promise reaction that
            // runs the rest on the spot, where a Rust future awaiting it
            // would be woken through wasm-bindgen-futures' queue (two
            // closures and a microtask more per publish; issue 19).
            // A second handle to the same request (not `Request.clone()`).
            let body_of = Clone::clone(&req);
            let then = Closure::once_into_js(move |body: JsValue| -> JsValue {
                respond(room, req, described, Some(body))
            });
            return read_body_then(&body_of, &then);
        }
        respond(room, req, described, None)
    }

    pub fn alarm(&self) -> JsValue {
        let room = self.room.clone();
        settle(async move {
            room.alarm().await;
            Ok(JsValue::UNDEFINED)
        })
    }

    #[wasm_bindgen(js_name = webSocketMessage)]
    pub fn web_socket_message(&self, ws: web_sys::WebSocket, message: JsValue) -> JsValue {
        let message = match message.as_string() {
            Some(text) => WebSocketIncomingMessage::String(text),
            None => WebSocketIncomingMessage::Binary(js_sys::Uint8Array::new(&message).to_vec()),
        };
        let room = self.room.clone();
        settle(async move {
            room.websocket_message(ws.into(), message)
                .await
                .map(|()| JsValue::UNDEFINED)
                .map_err(JsValue::from)
        })
    }

    #[wasm_bindgen(js_name = webSocketClose)]
    pub fn web_socket_close(
        &self,
        ws: web_sys::WebSocket,
        code: usize,
        reason: String,
        was_clean: bool,
    ) -> JsValue {
        let room = self.room.clone();
        settle(async move {
            room.websocket_close(ws.into(), code, reason, was_clean)
                .await
                .map(|()| JsValue::UNDEFINED)
                .map_err(JsValue::from)
        })
    }

    #[wasm_bindgen(js_name = webSocketError)]
    pub fn web_socket_error(&self, ws: web_sys::WebSocket, error: JsValue) -> JsValue {
        let room = self.room.clone();
        settle(async move {
            room.websocket_error(ws.into(), error.into())
                .await
                .map(|()| JsValue::UNDEFINED)
                .map_err(JsValue::from)
        })
    }
}
