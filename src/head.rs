//! A request's head as the crate reads it: packed into one string by the
//! entry module (`RequestHeads` in src/memo.js), which hands it to the
//! Worker's `fetch` and to the room's, so reading a request is no boundary
//! crossing at all (the packed form and its parser: `core::request_head`).
//!
//! The entry module asks for the names below once, when it loads: the
//! crate keeps the one list of headers it reads.
//!
//! Invariant: a room request's description is JSON, so it starts with
//! `{`; a packed head starts with the request's method, a token, which
//! never does (the room tells the two apart by that).

use crate::core::request::ROOM_REQUEST_HEADER;
use crate::core::request_head::READ_HEADERS;
use wasm_bindgen::prelude::wasm_bindgen;

/// The headers packed into a request's head, one name per line, in order.
#[wasm_bindgen(js_name = requestHeadNames)]
pub fn request_head_names() -> String {
    READ_HEADERS.to_owned()
}

/// The internal header that carries a room request's description.
#[wasm_bindgen(js_name = descriptionHeader)]
pub fn description_header() -> String {
    ROOM_REQUEST_HEADER.to_owned()
}
