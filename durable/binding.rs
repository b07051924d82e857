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
//! then runs the rest on the spot. A `304` to an immediate conditional
//! poll is remembered in the entry module's memo (`crate::memo`), which
//! answers its repeats until the room's ETag may change.
//!
//! Invariant: the handlers' futures own an `Rc` of the room, never a
//! borrow of this object, so a promise that outlives the call is sound.

use super::RoomObject;
use crate::core::error::HubError;
use crate::core::request::{RoomAction, RoomRequest};
use crate::core::request_head::RequestHead;
use crate::memo::NotModified;
use crate::settle::settle;
use std::rc::Rc;
use wasm_bindgen::prelude::{wasm_bindgen, Closure};
use wasm_bindgen::{JsCast, JsValue};
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

/// What a request asks of the room, from `found` (what the entry module
/// read of it, `crate::head`): the Worker's description, or, for a request
/// the Worker sent as it came, its packed head, read as the Worker reads it.
fn described(room: &RoomObject, found: &str) -> Result<RoomRequest, HubError> {
    if found.starts_with('{') {
        return RoomRequest::from_header(Some(found));
    }
    let head = RequestHead::parse(found)
        .ok_or_else(|| HubError::Internal("unreadable room request".into()))?;
    RoomRequest::as_sent(&head, room.settings()?.long_poll_max_secs)
}

/// Whether the room's `304` to `request` may be remembered (`crate::memo`):
/// an immediate conditional poll, whose `304` depends on nothing but the
/// request and the room's ETag. A long poll is held, never remembered.
fn not_modified_is_memorable(request: &RoomRequest) -> bool {
    matches!(
        &request.action,
        RoomAction::Poll { query, if_none_match: Some(_) } if query.wait_secs == 0
    )
}

#[wasm_bindgen(js_name = RoomObject)]
pub struct RoomBinding {
    room: Rc<RoomObject>,
}

#[wasm_bindgen(js_class = RoomObject)]
impl RoomBinding {
    /// `answers`: the entry module's memo of this room's `304`s.
    #[wasm_bindgen(constructor)]
    pub fn new(
        state: worker_sys::DurableObjectState,
        env: Env,
        answers: NotModified,
    ) -> RoomBinding {
        RoomBinding {
            room: Rc::new(RoomObject::new(State::from(state), env, answers)),
        }
    }

    /// `Response | Promise<Response>`. `found`: the request's description
    /// or packed head, as the entry module read it (the key its memo
    /// remembers a `304` under).
    pub fn fetch(&self, req: web_sys::Request, found: String) -> JsValue {
        let room = self.room.clone();
        let described = described(&room, &found);
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
        let memorable = matches!(&described, Ok(r) if not_modified_is_memorable(r));
        let answer = respond(room, req, described, None);
        if memorable {
            // Answered on the spot (no promise): the room's state is the
            // one the answer was made from.
            if let Some(resp) = answer.dyn_ref::<web_sys::Response>() {
                if resp.status() == 304 {
                    self.room.answers.remember_answer(&found, resp);
                }
            }
        }
        answer
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
