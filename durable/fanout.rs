//! Sending to the room's WebSockets: broadcast in one call across the WASM
//! boundary, and the slow-consumer bound.
//!
//! Sending from Rust would cross into JavaScript once per socket (fetch the
//! socket list, wrap each socket, send each frame). The broadcast loop runs
//! on the JavaScript side instead: one crossing per broadcast, the frame
//! string converted once, however many sockets the room holds.
//!
//! Slow consumers. The runtime queues in memory whatever a socket has not
//! taken yet, and the Hibernation API exposes no `bufferedAmount`, so the
//! room cannot see a socket fall behind. It counts instead the bytes it sent
//! each socket since that socket's last sign of life: any frame from it
//! ([`seen`]), or a `ping` that the runtime answered for it (the
//! auto-response timestamp, read only when the count is over the bound). A
//! socket over [`slow_socket_bytes`] without a sign of life is closed with
//! 4008 `slow_consumer` and reconnects with `since`. The counts live in
//! this isolate's memory: a room that hibernated starts them again at 0.
//!
//! Invariant: a socket closed here is returned to the caller, which takes
//! it out of presence; nothing else is sent to it.

use super::sse::stream_buffer_bytes;
use crate::core::error::HubError;
use crate::js_text::js_text;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsValue;
use worker::{web_sys, WebSocket};

#[wasm_bindgen(inline_js = r#"
// Per socket: bytes sent since its last sign of life, and the runtime's
// auto-response timestamp at that time.
const unseen = new WeakMap();

function charge(state, ws, bytes, limit) {
  let c = unseen.get(ws);
  if (c === undefined) {
    c = { bytes: 0, pong: pongTime(state, ws) };
    unseen.set(ws, c);
  }
  c.bytes += bytes;
  if (limit === 0 || c.bytes <= limit) return true;
  const pong = pongTime(state, ws);
  if (pong > c.pong) {
    c.pong = pong;
    c.bytes = bytes;
    return true;
  }
  return false;
}

function pongTime(state, ws) {
  try {
    const t = state.getWebSocketAutoResponseTimestamp(ws);
    return t ? t.getTime() : 0;
  } catch (_) {
    return 0;
  }
}

// How many sockets the last broadcast sent to (read right after it).
export function broadcast_text(state, text, exceptConn, skipCatchingUp, limit, closeCode, closeReason, sentOut) {
  const dropped = [];
  let sent = 0;
  for (const ws of state.getWebSockets()) {
    // Attachments are read only when some socket may be skipped.
    if (exceptConn !== undefined || skipCatchingUp) {
      const meta = ws.deserializeAttachment();
      if (meta && exceptConn !== undefined && meta.conn === exceptConn) continue;
      if (meta && skipCatchingUp && meta.replay_after != null) continue;
    }
    if (send_within(state, ws, text, limit, closeCode, closeReason)) sent++;
    else dropped.push(ws);
  }
  sentOut[0] = sent;
  return dropped;
}

// Sends unless the socket is over `limit` without a sign of life: then it
// is closed and false is returned.
export function send_within(state, ws, text, limit, closeCode, closeReason) {
  try {
    if (charge(state, ws, text.length, limit)) {
      ws.send(text);
      return true;
    }
    unseen.delete(ws);
    ws.close(closeCode, closeReason);
    return false;
  } catch (_) {
    // A socket that is closing; its close handler cleans up.
    return true;
  }
}

export function send_text(state, ws, text) {
  // A limit of 0 counts the bytes and never closes.
  send_within(state, ws, text, 0, 0, '');
}

export function seen(ws) {
  unseen.delete(ws);
}
"#)]
extern "C" {
    fn broadcast_text(
        state: &JsValue,
        text: &str,
        except_conn: Option<String>,
        skip_catching_up: bool,
        limit: f64,
        close_code: u16,
        close_reason: &JsValue,
        sent_out: &mut [f64],
    ) -> Vec<JsValue>;
    fn send_text(state: &JsValue, ws: &JsValue, text: &str);
    #[wasm_bindgen(js_name = send_within)]
    fn send_within_js(
        state: &JsValue,
        ws: &JsValue,
        text: &str,
        limit: f64,
        close_code: u16,
        close_reason: &str,
    ) -> bool;
    #[wasm_bindgen(js_name = seen)]
    fn seen_js(ws: &JsValue);
}

/// Bytes the room sends one socket without a sign of life before it
/// drops it: four SSE stream buffers (4 MiB at the default message size).
pub fn slow_socket_bytes(max_message_bytes: usize) -> usize {
    4 * stream_buffer_bytes(max_message_bytes)
}

/// Sends `text` to every WebSocket of the room except the one whose
/// connection id is `except_conn` and, with `skip_catching_up`, those whose
/// attachment says they are catching up (`replay_after`). Returns the
/// sockets it closed as slow consumers (the caller takes them out of
/// presence) and how many sockets it sent to.
pub fn broadcast(
    state: &worker::State,
    text: &str,
    except_conn: Option<&str>,
    skip_catching_up: bool,
    max_message_bytes: usize,
) -> (Vec<WebSocket>, usize) {
    let err = HubError::SlowConsumer;
    // The count comes back through `sent`, the closed sockets as the
    // value: one crossing.
    let mut sent = [0.0];
    let dropped = broadcast_text(
        state.as_raw().as_ref(),
        text,
        except_conn.map(str::to_owned),
        skip_catching_up,
        slow_socket_bytes(max_message_bytes) as f64,
        err.close_code(),
        js_text(err.close_reason()),
        &mut sent,
    )
    .into_iter()
    .map(|ws| WebSocket::from(web_sys::WebSocket::from(ws)))
    .collect();
    (dropped, sent[0] as usize)
}

/// Sends `text` to one socket, counting it toward that socket's bound.
pub fn send(state: &worker::State, ws: &WebSocket, text: &str) {
    send_text(state.as_raw().as_ref(), ws.as_ref().as_ref(), text);
}

/// Sends `text` to one socket unless that takes it over its slow-consumer
/// bound without a sign of life: then the socket is closed with `4008`
/// instead, and this returns false.
pub fn send_within(
    state: &worker::State,
    ws: &WebSocket,
    text: &str,
    max_message_bytes: usize,
) -> bool {
    let err = HubError::SlowConsumer;
    send_within_js(
        state.as_raw().as_ref(),
        ws.as_ref().as_ref(),
        text,
        slow_socket_bytes(max_message_bytes) as f64,
        err.close_code(),
        err.close_reason(),
    )
}

/// A frame arrived from `ws`: it is alive and reading.
pub fn seen(ws: &WebSocket) {
    seen_js(ws.as_ref().as_ref());
}
