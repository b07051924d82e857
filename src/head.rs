//! Reading a request's head in one crossing: the JavaScript side of
//! `core::request_head` (whose module doc gives the packed form).
//!
//! Both ends read heads this way: the Worker every client request
//! ([`read_head`]), and the room a request that came without a description
//! ([`description_or_head`]; see `core::request::RoomRequest::as_sent`).
//!
//! Invariant: a description is JSON, so it starts with `{`; a packed head
//! starts with the request's method, a token, which never does.

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
use worker::web_sys;

#[wasm_bindgen(inline_js = r#"
let listed = '';
let names = [];
function pack(req, headers, list) {
  if (list !== listed) {
    listed = list;
    names = list.split('\n');
  }
  let out = req.method + '\n' + req.url;
  for (const name of names) {
    const value = headers.get(name);
    out += value === null ? '\n-' : '\n+' + value;
  }
  return out;
}
export function read_head(req, list) {
  return pack(req, req.headers, list);
}
export function description_or_head(req, name, list) {
  // `headers` read once: each read has the runtime look up its wrapper.
  const headers = req.headers;
  const described = headers.get(name);
  return described === null ? pack(req, headers, list) : described;
}
"#)]
extern "C" {
    /// The request's method, URL and the headers named in `list`, packed
    /// as `core::request_head` reads them.
    pub fn read_head(req: &web_sys::Request, list: &JsValue) -> String;

    /// The request's header `name` (a room request's description) if it
    /// has one, else its head as [`read_head`] packs it.
    pub fn description_or_head(req: &web_sys::Request, name: &JsValue, list: &JsValue) -> String;
}
