//! An edge real-time hub: one Rust crate, compiled to WebAssembly, running
//! as a Cloudflare Worker that routes every room to a Durable Object.
//!
//! Module map:
//! - [`assets`]: the browser client (`/client.js`, `/client.d.ts`) and the
//!   demo page (`/`), embedded at compile time.
//! - [`core`]: pure protocol, validation, room log, ETags, settings and the
//!   error enum. No `worker` types, no clock, no I/O: `cargo test` runs it.
//! - `routes` (wasm32): the Worker entry; routes requests, answers what
//!   needs no room, forwards the rest to the room's Durable Object.
//! - `config` (wasm32): settings and the secret, read once per isolate.
//! - `respond` (wasm32): turns core results and errors into responses.
//! - `rooms_call` (wasm32): the one way the Worker calls a room.
//! - `publish_many` (wasm32): `POST /publish`, the backend's fan-out.
//! - `jwks` (wasm32): RS256/ES256 keys from `JWKS`/`JWKS_URL`, checked by
//!   the runtime's WebCrypto.
//! - `head` (wasm32): the headers the entry module (src/worker.js) packs
//!   with a request's method and URL, handed to the Worker and the room.
//! - `memo` (wasm32): what the crate asks the entry module to remember
//!   (src/memo.js), so a repeat of a decided request skips the module.
//! - `js_text` (wasm32): constant strings made in JavaScript once, passed
//!   by reference on every request.
//! - `clock` (wasm32): the runtime's clock, read once per synchronous
//!   stretch.
//! - `settle` (wasm32): runs an export's handling on the spot, a promise
//!   only for what must wait.
//! - `body` (wasm32): the room's request bodies, read within a budget and
//!   always to their end (`wrangler dev` needs it; see the module).
//! - `durable` (wasm32, in `durable/`): the `RoomObject` Durable Object
//!   (its exported class in `durable/binding.rs`):
//!   the persisted log and one hub per transport (WebSocket, SSE, polls).

pub mod assets;
pub mod core;

#[cfg(target_arch = "wasm32")]
mod body;
#[cfg(target_arch = "wasm32")]
mod clock;
#[cfg(target_arch = "wasm32")]
mod config;
#[cfg(target_arch = "wasm32")]
mod head;
#[cfg(target_arch = "wasm32")]
mod js_text;
#[cfg(target_arch = "wasm32")]
mod jwks;
#[cfg(target_arch = "wasm32")]
mod memo;
#[cfg(target_arch = "wasm32")]
mod publish_many;
#[cfg(target_arch = "wasm32")]
mod respond;
#[cfg(target_arch = "wasm32")]
mod rooms_call;
#[cfg(target_arch = "wasm32")]
mod routes;
#[cfg(target_arch = "wasm32")]
mod settle;

#[cfg(target_arch = "wasm32")]
#[path = "../durable/mod.rs"]
mod durable;
