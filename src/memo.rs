//! The crate's side of the entry module's memos (src/memo.js): what the
//! crate asks it to remember, and when to forget.
//!
//! Invariants (the decisions are the crate's; the entry module only looks
//! them up):
//! - [`Forwards`]: a head is remembered only when the Worker sent the
//!   request to its room as it came and the decision depended on the head
//!   alone: an anonymous poll or publish (`RoomRequest::travels_as_sent`:
//!   no token, ticket, key or body read, so nothing that expires), with
//!   `POLL_CACHE_MS` off (the cache must see every answer). Settings
//!   cannot change while an isolate lives, so such a decision holds for
//!   the isolate's life.
//! - [`NotModified`]: a room remembers a request it answered `304`, an
//!   immediate conditional poll, and forgets every one whenever its ETag
//!   may change, before the change (`durable::RoomObject::answers_changed`),
//!   so a remembered answer is always the current one.

use wasm_bindgen::prelude::wasm_bindgen;
use worker::web_sys;

#[wasm_bindgen]
extern "C" {
    /// The Worker's memo of requests sent to their room as they came.
    pub type Forwards;

    /// Remembers that `head` goes to `room` as it came; `body_read`:
    /// whether the room reads its body (a publish).
    #[wasm_bindgen(method, js_name = rememberForward)]
    pub fn remember_forward(this: &Forwards, head: &str, room: &str, body_read: bool);

    /// A room's memo of the requests it answered `304`.
    pub type NotModified;

    /// Remembers `response`, the room's `304`, as the answer to `key`.
    #[wasm_bindgen(method, js_name = rememberAnswer)]
    pub fn remember_answer(this: &NotModified, key: &str, response: &web_sys::Response);

    /// Forgets every remembered answer.
    #[wasm_bindgen(method)]
    pub fn forget(this: &NotModified);

    /// How many requests the memo answered since the last call.
    #[wasm_bindgen(method, js_name = takeAnswered)]
    pub fn take_answered(this: &NotModified) -> u32;
}
