//! Calling a room's Durable Object from the Worker: the one place a
//! described request ([`RoomRequest`]) crosses to the room.
//!
//! Invariants: the description always travels in the internal header,
//! written here over anything a client sent under that name; a room gets
//! the client's body only for a publish (the one action whose body the
//! room reads), so every body the room is sent is read to its end there
//! (see `crate::body`).
//!
//! Costs (measured with workerd's V8 profiler, issue 19): copying the
//! client's request (`new Request(req)`) copies its `cf` object and every
//! header, and converting it to a `worker::Request` reads all of them back
//! across the boundary; so a room request is a new request with the
//! description, the body when the room needs it, and `Upgrade` for a
//! socket, nothing else. The namespace binding is looked up once per
//! isolate.

use crate::core::error::HubError;
use crate::core::request::{RoomAction, RoomRequest, ROOM_REQUEST_HEADER};
use std::cell::RefCell;
use worker::wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::worker_sys::DurableObjectNamespace;
use worker::{js_sys, web_sys, Env, Method};

thread_local! {
    /// The `ROOMS` binding: bindings cannot change while an isolate lives.
    static ROOMS: RefCell<Option<DurableObjectNamespace>> = const { RefCell::new(None) };
}

/// Sends the room the client's request `req` (at `url`, already read) as
/// `described`; returns the stub's promise of the room's own `Response`
/// (the Worker hands it to the runtime as it is).
pub fn forward(
    env: &Env,
    req: &web_sys::Request,
    url: &str,
    described: &RoomRequest,
) -> Result<js_sys::Promise, HubError> {
    let headers = web_sys::Headers::new()?;
    headers.set(ROOM_REQUEST_HEADER, &described.to_header())?;
    let init = web_sys::RequestInit::new();
    init.set_method(&req.method());
    match described.action {
        // The runtime hands the room's WebSocket back to the client only
        // for a request that asked for an upgrade.
        RoomAction::OpenSocket { .. } => headers.set("Upgrade", "websocket")?,
        // The room reads the body itself (bounded, to its end).
        RoomAction::Publish { .. } => init.set_body(&req.body().into()),
        _ => {}
    }
    init.set_headers(&headers);
    let forwarded = web_sys::Request::new_with_str_and_init(url, &init)?;
    start(env, &forwarded, described)
}

/// Sends the room a request of the Worker's own making (`method`, a JSON
/// `body` or none) with its description.
pub async fn send(
    env: &Env,
    url: &str,
    method: Method,
    body: Option<String>,
    described: &RoomRequest,
) -> Result<web_sys::Response, HubError> {
    let headers = web_sys::Headers::new()?;
    headers.set(ROOM_REQUEST_HEADER, &described.to_header())?;
    let init = web_sys::RequestInit::new();
    init.set_method(method.as_ref());
    if let Some(body) = body {
        headers.set("Content-Type", "application/json")?;
        init.set_body(&body.into());
    }
    init.set_headers(&headers);
    let req = web_sys::Request::new_with_str_and_init(url, &init)?;
    call(env, &req, described).await
}

/// The `ROOMS` namespace, read from `env` on first use.
fn rooms(env: &Env) -> Result<DurableObjectNamespace, HubError> {
    if let Some(ns) = ROOMS.with(|r| r.borrow().clone()) {
        return Ok(ns);
    }
    // Checked by its constructor's name, as `worker::Env` does: the class
    // is not a global, so `instanceof` cannot be used.
    let ns = js_sys::Reflect::get(env, &"ROOMS".into())
        .ok()
        .filter(|b| {
            b.is_object()
                && js_sys::Object::from(b.clone()).constructor().name() == "DurableObjectNamespace"
        })
        .map(|b| b.unchecked_into::<DurableObjectNamespace>())
        .ok_or_else(|| HubError::Internal("the ROOMS binding is missing".into()))?;
    ROOMS.with(|r| *r.borrow_mut() = Some(ns.clone()));
    Ok(ns)
}

/// Starts the call: the stub's promise of the room's `Response`.
fn start(
    env: &Env,
    req: &web_sys::Request,
    described: &RoomRequest,
) -> Result<js_sys::Promise, HubError> {
    let stub = rooms(env)?
        .get_by_name(described.room.as_str())
        .map_err(|e| HubError::Internal(format!("room stub: {e:?}")))?;
    stub.fetch_with_request(req)
        .map_err(|e| HubError::Internal(format!("room fetch: {e:?}")))
}

async fn call(
    env: &Env,
    req: &web_sys::Request,
    described: &RoomRequest,
) -> Result<web_sys::Response, HubError> {
    let answer = JsFuture::from(start(env, req, described)?)
        .await
        .map_err(|e| HubError::Internal(format!("room fetch: {e:?}")))?;
    answer
        .dyn_into::<web_sys::Response>()
        .map_err(|_| HubError::Internal("the room did not answer with a Response".into()))
}
