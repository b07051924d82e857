//! The hub's pure core: protocol, validation, the room log and its
//! decisions. No `worker` types, no clock, no I/O, so `cargo test` runs it
//! natively; `src/routes.rs` and `durable/` carry its decisions out.

pub mod auth;
pub mod backend;
pub mod cursor;
pub mod error;
pub mod etag;
pub mod frames;
pub mod jwks;
pub mod limits;
pub mod log;
pub mod meter;
pub mod names;
pub mod page_cache;
pub mod poll_cache;
pub mod presence;
#[cfg(test)]
mod properties;
pub mod protocol;
pub mod query;
pub mod request;
pub mod request_head;
pub mod retention;
pub mod route;
pub mod session;
pub mod settings;
pub mod sse;
pub mod tickets;
pub mod transport;
pub mod url;
pub mod webhooks;
