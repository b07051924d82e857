//! The class the runtime constructs and calls for every room: exported to
//! JavaScript as `RoomObject` (the name `wrangler.toml` binds), in place of
//! what `#[durable_object]` would generate.
//!
//! Each of the runtime's events is handed to [`RoomObject`] and run with
//! [`settle`]: what completes without waiting (a `304`, most publishes,
//! every WebSocket frame) returns its value at once, the rest a promise.
//! The generated glue made every event an `async` export (a promise and a
//! queued microtask each, even for a `304`; issue 19).
//!
//! Invariant: the handlers' futures own an `Rc` of the room, never a
//! borrow of this object, so a promise that outlives the call is sound.

use super::RoomObject;
use crate::settle::settle;
use std::rc::Rc;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::{js_sys, web_sys, worker_sys, Env, State, WebSocketIncomingMessage};

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
        settle(async move {
            room.fetch(req)
                .await
                .map(|resp| web_sys::Response::from(resp).into())
                .map_err(JsValue::from)
        })
    }

    pub fn alarm(&self) -> JsValue {
        let room = self.room.clone();
        settle(async move {
            room.alarm()
                .await
                .map(|resp| web_sys::Response::from(resp).into())
                .map_err(JsValue::from)
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
