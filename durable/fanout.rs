//! Fan-out to the room's WebSockets in one call across the WASM boundary.
//!
//! Sending from Rust would cross into JavaScript once per socket (fetch the
//! socket list, wrap each socket, send each frame). This loop runs on the
//! JavaScript side instead: one crossing per broadcast, the frame string
//! converted once, however many sockets the room holds.

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsValue;

#[wasm_bindgen(inline_js = r#"
export function broadcast_text(state, text, exceptConn) {
  let sent = 0;
  for (const ws of state.getWebSockets()) {
    if (exceptConn !== undefined) {
      const meta = ws.deserializeAttachment();
      if (meta && meta.conn === exceptConn) continue;
    }
    try {
      ws.send(text);
      sent++;
    } catch (_) {
      // A socket that is closing; its close handler cleans up.
    }
  }
  return sent;
}
"#)]
extern "C" {
    fn broadcast_text(state: &JsValue, text: &str, except_conn: Option<String>) -> u32;
}

/// Sends `text` to every WebSocket of the room except the one whose
/// connection id is `except_conn`; returns how many sends succeeded.
pub fn broadcast(state: &worker::State, text: &str, except_conn: Option<&str>) -> u32 {
    broadcast_text(
        state.as_raw().as_ref(),
        text,
        except_conn.map(str::to_owned),
    )
}
